"""Training dynamics of a run (BN-VAE Fig. 3) from the metrics it wrote.

At every validation the train loop writes ``valid/kl`` (the KL term of the
ELBO, E_x KL(q(z|x) || p(z))) and ``valid/mi`` (I_q(x; z), dataset-level
estimator). Their difference is the distance of the aggregate posterior from
the prior: KL(q(z) || p(z)) = E_x KL(q(z|x) || p(z)) − I_q (paper Eq. 4).
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from bnvae_jax.errors import WorkdirError
from bnvae_jax.training import writers


@dataclasses.dataclass(frozen=True)
class Series:
    """One run's validation curves, ordered by training step.

    Attributes:
      step: <int64>[E] training step of each validation.
      epoch: <int64>[E] its epoch.
      kl: <float64>[E] KL term of the ELBO (nats per sentence).
      mi: <float64>[E] mutual information I_q.
      kl_aggregate: <float64>[E] KL(q(z) || p(z)) = kl − mi.
    """

    step: np.ndarray
    epoch: np.ndarray
    kl: np.ndarray
    mi: np.ndarray
    kl_aggregate: np.ndarray


def read_series(workdir: str | pathlib.Path, split: str = "valid") -> Series:
    """The curves of ``split`` of the run in ``workdir``.

    Records without both ``{split}/kl`` and ``{split}/mi`` are skipped (training
    scalars, or methods without an MI, such as vMF).

    Raises:
      WorkdirError: the run has not validated yet.
    """
    keys = (f"{split}/kl", f"{split}/mi")
    rows = [
        (r["step"], r["values"].get("epoch", -1), *(r["values"][k] for k in keys))
        for r in writers.read_metrics(workdir)
        if r["kind"] == "scalars" and set(keys) <= r["values"].keys()
    ]
    if not rows:
        raise WorkdirError(
            f"{workdir}: no {split}/kl and {split}/mi in {writers.METRICS_FILE} "
            "(has the run validated yet?)"
        )
    step, epoch, kl, mi = np.asarray(rows, np.float64).T
    return Series(step.astype(np.int64), epoch.astype(np.int64), kl, mi, kl - mi)
