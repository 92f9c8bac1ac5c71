"""Per-epoch validation curves of finished or running runs, read from their metrics.

At the end of every epoch the train loop writes one record holding ``epoch``,
``lr`` and the validation pass (``valid/elbo_nll`` = −ELBO per sentence,
``valid/kl``: the KL term of the ELBO, E_x KL(q(z|x) || p(z)); ``valid/mi``:
I_q(x; z), dataset-level estimator; ...). ``read_curves`` collects those rows
(a resumed run's replays removed by ``writers.read_metrics``). They give the
learning curves (``plots.curves_figure``) and the training dynamics of BN-VAE
Fig. 3 (``plots.dynamics_figure``), where KL − MI is the distance of the
aggregate posterior from the prior: KL(q(z) || p(z)) = E_x KL(q(z|x) || p(z))
− I_q (paper Eq. 4).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from bnvae_jax.errors import WorkdirError
from bnvae_jax.training import writers


@dataclasses.dataclass(frozen=True)
class Curves:
    """One run's end-of-epoch validation values, ordered by epoch.

    Attributes:
      step: <int64>[E] training step of each row.
      epoch: <int64>[E] epoch index (0-based) of each row.
      elbo_nll: <float64>[E] −ELBO per sentence (nats).
      kl: <float64>[E] the KL term of the ELBO.
      mi: <float64>[E] mutual information I_q (NaN where the run has none).
      lr: <float64>[E] learning rate in force during that epoch.
    """

    step: np.ndarray
    epoch: np.ndarray
    elbo_nll: np.ndarray
    kl: np.ndarray
    mi: np.ndarray
    lr: np.ndarray

    @property
    def kl_aggregate(self) -> np.ndarray:
        """<float64>[E] KL(q(z) || p(z)) = kl − mi (NaN without an MI)."""
        return self.kl - self.mi


def read_curves(workdir: str | pathlib.Path, split: str = "valid") -> Curves:
    """The end-of-epoch rows of ``split`` of the run in ``workdir``.

    Missing values (a method without an MI, such as vMF) are NaN. An epoch
    validated twice (a run resumed inside its end-of-epoch work) keeps its last
    row.

    Raises:
      WorkdirError: the run has not finished an epoch.
    """
    keys = (f"{split}/elbo_nll", f"{split}/kl", f"{split}/mi", "lr")
    rows = {
        int(r["values"]["epoch"]): [
            r["step"],
            *(r["values"].get(k, np.nan) for k in keys),
        ]
        for r in writers.read_metrics(workdir)
        if r["kind"] == "scalars" and {"epoch", keys[1]} <= r["values"].keys()
    }
    if not rows:
        raise WorkdirError(
            f"{workdir}: no end-of-epoch {split}/kl in {writers.METRICS_FILE} "
            "(has the run finished an epoch?)"
        )
    epochs = sorted(rows)
    step, elbo_nll, kl, mi, lr = np.asarray([rows[e] for e in epochs], np.float64).T
    return Curves(
        step.astype(np.int64), np.asarray(epochs, np.int64), elbo_nll, kl, mi, lr
    )
