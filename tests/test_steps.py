import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import schedules, steps
from bnvae_jax.training.objectives import kl_identity


def _batch(num_real, batch_size=6, width=8, length=6, vocab=12, seed=0):
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch_size, width), np.int32)
    tokens[:num_real, 0] = 1
    tokens[:num_real, 1 : length - 1] = rng.integers(4, vocab, (num_real, length - 2))
    tokens[:num_real, length - 1] = 2
    tokens[num_real:] = rng.integers(0, vocab, (batch_size - num_real, width))
    lengths = np.where(np.arange(batch_size) < num_real, length, 0).astype(np.int32)
    mask = (np.arange(batch_size) < num_real).astype(np.float32)
    return {"tokens": tokens, "lengths": lengths, "mask": mask}


def _state(cfg, batch, lr=1.0):
    model = TextVAE(cfg)
    tx = steps.make_optimizer(lr, 5.0)
    return steps.create_train_state(model, jax.random.key(0), batch, tx)


FNS = steps.StepFns(kl_schedule=schedules.linear(0.0, 10.0), kl_transform=kl_identity)


def test_one_step_changes_every_leaf_and_updates_batch_stats(tiny_model_config):
    cfg = tiny_model_config()
    batch = _batch(6)
    state = _state(cfg, batch)
    before = jax.device_get(state)
    new, metrics = steps.jit_train_step(FNS)(state, batch, jax.random.key(1))
    after = jax.device_get(new)
    flat_before = jax.tree_util.tree_leaves_with_path(before.params)
    flat_after = jax.tree.leaves(after.params)
    for (path, b), a in zip(flat_before, flat_after):
        assert not np.array_equal(a, b), f"{jax.tree_util.keystr(path)} unchanged"
    for b, a in zip(
        jax.tree.leaves(before.batch_stats), jax.tree.leaves(after.batch_stats)
    ):
        assert not np.array_equal(a, b)
    assert int(after.step) == 1
    # Gamma is a constant: the only parameter of the head is beta.
    assert set(after.params["head"]["bn"]) == {"beta"}
    assert float(metrics["kl_weight"]) == pytest.approx(0.1)
    assert float(metrics["count"]) == 6


def test_padded_examples_do_not_change_the_step(tiny_model_config):
    cfg = tiny_model_config(dec_dropout_in=0.0, dec_dropout_out=0.0)
    full = _batch(4, batch_size=4)
    padded = _batch(4, batch_size=7)
    step = steps.jit_train_step(FNS)
    a, ma = step(_state(cfg, full), full, jax.random.key(1))
    b, mb = step(_state(cfg, full), padded, jax.random.key(1))
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-7)
    for x, y in zip(jax.tree.leaves(a.batch_stats), jax.tree.leaves(b.batch_stats)):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-7)
    assert float(ma["rec_sum"]) == pytest.approx(float(mb["rec_sum"]), rel=1e-5)
    assert float(mb["count"]) == 4


def test_reset_optimizer_keeps_step_and_sets_lr(tiny_model_config):
    cfg = tiny_model_config()
    batch = _batch(6)
    state, _ = steps.jit_train_step(FNS)(_state(cfg, batch), batch, jax.random.key(1))
    reset = steps.reset_optimizer(state, 0.25)
    assert int(reset.step) == 1 and reset.params is state.params
    assert reset.opt_state.hyperparams["learning_rate"] == pytest.approx(0.25)


def test_sgd_step_is_clipped_plain_sgd(tiny_model_config):
    cfg = tiny_model_config(dec_dropout_in=0.0, dec_dropout_out=0.0)
    batch = _batch(6)
    state = _state(cfg, batch, lr=0.5)
    before = jax.device_get(state.params)  # the step donates ``state``
    new, metrics = steps.jit_train_step(FNS)(state, batch, jax.random.key(1))
    norm = float(metrics["grad_norm"])
    scale = min(1.0, 5.0 / norm)
    # Recover the gradient from the update and check its norm matches.
    delta = jax.tree.map(lambda a, b: (b - a) / (-0.5 * scale), before, new.params)
    leaves = jax.tree.leaves(delta)
    got = float(jnp.sqrt(sum(jnp.sum(x**2) for x in leaves)))
    assert got == pytest.approx(norm, rel=1e-3)
