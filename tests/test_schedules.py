import jax
import numpy as np
import pytest

from bnvae_jax import schedules


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


def test_warmup_steps_uses_float_batches_per_epoch():
    assert schedules.warmup_steps(10, 1000, 32) == pytest.approx(312.5)
