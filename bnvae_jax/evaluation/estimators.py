"""Estimators over posterior parameters: mutual information, active units, IW bound.

Pure functions of arrays; the passes that produce the arrays are in ``passes.py``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from bnvae_jax.models.posteriors import LOG_2PI


@jax.jit
def _aggregate_log_q(z, mu, logvar):
    """Log q(z_i) = logsumexp_m log N(z_i; mu_m, diag exp(logvar_m)) − log N."""

    def log_q(z_i):  # [n] -> []; vmapped over 64 rows of z at a time
        terms = jnp.square(z_i - mu) * jnp.exp(-logvar) + logvar + LOG_2PI  # [N, n]
        return jax.nn.logsumexp(-0.5 * jnp.sum(terms, axis=-1))

    return jax.lax.map(log_q, z, batch_size=64) - math.log(mu.shape[0])


def mutual_information_dataset(mu, logvar, key) -> float:
    """I_q(x; z) with the aggregate posterior over the whole split.

    The estimator of [BN]/[LI]: one sample z_i ~ q(z|x_i) per example, scored
    against the mixture of all N posteriors.

    Args:
      mu: <float32>[N, n] posterior means (real examples only).
      logvar: <float32>[N, n].
      key: PRNG key for the samples.
    """
    mu, logvar = jnp.asarray(mu), jnp.asarray(logvar)
    z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape)
    # E_x E_q[log q(z|x)] per example: −n/2 log 2π − ½ Σ_j (1 + logvar_j).
    neg_h = -0.5 * mu.shape[-1] * LOG_2PI - 0.5 * jnp.sum(1.0 + logvar, axis=-1)
    return float(jnp.mean(neg_h) - jnp.mean(_aggregate_log_q(z, mu, logvar)))


def mutual_information_per_batch(mu, logvar, batch_ids, key) -> float:
    """He et al.'s estimator: aggregate posterior over each batch only.

    Returns the batch-size-weighted mean of the per-batch estimates.

    Args:
      mu: <float32>[N, n] posterior means.
      logvar: <float32>[N, n] posterior log-variances.
      batch_ids: <int>[N] the evaluation batch each example belongs to.
      key: PRNG key.
    """
    mu, logvar, batch_ids = np.asarray(mu), np.asarray(logvar), np.asarray(batch_ids)
    total = 0.0
    for i, b in enumerate(np.unique(batch_ids)):
        sel, sub = batch_ids == b, jax.random.fold_in(key, i)
        total += mutual_information_dataset(mu[sel], logvar[sel], sub) * int(sel.sum())
    return total / max(len(batch_ids), 1)


def active_units(mu, threshold: float = 0.01) -> tuple[int, np.ndarray]:
    """Units whose posterior mean varies over the data: Var_x E_q[z_j] >= threshold.

    Uses the unbiased variance (N − 1), as the reference does.

    Returns:
      the count and the per-dimension variances <float64>[n].
    """
    mu = np.asarray(mu, np.float64)
    var = mu.var(axis=0, ddof=1) if mu.shape[0] > 1 else np.zeros(mu.shape[1])
    return int(np.sum(var >= threshold)), var


def log_mean_exp(log_w, axis=-1, valid=None):
    """Log (1/K) Σ_k exp(log_w_k) over the valid entries, computed stably."""
    valid = jnp.ones(jnp.shape(log_w), bool) if valid is None else valid
    log_w = jnp.where(valid, log_w, -jnp.inf)
    return jax.nn.logsumexp(log_w, axis=axis) - jnp.log(jnp.sum(valid, axis=axis))
