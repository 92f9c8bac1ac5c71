"""The dialog methods as rows (head + extra loss terms) and their training loss.

* ``cvae``: ``rec + w(t)·KL(q‖p)`` (Zhao et al. 2017, KL annealing).
* ``cvae_bow``: the same plus the bag-of-words loss (Zhao et al.'s CVAE+BOW).
* ``bn_cvae``: BN (fixed γ, learnable β) on the recognition mean and the extra
  ``KL(p(z|c) ‖ N(0, I))`` of paper Eq. 11: minimise
  ``rec + w(t)·KL(q'‖p) + w_p(t)·KL(p‖N(0, I))``. With ``w = w_p = 1`` the two
  KLs sum to paper Eq. 12 with the constant −2 (the paper prints −1; the
  reference code computes −2).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from bnvae_jax.errors import ConfigError

# Extra terms a method may add to the annealed ELBO.
EXTRA_TERMS = ("bow", "prior_kl")
# How the extra prior KL is weighted: by the KL annealing weight, or always 1.
PRIOR_KL_SCHEDULES = ("annealed", "constant")


@dataclasses.dataclass(frozen=True)
class DialogMethod:
    """A dialog method: the recognition head and the extra loss terms.

    Attributes:
      head: ``models.posteriors.HEADS`` key for q(z|c, y)'s mean.
      terms: entries of ``EXTRA_TERMS`` added to the loss.
      description: one line for listings.
    """

    head: str
    terms: tuple[str, ...] = ()
    description: str = ""


DIALOG_METHODS: dict[str, DialogMethod] = {
    "cvae": DialogMethod("gaussian", (), "CVAE with KL annealing (Zhao et al.)"),
    "cvae_bow": DialogMethod(
        "gaussian", ("bow",), "CVAE + bag-of-words loss (Zhao et al.)"
    ),
    "bn_cvae": DialogMethod(
        "bn_gaussian",
        ("prior_kl",),
        "BN-CVAE: BN on the recognition mean + KL(p(z|c)||N(0,I)) (paper §4)",
    ),
}


def get_method(name: str) -> DialogMethod:
    if name not in DIALOG_METHODS:
        raise ConfigError(
            f"method {name!r} is not a dialog method; choose one of "
            f"{', '.join(DIALOG_METHODS)}"
        )
    return DIALOG_METHODS[name]


@dataclasses.dataclass(frozen=True)
class LossTerms:
    """Per-example terms <float32>[B] and the real-example mask <float32>[B]."""

    rec: jax.Array
    kl: jax.Array
    prior_kl: jax.Array
    bow: jax.Array
    mask: jax.Array


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def elbo(terms: LossTerms) -> jax.Array:
    """The CVAE's negative ELBO, mean over real examples: rec + KL(q‖p)."""
    return masked_mean(terms.rec + terms.kl, terms.mask)


def method_loss(
    method: DialogMethod,
    terms: LossTerms,
    kl_weight: jax.Array,
    prior_kl_weight: jax.Array,
) -> jax.Array:
    """The minimised loss of ``method`` (mean over real examples).

    Args:
      method: which extra terms to add.
      terms: the model's per-example terms.
      kl_weight: annealing weight w(t) on KL(q‖p).
      prior_kl_weight: weight of KL(p‖N(0, I)) (used by ``prior_kl`` only).
    """
    per_example = terms.rec + kl_weight * terms.kl
    if "bow" in method.terms:
        per_example = per_example + terms.bow
    if "prior_kl" in method.terms:
        per_example = per_example + prior_kl_weight * terms.prior_kl
    return masked_mean(per_example, terms.mask)


def bn_cvae_kl(mu_q, logvar_q, mu_p, logvar_p) -> jax.Array:
    """Paper Eq. 12 with the constant −2: KL(q‖p) + KL(p‖N(0, I)), <float32>[...].

    ½ Σ_j [(σ_q² + (μ_q − μ_p)²)/σ_p² + σ_p² + μ_p² − log σ_q² − 2].
    """
    return 0.5 * jnp.sum(
        (jnp.exp(logvar_q) + jnp.square(mu_q - mu_p)) * jnp.exp(-logvar_p)
        + jnp.exp(logvar_p)
        + jnp.square(mu_p)
        - logvar_q
        - 2.0,
        axis=-1,
    )
