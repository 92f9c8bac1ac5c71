"""Losses: how ELBO terms become the training objective (the 'KL transform' axis)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

KLTransform = Callable[[jax.Array], jax.Array]


def kl_identity(kl_dim: jax.Array) -> jax.Array:
    """The KL as it is: <float32>[B, n] -> [B]."""
    return jnp.sum(kl_dim, axis=-1)


KL_TRANSFORMS: dict[str, Callable[..., KLTransform]] = {
    "none": lambda: kl_identity,
}


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of <float32>[B] over real examples; 0 when there are none."""
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def vae_loss(
    rec: jax.Array,
    kl_dim: jax.Array,
    mask: jax.Array,
    kl_weight: jax.Array,
    kl_transform: KLTransform = kl_identity,
) -> jax.Array:
    """Mean over real examples of rec + β · transform(KL) (SPEC §2.3)."""
    return masked_mean(rec + kl_weight * kl_transform(kl_dim), mask)
