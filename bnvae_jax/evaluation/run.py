"""Evaluate a model on a split: ELBO, KL, PPL, MI (both estimators), AU, IW-NLL.

Used by the train loop (validation every epoch, final test) and by the standalone
``python -m bnvae_jax.evaluate``: there is one implementation of every metric.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from bnvae_jax import parallel
from bnvae_jax.config import EvalConfig
from bnvae_jax.data import batching
from bnvae_jax.evaluation import estimators, passes, sizing


def root_key(cfg: EvalConfig, run_seed: int) -> jax.Array:
    """The key every evaluation draw of a run derives from.

    ``fold_in(key(eval.seed), run_seed)``, so the noise of the ELBO, MI and
    IW-NLL estimates differs between training seeds; with
    ``eval.fold_run_seed=False``, ``key(eval.seed)`` alone (shared by all seeds).
    """
    key = jax.random.key(cfg.seed)
    return jax.random.fold_in(key, run_seed) if cfg.fold_run_seed else key


def batch_arrays(batch: batching.Batch) -> dict[str, np.ndarray]:
    """The arrays of a ``Batch`` as the dict the jitted kernels take."""
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


def plan_batches(rows, batch_size: int, bucket_width: int) -> batching.BatchPlan:
    """The reference's length-homogeneous batches, unshuffled, none dropped."""
    cfg = batching.BatchingConfig(batch_size=batch_size, bucket_width=bucket_width)
    return batching.plan_batches(rows, cfg)


def iterate_arrays(plan: batching.BatchPlan):
    """The plan's batches in order, each as ``batch_arrays`` gives it."""
    return (batch_arrays(plan.make_batch(i)) for i in range(len(plan)))


def elbo_metrics(
    model, variables, rows, key, *, batch_size, bucket_width, au_threshold, par=None
) -> dict[str, float]:
    """One-sample ELBO pass plus MI and AU (cheap; run every epoch).

    ``par``: the devices each batch is split over (default: one); a batch that
    does not divide is padded with empty rows, so results do not change.
    """
    batches = iterate_arrays(plan_batches(rows, batch_size, bucket_width))
    mi_key, batch_mi_key, pass_key = jax.random.split(key, 3)
    pp = passes.posterior_pass(model, variables, batches, pass_key, par=par)
    words, total = float(np.sum(pp.tokens)), pp.rec + pp.kl
    # No latent: no information. vMF: the Gaussian MI estimators do not apply
    # (the paper reports none either).
    mi = mi_batch = 0.0 if not pp.mu.shape[-1] else None
    if pp.mu.shape[-1] and model.family.has_variance:
        mi = estimators.mutual_information_dataset(pp.mu, pp.logvar, mi_key)
        mi_batch = estimators.mutual_information_per_batch(
            pp.mu, pp.logvar, pp.batch_id, batch_mi_key
        )
    return {
        "elbo_nll": float(np.mean(total)),
        "rec": float(np.mean(pp.rec)),
        "kl": float(np.mean(pp.kl)),
        "ppl": float(math.exp(np.sum(total) / words)),
        "mi": mi,
        "mi_batch": mi_batch,
        "au": estimators.active_units(pp.mu, au_threshold)[0],
        "num_sentences": len(pp.rec),
        "num_words": int(words),
    }


def iw_log_px(
    model, variables, rows, key, cfg: EvalConfig, bucket_width: int, par=None, **options
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sentence importance-weighted log p(x) and predicted tokens, row order.

    ``options``: ``num_samples`` (required) and ``progress``, as
    ``passes.iw_log_likelihood`` takes them; ``par``: the devices (default:
    one). Batch and chunk sizes come from ``cfg`` and the devices (results do
    not depend on them: sentence ``i`` draws from ``fold_in(key, i)``).
    """
    par = par or parallel.single_device()
    sizes = sizing.iw_sizes(cfg.iw_batch, cfg.iw_max_logits, par)
    plan = plan_batches(rows, sizes.batch, bucket_width)
    options.update(chunk=cfg.iw_chunk, total=len(plan), max_logits=sizes.max_logits)
    _, log_px, tokens = passes.iw_log_likelihood(
        model, variables, iterate_arrays(plan), key, par=par, **options
    )
    return log_px, tokens


def iw_metrics(model, variables, rows, key, cfg: EvalConfig, **kw) -> dict[str, float]:
    """Importance-weighted NLL (nats per sentence) and PPL on the first sentences.

    ``kw``: ``bucket_width``, ``progress`` and ``par``, as for ``iw_log_px``.
    """
    rows = rows[: cfg.iw_max_sentences] if cfg.iw_max_sentences > 0 else rows
    # Without a latent, log p(x) is exact with one "sample".
    samples = cfg.iw_samples if model.cfg.latent_dim else 1
    log_px, tokens = iw_log_px(
        model, variables, rows, key, cfg, num_samples=samples, **kw
    )
    return {
        "iw_nll": float(-np.mean(log_px)),
        "iw_ppl": float(math.exp(-np.sum(log_px) / np.sum(tokens))),
        "iw_sentences": len(log_px),
        "iw_samples": samples,
    }


def evaluate_split(
    model: nn.Module,
    variables: Mapping,
    rows: Sequence[np.ndarray],
    key: jax.Array,
    cfg: EvalConfig,
    *,
    batch_size: int,
    bucket_width: int,
    with_iw: bool = True,
    progress: bool = True,
    par: parallel.Parallel | None = None,
) -> dict[str, float]:
    """All metrics of a split (the ``results.json`` entry)."""
    elbo_key, iw_key = jax.random.split(key)
    shared = {"bucket_width": bucket_width, "par": par}
    elbo = {"batch_size": batch_size, "au_threshold": cfg.au_threshold}
    metrics = elbo_metrics(model, variables, rows, elbo_key, **elbo, **shared)
    if with_iw:
        metrics |= iw_metrics(
            model, variables, rows, iw_key, cfg, progress=progress, **shared
        )
    return metrics
