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


def series_from_records(records: list[dict], split: str = "valid") -> Series:
    """The curves of ``split`` from ``writers.read_metrics`` records.

    Records without both ``{split}/kl`` and ``{split}/mi`` are skipped (training
    scalars, or methods without an MI, such as vMF).
    """
    kl_key, mi_key = f"{split}/kl", f"{split}/mi"
    rows = [
        (
            r["step"],
            r["values"].get("epoch", -1),
            r["values"][kl_key],
            r["values"][mi_key],
        )
        for r in records
        if r["kind"] == "scalars" and kl_key in r["values"] and mi_key in r["values"]
    ]
    step, epoch, kl, mi = (
        (np.asarray(c) for c in zip(*rows)) if rows else [np.zeros(0)] * 4
    )
    kl, mi = kl.astype(np.float64), mi.astype(np.float64)
    return Series(
        step=step.astype(np.int64),
        epoch=epoch.astype(np.int64),
        kl=kl,
        mi=mi,
        kl_aggregate=kl - mi,
    )


def read_series(workdir: str | pathlib.Path, split: str = "valid") -> Series:
    """The curves of the run in ``workdir`` (WorkdirError before any validation)."""
    return writers.read_rows(
        workdir,
        split,
        series_from_records,
        f"{split}/kl and {split}/mi (has the run validated yet?)",
    )
