"""Posterior heads q(z|x): map the encoder's raw (mu, logvar) to the posterior.

``HEADS`` is the registry of the 'posterior head' axis of a method. The paper's
contribution is the ``bn_gaussian`` entry: batch normalisation of the mean with a
*fixed* scale gamma and a learnable shift beta, so that E[KL] >= n (gamma^2 + beta^2)/2.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


class Posterior(NamedTuple):
    """Diagonal Gaussian posterior parameters, each <float32>[B, n]."""

    mu: jax.Array
    logvar: jax.Array


LOG_2PI = math.log(2.0 * math.pi)


def gaussian_kl(mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """Per-dimension KL(N(mu, exp(logvar)) || N(0, 1)) = ½(mu² + σ² − log σ² − 1)."""
    return 0.5 * (jnp.square(mu) + jnp.exp(logvar) - logvar - 1.0)


def gaussian_sample(post: Posterior, key: jax.Array, num: int | None = None):
    """Reparameterised samples z = mu + σ ε: <float32>[B, n] or [B, num, n]."""
    mu, logvar = post
    if num is not None:
        mu, logvar = mu[:, None], logvar[:, None]
        shape = (post.mu.shape[0], num, post.mu.shape[1])
    else:
        shape = post.mu.shape
    eps = jax.random.normal(key, shape, mu.dtype)
    return mu + jnp.exp(0.5 * logvar) * eps


def gaussian_log_prob(post: Posterior, z: jax.Array) -> jax.Array:
    """Log q(z|x) summed over dimensions; ``z`` is [..., n] broadcast against post."""
    mu, logvar = post
    return -0.5 * jnp.sum(
        jnp.square(z - mu) * jnp.exp(-logvar) + logvar + LOG_2PI, axis=-1
    )


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    """Log N(z; 0, I) summed over the last axis."""
    return -0.5 * jnp.sum(jnp.square(z) + LOG_2PI, axis=-1)


class FixedScaleBatchNorm(nn.Module):
    """Batch norm with a constant scale and a learnable shift, PyTorch semantics.

    Train mode normalises with the (masked) batch mean and *biased* variance and
    updates running statistics as PyTorch's ``BatchNorm1d`` does: momentum in
    PyTorch's convention and the *unbiased* batch variance in the running average.
    Eval mode uses the running statistics. Gamma is a module attribute, not a
    parameter, so no optimiser can move it (SPEC §2.1).

    Attributes:
      gamma: the fixed scale.
      momentum: weight of the new batch statistic in the running average.
      eps: added to the variance.
      axis_name: mapped axis to reduce over when run under ``pmap``/``shard_map``.
    """

    gamma: float
    momentum: float = 0.1
    eps: float = 1e-5
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """Normalises <float32>[B, n] over real examples (``mask`` <float32>[B])."""
        features = x.shape[-1]
        beta = self.param("beta", nn.initializers.zeros, (features,))
        ra_mean = self.variable(
            "batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32)
        )
        ra_var = self.variable(
            "batch_stats", "var", lambda: jnp.ones((features,), jnp.float32)
        )
        if train:
            mean, var, count = masked_moments(x, mask, self.axis_name)
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        return self.gamma * (x - mean) * jax.lax.rsqrt(var + self.eps) + beta


def masked_moments(x: jax.Array, mask: jax.Array, axis_name: str | None = None):
    """Per-feature mean and biased variance over examples with mask 1.

    Returns:
      (mean <float32>[n], var <float32>[n], count <float32>[]).
    """
    w = mask.astype(x.dtype)[:, None]
    sums = jnp.stack([jnp.sum(w * x, 0), jnp.sum(w * jnp.square(x), 0)])
    count = jnp.sum(w)
    if axis_name is not None:
        sums, count = jax.lax.psum((sums, count), axis_name)
    count = jnp.maximum(count, 1.0)
    mean = sums[0] / count
    # E[x²] − E[x]² loses precision when |mean| ≫ std; a second pass keeps it exact.
    centred = w * jnp.square(x - mean)
    sq = jnp.sum(centred, 0)
    if axis_name is not None:
        sq = jax.lax.psum(sq, axis_name)
    return mean, sq / count, count


class GaussianHead(nn.Module):
    """Plain diagonal Gaussian: the encoder's outputs are the posterior."""

    @nn.compact
    def __call__(self, mu, logvar, mask, *, train: bool) -> Posterior:
        del mask, train
        return Posterior(mu, logvar)


class BNGaussianHead(nn.Module):
    """BN-VAE: the mean goes through ``FixedScaleBatchNorm``; logvar is untouched."""

    gamma: float
    momentum: float = 0.1
    eps: float = 1e-5
    axis_name: str | None = None

    @nn.compact
    def __call__(self, mu, logvar, mask, *, train: bool) -> Posterior:
        bn = FixedScaleBatchNorm(
            self.gamma, self.momentum, self.eps, self.axis_name, name="bn"
        )
        return Posterior(bn(mu, mask, train=train), logvar)


HEADS = {"gaussian": GaussianHead, "bn_gaussian": BNGaussianHead}


def make_head(
    name: str,
    *,
    gamma: float,
    momentum: float,
    eps: float,
    axis_name: str | None = None,
) -> nn.Module:
    """Builds the head named ``name`` with the hyper-parameters it uses."""
    if name == "bn_gaussian":
        return BNGaussianHead(gamma, momentum, eps, axis_name, name="head")
    return HEADS[name](name="head")
