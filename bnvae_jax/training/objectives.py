"""Losses: how ELBO terms become the training objective (the 'KL transform' axis).

A KL transform maps the per-dimension KL <float32>[B, n] to the per-example
quantity that is weighted by the KL schedule in the loss. Reported and
selection losses always use the plain KL.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

KLTransform = Callable[[jax.Array], jax.Array]


def kl_identity(kl_dim: jax.Array) -> jax.Array:
    """The KL as it is: <float32>[B, n] -> [B]."""
    return jnp.sum(kl_dim, axis=-1)


def _above(kl: jax.Array, target: float) -> jax.Array:
    """``kl`` where it exceeds ``target``, else 0 (so no gradient below it)."""
    return jnp.where(kl > target, kl, 0.0)


def free_bits_total(target: float) -> KLTransform:
    """Free bits on the whole KL (reference ``fb=1``).

    ``1[KL_i > λ] · KL_i``: below the target the KL term is dropped, so its
    gradient is zero (gradient-equivalent to ``max(λ, KL_i)``).
    """
    return lambda kl_dim: _above(kl_identity(kl_dim), target)


def free_bits_per_dim(target: float) -> KLTransform:
    """Free bits per dimension (reference ``fb=2``, Li et al.): λ/n per dimension."""
    return lambda kl_dim: kl_identity(_above(kl_dim, target / max(kl_dim.shape[-1], 1)))


# Every entry builds a transform from the target KL λ (ignored by 'none').
KL_TRANSFORMS: dict[str, Callable[[float], KLTransform]] = {
    "none": lambda target: kl_identity,
    "free_bits": free_bits_total,
    "free_bits_dim": free_bits_per_dim,
}


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of <float32>[B] over real examples; 0 when there are none."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def vae_loss(rec, kl_dim, mask, kl_weight, kl_transform: KLTransform = kl_identity):
    """Mean over real examples of rec + β · transform(KL).

    ``rec`` <float32>[B], ``kl_dim`` [B, n], ``mask`` [B], ``kl_weight`` β (a
    scalar); returns a scalar.
    """
    return masked_mean(rec + kl_weight * kl_transform(kl_dim), mask)
