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

    def weights(self, layer: str, fan_in: int) -> Initializer:
        """'lstm' (fan_in = H) or 'linear' weights: U(±scale) or PyTorch's."""
        scale = self.lstm_uniform if layer == "lstm" else self.linear_uniform
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


def embed(vocab_size: int, features: int, init_scheme: str, **kwargs) -> nn.Embed:
    """Token embedding table (``nn.Embed``) initialised by ``init_scheme``."""
    init = INIT_SCHEMES[init_scheme].embedding()
    return nn.Embed(vocab_size, features, embedding_init=init, **kwargs)


class Linear(nn.Module):
    """Dense layer without bias (the reference's projections have none).

    Called with ``targets`` (the output layer to vocabulary logits) it returns
    the targets' cross-entropies through the fused ``linear_cross_entropy``.

    With ``unit_mu`` (the ``bn_remedy='weight_norm'`` projection) each of the first
    ``features // 2`` columns (μ) is divided by its L2 norm at use, so the scale of
    μ cannot shrink with its weights; the parameter is the plain layer's.
    """

    features: int
    init_scheme: str
    matmul: lstm_lib.Matmul = lstm_lib.FLOAT32
    unit_mu: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, targets: jax.Array | None = None) -> jax.Array:
        """<float32>[..., features] from x [..., K], or NLLs [...] given targets."""
        fan_in = x.shape[-1]
        init = INIT_SCHEMES[self.init_scheme].weights("linear", fan_in)
        kernel = self.param("kernel", init, (fan_in, self.features))
        if self.unit_mu:
            half = self.features // 2
            w_mu = kernel[:, :half]
            w_mu = w_mu * jax.lax.rsqrt(jnp.sum(jnp.square(w_mu), 0, keepdims=True))
            kernel = jnp.concatenate([w_mu, kernel[:, half:]], axis=1)
        if targets is None:
            return self.matmul(x, kernel)
        flat = x.reshape(-1, fan_in)
        nll = linear_cross_entropy(flat, kernel, targets.reshape(-1), self.matmul)
        return nll.reshape(x.shape[:-1])


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
        init = INIT_SCHEMES[self.init_scheme].weights("lstm", self.hidden)
        gates = 4 * self.hidden
        self.w_ih = self.param("w_ih", init, (self.input_size, gates))
        self.w_hh = self.param("w_hh", init, (self.hidden, gates))
        self.b_ih = self.param("b_ih", init, (gates,))
        self.b_hh = self.param("b_hh", init, (gates,))

    def _params(self) -> lstm_lib.LSTMParams:
        return lstm_lib.LSTMParams(self.w_ih, self.w_hh, self.b_ih + self.b_hh)

    def __call__(
        self, xs: jax.Array, h0: jax.Array, c0: jax.Array
    ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """``lstm.lstm`` over a whole sequence xs <float32>[B, T, I] from (h0, c0)."""
        return lstm_lib.lstm(self._params(), xs, h0, c0, self.matmul)

    def step(
        self, x: jax.Array, h: jax.Array, c: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """One step for decoding: <float32>[B, I], [B, H], [B, H] -> (h', c')."""
        p, mm = self._params(), self.matmul
        return lstm_lib.cell(mm(x, p.w_ih) + mm(h, p.w_hh) + p.b, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def linear_cross_entropy(h, kernel, targets, matmul=lstm_lib.FLOAT32):
    """−log softmax(h @ kernel)[target] for every row, with a GEMM-friendly backward.

    Args:
      h: <float32>[N, H] features.
      kernel: <float32>[H, V] output projection.
      targets: <int32>[N] target ids.
      matmul: how the products are computed; logits and softmax are float32.

    Returns:
      <float32>[N] token cross-entropies.
    """
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


linear_cross_entropy.defvjp(_lce_fwd, _lce_bwd)
