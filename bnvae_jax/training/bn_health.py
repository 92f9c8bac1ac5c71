"""Is BN-VAE's KL bound real in this run? Estimates, step metrics and warnings.

The bn_gaussian head divides μ by sqrt(v + eps), v the batch variance of the raw
means. Its normalised means then have batch std γ_eff = γ·sqrt(v/(v + eps)), so
the bound E[KL] >= Σ_j (γ_j² + β_j²)/2 holds only while v ≫ eps. This module
says when it does not: before training (from the init and the sizes), and
while training (from what the head reports every step).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import jax
from flax import traverse_util

from bnvae_jax.models import layers, posteriors

# Train-row names (metrics.jsonl / TensorBoard) of the head's BNHealth fields.
SCALARS = {field: f"train/bn_{field}" for field in posteriors.BNHealth._fields}
# Warn when some dimension keeps less than this fraction of its scale γ ...
GAMMA_RATIO = 0.9
# ... or when the train KL is below the bound by more than this relative slack
# (with v ≫ eps the batch KL is >= the bound up to γ_eff/γ ≈ 1 − eps/(2v)).
KL_SLACK = 0.01
# Validation warns when the raw means are estimated to start with a variance
# below this many eps (γ_eff < 0.95 γ from the first step on).
START_MARGIN = 10.0


def initial_mu_variance(model) -> float:
    """Analytic estimate of the variance over sentences of one raw μ_j at init.

    ``model``: a model config (its emb_dim, enc_hidden, enc_init, bn_remedy).

    Small-weight regime of the encoder: the LSTM gates sit near 1/2, the cell
    input g = W x (+ constant bias) varies with the embedding x, c_t ≈ c_{t−1}/2
    + g_t/2 and h ≈ c/2, so Var h ≈ Var g / 12; then μ_j = Σ_k W_jk h_k. With
    PyTorch's default init (N(0, 1) embeddings, U(±1/sqrt(H)) weights) the
    tanh saturates and this over-estimates by a few times. Measured on random
    tokens it matches within 2× for He et al.'s uniform init (E = H = 50:
    7.7e-10, 256: 2.0e-8, 512/1024: 1.6e-7) and within 1.5× for PyTorch's
    default at E = H; real text, with its frequent words, gives a few times less.

    With bn_remedy 'weight_norm' the μ projection has unit-norm columns, so
    Var μ_j is the mean Var h_k.
    """

    def uniform_var(scale):  # of U(-scale, scale)
        return scale * scale / 3.0

    scheme = layers.INIT_SCHEMES[model.enc_init]
    default = 1.0 / math.sqrt(model.enc_hidden)
    emb = scheme.embedding_uniform
    var_emb = scheme.embedding_std**2 if emb is None else uniform_var(emb)
    var_h = model.emb_dim * uniform_var(scheme.lstm_uniform or default) * var_emb / 12.0
    if model.bn_remedy == "weight_norm":
        return var_h
    return model.enc_hidden * uniform_var(scheme.linear_uniform or default) * var_h


def start_warning(model) -> str | None:
    """One line when a bn_gaussian model (a ModelConfig section) starts below eps."""
    if model.bn_remedy == "relative_eps":
        return None  # the bound does not depend on the scale of v
    v = initial_mu_variance(model)
    if v >= START_MARGIN * model.bn_eps:
        return None
    ratio = math.sqrt(v / (v + model.bn_eps))
    return (
        f"model.enc_init={model.enc_init!r} with emb_dim={model.emb_dim}, "
        f"enc_hidden={model.enc_hidden} starts the pre-BN variance of mu at about "
        f"{v:.1e}, below model.bn_eps={model.bn_eps:g}: the KL bound holds at "
        f"{ratio**2:.0%} at best (use enc_init='torch_default' or "
        "model.bn_remedy='relative_eps')"
    )


def step_metrics(updates: Mapping) -> dict[str, jax.Array]:
    """The head's BNHealth fields from a train apply's mutable 'intermediates'.

    Empty for models without a BN head. Statistics are of the global batch
    (the head reduces over the data axis), so every device reports the same.
    """
    sown = traverse_util.flatten_dict(dict(updates.get("intermediates", {})))
    found = [v for path, v in sown.items() if path[-1] == "bn_health"]
    if not found:
        return {}
    return {f"bn_{k}": v for k, v in found[-1][-1]._asdict().items()}


def host_scalars(host: Sequence[Mapping]) -> dict[str, float]:
    """Train-row scalars from the per-step metrics of one logging window.

    The scales and the smallest variance are the last step's; the bound is
    averaged over the window's examples as ``train/kl`` is, so the two compare
    even while β moves. Empty without a BN head.
    """
    if not host or "bn_kl_bound" not in host[-1]:
        return {}
    out = {name: float(host[-1][f"bn_{field}"]) for field, name in SCALARS.items()}
    count = sum(float(m["count"]) for m in host)
    bound = sum(float(m["bn_kl_bound"]) * float(m["count"]) for m in host)
    out[SCALARS["kl_bound"]] = bound / max(count, 1.0)
    return out


def warn(scalars: Mapping[str, float], last: str) -> str:
    """Logs a line when the bound's problems change; returns the new state key.

    The state key names the problems of this train row ('' when healthy, or
    without a BN head); ``last`` is the previous row's. A new set of problems
    gives one warning, recovery one info line, an unchanged set nothing.
    """
    found = {}  # problem -> its description
    ratio = scalars.get(SCALARS["gamma_eff_ratio_min"])
    if ratio is not None and ratio < GAMMA_RATIO:
        found["gamma_eff"] = (
            f"gamma_eff_min/gamma = {ratio:.3g} < {GAMMA_RATIO} (the smallest pre-BN "
            f"variance of mu, {scalars[SCALARS['var_min']]:.2g}, is near or below "
            "model.bn_eps; see model.bn_remedy)"
        )
    bound = scalars.get(SCALARS["kl_bound"])
    if ratio is not None and scalars["train/kl"] < (1.0 - KL_SLACK) * bound:
        found["kl_below_bound"] = (
            f"train KL {scalars['train/kl']:.4g} < bound "
            f"n(gamma^2+beta^2)/2 = {bound:.4g}"
        )
    key = ",".join(found)
    if key != last and found:
        problems = "; ".join(found.values())
        logging.warning("BN-VAE's KL bound does not hold: %s", problems)
    elif key != last:
        logging.info("BN-VAE's KL bound holds again (gamma_eff and train KL)")
    return key
