"""Jitted passes over a split: one-sample ELBO pass and importance-weighted bound.

Every pass runs the model in eval mode (BN running statistics, no dropout) and
returns per-example arrays for real examples only, in corpus order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from bnvae_jax import parallel
from bnvae_jax.evaluation import estimators
from bnvae_jax.models import svi


@dataclasses.dataclass(frozen=True)
class PosteriorPass:
    """Per-example results of one eval-mode pass, real examples in corpus order.

    Attributes:
      index: <int>[N] sentence ids.
      batch_id: <int>[N] which evaluation batch each sentence was in.
      mu: <float32>[N, n] posterior location (after the head; the mean
        direction for vMF).
      logvar: <float32>[N, n] log-variances (NaN for posteriors without one).
      rec: <float32>[N] −log p(x|z) for one posterior sample.
      kl: <float32>[N] KL(q(z|x) || p(z)).
      tokens: <int>[N] predicted tokens per sentence (words + </s>).
    """

    index: np.ndarray
    batch_id: np.ndarray
    mu: np.ndarray
    logvar: np.ndarray
    rec: np.ndarray
    kl: np.ndarray
    tokens: np.ndarray


def example_keys(key: jax.Array, index) -> jax.Array:
    """Each row's key ``fold_in(key, i)`` for its sentence ``i`` (padding: 0)."""
    index = jnp.maximum(jnp.asarray(index), 0)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)


@functools.partial(jax.jit, static_argnames=("model", "sample"))
def posterior_codes(variables, key, tokens, lengths, mask, index, *, model, sample):
    """Eval-mode posterior locations of a batch, or samples z ~ q(z|x) (``sample``).

    The location is the mean after the head, vMF's mean direction, SA-VAE's
    refined posterior. Row ``i`` draws from ``fold_in(key, index_i)``.
    """
    keys = example_keys(key, index)
    post = svi.eval_posterior(model, variables, tokens, lengths, mask, keys)
    family = model.family
    return family.sample_rows(post, keys) if sample else family.location(post)


def _rows(batch):
    return batch["tokens"], batch["lengths"], batch["mask"], batch["index"]


def _real(batch, **per_row) -> dict[str, np.ndarray]:
    """Per-row results of a batch's real rows, with corpus ids and tokens."""
    real = np.asarray(batch["mask"]) > 0
    per_row.update(index=batch["index"], tokens=np.asarray(batch["lengths"]) - 1)
    return {name: np.asarray(v)[real] for name, v in per_row.items()}


def _corpus_order(chunks: list[dict]) -> dict:
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    order = np.argsort(merged["index"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def _elbo_kernel(variables, key, tokens, lengths, mask, index, *, model):
    family = model.family
    keys = example_keys(key, index)
    post = svi.eval_posterior(model, variables, tokens, lengths, mask, keys)
    z = family.sample_rows(post, keys)
    rec = model.apply(
        variables, tokens, lengths, z, train=False, method="reconstruction"
    )
    location = family.location(post)
    logvar = post.logvar if family.has_variance else jnp.full_like(location, jnp.nan)
    return location, logvar, rec, jnp.sum(family.kl(post), -1)


def posterior_pass(model, variables, batches, key, par=None) -> PosteriorPass:
    """Encodes every batch (eval mode) and scores one posterior sample per sentence.

    Args:
      model: the ``TextVAE``.
      variables: {'params', 'batch_stats'}.
      batches: dicts with tokens, lengths, mask and index (corpus ids, −1 padding).
      key: PRNG key; sentence ``i`` uses ``fold_in(key, i)`` so results do not
        depend on how sentences are batched (or on the devices).
      par: the devices the batches are split over (default: one).
    """
    kernel = _jitted(_elbo_kernel, model, par=par or parallel.single_device())
    chunks = []
    for b_id, batch in enumerate(batches):
        out = dict(
            zip(("mu", "logvar", "rec", "kl"), kernel(variables, key, *_rows(batch)))
        )
        chunks.append(_real(batch, batch_id=np.full(len(batch["mask"]), b_id), **out))
    return PosteriorPass(**_corpus_order(chunks))


def _iw_kernel(
    variables, key, tokens, lengths, mask, index, *, model, num_samples, chunk
):
    """Log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x) for each row.

    Samples are drawn in ``ceil(K / chunk)`` sequential chunks; within a chunk the
    per-sample log weight is vmapped over samples, so the decoder sees one batch
    of ``rows × chunk`` sequences.
    """
    family = model.family
    keys = example_keys(key, index)
    post = svi.eval_posterior(model, variables, tokens, lengths, mask, keys)

    def log_weight(z):  # z: [B, n] -> [B]
        rec = model.apply(
            variables, tokens, lengths, z, train=False, method="reconstruction"
        )
        return -rec + family.prior_log_prob(z) - family.log_prob(post, z)

    # Sample k of sentence i uses fold_in(key_i, k): chunking changes nothing.
    fold = jax.vmap(jax.random.fold_in, (0, None))

    def one_chunk(c):
        sample = jax.vmap(lambda k: family.sample_rows(post, fold(keys, k)), out_axes=1)
        z = sample(c * chunk + jnp.arange(chunk))  # [B, chunk, n]
        return jax.vmap(log_weight, in_axes=1, out_axes=1)(z)  # [B, chunk]

    # [C, B, chunk] for C = ceil(K / chunk) chunks
    log_w = jax.lax.map(one_chunk, jnp.arange(-(-num_samples // chunk)))
    log_w = jnp.moveaxis(log_w, 0, 1).reshape(tokens.shape[0], -1)
    valid = jnp.arange(log_w.shape[1]) < num_samples
    return (estimators.log_mean_exp(log_w, axis=-1, valid=valid[None, :]),)


def sample_chunk(num_samples: int, chunk: int, fit: int) -> int:
    """The largest divisor of ``num_samples`` that is <= ``chunk`` and ``fit``.

    A divisor wastes no decoder work on padding samples; results do not depend
    on the chunk because every sample has its own key.
    """
    limit = max(1, min(chunk, fit, num_samples))
    return max(d for d in range(1, limit + 1) if num_samples % d == 0)


@functools.lru_cache(maxsize=32)
def _jitted(kernel, model, *, par, **sizes):
    """One compiled ``kernel`` per (model, sizes, devices); shapes recompile.

    The result takes ``(variables, key, tokens, lengths, mask, index)`` as numpy
    batches of any size and returns numpy per-row results.
    """
    return par.map_rows(functools.partial(kernel, model=model, **sizes), 4)


def iw_log_likelihood(
    model: nn.Module,
    variables: Mapping,
    batches: Iterable[Mapping[str, np.ndarray]],
    key: jax.Array,
    *,
    num_samples: int,
    chunk: int,
    progress: bool = True,
    total: int | None = None,
    max_logits: int = 1 << 26,
    par: parallel.Parallel | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importance-weighted log p(x) for every sentence.

    Args:
      model: the ``TextVAE``.
      variables: {'params', 'batch_stats'}.
      batches: dicts with tokens, lengths, mask, index.
      key: PRNG key; sentence ``i`` draws from ``fold_in(key, i)``.
      num_samples: K importance samples per sentence.
      chunk: at most this many samples are decoded together.
      progress: show a tqdm bar over batches.
      total: number of batches, for the progress bar.
      max_logits: memory bound: the chunk shrinks so that one chunk's logits
        (sentences × samples × time × vocabulary floats) stay below this on
        each device.
      par: the devices the batches are split over (default: one).

    Returns:
      (index, log_px, tokens): corpus ids <int>[N], log p(x) <float64>[N] and
      predicted tokens per sentence <int>[N], sorted by index.
    """
    par = par or parallel.single_device()
    chunks = []
    for batch in tqdm.tqdm(
        batches, total=total, desc="IW-NLL", unit="batch", disable=not progress
    ):
        rows, width = batch["tokens"].shape
        rows = par.padded(rows) // par.num_devices  # per device
        fit = max_logits // max(rows * width * model.cfg.vocab_size, 1)
        per_chunk = sample_chunk(num_samples, chunk, fit)
        sizes = {"num_samples": num_samples, "chunk": per_chunk}
        kernel = _jitted(_iw_kernel, model, par=par, **sizes)
        (log_px,) = kernel(variables, key, *_rows(batch))
        chunks.append(_real(batch, log_px=np.asarray(log_px, np.float64)))
    merged = _corpus_order(chunks)
    return merged["index"], merged["log_px"], merged["tokens"]
