"""BN-VAE's KL bound: γ_eff, the train-row metrics, the warnings and the remedy."""

import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_model_config

from bnvae_jax import cli
from bnvae_jax import config as config_lib
from bnvae_jax.models import posteriors
from bnvae_jax.models.vae import Encoder
from bnvae_jax.tasks import text_vae as train
from bnvae_jax.training import bn_health

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _health(bn, x, mask, params=None):
    variables = bn.init(jax.random.key(0), x, mask, train=False)
    if params is not None:
        variables = {**variables, "params": {**variables["params"], **params}}
    _, updates = bn.apply(
        variables, x, mask, train=True, mutable=["batch_stats", "intermediates"]
    )
    return bn_health.step_metrics(updates), updates


def test_gamma_eff_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    scales = np.array([1e-1, 3e-3, 1e-3, 1e-4], np.float32)  # v from 1e-2 to 1e-8
    x = (rng.standard_normal((12, 4)) * scales).astype(np.float32)
    mask = np.ones(12, np.float32)
    mask[-2:] = 0.0  # padded rows take no part
    beta = np.array([0.1, -0.2, 0.0, 0.3], np.float32)
    eps, gamma = 1e-5, 0.6
    bn = posteriors.FixedScaleBatchNorm(gamma, eps=eps)
    got, _ = _health(bn, jnp.asarray(x), jnp.asarray(mask), {"beta": beta})
    real = x[:10].astype(np.float64)
    v = real.var(axis=0)  # biased, as BN normalises with
    g_eff = gamma * np.sqrt(v / (v + eps))
    np.testing.assert_allclose(got["bn_gamma_eff_min"], g_eff.min(), rtol=1e-4)
    np.testing.assert_allclose(got["bn_gamma_eff_mean"], g_eff.mean(), rtol=1e-4)
    np.testing.assert_allclose(
        got["bn_gamma_eff_ratio_min"], g_eff.min() / gamma, rtol=1e-4
    )
    np.testing.assert_allclose(got["bn_var_min"], v.min(), rtol=1e-4)
    bound = 0.5 * np.sum(gamma**2 + beta.astype(np.float64) ** 2)
    np.testing.assert_allclose(got["bn_kl_bound"], bound, rtol=1e-6)
    # γ_eff is the batch std of the normalised means (the bound's premise).
    out = bn.apply(
        {
            "params": {"beta": beta},
            "batch_stats": {"mean": np.zeros(4), "var": np.ones(4)},
        },
        jnp.asarray(x),
        jnp.asarray(mask),
        train=True,
        mutable=["batch_stats"],
    )[0]
    np.testing.assert_allclose(np.asarray(out)[:10].std(0), g_eff, rtol=1e-3)


def test_learnt_gamma_uses_the_per_dimension_scale():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((8, 3)), jnp.float32)
    bn = posteriors.FixedScaleBatchNorm(0.6, learn_gamma=True, gamma_min=0.3)
    raw = np.array([-1.0, 0.0, 2.0], np.float32)
    got, _ = _health(bn, x, jnp.ones(8), {"gamma_raw": raw})
    gamma = 0.3 + np.log1p(np.exp(raw))
    np.testing.assert_allclose(got["bn_kl_bound"], 0.5 * np.sum(gamma**2), rtol=1e-5)
    v = np.asarray(x, np.float64).var(0)
    g_eff = gamma * np.sqrt(v / (v + 1e-5))
    np.testing.assert_allclose(got["bn_gamma_eff_min"], g_eff.min(), rtol=1e-4)


def test_relative_eps_keeps_the_scale_at_any_variance():
    rng = np.random.default_rng(2)
    for scale in (1.0, 1e-3, 1e-6):  # v from 1 down to 1e-12, far below eps
        x = jnp.asarray(rng.standard_normal((16, 2)) * scale, jnp.float32)
        paper, _ = _health(posteriors.FixedScaleBatchNorm(1.0), x, jnp.ones(16))
        bn = posteriors.FixedScaleBatchNorm(1.0, remedy="relative_eps")
        got, _ = _health(bn, x, jnp.ones(16))
        np.testing.assert_allclose(
            got["bn_gamma_eff_min"], 1.0 / np.sqrt(1.0 + 1e-5), rtol=1e-5
        )
        if scale < 1e-3:
            assert paper["bn_gamma_eff_min"] < 0.5  # the paper's head loses it
    # All means equal: no NaN, the normalised means are β.
    bn = posteriors.FixedScaleBatchNorm(1.0, remedy="relative_eps")
    x = jnp.ones((4, 2))
    variables = bn.init(jax.random.key(0), x, jnp.ones(4), train=False)
    out, _ = bn.apply(variables, x, jnp.ones(4), train=True, mutable=["batch_stats"])
    assert np.all(np.isfinite(np.asarray(out)))


def test_models_without_bn_report_nothing():
    assert bn_health.step_metrics({"batch_stats": {}}) == {}
    assert bn_health.host_scalars([{"count": 3.0}]) == {}


def _row(kl, ratio, bound=0.5, var=1e-3):
    return {
        "train/kl": kl,
        bn_health.SCALARS["gamma_eff_ratio_min"]: ratio,
        bn_health.SCALARS["kl_bound"]: bound,
        bn_health.SCALARS["var_min"]: var,
    }


def test_warns_once_per_change_and_on_recovery(caplog):
    healthy = _row(0.6, 0.999)
    below_eps = _row(0.02, 0.05, var=1e-10)

    def warn(row, last):
        """The new key and the (level, line) records logged."""
        caplog.clear()
        with caplog.at_level(logging.INFO):
            key = bn_health.warn(row, last)
        return key, [(r.levelno, r.getMessage()) for r in caplog.records]

    assert warn(healthy, "") == ("", [])
    key, [(level, line)] = warn(below_eps, "")
    assert key == "gamma_eff,kl_below_bound" and level == logging.WARNING
    assert "gamma_eff_min/gamma = 0.05 < 0.9" in line and "bound" in line
    assert warn(below_eps, key) == (key, [])  # no flood
    key2, [(_, line2)] = warn(_row(0.6, 0.5), key)  # a change: one line
    assert key2 == "gamma_eff" and "train KL" not in line2
    key3, [(level3, line3)] = warn(healthy, key2)
    assert key3 == "" and "holds again" in line3 and level3 == logging.INFO


def test_kl_bound_averages_over_the_window_like_train_kl():
    host = [
        {"count": 10.0, "bn_kl_bound": 0.5, **_fields(0.9)},
        {"count": 30.0, "bn_kl_bound": 0.7, **_fields(0.8)},
    ]
    got = bn_health.host_scalars(host)
    assert got["train/bn_kl_bound"] == pytest.approx((5.0 + 21.0) / 40.0)
    assert got["train/bn_gamma_eff_min"] == pytest.approx(0.8)  # the last step's


def _fields(g):
    return {
        "bn_gamma_eff_min": g,
        "bn_gamma_eff_mean": g,
        "bn_gamma_eff_ratio_min": g,
        "bn_var_min": 1e-3,
    }


# -- start below eps: the config-time estimate ---------------------------------


def _probe_variance(emb, hidden, init):
    """Median variance of the raw μ over random sentences at init."""
    cfg = make_model_config(
        vocab_size=500,
        emb_dim=emb,
        enc_hidden=hidden,
        dec_hidden=hidden,
        latent_dim=16,
        gamma=1.0,
        enc_init=init,
    )
    key = jax.random.key(0)
    tokens = jax.random.randint(key, (256, 12), 0, 500)
    lengths = jnp.full((256,), 12)
    enc = Encoder(cfg)
    mu, _ = enc.apply(enc.init(key, tokens, lengths), tokens, lengths)
    return float(np.median(np.var(np.asarray(mu), 0)))


@pytest.mark.parametrize("init", ["uniform", "torch_default"])
def test_initial_variance_estimate_matches_a_probe(init):
    probe = _probe_variance(50, 50, init)
    model = make_model_config(emb_dim=50, enc_hidden=50, enc_init=init)
    estimate = bn_health.initial_mu_variance(model)
    assert probe / 3 < estimate < probe * 3, (probe, estimate)


def _synthetic(**model):
    config = cli.load_config_file(str(ROOT / "configs" / "synthetic.py"))
    config.model.update(model)
    return config


def test_start_warning_on_an_init_below_eps_only():
    line = bn_health.start_warning(_synthetic(enc_init="uniform").model)
    assert line and "\n" not in line and "below model.bn_eps=1e-05" in line
    assert bn_health.start_warning(_synthetic().model) is None  # torch_default
    remedied = _synthetic(enc_init="uniform", bn_remedy="relative_eps")
    assert bn_health.start_warning(remedied.model) is None
    # A smaller eps puts the same init well above it.
    tiny_eps = _synthetic(enc_init="uniform", bn_eps=1e-12)
    assert bn_health.start_warning(tiny_eps.model) is None


def test_a_run_logs_one_line_for_a_below_eps_bn_config(caplog):
    resolve = train.resolve
    with caplog.at_level(logging.WARNING):
        resolve(_synthetic(enc_init="uniform"))
    lines = [r.getMessage() for r in caplog.records if "bn_eps" in r.getMessage()]
    assert len(lines) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resolve(_synthetic())
        bad = _synthetic(enc_init="uniform")
        bad.method = "vae"  # no BN head: nothing to warn about
        resolve(bad)
    assert not [r for r in caplog.records if "bn_eps" in r.getMessage()]


def _shipped_configs():
    for path in sorted((ROOT / "configs").glob("*.py")):
        config = cli.load_config_file(str(path))
        yield path.name, config.get("base", config)


def test_no_shipped_config_starts_below_eps():
    checked = 0
    for name, config in _shipped_configs():
        if "model" not in config or "bn_remedy" not in config.model:
            continue
        checked += 1
        assert bn_health.start_warning(config.model) is None, name
    assert checked >= 8


def test_unknown_remedy_is_one_config_error():
    from bnvae_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="model.bn_remedy='floor' is not one of"):
        config_lib.resolve(_synthetic(bn_remedy="floor"))


# -- end to end: train rows, the warning, and the remedy on the escape cases ----


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _escape_run(workdir, *, remedy, init="uniform", batch=32, num_train=640):
    """A test-sized escape case: the synthetic setting, γ = 1, n = 1, KL weight 1."""
    config = _synthetic(enc_init=init, bn_remedy=remedy)
    s = config.data.synthetic
    s.num_train, s.num_valid, s.num_test = num_train, 64, 64
    s.vocab_size, s.emb_dim, s.hidden_dim = 100, 16, 16
    config.data.batch_size = batch
    config.train.epochs = 3
    config.train.log_every_steps = 4
    config.train.checkpoint_every_steps = 1000
    config.eval.iw_splits = ""
    config.eval.num_reconstructions = config.eval.num_prior_samples = 0
    records = _Records()
    logging.getLogger().addHandler(records)
    try:
        train.train_and_evaluate(config, str(workdir))
    finally:
        logging.getLogger().removeHandler(records)
    rows = [
        json.loads(line)["values"]
        for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]
    return [r for r in rows if "train/kl" in r], records.lines


@pytest.fixture(scope="module")
def escape_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("escape")
    return {
        "paper": _escape_run(root / "paper", remedy="none"),
        "remedy": _escape_run(root / "remedy", remedy="relative_eps"),
        "remedy_b64": _escape_run(
            root / "b64", remedy="relative_eps", init="torch_default", batch=64
        ),
    }


def _warnings(lines):
    return [x for x in lines if "KL bound does not hold" in x]


def test_train_rows_carry_the_bn_metrics(escape_runs):
    rows, _ = escape_runs["paper"]
    for row in rows:
        for name in bn_health.SCALARS.values():
            assert np.isfinite(row[name]), name
        assert row["train/bn_gamma_eff_min"] <= row["train/bn_gamma_eff_mean"]


def test_warning_fires_on_a_below_eps_head_without_flooding(escape_runs):
    rows, lines = escape_runs["paper"]
    warned = _warnings(lines)
    assert warned and "gamma_eff_min/gamma" in warned[0]
    # The paper's head starts below eps: the bound fails, as the warning says.
    assert rows[0]["train/bn_gamma_eff_ratio_min"] < 0.9
    assert min(r["train/kl"] / r["train/bn_kl_bound"] for r in rows) < 0.9
    assert len(warned) < len(rows) / 2  # once per change, not once per row
    assert any("starts the pre-BN variance" in x for x in lines)  # at resolve


@pytest.mark.parametrize("run", ["remedy", "remedy_b64"])
def test_remedy_keeps_the_kl_bound_and_warns_nothing(escape_runs, run):
    rows, lines = escape_runs[run]
    assert len(rows) >= 5
    for row in rows:
        assert row["train/kl"] >= 0.9 * row["train/bn_kl_bound"], row
        assert row["train/bn_gamma_eff_ratio_min"] > 0.999
    assert not _warnings(lines) and not any("bn_eps" in x for x in lines)
