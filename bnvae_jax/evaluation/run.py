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


def sentence_passes(
    model,
    variables,
    rows,
    key,
    cfg: EvalConfig,
    *,
    batch_size,
    bucket_width,
    iw_key=None,
    progress=False,
    par=None,
) -> tuple[passes.PosteriorPass, list[jax.Array], tuple | None]:
    """Per-sentence passes of ``rows``, in row order.

    Returns ``(pp, mi_keys, iw_result)``: the one-sample ELBO pass
    (``passes.PosteriorPass``; it draws from the third split of ``key``, the
    MI estimators from the first two) and, given ``iw_key``, ``(log_px,
    tokens, samples)``: importance-weighted log p(x) and predicted tokens of
    the first ``cfg.iw_max_sentences`` sentences (all: 0) with
    ``cfg.iw_samples`` samples (one without a latent: log p(x) is then exact),
    with a progress bar if ``progress``. ``par``: the devices each batch is
    split over (default: one; a batch that does not divide is padded with
    empty rows). IW batch and chunk sizes come from ``cfg`` and the devices;
    results do not depend on them.
    """
    par = par or parallel.single_device()
    *mi_keys, pass_key = jax.random.split(key, 3)
    batches = iterate_arrays(plan_batches(rows, batch_size, bucket_width))
    pp = passes.posterior_pass(model, variables, batches, pass_key, par=par)
    if iw_key is None:
        return pp, mi_keys, None
    rows = rows[: cfg.iw_max_sentences] if cfg.iw_max_sentences > 0 else rows
    sizes = sizing.iw_sizes(cfg.iw_batch, cfg.iw_max_logits, par)
    plan = plan_batches(rows, sizes.batch, bucket_width)
    samples = cfg.iw_samples if model.cfg.latent_dim else 1
    options = {"chunk": cfg.iw_chunk, "total": len(plan), "progress": progress}
    options.update(num_samples=samples, max_logits=sizes.max_logits, par=par)
    _, log_px, tokens = passes.iw_log_likelihood(
        model, variables, iterate_arrays(plan), iw_key, **options
    )
    return pp, mi_keys, (log_px, tokens, samples)


def evaluate_split(
    model: nn.Module,
    variables: Mapping,
    rows: Sequence[np.ndarray],
    key: jax.Array,
    cfg: EvalConfig,
    **options,
) -> dict[str, float]:
    """All metrics of a split (the ``results.json`` entry).

    The one-sample ELBO pass (drawing from ``key``) plus MI and AU, cheap
    enough for every epoch's validation; ``iw_key`` adds IW-NLL (nats per
    sentence) and IW-PPL. ``options``: those of ``sentence_passes``
    (``batch_size`` and ``bucket_width`` are required).
    """
    pp, (mi_key, batch_mi_key), iw = sentence_passes(
        model, variables, rows, key, cfg, **options
    )
    words, total = float(np.sum(pp.tokens)), pp.rec + pp.kl
    # No latent: no information. vMF: the Gaussian MI estimators do not apply
    # (the paper reports none either).
    mi = mi_batch = 0.0 if not pp.mu.shape[-1] else None
    if pp.mu.shape[-1] and model.family.has_variance:
        mi = estimators.mutual_information_dataset(pp.mu, pp.logvar, mi_key)
        mi_batch = estimators.mutual_information_per_batch(
            pp.mu, pp.logvar, pp.batch_id, batch_mi_key
        )
    metrics = {
        "elbo_nll": float(np.mean(total)),
        "rec": float(np.mean(pp.rec)),
        "kl": float(np.mean(pp.kl)),
        "ppl": float(math.exp(np.sum(total) / words)),
        "mi": mi,
        "mi_batch": mi_batch,
        "au": estimators.active_units(pp.mu, cfg.au_threshold)[0],
        "num_sentences": len(pp.rec),
        "num_words": int(words),
    }
    if iw:
        log_px, tokens, samples = iw
        metrics["iw_nll"] = float(-np.mean(log_px))
        metrics["iw_ppl"] = float(math.exp(-np.sum(log_px) / np.sum(tokens)))
        metrics |= {"iw_sentences": len(log_px), "iw_samples": samples}
    return metrics
