"""Embedding, LSTM and linear layers with the reference's initialisation schemes."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnvae_jax.models import lstm as lstm_lib

Initializer = Callable[[jax.Array, tuple[int, ...], jnp.dtype], jax.Array]


def uniform(scale: float) -> Initializer:
    """U(-scale, scale), PyTorch's ``uniform_(-scale, scale)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


@dataclasses.dataclass(frozen=True)
class InitScheme:
    """How one network's embedding, LSTM and linear layers are initialised.

    ``None`` scales mean PyTorch's defaults: U(±1/sqrt(H)) for LSTMs and
    U(±1/sqrt(fan_in)) for linear layers.
    """

    embedding_std: float | None  # N(0, std) when set
    embedding_uniform: float | None  # U(±x) when set
    lstm_uniform: float | None
    linear_uniform: float | None

    def embedding(self) -> Initializer:
        if self.embedding_uniform is not None:
            return uniform(self.embedding_uniform)
        return jax.nn.initializers.normal(self.embedding_std)

    def lstm(self, hidden: int) -> Initializer:
        scale = self.lstm_uniform
        return uniform(1.0 / math.sqrt(hidden) if scale is None else scale)

    def linear(self, fan_in: int) -> Initializer:
        scale = self.linear_uniform
        return uniform(1.0 / math.sqrt(fan_in) if scale is None else scale)


INIT_SCHEMES: dict[str, InitScheme] = {
    # PyTorch defaults: what the [BN] Gaussian encoder keeps.
    "torch_default": InitScheme(1.0, None, None, None),
    # He et al. / Li et al.: every weight U(±0.01), embeddings U(±0.1).
    "uniform": InitScheme(None, 0.1, 0.01, 0.01),
}


def matmul_of(cfg) -> lstm_lib.Matmul:
    """The products of a ``ModelConfig``: its precision, mixed or not."""
    return lstm_lib.Matmul(cfg.matmul_precision, cfg.mixed_precision)


class Embed(nn.Module):
    """Token embedding table."""

    vocab_size: int
    features: int
    init_scheme: str

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Maps <int32>[...] token ids to <float32>[..., features]."""
        table = self.param(
            "embedding",
            INIT_SCHEMES[self.init_scheme].embedding(),
            (self.vocab_size, self.features),
        )
        return jnp.take(table, tokens, axis=0)


class Linear(nn.Module):
    """Dense layer without bias (the reference's projections have none)."""

    features: int
    init_scheme: str
    matmul: lstm_lib.Matmul = lstm_lib.FLOAT32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param(
            "kernel",
            INIT_SCHEMES[self.init_scheme].linear(fan_in),
            (fan_in, self.features),
        )
        return self.matmul(x, self.used_kernel(kernel))

    def used_kernel(self, kernel: jax.Array) -> jax.Array:
        """The product's weights made from the parameter (subclasses reshape it)."""
        return kernel


class LSTM(nn.Module):
    """One-layer LSTM, PyTorch gate order (i, f, g, o).

    Parameters are kept as PyTorch keeps them (two bias vectors, summed at use) so
    both initialisation schemes match the reference's distributions exactly.
    """

    input_size: int
    hidden: int
    init_scheme: str
    matmul: lstm_lib.Matmul = lstm_lib.FLOAT32

    def setup(self):
        init = INIT_SCHEMES[self.init_scheme].lstm(self.hidden)
        gates = 4 * self.hidden
        self.w_ih = self.param("w_ih", init, (self.input_size, gates))
        self.w_hh = self.param("w_hh", init, (self.hidden, gates))
        self.b_ih = self.param("b_ih", init, (gates,))
        self.b_hh = self.param("b_hh", init, (gates,))

    def _params(self) -> lstm_lib.LSTMParams:
        return lstm_lib.LSTMParams(
            w_ih=self.w_ih, w_hh=self.w_hh, b=self.b_ih + self.b_hh
        )

    def __call__(
        self, xs: jax.Array, h0: jax.Array, c0: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Runs the LSTM over a whole sequence.

        Args:
          xs: <float32>[B, T, I] inputs.
          h0: <float32>[B, H] initial hidden state.
          c0: <float32>[B, H] initial cell state.

        Returns:
          hs <float32>[B, T, H] and the final state (h_T, c_T).
        """
        return lstm_lib.lstm(self._params(), xs, h0, c0, self.matmul)

    def step(
        self, x: jax.Array, h: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One step for decoding: <float32>[B, I], [B, H], [B, H] -> (h', c')."""
        p, mm = self._params(), self.matmul
        gates = mm(x, p.w_ih) + mm(h, p.w_hh) + p.b
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c


def linear_cross_entropy(
    h: jax.Array,
    kernel: jax.Array,
    targets: jax.Array,
    matmul: lstm_lib.Matmul = lstm_lib.FLOAT32,
):
    """−log softmax(h @ kernel)[target] for every row, with a GEMM-friendly backward.

    Args:
      h: <float32>[N, H] features.
      kernel: <float32>[H, V] output projection.
      targets: <int32>[N] target ids.
      matmul: how the products are computed; logits and softmax are float32.

    Returns:
      <float32>[N] token cross-entropies.
    """
    return _linear_cross_entropy(h, kernel, targets, matmul)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _linear_cross_entropy(h, kernel, targets, matmul):
    return _lce_fwd(h, kernel, targets, matmul)[0]


def _lce_fwd(h, kernel, targets, matmul):
    logits = matmul(h, kernel)
    lse = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return lse - picked, (h, kernel, targets, logits, lse)


def _lce_bwd(matmul, res, g):
    h, kernel, targets, logits, lse = res
    probs = jnp.exp(logits - lse[:, None])
    onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    d_logits = (probs - onehot) * g[:, None]
    # Both products would otherwise contract a leading dimension (see
    # ``lstm.row_major``).
    h_t = lstm_lib.row_major(h, (1, 0))
    kernel_t = lstm_lib.row_major(kernel, (1, 0))
    return matmul(d_logits, kernel_t), matmul(h_t, d_logits), None


_linear_cross_entropy.defvjp(_lce_fwd, _lce_bwd)


class VocabProjection(nn.Module):
    """Output layer to vocabulary logits (no bias), with a fused loss path."""

    vocab_size: int
    init_scheme: str
    matmul: lstm_lib.Matmul = lstm_lib.FLOAT32

    @nn.compact
    def __call__(self, h: jax.Array, targets: jax.Array | None = None) -> jax.Array:
        """Logits <float32>[..., V], or token NLLs [...] when ``targets`` is given."""
        kernel = self.param(
            "kernel",
            INIT_SCHEMES[self.init_scheme].linear(h.shape[-1]),
            (h.shape[-1], self.vocab_size),
        )
        if targets is None:
            return self.matmul(h, kernel)
        lead = h.shape[:-1]
        nll = linear_cross_entropy(
            h.reshape(-1, h.shape[-1]), kernel, targets.reshape(-1), self.matmul
        )
        return nll.reshape(lead)
