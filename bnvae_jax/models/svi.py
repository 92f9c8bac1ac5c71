"""Semi-amortised inference (SA-VAE, Kim et al. 2018): SVI refinement of q(z|x).

Starting from the encoder's λ0 = (μ, log σ²), K steps of SGD with momentum on the
per-example negative ELBO move λ with the decoder fixed. Training differentiates
the final loss exactly through the unrolled steps (the reference approximates
the Hessian-vector products by finite differences).

Two choices differ from Kim et al.'s code so that a sentence's refined posterior
does not depend on the other sentences of its batch (evaluation batches differ
from training batches): the loss is each example's negative ELBO times a
constant ``scale`` (1 / training batch size, the factor Kim's batch mean puts on
each example's gradient), and the μ and log σ² gradients are clipped to
``clip`` per example rather than over the whole batch tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bnvae_jax.config import ModelConfig
from bnvae_jax.models import latents, posteriors
from bnvae_jax.models.posteriors import Posterior


def refine(
    post: Posterior,
    rec_fn: Callable[[jax.Array, jax.Array], jax.Array],
    keys: jax.Array,
    *,
    kl_weight: jax.Array | float,
    cfg: ModelConfig,
) -> Posterior:
    """K SVI steps on λ = (μ, log σ²); returns λ_K.

    Args:
      post: the encoder's posterior, each <float32>[B, n].
      rec_fn: (z [B, n], step) -> −log p(x|z) <float32>[B] with the decoder
        fixed (``step`` lets it vary dropout between steps).
      keys: <key>[B] one key per example; step k draws example i's latent from
        ``fold_in(keys[i], k)``, so no example's result depends on the others.
      kl_weight: β of the per-example loss rec + β · KL.
      cfg: its ``svi_*`` fields: K = ``svi_steps``, the step size ``svi_lr``,
        ``svi_momentum`` (m_k = momentum · m_{k−1} − g_k; λ_{k+1} = λ_k + lr ·
        m_k), ``svi_clip`` (per-example L2 bound of the μ and of the log σ²
        gradient) and ``svi_scale`` (factor on each example's loss, see the
        module docstring).
    """
    lr, momentum = cfg.svi_lr, cfg.svi_momentum

    def example_losses(lam, k):
        step_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, k))(keys)
        z = latents.GAUSSIAN.sample_rows(lam, step_keys)
        kl = jnp.sum(posteriors.gaussian_kl(*lam), -1)
        return rec_fn(z, k) + kl_weight * kl

    def clip_rows(g):
        norm = jnp.sqrt(jnp.sum(jnp.square(g), axis=-1, keepdims=True))
        return g * jnp.minimum(1.0, cfg.svi_clip / jnp.maximum(norm, 1e-12))

    def step(carry, k):
        lam, velocity = carry
        # Examples are independent: the gradient of the sum is per example.
        grads = jax.grad(lambda p: cfg.svi_scale * jnp.sum(example_losses(p, k)))(lam)
        velocity = jax.tree.map(
            lambda v, g: momentum * v - clip_rows(g), velocity, grads
        )
        return (jax.tree.map(lambda p, v: p + lr * v, lam, velocity), velocity), None

    zeros = jax.tree.map(jnp.zeros_like, post)
    (final, _), _ = jax.lax.scan(step, (post, zeros), jnp.arange(cfg.svi_steps))
    return final


def eval_posterior(model, variables, tokens, lengths, mask, keys):
    """The posterior every evaluation uses: the encoder's, SVI-refined for SA-VAE.

    Eval mode throughout (running BN statistics, no dropout); ``keys`` <key>[B]
    are per-sentence keys, so a sentence's posterior does not depend on batching.
    """
    post = model.apply(variables, tokens, lengths, mask, train=False, method="encode")
    if not model.cfg.svi_steps:
        return post
    variables = jax.lax.stop_gradient(variables)

    def rec_fn(z, step):  # eval mode: no dropout to vary with ``step``
        return model.apply(
            variables, tokens, lengths, z, train=False, method="reconstruction"
        )

    svi_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0x5F1))(keys)
    return refine(post, rec_fn, svi_keys, kl_weight=1.0, cfg=model.cfg)
