"""Precise BN statistics and the lag report of BN-VAE's head, against numpy."""

import flax.core
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax import config as config_lib
from bnvae_jax.data import batching
from bnvae_jax.evaluation import bn_stats
from bnvae_jax.models import vae as vae_lib

VOCAB = 20
NUM_ROWS = 37  # not a multiple of the batch size: the pass sees padding rows
BATCH = 8
BUCKET = 4
BETA = np.array([0.1, -0.2, 0.3, 0.0], np.float32)


def _model_config(method="bn_vae", **model):
    config = config_lib.default_config()
    config.method = method
    config.model.emb_dim = 8
    config.model.enc_hidden = 16
    config.model.dec_hidden = 16
    config.model.latent_dim = 4
    config.model.update(model)
    return config_lib.resolve(config, VOCAB).model


def _rows(num, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for length in rng.integers(4, 11, num):  # L+2 = 4..10: several batch widths
        words = rng.integers(4, VOCAB, length - 2)
        rows.append(np.concatenate([[1], words, [2]]).astype(np.int32))
    return rows


def _padded(rows):
    """All rows as one batch (the encoder reads each row at its true end)."""
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), np.int32)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    lengths = np.array([len(r) for r in rows], np.int32)
    return tokens, lengths, np.ones(len(rows), np.float32)


def _build(seed=0, **model_overrides):
    cfg = _model_config(**model_overrides)
    model = vae_lib.TextVAE(cfg)
    tokens, lengths, mask = _padded(_rows(3))
    k = jax.random.key(seed)
    variables = flax.core.unfreeze(
        model.init(
            {"params": k, "sample": k, "dropout": k},
            tokens,
            lengths,
            mask,
            train=False,
        )
    )
    # Spread the raw means well above eps (v ≈ 1e-4 at this tiny init).
    to_latent = variables["params"]["encoder"]["to_latent"]
    to_latent["kernel"] = 30.0 * to_latent["kernel"]
    if "bn" in variables["params"].get("head", {}):
        bn = variables["params"]["head"]["bn"]
        bn["beta"] = jnp.asarray(BETA)
        if "gamma_raw" in bn:
            bn["gamma_raw"] = jnp.asarray([-1.0, 0.0, 0.5, 1.0])
    return model, variables


def _raw_mu(model, variables, rows):
    tokens, lengths, _ = _padded(rows)
    mu = model.apply(
        variables, tokens, lengths, method=lambda m, t, n: m.encoder(t, n)[0]
    )
    return np.asarray(mu, np.float64)


def _eval_posterior(model, variables, rows):
    post = model.apply(variables, *_padded(rows), train=False, method="encode")
    return np.asarray(post.mu, np.float64), np.asarray(post.logvar, np.float64)


def _with_stats(variables, mean, var):
    new = flax.core.unfreeze(variables)
    new["batch_stats"]["head"]["bn"]["mean"] = jnp.asarray(mean, jnp.float32)
    new["batch_stats"]["head"]["bn"]["var"] = jnp.asarray(var, jnp.float32)
    return new


@pytest.fixture(scope="module")
def bn_vae():
    model, variables = _build()
    rows = _rows(NUM_ROWS, seed=1)
    mu = _raw_mu(model, variables, rows)
    # The test's approximations (ratio ≈ 0.1, ≈ 1) assume v ≫ eps.
    assert mu.var(0).min() > 1e3 * model.cfg.bn_eps
    return model, variables, rows, mu


def _precise(model, variables, rows, **kwargs):
    return bn_stats.precise_batch_stats(
        model, variables, rows, batch_size=BATCH, bucket_width=BUCKET, **kwargs
    )


def _report(model, variables, rows):
    return bn_stats.lag_report(
        model, variables, rows, batch_size=BATCH, bucket_width=BUCKET
    )


def test_has_bn_head(bn_vae):
    _, variables, _, _ = bn_vae
    assert bn_stats.has_bn_head(variables)
    assert bn_stats.has_bn_head(flax.core.freeze(variables))
    _, gaussian = _build(method="vae")
    assert not bn_stats.has_bn_head(gaussian)
    assert not bn_stats.has_bn_head({"params": {}})


def test_precise_stats_are_population_stats_of_raw_mu(bn_vae):
    model, variables, rows, mu = bn_vae
    before = jax.tree.map(np.array, variables)
    bn_stats._raw_moments.clear_cache()
    new = _precise(model, variables, rows)
    stats = new["batch_stats"]["head"]["bn"]
    np.testing.assert_allclose(stats["mean"], mu.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(stats["var"], mu.var(0, ddof=1), rtol=1e-4)
    # Parameters and the input tree are untouched.
    jax.tree.map(np.testing.assert_array_equal, new["params"], before["params"])
    jax.tree.map(np.testing.assert_array_equal, variables, before)
    # One compilation per batch shape of the pass.
    plan = batching.plan_batches(rows, batching.BatchingConfig(BATCH, BUCKET))
    assert len(plan.shapes()) > 1
    assert bn_stats._raw_moments._cache_size() == len(plan.shapes())
    # max_sentences: the first rows only.
    first = _precise(model, variables, rows, max_sentences=10)
    stats = first["batch_stats"]["head"]["bn"]
    np.testing.assert_allclose(stats["var"], mu[:10].var(0, ddof=1), rtol=1e-4)


def test_eval_mode_means_after_precise_stats(bn_vae):
    model, variables, rows, mu = bn_vae
    new = _precise(model, variables, rows)
    post_mu, _ = _eval_posterior(model, new, rows)
    n, v, eps, gamma = NUM_ROWS, mu.var(0, ddof=1), model.cfg.bn_eps, model.cfg.gamma
    expected_std = gamma * np.sqrt((n - 1) / n) / np.sqrt(1 + eps / v)
    np.testing.assert_allclose(post_mu.std(0), expected_std, rtol=1e-4)
    np.testing.assert_allclose(post_mu.mean(0), BETA, atol=1e-5)


def test_lag_report_on_lagging_and_precise_stats(bn_vae):
    model, variables, rows, mu = bn_vae
    precise = _precise(model, variables, rows)
    v, eps = mu.var(0, ddof=1), model.cfg.bn_eps
    lagging = _with_stats(variables, mu.mean(0), 100 * v)
    report = _report(model, lagging, rows)
    ratio = np.sqrt(v / (100 * v + eps))  # the closed form: 0.1 for v ≫ eps
    assert report.scale_ratio_min == pytest.approx(ratio.min(), rel=1e-4)
    assert report.scale_ratio_max == pytest.approx(ratio.max(), rel=1e-4)
    assert report.scale_ratio_min == pytest.approx(0.1, rel=1e-3)
    assert report.num_sentences == NUM_ROWS
    assert report.message is not None and "precise BN" in report.message
    promised = np.sum(model.cfg.gamma**2 + BETA.astype(np.float64) ** 2) / 2
    assert report.promised_bound == pytest.approx(promised, rel=1e-6)

    report = _report(model, precise, rows)
    assert report.scale_ratio_min == pytest.approx(1.0, rel=1e-3)
    assert report.scale_ratio_max == pytest.approx(1.0, rel=1e-3)
    assert report.message is None


@pytest.mark.parametrize(
    "overrides",
    [{}, {"learn_gamma": True}, {"bn_remedy": "relative_eps"}],
    ids=["paper", "learn_gamma", "relative_eps"],
)
def test_eval_bound_is_the_mean_part_of_the_eval_kl(overrides):
    model, variables = _build(**overrides)
    rows = _rows(NUM_ROWS, seed=2)
    mu = _raw_mu(model, variables, rows)
    # Running statistics that lag: shifted mean, too large variance.
    stale = _with_stats(variables, mu.mean(0) + 0.5 * mu.std(0), 30 * mu.var(0))
    report = _report(model, stale, rows)
    post_mu, post_logvar = _eval_posterior(model, stale, rows)
    # Comparable quantity: the eval KL per row is Σ_j (μ̂² + σ² − log σ² − 1)/2,
    # whose σ part ignores the BN and is >= 0. The bound concerns the μ̂ part,
    # and its empirical value over these rows, mean_n Σ_j μ̂_nj²/2 =
    # Σ_j (biased var + mean²)/2 of μ̂, is what eval_bound states in closed form.
    mean_part = np.mean(0.5 * np.sum(post_mu**2, -1))
    assert report.eval_bound == pytest.approx(mean_part, rel=1e-4)
    kl = np.mean(0.5 * np.sum(post_mu**2 + np.exp(post_logvar) - post_logvar - 1, -1))
    assert kl >= report.eval_bound * (1 - 1e-6)
    assert report.eval_bound < 0.9 * report.promised_bound
    assert report.message is not None
    if overrides.get("learn_gamma"):
        cfg = model.cfg
        raw = np.asarray([-1.0, 0.0, 0.5, 1.0])
        gamma = cfg.gamma_min + np.log1p(np.exp(raw))
        promised = np.sum(gamma**2 + BETA.astype(np.float64) ** 2) / 2
        assert report.promised_bound == pytest.approx(promised, rel=1e-5)
