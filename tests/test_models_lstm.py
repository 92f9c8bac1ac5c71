"""Tests for the custom-VJP LSTM against the autodiff reference."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.models import lstm as lstm_lib

B, IN, H = 3, 5, 4


def _params(key, inputs=IN, hidden=H, scale=0.5):
    k1, k2, k3 = jax.random.split(key, 3)
    return lstm_lib.LSTMParams(
        w_ih=scale * jax.random.normal(k1, (inputs, 4 * hidden)),
        w_hh=scale * jax.random.normal(k2, (hidden, 4 * hidden)),
        b=scale * jax.random.normal(k3, (4 * hidden,)),
    )


def _inputs(key, steps, batch=B, inputs=IN, hidden=H):
    k1, k2, k3 = jax.random.split(key, 3)
    xs = jax.random.normal(k1, (batch, steps, inputs))
    h0 = jax.random.normal(k2, (batch, hidden))
    c0 = jax.random.normal(k3, (batch, hidden))
    return xs, h0, c0


def _assert_trees_close(got, want, **tols):
    # Same structure, shapes and dtypes, then the values within ``tols``.
    chex.assert_trees_all_equal_shapes_and_dtypes(got, want)
    chex.assert_trees_all_close(got, want, **tols)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_forward_matches_reference(steps):
    params = _params(jax.random.PRNGKey(0))
    xs, h0, c0 = _inputs(jax.random.PRNGKey(steps), steps)
    hs, (h_t, c_t) = lstm_lib.lstm(params, xs, h0, c0)
    ref_hs, (ref_h, ref_c) = lstm_lib.lstm_reference(params, xs, h0, c0)
    assert hs.shape == (B, steps, H)
    np.testing.assert_allclose(hs, ref_hs, atol=1e-5)
    np.testing.assert_allclose(h_t, ref_h, atol=1e-5)
    np.testing.assert_allclose(c_t, ref_c, atol=1e-5)
    np.testing.assert_allclose(hs[:, -1], h_t, atol=1e-6)


def test_training_forward_matches_evaluation_forward():
    # Under differentiation the forward runs the residual-saving path; its
    # outputs must be those of the plain forward.
    steps = 6
    params = _params(jax.random.PRNGKey(7))
    xs, h0, c0 = _inputs(jax.random.PRNGKey(8), steps)
    plain = jax.jit(lstm_lib.lstm)(params, xs, h0, c0)
    primal, _ = jax.jit(lambda *a: jax.vjp(lstm_lib.lstm, *a))(params, xs, h0, c0)
    _assert_trees_close(primal, plain, atol=1e-6)
    hs, (h_t, _) = primal
    np.testing.assert_array_equal(hs[:, -1], h_t)


def _linear_functional(fn, key, steps):
    """A random linear functional of (hs, h_T, c_T), a function of all inputs."""
    k1, k2, k3 = jax.random.split(key, 3)
    w_hs = jax.random.normal(k1, (B, steps, H))
    w_h = jax.random.normal(k2, (B, H))
    w_c = jax.random.normal(k3, (B, H))

    def loss(params, xs, h0, c0):
        hs, (h_t, c_t) = fn(params, xs, h0, c0)
        return jnp.sum(w_hs * hs) + jnp.sum(w_h * h_t) + jnp.sum(w_c * c_t)

    return loss


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_gradients_match_reference(steps):
    params = _params(jax.random.PRNGKey(1))
    args = (params, *_inputs(jax.random.PRNGKey(10 + steps), steps))
    key = jax.random.PRNGKey(20 + steps)
    argnums = (0, 1, 2, 3)
    grads = jax.grad(_linear_functional(lstm_lib.lstm, key, steps), argnums)(*args)
    ref = jax.grad(_linear_functional(lstm_lib.lstm_reference, key, steps), argnums)(
        *args
    )
    _assert_trees_close(grads, ref, rtol=1e-4, atol=1e-5)


def test_gradient_through_gathered_last_state():
    # The encoder only reads hs at each example's last real step.
    steps = 6
    params = _params(jax.random.PRNGKey(2))
    xs, h0, c0 = _inputs(jax.random.PRNGKey(3), steps)
    last = jnp.array([5, 0, 2])

    def loss(fn, params, xs):
        hs, _ = fn(params, xs, h0, c0)
        return jnp.sum(jnp.sin(hs[jnp.arange(B), last]))

    got = jax.grad(lambda p, x: loss(lstm_lib.lstm, p, x), (0, 1))(params, xs)
    want = jax.grad(lambda p, x: loss(lstm_lib.lstm_reference, p, x), (0, 1))(
        params, xs
    )
    _assert_trees_close(got, want, rtol=1e-4, atol=1e-6)


def test_jit_and_vmap():
    steps, copies = 4, 2
    params = _params(jax.random.PRNGKey(4))
    xs, h0, c0 = _inputs(jax.random.PRNGKey(5), steps)
    stacked = [jnp.stack([a, 2.0 * a]) for a in (xs, h0, c0)]

    jitted = jax.jit(lstm_lib.lstm)(params, xs, h0, c0)
    _assert_trees_close(jitted, lstm_lib.lstm(params, xs, h0, c0), atol=1e-6)

    vmapped = jax.vmap(lstm_lib.lstm, in_axes=(None, 0, 0, 0))
    mapped = jax.jit(vmapped)(params, *stacked)
    for k in range(copies):
        one = lstm_lib.lstm_reference(params, *(a[k] for a in stacked))
        _assert_trees_close(jax.tree.map(lambda a, k=k: a[k], mapped), one, atol=1e-5)

    # Per-example gradients: vmap over grad exercises the batched custom VJP.
    def loss(fn, params, xs, h0, c0):
        hs, (h_t, c_t) = fn(params, xs, h0, c0)
        return jnp.sum(hs**2) + jnp.sum(h_t * c_t)

    def per_copy(fn):
        grad = jax.grad(lambda p, *a: loss(fn, p, *a), argnums=(0, 1, 2, 3))
        return jax.jit(jax.vmap(grad, in_axes=(None, 0, 0, 0)))(params, *stacked)

    got, want = per_copy(lstm_lib.lstm), per_copy(lstm_lib.lstm_reference)
    _assert_trees_close(got, want, rtol=1e-4, atol=1e-5)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_single_step_matches_pytorch_formula():
    # PyTorch's nn.LSTM with weight_ih [4H, IN] rows ordered (i, f, g, o); our
    # w_ih is its transpose.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, IN)).astype(np.float32)
    h = rng.normal(size=(B, H)).astype(np.float32)
    c = rng.normal(size=(B, H)).astype(np.float32)
    weight_ih = rng.normal(size=(4 * H, IN)).astype(np.float32)
    weight_hh = rng.normal(size=(4 * H, H)).astype(np.float32)
    bias_ih = rng.normal(size=(4 * H,)).astype(np.float32)
    bias_hh = rng.normal(size=(4 * H,)).astype(np.float32)

    def block(w, k):
        return w[k * H : (k + 1) * H]

    pre = [
        x @ block(weight_ih, k).T
        + block(bias_ih, k)
        + h @ block(weight_hh, k).T
        + block(bias_hh, k)
        for k in range(4)
    ]
    i, f, o = _sigmoid(pre[0]), _sigmoid(pre[1]), _sigmoid(pre[3])
    g = np.tanh(pre[2])
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)

    params = lstm_lib.LSTMParams(
        w_ih=jnp.asarray(weight_ih.T),
        w_hh=jnp.asarray(weight_hh.T),
        b=jnp.asarray(bias_ih + bias_hh),
    )
    for fn in (lstm_lib.lstm, lstm_lib.lstm_reference):
        hs, (h_t, c_t) = fn(params, jnp.asarray(x[:, None]), h, c)
        np.testing.assert_allclose(hs[:, 0], h_new, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(h_t, h_new, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c_t, c_new, rtol=1e-5, atol=1e-5)
