"""The model posterior p(z|x) of a scalar latent, by discretising z on a grid.

He et al. (2019) and BN-VAE (App. A.1) compare the model-posterior mean
``mu_{x,theta} = E_{p(z|x)}[z]`` with the inference mean ``mu_{x,phi}`` of
``q(z|x)``. With one latent dimension the model posterior is computed on a grid
``z_1 < .. < z_K``: ``p(z_k|x) ∝ p(z_k) p(x|z_k)``, normalised by log-sum-exp
over the grid.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special

from bnvae_jax.errors import ConfigError
from bnvae_jax.evaluation import decoding


@dataclasses.dataclass(frozen=True)
class Grid:
    """An evenly spaced grid ``arange(start, stop, step)`` (stop excluded).

    The reference's grid is ``Grid(-20.0, 20.0, 0.1)``: 400 points.
    """

    start: float = -20.0
    stop: float = 20.0
    step: float = 0.1

    def __post_init__(self):
        if not (self.step > 0 and self.stop > self.start):
            raise ConfigError(
                f"grid needs step > 0 and stop > start, got start={self.start}, "
                f"stop={self.stop}, step={self.step}"
            )

    def points(self) -> np.ndarray:
        """<float64>[K] the grid points."""
        count = int(np.ceil((self.stop - self.start) / self.step - 1e-9))
        return self.start + self.step * np.arange(count, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class GridPosterior:
    """Moments of the discretised model posterior of each sentence.

    Attributes:
      mean: <float64>[N] E_{p(z|x)}[z].
      std: <float64>[N] its standard deviation.
      log_px: <float64>[N] log p(x) ≈ logsumexp_k (log p(z_k) + log p(x|z_k) + log dz).
    """

    mean: np.ndarray
    std: np.ndarray
    log_px: np.ndarray


def grid_posterior(log_lik: np.ndarray, grid: np.ndarray) -> GridPosterior:
    """The model posterior under a standard normal prior, on a grid.

    Args:
      log_lik: <float>[N, K] log p(x_i | z = grid_k).
      grid: <float>[K] evenly spaced scalar latents.

    Returns:
      Mean and standard deviation of ``softmax_k(log N(z_k; 0, 1) + log_lik)``
      over the grid, and the Riemann-sum estimate of log p(x).
    """
    log_lik = np.asarray(log_lik, np.float64)
    grid = np.asarray(grid, np.float64)
    if log_lik.ndim != 2 or grid.ndim != 1 or log_lik.shape[1] != grid.shape[0]:
        raise ValueError(
            f"log_lik must be [N, K] with K = len(grid); got {log_lik.shape} "
            f"and grid {grid.shape}"
        )
    log_joint = log_lik - 0.5 * (np.square(grid) + np.log(2.0 * np.pi))
    log_norm = scipy.special.logsumexp(log_joint, axis=1)
    weights = np.exp(log_joint - log_norm[:, None])
    mean = weights @ grid
    var = np.maximum(weights @ np.square(grid) - np.square(mean), 0.0)
    step = float(grid[1] - grid[0]) if grid.shape[0] > 1 else 1.0
    return GridPosterior(mean=mean, std=np.sqrt(var), log_px=log_norm + np.log(step))


@functools.partial(jax.jit, static_argnames="model")
def _log_lik_kernel(variables, tokens, lengths, *, chunks, model):
    """<float32>[B, C * G]: log p(x_b | z = chunks[c, g]) (decoder in eval mode).

    Each chunk decodes the ``B * G`` pairs (sentence, grid point) as one batch.
    """
    batch = tokens.shape[0]

    def one_chunk(zs):  # [G] -> [B, G]
        g = zs.shape[0]
        rows = [jnp.repeat(a, g, axis=0) for a in (tokens, lengths)]  # each g times
        z = jnp.tile(zs, batch)[:, None]
        rec = model.apply(variables, *rows, z, train=False, method="reconstruction")
        return -rec.reshape(batch, g)

    out = jax.lax.map(one_chunk, chunks)  # [C, B, G]
    return jnp.moveaxis(out, 0, 1).reshape(batch, -1)


def log_likelihood_grid(
    model: nn.Module,
    variables: Mapping,
    rows: Sequence[np.ndarray],
    grid: np.ndarray,
    *,
    sentence_chunk: int = 50,
    grid_chunk: int = 20,
) -> np.ndarray:
    """Log p(x|z) of every sentence at every grid point (the decoder's eval mode).

    Args:
      model: a ``TextVAE`` with ``latent_dim == 1``.
      variables: its variables ({'params', 'batch_stats'}).
      rows: sentences as <int32>[L+2] rows ``<s> .. </s>``.
      grid: <float>[K] latent values.
      sentence_chunk: sentences decoded together (the last chunk is padded).
      grid_chunk: grid points decoded together per sentence.

    Returns:
      <float64>[N, K], −(summed token cross-entropy) of each (sentence, z).

    Raises:
      ConfigError: the model's latent is not a scalar.
    """
    if model.cfg.latent_dim != 1:
        raise ConfigError(
            f"the grid posterior needs model.latent_dim=1, got {model.cfg.latent_dim}"
        )
    grid = np.asarray(grid, np.float32)
    num_points = grid.shape[0]
    if not len(rows):
        return np.zeros((0, num_points))
    pad = (-num_points) % grid_chunk
    chunks = np.pad(grid, (0, pad), mode="edge").reshape(-1, grid_chunk)
    kernel = functools.partial(_log_lik_kernel, variables, chunks=chunks, model=model)
    return _map_chunks(kernel, rows, sentence_chunk)[:, :num_points]


def _map_chunks(fn, rows: Sequence[np.ndarray], chunk: int):
    """``fn(tokens, lengths)`` over ``rows`` in chunks of ``chunk`` rows.

    The last chunk is padded (one compiled shape for every chunk); the outputs
    (a pytree of arrays) are concatenated as float64 without the padding.
    """
    tokens, lengths = decoding.pad_rows(list(rows))
    n = len(rows)
    tokens = np.pad(tokens, ((0, -n % chunk), (0, 0)))
    lengths = np.pad(lengths, (0, -n % chunk), constant_values=2)
    outs = [
        fn(tokens[start : start + chunk], lengths[start : start + chunk])
        for start in range(0, n, chunk)
    ]
    return jax.tree.map(lambda *x: np.concatenate(x)[:n].astype(np.float64), *outs)


@functools.partial(jax.jit, static_argnames="model")
def _encode(variables, tokens, lengths, *, model):
    mask = jnp.ones(tokens.shape[:1], jnp.float32)
    post = model.apply(variables, tokens, lengths, mask, train=False, method="encode")
    return post.mu, post.logvar


def inference_posterior(
    model: nn.Module,
    variables: Mapping,
    rows: Sequence[np.ndarray],
    *,
    sentence_chunk: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and log-variance of q(z|x) (eval mode: BN running statistics).

    Returns:
      (mu, logvar), each <float64>[N, n]; for BN-VAE the mean is after the BN head.
    """
    encode = functools.partial(_encode, variables, model=model)
    return _map_chunks(encode, rows, sentence_chunk)
