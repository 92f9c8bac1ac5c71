import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.models import layers


def plain_cross_entropy(h, kernel, targets):
    logits = h @ kernel
    picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def test_linear_cross_entropy_value_and_gradients_match_autodiff():
    k = jax.random.split(jax.random.key(0), 4)
    h = jax.random.normal(k[0], (7, 5))
    kernel = jax.random.normal(k[1], (5, 11))
    targets = jax.random.randint(k[2], (7,), 0, 11)
    weights = jax.random.normal(k[3], (7,))
    np.testing.assert_allclose(
        layers.linear_cross_entropy(h, kernel, targets),
        plain_cross_entropy(h, kernel, targets),
        rtol=1e-6,
    )

    def loss(fn):
        return lambda h, w: jnp.sum(weights * fn(h, w, targets))

    got = jax.grad(loss(layers.linear_cross_entropy), argnums=(0, 1))(h, kernel)
    want = jax.grad(loss(plain_cross_entropy), argnums=(0, 1))(h, kernel)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_linear_logits_and_nll_share_the_kernel():
    proj = layers.Linear(features=9, init_scheme="uniform")
    h = jax.random.normal(jax.random.key(1), (2, 3, 4))
    targets = jnp.array([[1, 2, 3], [4, 5, 6]])
    variables = proj.init(jax.random.key(0), h)
    logits = proj.apply(variables, h)
    nll = proj.apply(variables, h, targets)
    expected = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[
        ..., 0
    ]
    assert nll.shape == (2, 3)
    np.testing.assert_allclose(nll, expected, rtol=1e-5)
    assert float(jnp.abs(variables["params"]["kernel"]).max()) <= 0.01


@pytest.mark.parametrize("scheme", ["torch_default", "uniform"])
def test_lstm_step_matches_sequence(scheme):
    lstm = layers.LSTM(input_size=3, hidden=4, init_scheme=scheme)
    xs = jax.random.normal(jax.random.key(2), (2, 5, 3))
    h0 = c0 = jnp.zeros((2, 4))
    variables = lstm.init(jax.random.key(0), xs, h0, c0)
    hs, (h_t, c_t) = lstm.apply(variables, xs, h0, c0)
    h, c = h0, c0
    for t in range(5):
        h, c = lstm.apply(variables, xs[:, t], h, c, method="step")
        np.testing.assert_allclose(h, hs[:, t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, c_t, rtol=1e-5, atol=1e-6)
