"""Matmul precision, mixed precision, evaluation sizes and the device policy."""

import dataclasses
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax import parallel
from bnvae_jax.errors import ConfigError
from bnvae_jax.evaluation import sizing
from bnvae_jax.models import lstm as lstm_lib
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import schedules, steps
from bnvae_jax.training.objectives import kl_identity
from tests.conftest import make_model_config, tiny_config

MIXED = lstm_lib.Matmul(bfloat16=True)


def _lstm_case(seed=0, batch=4, steps=9, inputs=6, hidden=5):
    k = jax.random.split(jax.random.key(seed), 4)
    params = lstm_lib.LSTMParams(
        w_ih=0.4 * jax.random.normal(k[0], (inputs, 4 * hidden)),
        w_hh=0.4 * jax.random.normal(k[1], (hidden, 4 * hidden)),
        b=0.1 * jax.random.normal(k[2], (4 * hidden,)),
    )
    xs = jax.random.normal(k[3], (batch, steps, inputs))
    h0 = jnp.zeros((batch, hidden))
    return params, xs, h0


def _loss(matmul):
    def loss(params, xs, h0):
        hs, (h_t, c_t) = lstm_lib.lstm(params, xs, h0, h0, matmul)
        return jnp.sum(hs**2) + jnp.sum(c_t)

    return loss


def test_default_products_are_pinned_to_highest_precision():
    params, xs, h0 = _lstm_case()
    text = str(jax.make_jaxpr(jax.grad(_loss(lstm_lib.FLOAT32)))(params, xs, h0))
    dots = text.count("dot_general[")
    assert dots >= 4
    assert text.count("Precision.HIGHEST") >= dots


def test_mixed_precision_lstm_is_float32_out_and_close():
    params, xs, h0 = _lstm_case()
    hs32, _ = lstm_lib.lstm(params, xs, h0, h0)
    hs16, _ = lstm_lib.lstm(params, xs, h0, h0, MIXED)
    assert hs16.dtype == jnp.float32
    np.testing.assert_allclose(hs16, hs32, atol=3e-2)
    assert float(jnp.max(jnp.abs(hs16 - hs32))) > 0  # bfloat16 was used
    g32 = jax.grad(_loss(lstm_lib.FLOAT32))(params, xs, h0)
    g16 = jax.grad(_loss(MIXED))(params, xs, h0)
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32), strict=True):
        assert a.dtype == jnp.float32
        scale = float(jnp.max(jnp.abs(b)))
        assert float(jnp.max(jnp.abs(a - b))) <= 0.05 * scale


def _step_loss(mixed: bool):
    cfg = make_model_config(mixed_precision=mixed, vocab_size=30)
    model = TextVAE(cfg)
    rng = np.random.default_rng(0)
    tokens = rng.integers(4, 30, (8, 7)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 1, 2
    batch = {
        "tokens": tokens,
        "lengths": np.full(8, 7, np.int32),
        "mask": np.ones(8, np.float32),
    }
    state = steps.create_train_state(
        model, jax.random.key(0), batch, steps.make_optimizer(1.0, 5.0)
    )
    fns = steps.StepFns(
        kl_schedule=schedules.linear(1.0, 1.0), kl_transform=kl_identity
    )
    state, metrics = steps.jit_train_step(fns)(state, batch, jax.random.key(1))
    return jax.device_get(metrics), state


def test_mixed_precision_train_step_tracks_float32():
    m32, s32 = _step_loss(False)
    m16, s16 = _step_loss(True)
    assert np.isfinite(m16["loss_sum"])
    np.testing.assert_allclose(m16["loss_sum"], m32["loss_sum"], rtol=1e-2)
    np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=5e-2)
    # BN statistics and parameters stay float32.
    for leaf in jax.tree.leaves((s16.params, s16.batch_stats)):
        assert leaf.dtype == jnp.float32


def test_precision_keys_validated():
    from bnvae_jax import config as config_lib

    config = tiny_config()
    config.model.matmul_precision = "tf32"
    with pytest.raises(ConfigError, match="model.matmul_precision='tf32'"):
        config_lib.resolve(config)
    config.model.matmul_precision = "high"
    config.train.mixed_precision = True
    run = config_lib.resolve(config, 30)
    assert run.model.matmul_precision == "high" and run.train.mixed_precision


def _fake_par(platform: str, devices: int, memory: int | None):
    device = types.SimpleNamespace(
        platform=platform,
        memory_stats=lambda: None if memory is None else {"bytes_limit": memory},
    )
    return types.SimpleNamespace(
        local_devices=[device] * devices,
        num_devices=devices,
        padded=lambda n: -(-n // devices) * devices,
    )


def test_eval_sizes_from_the_backend():
    one_cpu = parallel.single_device()
    assert sizing.iw_sizes(0, 0, one_cpu) == sizing.IWSizes(4, 1 << 26)
    assert sizing.iw_sizes(3, 1000, one_cpu) == sizing.IWSizes(3, 1000)
    # Eight CPU devices: a batch every device has a row of.
    assert sizing.iw_sizes(0, 0, _fake_par("cpu", 8, None)).batch == 8
    gpus = sizing.iw_sizes(0, 0, _fake_par("gpu", 8, 80 << 30))
    assert gpus.batch == 8 * sizing.ACCELERATOR_IW_BATCH
    assert gpus.max_logits == (80 << 30) // 64
    # A backend that reports no memory: the fallback.
    assert sizing.iw_sizes(0, 0, _fake_par("gpu", 1, None)).max_logits == (
        sizing.FALLBACK_MEMORY // 64
    )


def test_auto_device_policy():
    assert parallel.auto_devices(8, 32, "gpu") == 1
    assert parallel.auto_devices(8, 64, "gpu") == 2
    assert parallel.auto_devices(8, 96, "gpu") == 3
    assert parallel.auto_devices(8, 512, "gpu") == 8
    assert parallel.auto_devices(8, 16, "gpu") == 1
    assert parallel.auto_devices(8, 32, "cpu") == 8
    par = parallel.single_device()
    assert "1 cpu" in par.describe(32) and "32 rows" in par.describe(32)


def test_evaluation_independent_of_auto_sizes():
    # IW-NLL with the automatic sizes equals IW-NLL with other explicit ones.
    from bnvae_jax.config import EvalConfig
    from bnvae_jax.evaluation import run as eval_run

    cfg = make_model_config(vocab_size=20)
    model = TextVAE(cfg)
    rng = np.random.default_rng(1)
    rows = [
        np.concatenate([[1], rng.integers(4, 20, n), [2]]).astype(np.int32)
        for n in (3, 5, 4, 6, 2, 5, 3)
    ]
    tokens = np.ones((2, 6), np.int32)
    variables = model.init(
        {"params": jax.random.key(0), "sample": jax.random.key(1)},
        tokens,
        np.full(2, 6, np.int32),
        np.ones(2, np.float32),
        train=False,
    )
    base = EvalConfig(
        iw_samples=12,
        iw_chunk=12,
        iw_batch=0,
        iw_max_sentences=0,
        iw_max_logits=0,
        au_threshold=0.01,
        num_reconstructions=1,
        num_prior_samples=1,
        beam_size=1,
        max_decode_len=5,
        seed=0,
    )
    key = jax.random.key(3)
    sizes = {"batch_size": 4, "bucket_width": 2}
    other = dataclasses.replace(base, iw_batch=3, iw_max_logits=200)
    auto, small = (
        eval_run.evaluate_split(model, variables, rows, key, c, iw_key=key, **sizes)
        for c in (base, other)
    )
    assert auto["iw_sentences"] == len(rows)
    np.testing.assert_allclose(auto["iw_nll"], small["iw_nll"], rtol=1e-5)
