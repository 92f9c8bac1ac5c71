"""One-layer LSTM with a hoisted input GEMM and a hand-written backward pass."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# Scan unroll factors, chosen with benchmarks/lstm_kernels.py --unroll-sweep on
# CPU: unrolling by 2, 4 or 8 made fwd+bwd 5-20% slower at the PTB and Yahoo
# sizes (the per-step GEMM dominates; bigger loop bodies only add overhead).
_FORWARD_UNROLL = 1
_BACKWARD_UNROLL = 1


class LSTMParams(NamedTuple):
    """LSTM weights in PyTorch's gate order (i, f, g, o), stored input-major."""

    w_ih: jax.Array  # <float32>[I, 4H]
    w_hh: jax.Array  # <float32>[H, 4H]
    b: jax.Array  # <float32>[4H], PyTorch's b_ih + b_hh


class _Residuals(NamedTuple):
    """What the backward pass needs; sequences are time-major except xs."""

    params: LSTMParams
    xs: jax.Array  # <float32>[B, T, I], as given
    acts: jax.Array  # <float32>[T, B, 4H]: σ(i), σ(f), tanh(g), σ(o)
    cs: jax.Array  # <float32>[T, B, H]: c_1 .. c_T
    hs: jax.Array  # <float32>[T, B, H]: h_1 .. h_T
    h0: jax.Array  # <float32>[B, H]
    c0: jax.Array  # <float32>[B, H]


def _gate_constants(hidden: int, dtype) -> tuple[jax.Array, ...]:
    """Per-column constants that treat the four gate blocks in one pass.

    σ(x) = tanh(x / 2) / 2 + 1/2, so every activation is tanh(x s) s + t with
    (s, t) = (1/2, 1/2) on the i, f, o blocks and (1, 0) on the g block. One tanh
    over the whole [B, 4H] row fuses into a single loop, where splitting into
    four blocks costs XLA CPU four fusions and a concatenate per step.

    The derivative of an activation a w.r.t. its input is a (1 - a) for σ and
    1 - a² for tanh, i.e. k0 + k1 a - a² with (k0, k1) = (0, 1) or (1, 0).

    Args:
      hidden: H.
      dtype: the constants' dtype.

    Returns:
      scale, shift, k0, k1, each <dtype>[4H].
    """
    half = jnp.full((hidden,), 0.5, dtype)
    one = jnp.ones((hidden,), dtype)
    zero = jnp.zeros((hidden,), dtype)
    scale = jnp.concatenate([half, half, one, half])
    shift = jnp.concatenate([half, half, zero, half])
    return scale, shift, 1.0 - 2.0 * shift, 2.0 * shift


def _input_projection(params: LSTMParams, xs: jax.Array) -> jax.Array:
    """x_t W_ih for all steps as one [T*B, I] x [I, 4H] GEMM, time-major.

    The bias is added inside the recurrence instead, where it rides along in a
    fusion that exists anyway rather than costing a pass over [T, B, 4H].
    """
    batch, steps, inputs = xs.shape
    xs_tm = jnp.swapaxes(xs, 0, 1).reshape(steps * batch, inputs)
    return (xs_tm @ params.w_ih).reshape(steps, batch, -1)


def _step(params, scale, shift, gx_t, h, c):
    """One cell step from the input projection: (activated gates, h', c')."""
    acts = jnp.tanh((gx_t + h @ params.w_hh + params.b) * scale) * scale + shift
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c = f * c + i * g
    return acts, o * jnp.tanh(c), c


def _lstm(params, xs, h0, c0):
    """Primal without residuals: the forward-only (evaluation) path.

    Unlike the training path this projects x_t inside the step. Without a
    backward pass there is nothing to batch up, and at batch 500 (importance-
    weighted NLL) the hoisted [T, B, 4H] buffer outgrows the caches and made the
    forward ~1.4x slower; at batch 32 the two are equally fast.
    """
    scale, shift, _, _ = _gate_constants(h0.shape[-1], xs.dtype)

    def step(carry, x_t):
        _, h, c = _step(params, scale, shift, x_t @ params.w_ih, *carry)
        return (h, c), h

    (h_t, c_t), hs = lax.scan(
        step, (h0, c0), jnp.swapaxes(xs, 0, 1), unroll=_FORWARD_UNROLL
    )
    return jnp.swapaxes(hs, 0, 1), h_t, c_t


def _lstm_fwd(params, xs, h0, c0):
    hidden = h0.shape[-1]
    scale, shift, _, _ = _gate_constants(hidden, xs.dtype)

    def step(carry, t):
        h, c, gates = carry
        gx_t = lax.dynamic_index_in_dim(gates, t, keepdims=False)
        acts, h, c = _step(params, scale, shift, gx_t, h, c)
        # Activations overwrite the consumed input projection in place, so no
        # second [T, B, 4H] buffer is allocated and zero-filled for them.
        gates = lax.dynamic_update_index_in_dim(gates, acts, t, 0)
        return (h, c, gates), c

    steps = xs.shape[1]
    (h_t, c_t, acts), cs = lax.scan(
        step,
        (h0, c0, _input_projection(params, xs)),
        jnp.arange(steps),
        unroll=_FORWARD_UNROLL,
    )
    # Rebuilt in one vectorised pass rather than stored from inside the loop,
    # which saves a per-step write; equal to the in-loop h bit for bit.
    hs = acts[..., 3 * hidden :] * jnp.tanh(cs)
    residuals = _Residuals(params, xs, acts, cs, hs, h0, c0)
    return (jnp.swapaxes(hs, 0, 1), h_t, c_t), residuals


def _lstm_bwd(res: _Residuals, cotangents):
    params, xs, acts, cs, hs, h0, c0 = res
    d_hs, d_ht, d_ct = cotangents
    batch, steps, inputs = xs.shape
    hidden = h0.shape[-1]
    _, _, k0, k1 = _gate_constants(hidden, acts.dtype)
    c_prev = jnp.concatenate([c0[None], cs[:-1]], 0)
    # Materialised once: a [B, 4H] x [4H, H] GEMM per step runs markedly faster
    # on XLA CPU than one that reads w_hh transposed. The barrier stops XLA from
    # folding the transpose back into the dot.
    w_hh_t = lax.optimization_barrier(params.w_hh.T)

    def step(carry, per_step):
        # The carry holds only the gradients flowing back through the recurrence;
        # everything that contracts over B*T is left to single GEMMs afterwards.
        dh_next, dc_next = carry
        d_h_out, acts_t, c_t, c_before = per_step
        i, f, g, o = jnp.split(acts_t, 4, axis=-1)
        dh = d_h_out + dh_next
        tanh_c = jnp.tanh(c_t)
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        # Upstream gradients of the activated (i, f, g, o), times each
        # activation's derivative, give the pre-activation gate gradients.
        d_acts = jnp.concatenate([dc * g, dc * c_before, dc * i, dh * tanh_c], -1)
        d_gates = d_acts * (k0 + k1 * acts_t - acts_t * acts_t)
        return (d_gates @ w_hh_t, dc * f), d_gates

    (dh0, dc0), d_gates = lax.scan(
        step,
        (d_ht, d_ct),
        (jnp.swapaxes(d_hs, 0, 1), acts, cs, c_prev),
        reverse=True,
        unroll=_BACKWARD_UNROLL,
    )
    d_flat = d_gates.reshape(steps * batch, 4 * hidden)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0).reshape(steps * batch, hidden)
    # The weight gradients contract over all B*T rows at once. Explicit
    # [K, B*T] operands let XLA CPU use its fast GEMM path, where a dot that
    # contracts the leading dimension of both operands goes to a slower one.
    h_prev_t = lax.optimization_barrier(h_prev.T)
    xs_t = lax.optimization_barrier(
        jnp.transpose(xs, (2, 1, 0)).reshape(inputs, steps * batch)
    )
    grads = LSTMParams(
        w_ih=xs_t @ d_flat, w_hh=h_prev_t @ d_flat, b=jnp.sum(d_flat, axis=0)
    )
    d_xs = (d_flat @ params.w_ih.T).reshape(steps, batch, inputs)
    return grads, jnp.swapaxes(d_xs, 0, 1), dh0, dc0


_lstm_vjp = jax.custom_vjp(_lstm)
_lstm_vjp.defvjp(_lstm_fwd, _lstm_bwd)


def lstm(
    params: LSTMParams, xs: jax.Array, h0: jax.Array, c0: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Runs a one-layer LSTM over a batch-major sequence.

    Gates are x_t W_ih + h W_hh + b split as (i, f, g, o); c' = σ(f) c + σ(i)
    tanh(g) and h' = σ(o) tanh(c'), as in PyTorch. The input projection is one
    GEMM over all steps, and differentiation uses a custom VJP whose weight
    gradients are single GEMMs over all B*T rows.

    Args:
      params: the weights, see `LSTMParams`.
      xs: <float32>[B, T, I] inputs, T >= 1.
      h0: <float32>[B, H] initial hidden state.
      c0: <float32>[B, H] initial cell state.

    Returns:
      hs <float32>[B, T, H] (the hidden state after every step) and the final
      state (h_T, c_T), each <float32>[B, H].
    """
    hs, h_t, c_t = _lstm_vjp(params, xs, h0, c0)
    return hs, (h_t, c_t)


def lstm_reference(
    params: LSTMParams, xs: jax.Array, h0: jax.Array, c0: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The textbook per-step `lax.scan` LSTM, differentiated by JAX autodiff.

    Same contract as `lstm`; kept as the correctness and speed baseline.

    Args:
      params: the weights, see `LSTMParams`.
      xs: <float32>[B, T, I] inputs.
      h0: <float32>[B, H] initial hidden state.
      c0: <float32>[B, H] initial cell state.

    Returns:
      hs <float32>[B, T, H] and the final state (h_T, c_T).
    """

    def step(carry, x_t):
        h, c = carry
        gates = x_t @ params.w_ih + h @ params.w_hh + params.b
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    (h_t, c_t), hs = lax.scan(step, (h0, c0), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(hs, 0, 1), (h_t, c_t)
