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

from bnvae_jax.config import require_choice
from bnvae_jax.training.objectives import masked_mean

# How the extra prior KL is weighted: by the KL annealing weight, or always 1.
PRIOR_KL_SCHEDULES = ("annealed", "constant")


@dataclasses.dataclass(frozen=True)
class DialogMethod:
    """A dialog method: the recognition head and the extra loss terms.

    Attributes:
      head: ``models.posteriors.HEADS`` key for q(z|c, y)'s mean.
      terms: extra terms added to the loss, of ``bow`` and ``prior_kl``.
    """

    head: str
    terms: tuple[str, ...] = ()


DIALOG_METHODS: dict[str, DialogMethod] = {
    "cvae": DialogMethod("gaussian"),
    "cvae_bow": DialogMethod("gaussian", ("bow",)),
    "bn_cvae": DialogMethod("bn_gaussian", ("prior_kl",)),
}


def get_method(name: str) -> DialogMethod:
    """The row of ``name``; a one-line ``ConfigError`` for another name."""
    require_choice("method", name, DIALOG_METHODS)
    return DIALOG_METHODS[name]


def method_loss(
    method: DialogMethod,
    terms,
    mask: jax.Array,
    kl_weight: jax.Array,
    prior_kl_weight: jax.Array,
) -> jax.Array:
    """The minimised loss of ``method`` (mean over real examples).

    Args:
      method: which extra terms to add.
      terms: the model's per-example terms <float32>[B] (``rec``, ``kl``,
        ``prior_kl`` and ``bow``, as ``CVAEOutput`` has them).
      mask: <float32>[B] 1 on real examples.
      kl_weight: annealing weight w(t) on KL(q‖p).
      prior_kl_weight: weight of KL(p‖N(0, I)) (used by ``prior_kl`` only).
    """
    weights = {"bow": 1.0, "prior_kl": prior_kl_weight}
    per_example = terms.rec + kl_weight * terms.kl
    for term in method.terms:
        per_example = per_example + weights[term] * getattr(terms, term)
    return masked_mean(per_example, mask)
