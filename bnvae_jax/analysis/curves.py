"""Per-epoch learning curves of finished or running runs, and their figure.

At the end of every epoch the train loop writes one record holding ``epoch``,
``lr`` and the validation pass (``valid/elbo_nll`` = −ELBO per sentence,
``valid/kl``, ``valid/mi``, ...). ``read_curves`` collects those rows (a resumed
run's replays removed by ``writers.read_metrics``); ``curves_figure`` draws
validation −ELBO and KL against the epoch, one line per run, so two models'
convergence can be compared at a glance.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence

import numpy as np

from bnvae_jax.analysis import plots
from bnvae_jax.errors import WorkdirError
from bnvae_jax.training import writers


@dataclasses.dataclass(frozen=True)
class Curves:
    """One run's end-of-epoch validation values, ordered by epoch.

    Attributes:
      epoch: <int64>[E] epoch index (0-based) of each row.
      elbo_nll: <float64>[E] −ELBO per sentence (nats).
      kl: <float64>[E] the KL term of the ELBO.
      mi: <float64>[E] mutual information I_q (NaN where the run has none).
      lr: <float64>[E] learning rate in force during that epoch.
    """

    epoch: np.ndarray
    elbo_nll: np.ndarray
    kl: np.ndarray
    mi: np.ndarray
    lr: np.ndarray


def read_curves(workdir: str | pathlib.Path, split: str = "valid") -> Curves:
    """The end-of-epoch rows of ``split`` of the run in ``workdir``.

    An epoch validated twice (a run resumed inside its end-of-epoch work) keeps
    its last row.

    Raises:
      WorkdirError: the run has not finished an epoch.
    """
    keys = (f"{split}/elbo_nll", f"{split}/kl", f"{split}/mi", "lr")
    rows = {
        int(r["values"]["epoch"]): [r["values"].get(k, np.nan) for k in keys]
        for r in writers.read_metrics(workdir)
        if r["kind"] == "scalars" and {"epoch", keys[0]} <= r["values"].keys()
    }
    if not rows:
        raise WorkdirError(
            f"{workdir}: no end-of-epoch {split}/elbo_nll in {writers.METRICS_FILE} "
            "(has the run finished an epoch?)"
        )
    epochs = sorted(rows)
    elbo_nll, kl, mi, lr = np.asarray([rows[e] for e in epochs], np.float64).T
    return Curves(np.asarray(epochs, np.int64), elbo_nll, kl, mi, lr)


def curves_figure(
    runs: Sequence[tuple[str, Curves]], path: str | pathlib.Path
) -> pathlib.Path:
    """Writes two panels (validation −ELBO, KL) against the epoch as PNG.

    Args:
      runs: ``(label, curves)`` per run, each drawn as one line in both panels.
      path: the PNG to write (parent created).

    Returns:
      ``path``.
    """
    if not runs:
        raise ValueError("curves_figure needs at least one run")
    fig, (ax_elbo, ax_kl) = plots.line_panels(2, (7.4, 2.8), "epoch")
    for label, c in runs:
        ax_elbo.plot(c.epoch + 1, c.elbo_nll, "-o", ms=2.5, label=label)
        ax_kl.plot(c.epoch + 1, c.kl, "-o", ms=2.5, label=label)
    ax_elbo.set_ylabel("validation −ELBO (nats / sentence)", fontsize=8)
    ax_kl.set_ylabel("validation KL (nats)", fontsize=8)
    ax_elbo.legend(fontsize=7)
    return plots.save_png(fig, path, pad=0.4)
