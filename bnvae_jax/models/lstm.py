"""One-layer LSTM with a hoisted input GEMM and a hand-written backward pass."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Scan unroll factors, chosen with benchmarks/lstm_kernels.py --unroll-sweep on
# CPU (which sets them while it traces): unrolling by 2, 4 or 8 made fwd+bwd
# 5-20% slower at the PTB and Yahoo sizes (the per-step GEMM dominates; bigger
# loop bodies only add overhead). Not measured on GPUs, where the scan is left
# as lean as on CPU.
_FORWARD_UNROLL = 1
_BACKWARD_UNROLL = 1


def row_major(x: jax.Array, perm: tuple[int, ...]) -> jax.Array:
    """``x`` transposed by ``perm``, materialised on XLA:CPU.

    A product that contracts the leading dimension of an operand goes to a
    slower GEMM path on XLA CPU; an explicit transpose, kept from being folded
    back into the product by a barrier, is faster there. GPU libraries read
    transposed operands at no cost, so elsewhere XLA is left to fold it.
    """
    x = jnp.transpose(x, perm)
    return lax.optimization_barrier(x) if jax.default_backend() == "cpu" else x


@dataclasses.dataclass(frozen=True)
class Matmul:
    """How the model's matrix products are computed.

    Attributes:
      precision: ``jax.lax.Precision`` of float32 products: 'highest' (true
        float32 on every backend, the reference's numbers; GPUs would
        otherwise use TF32), 'high' or 'default' (the backend's fastest).
      bfloat16: mixed precision: operands rounded to bfloat16, products
        accumulated and returned in float32. Everything else (gates, cell
        state, softmax, BN statistics, KL) stays float32.
    """

    precision: str = "highest"
    bfloat16: bool = False

    def operand(self, x: jax.Array) -> jax.Array:
        """``x`` in the dtype products read (cast once, outside loops)."""
        return x.astype(jnp.bfloat16) if self.bfloat16 else x

    def general(self, a: jax.Array, b: jax.Array, dims) -> jax.Array:
        """``lax.dot_general`` under this policy; float32 result."""
        if self.bfloat16:
            a, b = self.operand(a), self.operand(b)
            return lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)
        return lax.dot_general(a, b, dims, precision=lax.Precision(self.precision))

    def __call__(self, a: jax.Array, b: jax.Array) -> jax.Array:
        """``a @ b`` for a <[..., K]> and b <[K, N]>."""
        return self.general(a, b, (((a.ndim - 1,), (0,)), ((), ())))


FLOAT32 = Matmul()


class LSTMParams(NamedTuple):
    """LSTM weights in PyTorch's gate order (i, f, g, o), stored input-major."""

    w_ih: jax.Array  # <float32>[I, 4H]
    w_hh: jax.Array  # <float32>[H, 4H]
    b: jax.Array  # <float32>[4H], PyTorch's b_ih + b_hh


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
    # NumPy, so that XLA sees literals it can fold into the scan's body.
    scale = np.repeat(np.array([0.5, 0.5, 1.0, 0.5], dtype), hidden)
    shift = np.repeat(np.array([0.5, 0.5, 0.0, 0.5], dtype), hidden)
    return scale, shift, 1.0 - 2.0 * shift, 2.0 * shift


def _input_projection(params: LSTMParams, xs: jax.Array, mm: Matmul) -> jax.Array:
    """x_t W_ih for all steps as one GEMM, time-major <float32>[T, B, 4H].

    The time and batch axes stay separate axes of the product (no reshape to
    [T*B, I]): with the batch sharded over devices each device then projects
    its own rows, where a merged T*B axis would make XLA gather the whole batch.
    The bias is added inside the recurrence instead, where it rides along in a
    fusion that exists anyway rather than costing a pass over [T, B, 4H].
    """
    return mm(jnp.swapaxes(xs, 0, 1), params.w_ih)


def _step(params, scale, shift, gx_t, h, c, mm):
    """One cell step from the input projection: (activated gates, h', c')."""
    acts = jnp.tanh((gx_t + mm(h, params.w_hh) + params.b) * scale) * scale + shift
    i, f, g, o = jnp.split(acts, 4, axis=-1)
    c = f * c + i * g
    return acts, o * jnp.tanh(c), c


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def lstm(
    params: LSTMParams,
    xs: jax.Array,
    h0: jax.Array,
    c0: jax.Array,
    mm: Matmul = FLOAT32,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Runs a one-layer LSTM over a batch-major sequence.

    Gates are x_t W_ih + h W_hh + b split as (i, f, g, o); c' = σ(f) c + σ(i)
    tanh(g) and h' = σ(o) tanh(c'), as in PyTorch. The input projection is one
    GEMM over all steps, and differentiation uses a custom VJP whose weight
    gradients are single GEMMs over all B*T rows.

    Without a backward pass, on CPU x_t is projected inside the step: at batch
    500 (importance-weighted NLL) the hoisted [T, B, 4H] buffer outgrows the
    caches and made the forward ~1.4x slower; at batch 32 the two are equally
    fast. Elsewhere the projection is one large product ahead of the recurrence.

    Args:
      params: the weights, see `LSTMParams`.
      xs: <float32>[B, T, I] inputs, T >= 1.
      h0: <float32>[B, H] initial hidden state.
      c0: <float32>[B, H] initial cell state.
      mm: how products are computed (float32 or mixed precision).

    Returns:
      hs <float32>[B, T, H] (the hidden state after every step) and the final
      state (h_T, c_T), each <float32>[B, H].
    """
    scale, shift, _, _ = _gate_constants(h0.shape[-1], xs.dtype)
    params = params._replace(w_ih=mm.operand(params.w_ih), w_hh=mm.operand(params.w_hh))
    hoisted = jax.default_backend() != "cpu"

    def step(carry, x_t):
        gx_t = x_t if hoisted else mm(x_t, params.w_ih)
        _, h, c = _step(params, scale, shift, gx_t, *carry, mm)
        return (h, c), h

    inputs = _input_projection(params, xs, mm) if hoisted else jnp.swapaxes(xs, 0, 1)
    (h_t, c_t), hs = lax.scan(step, (h0, c0), inputs, unroll=_FORWARD_UNROLL)
    return jnp.swapaxes(hs, 0, 1), (h_t, c_t)


def _lstm_fwd(params, xs, h0, c0, mm):
    hidden = h0.shape[-1]
    scale, shift, _, _ = _gate_constants(hidden, xs.dtype)
    cast = params._replace(w_ih=mm.operand(params.w_ih), w_hh=mm.operand(params.w_hh))

    def step(carry, t):
        h, c, gates = carry
        gx_t = lax.dynamic_index_in_dim(gates, t, keepdims=False)
        acts, h, c = _step(cast, scale, shift, gx_t, h, c, mm)
        # Activations overwrite the consumed input projection in place, so no
        # second [T, B, 4H] buffer is allocated and zero-filled for them.
        gates = lax.dynamic_update_index_in_dim(gates, acts, t, 0)
        return (h, c, gates), c

    init = (h0, c0, _input_projection(cast, xs, mm))
    steps = jnp.arange(xs.shape[1])
    (h_t, c_t, acts), cs = lax.scan(step, init, steps, unroll=_FORWARD_UNROLL)
    # Rebuilt in one vectorised pass rather than stored from inside the loop,
    # which saves a per-step write; equal to the in-loop h bit for bit.
    hs = acts[..., 3 * hidden :] * jnp.tanh(cs)
    # Residuals: xs [B, T, I] as given; time-major acts [T, B, 4H] (σ(i), σ(f),
    # tanh(g), σ(o)), cs and hs [T, B, H] (steps 1 .. T); h0, c0 [B, H].
    return (jnp.swapaxes(hs, 0, 1), (h_t, c_t)), (params, xs, acts, cs, hs, h0, c0)


def _lstm_bwd(mm: Matmul, res, cotangents):
    params, xs, acts, cs, hs, h0, c0 = res
    d_hs, (d_ht, d_ct) = cotangents
    _, _, k0, k1 = _gate_constants(h0.shape[-1], acts.dtype)
    c_prev = jnp.concatenate([c0[None], cs[:-1]], 0)
    # Materialised once (see ``row_major``): a [B, 4H] x [4H, H] GEMM per step
    # runs markedly faster on XLA CPU than one that reads w_hh transposed.
    w_hh_t = mm.operand(row_major(params.w_hh, (1, 0)))

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
        return (mm(d_gates, w_hh_t), dc * f), d_gates

    per_step = (jnp.swapaxes(d_hs, 0, 1), acts, cs, c_prev)
    scan = partial(lax.scan, reverse=True, unroll=_BACKWARD_UNROLL)
    (dh0, dc0), d_gates = scan(step, (d_ht, d_ct), per_step)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0)
    # The weight gradients contract over time and batch at once. Both stay
    # separate axes of the contraction: merging them into one T*B axis would,
    # with the batch sharded over devices, gather every device's activations,
    # where separate axes leave a local product and one all-reduce of the
    # [K, 4H] result. [K, T, B] operands (contracted dimensions minor on the
    # left, major on the right) keep XLA CPU on its fast GEMM path.
    h_prev_t = row_major(h_prev, (2, 0, 1))
    xs_t = row_major(xs, (2, 1, 0))
    contract = (((1, 2), (0, 1)), ((), ()))
    grads = LSTMParams(
        w_ih=mm.general(xs_t, d_gates, contract),
        w_hh=mm.general(h_prev_t, d_gates, contract),
        b=jnp.sum(d_gates, axis=(0, 1)),
    )
    d_xs = mm.general(d_gates, params.w_ih, (((2,), (1,)), ((), ())))  # [T, B, I]
    return grads, jnp.swapaxes(d_xs, 0, 1), dh0, dc0


lstm.defvjp(_lstm_fwd, _lstm_bwd)


def cell(gates: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """PyTorch's cell update from gates <float32>[B, 4H] (i, f, g, o): (h', c')."""
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


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
        h, c = cell(x_t @ params.w_ih + h @ params.w_hh + params.b, c)
        return (h, c), h

    (h_t, c_t), hs = lax.scan(step, (h0, c0), jnp.swapaxes(xs, 0, 1))
    return jnp.swapaxes(hs, 0, 1), (h_t, c_t)
