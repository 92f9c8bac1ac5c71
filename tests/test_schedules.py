import jax
import numpy as np
import pytest

from bnvae_jax.training import schedules


def test_linear_matches_reference_loop():
    # Reference: weight += rate before each batch, then min(1, .).
    kl_start, warm = 0.1, 7.5
    rate = (1 - kl_start) / warm
    weight, expected = kl_start, []
    for _ in range(12):
        weight = min(1.0, weight + rate)
        expected.append(weight)
    sched = jax.jit(schedules.linear(kl_start, warm))
    got = [float(sched(s)) for s in range(12)]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_linear_without_warmup_is_constant():
    sched = schedules.linear(0.3, 0.0)
    assert [float(sched(s)) for s in range(3)] == pytest.approx([0.3] * 3)


def test_constant():
    sched = schedules.constant(0.4)
    assert float(sched(0)) == pytest.approx(0.4)
    assert float(sched(10_000)) == pytest.approx(0.4)


def test_warmup_steps_uses_float_batches_per_epoch(tmp_path):
    from conftest import tiny_config

    from bnvae_jax.tasks import text_vae

    config = tiny_config(**{"train.kl_warmup_epochs": 10.0, "data.batch_size": 24})
    trainer, _ = text_vae.setup(config, str(tmp_path), write=False)
    num_train = len(trainer.data.train)
    assert num_train % 24  # a fractional number of batches per epoch
    spec = text_vae.schedule_spec(trainer)
    assert spec.warmup_steps == pytest.approx(10.0 * num_train / 24)
    trainer.ctx.ckpt.close()


def test_cyclic_equals_hand_computed_values():
    # 40 steps, M = 4 cycles of 10, ramp over R = 0.5 -> 5 steps, start 0.
    sched = jax.jit(schedules.cyclic(0.0, 40, 4, 0.5))
    got = [float(sched(s)) for s in range(22)]
    one_cycle = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(got, one_cycle * 2 + [0.0, 0.2], atol=1e-6)


def test_cyclic_with_start_value():
    sched = schedules.cyclic(0.1, 8, 2, 0.5)  # period 4, ramp 2 steps
    got = [float(sched(s)) for s in range(6)]
    np.testing.assert_allclose(got, [0.1, 0.55, 1.0, 1.0, 0.1, 0.55], atol=1e-6)


def test_cyclic_epoch_reset_replays_the_fixed_reference_loop():
    # The reference after the fix: at the start of epoch e with (e-1) % C == 0
    # (e >= 1) the weight resets to kl_start; every batch first adds the rate.
    kl_start, warm, spe, cycle = 0.0, 6.0, 3, 2
    rate = (1 - kl_start) / warm
    weight, expected = kl_start, []
    for epoch in range(7):
        if epoch >= 1 and (epoch - 1) % cycle == 0:
            weight = kl_start
        for _ in range(spe):
            weight = min(1.0, weight + rate)
            expected.append(weight)
    sched = jax.jit(schedules.cyclic_epoch_reset(kl_start, warm, spe, cycle))
    got = [float(sched(s)) for s in range(len(expected))]
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_registry_builds_every_schedule_from_one_spec():
    spec = schedules.ScheduleSpec(
        kl_start=0.0, warmup_steps=4.0, beta=0.4, steps_per_epoch=5, total_steps=20
    )
    for name in schedules.SCHEDULES:
        value = float(schedules.SCHEDULES[name](spec)(3))
        assert 0.0 <= value <= 1.0, name
    assert float(schedules.SCHEDULES["constant"](spec)(99)) == pytest.approx(0.4)
    assert float(schedules.SCHEDULES["zero"](spec)(99)) == 0.0
