"""Posterior heads q(z|x): map the encoder's raw (mu, logvar) to the posterior.

``HEADS`` is the registry of the 'posterior head' axis of a method. The paper's
contribution is the ``bn_gaussian`` entry: batch normalisation of the mean with a
*fixed* scale gamma and a learnable shift beta, so that E[KL] >= n (gamma^2 + beta^2)/2.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import scipy.special


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
    mu, logvar = post if num is None else (post.mu[:, None], post.logvar[:, None])
    shape = mu.shape if num is None else (mu.shape[0], num, mu.shape[2])
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


# How the BN head divides by the batch spread of μ (``model.bn_remedy``):
#   'none': the paper's (x − m)/sqrt(v + eps). Its batch std is
#     γ_eff = γ·sqrt(v/(v + eps)), which falls to 0 when v ≪ eps, and so does
#     the KL bound.
#   'relative_eps': (x − m)/sqrt(v·(1 + eps)): eps relative to v, so the batch std
#     is γ/sqrt(1 + eps) at any scale of v and the bound holds by construction
#     (beyond the paper).
#   'weight_norm': the paper's BN after a μ projection whose columns have unit
#     norm (the encoder cannot shrink v by shrinking its μ weights).
# Keeps 0/0 out of a batch whose means are all equal (its normalised means are β).
_TINY = 1e-30


class BNHealth(NamedTuple):
    """What the train-mode BN head reports each step (all <float32>[])."""

    gamma_eff_min: jax.Array  # min_j of the batch std of the normalised μ_j
    gamma_eff_mean: jax.Array
    gamma_eff_ratio_min: jax.Array  # min_j γ_eff_j / γ_j (1 when healthy)
    var_min: jax.Array  # smallest pre-BN batch variance v_j
    kl_bound: jax.Array  # Σ_j (γ_j² + β_j²)/2, the paper's bound on E[KL]


def _denominator(var, eps: float, remedy: str):
    if remedy == "relative_eps":
        return var * (1.0 + eps) + _TINY
    return var + eps


def bn_health(gamma, beta, var, eps: float, remedy: str = "none") -> BNHealth:
    """The head's ``BNHealth`` from γ (scalar or [n]), β [n] and v [n].

    γ_eff, the batch std of γ(x − m)/sqrt(denominator) + β, is γ·sqrt(v/(v + eps))
    for the paper's head (v: the biased batch variance).
    """
    gamma_vec = jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), var.shape)
    g_eff = gamma_vec * jnp.sqrt(var / _denominator(var, eps, remedy))
    return BNHealth(
        gamma_eff_min=jnp.min(g_eff),
        gamma_eff_mean=jnp.mean(g_eff),
        gamma_eff_ratio_min=jnp.min(g_eff / gamma_vec),
        var_min=jnp.min(var),
        kl_bound=0.5 * jnp.sum(jnp.square(gamma_vec) + jnp.square(beta)),
    )


class FixedScaleBatchNorm(nn.Module):
    """Batch norm with a constant scale and a learnable shift, PyTorch semantics.

    Train mode normalises with the (masked) batch mean and *biased* variance and
    updates running statistics as PyTorch's ``BatchNorm1d`` does: momentum in
    PyTorch's convention and the *unbiased* batch variance in the running average.
    Eval mode uses the running statistics. Gamma is a module attribute, not a
    parameter, so no optimiser can move it, unless ``learn_gamma`` or
    ``rms_gamma`` (see ``scale``) make a learnt scale of it.

    Attributes:
      gamma: the fixed scale (with ``rms_gamma``: the RMS of the learnt scale).
      momentum: weight of the new batch statistic in the running average.
      eps: added to the variance.
      axis_name: mapped axis to reduce over when run under ``pmap``/``shard_map``.
      remedy: how the spread is divided out, one of ``config.BN_REMEDIES`` (the BN
        itself only distinguishes 'relative_eps' from the paper's v + eps).
      learn_gamma, gamma_min: a learnt scale >= gamma_min (beyond the paper).
      rms_gamma: DU-VAE's learnt scale, held at RMS gamma.

    In train mode the module sows its ``BNHealth`` (from the global batch
    statistics) into the 'intermediates' collection when that is mutable.
    """

    gamma: float
    momentum: float = 0.1
    eps: float = 1e-5
    axis_name: str | None = None
    learn_gamma: bool = False
    gamma_min: float = 0.0
    remedy: str = "none"
    rms_gamma: bool = False

    def scale(self, features: int) -> jax.Array | float:
        """γ: the constant, γ_min + softplus(raw) when learnt, or DU-VAE's scale.

        The learnt scale starts at ``gamma`` and can never go below ``gamma_min``,
        so the bound E[KL] >= n γ_min² / 2 still holds (beyond the paper).
        With ``rms_gamma`` (DU-VAE) a parameter w, started at ``gamma``, is used
        as γ = gamma·w/RMS(w): learnt per dimension, its RMS always ``gamma``, so
        Σ_j γ_j² = n·gamma² and the bound is BN-VAE's with γ = ``gamma``.
        """
        if self.rms_gamma:
            w = self.param("scale", nn.initializers.constant(self.gamma), (features,))
            return self.gamma * w * jax.lax.rsqrt(jnp.mean(jnp.square(w)))
        if not self.learn_gamma:
            return self.gamma
        y = self.gamma - self.gamma_min  # softplus(start) = y
        start = y + math.log(-math.expm1(-y))
        raw = self.param("gamma_raw", nn.initializers.constant(start), (features,))
        return self.gamma_min + jax.nn.softplus(raw)

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """Normalises <float32>[B, n] over real examples (``mask`` <float32>[B])."""
        features = x.shape[-1]
        gamma = self.scale(features)
        beta = self.param("beta", nn.initializers.zeros, (features,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, features, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, features, jnp.float32)
        if train:
            mean, var, count = masked_moments(x, mask, self.axis_name)
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
                for ra, new in ((ra_mean, mean), (ra_var, unbiased)):
                    ra.value = (1.0 - self.momentum) * ra.value + self.momentum * new
            health = bn_health(gamma, beta, var, self.eps, self.remedy)
            self.sow("intermediates", "bn_health", health)
        else:
            mean, var = ra_mean.value, ra_var.value
        denom = _denominator(var, self.eps, self.remedy)
        return gamma * (x - mean) * jax.lax.rsqrt(denom) + beta


def masked_moments(x: jax.Array, mask: jax.Array, axis_name: str | None = None):
    """Per-feature mean and biased variance over examples with mask 1.

    Returns:
      (mean <float32>[n], var <float32>[n], count <float32>[]).
    """
    psum = partial(jax.lax.psum, axis_name=axis_name) if axis_name else lambda t: t
    w = mask.astype(x.dtype)[:, None]
    total, count = psum((jnp.sum(w * x, 0), jnp.sum(w)))
    count = jnp.maximum(count, 1.0)
    mean = total / count
    # E[x²] − E[x]² loses precision when |mean| ≫ std; a second pass keeps it exact.
    return mean, psum(jnp.sum(w * jnp.square(x - mean), 0)) / count, count


class GaussianHead(nn.Module):
    """Plain diagonal Gaussian: the encoder's outputs are the posterior.

    Also the 'none' head of the language model, whose encoder outputs have
    width 0 (``latent_dim`` 0): a zero-width posterior.
    """

    def __call__(self, mu, logvar, mask, *, train: bool) -> Posterior:
        return Posterior(mu, logvar)


class BNGaussianHead(nn.Module):
    """BN-VAE: μ goes through ``bn`` (a ``FixedScaleBatchNorm``), logvar untouched.

    With ``dropout`` and ``alpha`` set (``make_head('du_gaussian')``) it is
    DU-VAE's head (Shen et al., IJCAI 2021): BN on the mean, dropout and a floor
    on the variance. From the encoder's raw outputs (m, l), per example and
    dimension j:

    - μ = γ_j (m − mean)/sqrt(var + eps) + β_j: ``bn`` as in BN-VAE (batch
      statistics in train mode, running ones in eval mode), except that with
      ``rms_gamma`` γ is learnt and rescaled at every use to RMS ``gamma``
      (γ_j = gamma·w_j/RMS(w), w starts at ``gamma``); β is learnt, starts at 0.
    - σ² = exp(l)·d_j/(1 − p) + δ², δ² = ``alpha``/(2πe). In train mode d_j is a
      Bernoulli(1 − p) draw from the 'dropout' stream (p = ``dropout``), so a
      dropped dimension has σ² = δ² exactly and a kept one exp(l)/(1 − p) + δ²;
      in eval mode (or when the apply has no 'dropout' stream) d_j/(1 − p) is
      1. With α = 1 each dimension's entropy ½ log(2πe σ²) is >= 0.

    The sample z and the closed-form Gaussian KL are taken from this posterior,
    so training uses the dropped-out variance and evaluation (ELBO, IW-NLL, MI)
    the floor without dropout. The variance terms of the KL are >= 0, so
    BN-VAE's batch bound E[KL] >= (n·gamma² + Σ_j β_j²)/2 holds here too, and
    the BN health checks, precise BN and the lag report apply unchanged.

    ``make_head``'s defaults (gamma 0.5, p 0.2, α 1) are the public code's
    README recipe for text (``--gamma 0.5 --p_drop 0.2 --delta_rate 1``, KL
    weight 0 -> 1 over 10 epochs); its argparse defaults are gamma 1.0, p_drop
    0.5, delta_rate 1.
    Where the public code (SmilesDZgk/DU-VAE) differs:

    - it adds the floor and drops variances only once the KL weight is 1, so
      during KL warm-up its head is BN on the mean alone; here both apply at
      every step (the head does not see the KL weight). With no warm-up the
      two agree;
    - it rescales the stored scale in place before each forward pass, outside
      autograd; here the rescaling is part of the function and differentiated
      through. The SGD steps on γ agree to first order in the learning rate
      while RMS(w) is ``gamma``, which it starts at and leaves only at second
      order;
    - its (m, l) projection has no bias; this library's encoder keeps one
      (BN removes it from μ; in l it is a learnt offset).
    """

    bn: FixedScaleBatchNorm
    dropout: float = 0.0
    alpha: float | None = None  # None: no floor

    @nn.compact
    def __call__(self, mu, logvar, mask, *, train: bool) -> Posterior:
        # Without a 'dropout' stream (a classifier fine-tuning μ) nothing is dropped.
        if train and self.dropout > 0 and self.has_rng("dropout"):
            keep = jax.random.bernoulli(
                self.make_rng("dropout"), 1.0 - self.dropout, logvar.shape
            )
            logvar = jnp.where(keep, logvar - math.log1p(-self.dropout), -jnp.inf)
        if self.alpha is not None:
            # log(σ² + δ²) without overflow; α = 0 (no floor) leaves logvar as it is.
            floor = jnp.log(jnp.float32(self.alpha / (2.0 * math.pi * math.e)))
            logvar = jnp.logaddexp(logvar, floor)
        return Posterior(self.bn(mu, mask, train=train), logvar)


def delta_variance_bounds(delta: float) -> tuple[float, float]:
    """The roots v_l < 1 < v_u of ln v − v + 2δ + 1 = 0 (δ-VAE).

    With c = 2δ + 1, v = −W(−e^{−c}) on the principal (v_l) and the −1 branch
    (v_u) of the Lambert W function: a closed form, no symbolic solver.
    """
    if delta <= 0:
        raise ValueError(f"delta must be positive, got {delta}")
    arg = -math.exp(-(2.0 * delta + 1.0))
    return tuple(float(-scipy.special.lambertw(arg, k).real) for k in (0, -1))


class DeltaGaussianHead(nn.Module):
    """δ-VAE (Razavi et al.) as the reference constrains it: KL_j >= δ for any input.

    From the raw outputs (m, s): σ = σ_l + (σ_u − σ_l)·1/clip(1 + e^{−s}, 1, 50),
    μ = sqrt(2δ + 1 + log σ² − σ² + max(0, m) + 1e−6), hence per-dimension
    KL = δ + max(0, m)/2 + 5e−7. (The reference's square root makes μ >= 0.)
    """

    delta: float

    def __call__(self, mu, logvar, mask, *, train: bool) -> Posterior:
        s_l, s_u = (math.sqrt(v) for v in delta_variance_bounds(self.delta))
        sigma = s_l + (s_u - s_l) / jnp.clip(1.0 + jnp.exp(-logvar), 1.0, 50.0)
        new_logvar = 2.0 * jnp.log(sigma)
        d = self.delta
        inner = 2.0 * d + 1.0 + new_logvar - jnp.square(sigma) + jax.nn.relu(mu) + 1e-6
        # ln v − v + 1 <= 0 with equality at v = 1: clamp rounding below zero.
        return Posterior(jnp.sqrt(jnp.maximum(inner, 0.0)), new_logvar)


HEADS = {
    "gaussian": GaussianHead,
    "bn_gaussian": BNGaussianHead,
    "du_gaussian": BNGaussianHead,
    "delta_gaussian": DeltaGaussianHead,
    "none": GaussianHead,
}


def make_head(
    name: str,
    *,
    gamma: float,
    momentum: float,
    eps: float,
    axis_name: str | None = None,
    learn_gamma: bool = False,
    gamma_min: float = 0.0,
    delta: float = 0.1,
    bn_remedy: str = "none",
    du_gamma: float = 0.5,
    du_dropout: float = 0.2,
    du_alpha: float = 1.0,
) -> nn.Module:
    """Builds the head named ``name`` with the hyper-parameters it uses."""
    # Unbound (parent=None): the head adopts it as its 'bn' wherever this runs.
    kw = dict(momentum=momentum, eps=eps, axis_name=axis_name, parent=None)
    if name == "du_gaussian":
        bn = FixedScaleBatchNorm(du_gamma, rms_gamma=True, **kw)
        return BNGaussianHead(bn, du_dropout, du_alpha, name="head")
    if name == "bn_gaussian":
        kw |= dict(learn_gamma=learn_gamma, gamma_min=gamma_min, remedy=bn_remedy)
        return BNGaussianHead(FixedScaleBatchNorm(gamma, **kw), name="head")
    if name == "delta_gaussian":
        return DeltaGaussianHead(delta, name="head")
    return HEADS[name](name="head")
