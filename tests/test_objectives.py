import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.training import objectives


def _kl_dim(mu):
    return 0.5 * jnp.square(mu)  # KL per dim with unit variance: mu^2 / 2


def test_free_bits_total_has_zero_kl_gradient_below_target():
    transform = objectives.free_bits_total(target=4.0)
    mu = jnp.array([[1.0, 1.0, 0.5, 0.0], [3.0, 2.0, 0.0, 0.0]])  # KL 1.125, 6.5
    grad = jax.grad(lambda m: jnp.sum(transform(_kl_dim(m))))(mu)
    np.testing.assert_array_equal(grad[0], 0.0)  # below the target
    np.testing.assert_allclose(grad[1], mu[1])  # above: the KL's own gradient
    np.testing.assert_allclose(transform(_kl_dim(mu)), [0.0, 6.5])


def test_free_bits_per_dim_thresholds_each_dimension_at_target_over_n():
    transform = objectives.free_bits_per_dim(target=2.0)  # n = 4 -> 0.5 per dim
    mu = jnp.array([[2.0, 0.9, 1.1, 0.0]])  # KL_j = 2, 0.405, 0.605, 0
    grad = jax.grad(lambda m: jnp.sum(transform(_kl_dim(m))))(mu)
    np.testing.assert_allclose(grad, [[2.0, 0.0, 1.1, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(transform(_kl_dim(mu)), [2.0 + 0.605], rtol=1e-6)


def test_identity_and_registry():
    kl = jnp.arange(6.0).reshape(2, 3)
    for name, factory in objectives.KL_TRANSFORMS.items():
        out = factory(0.0)(kl)
        assert out.shape == (2,), name
        np.testing.assert_allclose(out, [3.0, 12.0])  # target 0 drops nothing > 0


def test_vae_loss_ignores_padded_examples():
    rec = jnp.array([1.0, 2.0, 100.0])
    kl = jnp.ones((3, 2))
    loss = objectives.vae_loss(rec, kl, jnp.array([1.0, 1.0, 0.0]), jnp.float32(0.5))
    assert float(loss) == pytest.approx((1 + 1 + 2 + 1) / 2)
