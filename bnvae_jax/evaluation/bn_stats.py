"""Running statistics of BN-VAE's head: are they current, and precise BN.

In eval mode a BN head (bn_gaussian, du_gaussian) normalises the raw means μ
with its running mean and variance. After few training steps (a best checkpoint
from epoch 0) these lag far behind the population statistics of μ, the eval-mode
posterior means spread much less than γ, and the test KL falls below the promised
bound Σ_j (γ_j² + β_j²)/2. ``lag_report`` measures this on a split;
``precise_batch_stats`` replaces the running statistics by population statistics
from a pass over data ("precise BN", Wu & Johnson 2021).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import flax.core
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models import posteriors

# A dimension's eval-mode scale ratio outside this range, or an eval-mode bound
# below BOUND_FRACTION of the promised one, means the running statistics lag.
RATIO_RANGE = (0.9, 1.1)
BOUND_FRACTION = 0.9


class _HeadScale(posteriors.FixedScaleBatchNorm):
    """The layer's γ (``FixedScaleBatchNorm.scale``) from its parameters."""

    @nn.compact
    def __call__(self, features: int):  # noqa: D102
        return self.scale(features)


def has_bn_head(variables: Mapping) -> bool:
    """Whether ``variables`` hold running statistics of a text VAE's BN head."""
    bn = variables.get("batch_stats", {}).get("head", {}).get("bn", {})
    return "mean" in bn and "var" in bn


def head_scale_and_shift(model: nn.Module, variables: Mapping):
    """The BN head's γ (fixed, learnt, or DU-VAE's) and β, each <float64>[n]."""
    cfg = model.cfg
    bn_params = variables["params"]["head"]["bn"]
    du = cfg.head == "du_gaussian"
    layer = _HeadScale(
        cfg.du_gamma if du else cfg.gamma,
        learn_gamma=cfg.learn_gamma,
        gamma_min=cfg.gamma_min,
        rms_gamma=du,
    )
    beta = np.asarray(bn_params["beta"], np.float64)
    gamma = layer.apply({"params": bn_params}, beta.shape[0])
    return np.broadcast_to(np.asarray(gamma, np.float64), beta.shape), beta


def promised_bound(model: nn.Module, variables: Mapping) -> float | None:
    """BN-VAE's bound Σ_j (γ_j² + β_j²)/2 on E[KL]; None without a BN head."""
    if not has_bn_head(variables):
        return None
    gamma, beta = head_scale_and_shift(model, variables)
    return float(np.sum(gamma**2 + beta**2) / 2)


@functools.partial(jax.jit, static_argnames="model")
def _raw_moments(model, variables, tokens, lengths, mask):
    """Mean and biased variance of the raw μ (before the head) over real rows."""
    mu = model.apply(variables, tokens, lengths, method=lambda m, *a: m.encoder(*a)[0])
    return posteriors.masked_moments(mu, mask)


def _population_moments(
    model, variables, rows, batch_size, bucket_width, max_sentences=0
):
    """Count, mean, biased and unbiased variance <float64>[n] of the raw μ.

    Batch moments over real rows (padding examples excluded) are merged in float64
    with Chan et al.'s pairwise update.
    """
    if not has_bn_head(variables):
        raise ValueError("the variables hold no running statistics of a BN head")
    rows = list(rows[:max_sentences] if max_sentences > 0 else rows)
    if not rows:
        raise ValueError("no rows to estimate the statistics of μ from")
    plan = eval_run.plan_batches(rows, batch_size, bucket_width)
    count, mean, m2 = 0.0, 0.0, 0.0
    for i in range(len(plan)):
        b = plan.make_batch(i)
        b_mean, b_var, _ = _raw_moments(model, variables, b.tokens, b.lengths, b.mask)
        n_b, b_mean = float(b.num_real), np.asarray(b_mean, np.float64)
        delta, total = b_mean - mean, count + n_b
        mean = mean + delta * n_b / total
        m2 = m2 + np.asarray(b_var, np.float64) * n_b + delta**2 * count * n_b / total
        count = total
    return count, mean, m2 / count, m2 / max(count - 1.0, 1.0)


def precise_batch_stats(
    model, variables, rows, *, batch_size, bucket_width, max_sentences=0
) -> Mapping:
    """Replaces the head's running statistics by population statistics of μ.

    Args:
      model: the ``TextVAE`` with a BN head (bn_gaussian or du_gaussian).
      variables: its variables ({'params', 'batch_stats'}); not modified.
      rows: <int32>[L+2] id rows ``<s> w.. </s>``.
      batch_size: sentences per batch of the pass.
      bucket_width: the time axis is padded to a multiple of this.
      max_sentences: when > 0, only the first this many rows are used.

    Returns:
      The same tree with running mean and var replaced by the mean and the
      *unbiased* variance of the raw μ over the (real) rows, as PyTorch's
      running variance estimates it.
    """
    _, mean, _, var = _population_moments(
        model, variables, rows, batch_size, bucket_width, max_sentences
    )
    new = flax.core.unfreeze(variables)
    bn = new["batch_stats"]["head"]["bn"]
    bn["mean"] = jnp.asarray(mean, bn["mean"].dtype)
    bn["var"] = jnp.asarray(var, bn["var"].dtype)
    return flax.core.freeze(new) if isinstance(variables, flax.core.FrozenDict) else new


@dataclasses.dataclass(frozen=True)
class LagReport:
    """How far eval mode's running statistics are from μ's population statistics.

    Attributes:
      num_sentences: rows the population statistics come from.
      scale_ratio_min: min over dimensions of sqrt(v / d(v_r)): the eval-mode
        spread of the normalised means in units of γ (v the unbiased population
        variance of μ, d the layer's denominator, v + eps for the paper's head).
      scale_ratio_max: the max over dimensions.
      eval_bound: Σ_j (γ_j² v_j/d(v_r,j) + (β_j + γ_j (m_j − m_r,j)/sqrt(d(v_r,j)))²)/2
        with the biased variance v over the rows: the rows' average of
        Σ_j μ̂_j²/2 for the eval-mode means μ̂, a lower bound of their eval KL.
      promised_bound: Σ_j (γ_j² + β_j²)/2, the bound BN-VAE promises.
      message: one line naming the fix when the statistics lag, else None.
    """

    num_sentences: int
    scale_ratio_min: float
    scale_ratio_max: float
    eval_bound: float
    promised_bound: float
    message: str | None


def lag_report(
    model: nn.Module, variables: Mapping, rows: Sequence[np.ndarray], **sizes
) -> LagReport:
    """Compares the head's running statistics with μ's statistics over ``rows``.

    Arguments as for ``precise_batch_stats`` (``sizes``: batch_size,
    bucket_width, max_sentences). Uses the head's own γ (learnt for
    ``learn_gamma``) and denominator (``bn_remedy``).
    """
    count, mean, biased, unbiased = _population_moments(model, variables, rows, **sizes)
    cfg = model.cfg
    gamma, beta = head_scale_and_shift(model, variables)
    stats = variables["batch_stats"]["head"]["bn"]
    m_r = np.asarray(stats["mean"], np.float64)

    def denominator(v):
        return np.asarray(posteriors._denominator(v, cfg.bn_eps, cfg.bn_remedy))

    d_r = denominator(np.asarray(stats["var"], np.float64))
    ratio = np.sqrt(unbiased / d_r)
    shift = beta + gamma * (mean - m_r) / np.sqrt(d_r)
    eval_bound = float(np.sum(gamma**2 * biased / d_r + shift**2) / 2)
    promised = promised_bound(model, variables)
    message = None
    lagging = ratio.min() < RATIO_RANGE[0] or ratio.max() > RATIO_RANGE[1]
    if lagging or eval_bound < BOUND_FRACTION * promised:
        message = (
            f"BN running statistics lag the population statistics of the raw "
            f"posterior means over {int(count)} sentences: eval-mode scale ratio "
            f"in [{ratio.min():.3g}, {ratio.max():.3g}] (1 when current), "
            f"eval-mode KL bound {eval_bound:.3g} vs promised {promised:.3g}; "
            "recompute them with precise BN (evaluate --precise_bn, or "
            "model.recompute_bn(training_sentences) in Python)"
        )
        if np.sqrt(unbiased / denominator(unbiased)).min() < RATIO_RANGE[0]:
            message += "; μ's variance is near eps too, see model.bn_remedy"
    ratios = float(ratio.min()), float(ratio.max())
    return LagReport(int(count), *ratios, eval_bound, promised, message)
