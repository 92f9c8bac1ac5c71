"""Latent families: what every pass needs to know about q(z|x) and p(z).

A head (``posteriors.HEADS``, ``DirectionHead``) returns posterior parameters; the
family of that head says how to sample from them, score a latent under q and p,
and what the KL is. The model, the train step and the evaluation package only
talk to a ``LatentFamily``, so a new kind of latent is one new entry here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnvae_jax.models import posteriors, vmf


class DirectionPosterior(NamedTuple):
    """vMF posterior parameters: the unit mean direction <float32>[B, n] (κ fixed)."""

    mu_dir: jax.Array


class DirectionHead(nn.Module):
    """vMF head: the first half of the encoder's outputs, normalised.

    The second half (the encoder's 'logvar' slot) is unused, as in the reference.
    """

    def __call__(self, mu, logvar, mask, *, train: bool) -> DirectionPosterior:
        return DirectionPosterior(vmf.normalize_direction(mu))


@dataclasses.dataclass(frozen=True)
class LatentFamily:
    """Functions over one kind of posterior (all pure, jit- and vmap-safe).

    Attributes:
      sample: (post, key) -> z <float32>[B, n], one sample per row.
      log_prob: (post, z [B, n]) -> log q(z|x) <float32>[B].
      prior_log_prob: z [..., n] -> log p(z).
      prior_sample: (key, num, dim) -> z [num, dim].
      kl: post -> <float32>[B, k] KL(q || p) in k >= 0 parts that sum to the KL
        (k = n for diagonal Gaussians).
      has_variance: whether the posterior has a diagonal log-variance (the
        MI estimators need one).
    """

    sample: Callable[[Any, jax.Array], jax.Array]
    log_prob: Callable[[Any, jax.Array], jax.Array]
    prior_log_prob: Callable[[jax.Array], jax.Array]
    prior_sample: Callable[[jax.Array, int, int], jax.Array]
    kl: Callable[[Any], jax.Array]
    has_variance: bool

    def sample_rows(self, post, keys: jax.Array) -> jax.Array:
        """Z [B, n] with row i drawn from keys[i] (<key>[B]).

        Evaluation uses it: results do not depend on how rows are batched.
        """

        def row(p, key):
            return self.sample(jax.tree.map(lambda x: x[None], p), key)[0]

        return jax.vmap(row)(post, keys)

    def location(self, post) -> jax.Array:
        """The posterior's location <float32>[B, n] (AU, features): μ or μ̂."""
        return post[0]


# Also the family of the 'none' head, whose zero-width posterior it handles.
GAUSSIAN = LatentFamily(
    sample=posteriors.gaussian_sample,
    log_prob=posteriors.gaussian_log_prob,
    prior_log_prob=posteriors.standard_normal_log_prob,
    prior_sample=lambda key, num, dim: jax.random.normal(key, (num, dim)),
    kl=lambda post: posteriors.gaussian_kl(*post),
    has_variance=True,
)


def vmf_family(kappa: float, dim: int, kl_formula: str) -> LatentFamily:
    """VMF posterior with fixed κ and the uniform prior on the sphere S^{n−1}."""
    kl_value = float(vmf.VMF_KL[kl_formula](kappa, dim))
    return LatentFamily(
        sample=lambda post, key: vmf.sample_vmf(key, post.mu_dir, kappa),
        log_prob=lambda post, z: vmf.vmf_log_prob(z, post.mu_dir, kappa),
        prior_log_prob=vmf.uniform_sphere_log_prob,
        prior_sample=lambda key, num, d: vmf.prior_sample(key, (num,), d),
        # A constant: no gradient reaches the encoder through the KL.
        kl=lambda post: jnp.full((post.mu_dir.shape[0], 1), kl_value, jnp.float32),
        has_variance=False,
    )
