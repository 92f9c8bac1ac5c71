"""The LSTM text VAE: encoder, posterior head, latent-conditioned LSTM decoder."""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnvae_jax.config import ModelConfig
from bnvae_jax.models import latents, layers, posteriors
from bnvae_jax.models.posteriors import Posterior


class VAEOutput(NamedTuple):
    """Per-example terms of one training/evaluation pass.

    Attributes:
      rec: <float32>[B] summed token cross-entropy of the L+1 targets (nats).
      kl: <float32>[B, k] KL(q(z|x) || p(z)) in parts (k = n for Gaussians).
      posterior: the posterior parameters (the head's type).
      z: <float32>[B, n] the sample the decoder was run on.
    """

    rec: jax.Array
    kl: jax.Array
    posterior: Posterior | latents.DirectionPosterior
    z: jax.Array


def target_mask(lengths: jax.Array, width: int) -> jax.Array:
    """<float32>[B, width]: 1 where position t predicts a real token (t < L+1)."""
    return (jnp.arange(width)[None, :] < (lengths[:, None] - 1)).astype(jnp.float32)


class Encoder(nn.Module):
    """Embedding -> LSTM -> state at the true last token -> Linear to (mu, logvar)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, lengths: jax.Array):
        """Encodes rows <int32>[B, T] (incl. <s>, </s>) with true lengths <int32>[B].

        Returns:
          raw mean and log-variance, each <float32>[B, n].
        """
        cfg = self.cfg
        mm = layers.matmul_of(cfg)
        embed = layers.embed(cfg.vocab_size, cfg.emb_dim, cfg.enc_init, name="embed")
        x = embed(tokens)
        zeros = jnp.zeros((tokens.shape[0], cfg.enc_hidden), x.dtype)
        lstm = layers.LSTM(cfg.emb_dim, cfg.enc_hidden, cfg.enc_init, mm, name="lstm")
        hs, _ = lstm(x, zeros, zeros)
        last = jnp.clip(lengths - 1, 0, tokens.shape[1] - 1)
        # A gather along time within each row: with the batch sharded over
        # devices it stays local (indexing with (row, step) pairs gathered
        # every device's rows, and its backward every device's gradients).
        h_last = jnp.take_along_axis(hs, last[:, None, None], axis=1)[:, 0]
        unit_mu = cfg.head == "bn_gaussian" and cfg.bn_remedy == "weight_norm"
        project = layers.Linear(
            2 * cfg.latent_dim, cfg.enc_init, mm, unit_mu, name="to_latent"
        )
        return jnp.split(project(h_last), 2, axis=-1)


class Decoder(nn.Module):
    """LSTM decoder with z in its initial state and concatenated to every input.

    With ``cfg.skip`` (Skip-VAE) the output layer reads [h_t; z] at every step;
    with ``latent_dim == 0`` it is the LSTM language model (zero initial state).
    """

    cfg: ModelConfig

    def setup(self):
        cfg = self.cfg
        self.embed = layers.embed(cfg.vocab_size, cfg.emb_dim, cfg.dec_init)
        mm = layers.matmul_of(cfg)
        if cfg.latent_dim:
            self.init_state = layers.Linear(cfg.dec_hidden, cfg.dec_init, mm)
        self.lstm = layers.LSTM(
            cfg.emb_dim + cfg.latent_dim, cfg.dec_hidden, cfg.dec_init, mm
        )
        self.out = layers.Linear(cfg.vocab_size, cfg.dec_init, mm)
        self.drop_in = nn.Dropout(cfg.dec_dropout_in)
        self.drop_out = nn.Dropout(cfg.dec_dropout_out)

    def initial_state(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(h_0, c_0) = (tanh(W_z z), W_z z) for <float32>[B, n] (zeros if n = 0)."""
        if not self.cfg.latent_dim:
            zeros = jnp.zeros((z.shape[0], self.cfg.dec_hidden), jnp.float32)
            return zeros, zeros
        c0 = self.init_state(z)
        return jnp.tanh(c0), c0

    def __call__(
        self,
        inputs: jax.Array,
        z: jax.Array,
        *,
        train: bool,
        targets: jax.Array | None = None,
    ) -> jax.Array:
        """Teacher-forced logits, or the targets' cross-entropies.

        Args:
          inputs: <int32>[B, T] decoder inputs (<s> w_1 .. w_L, padded).
          z: <float32>[B, n] latent codes.
          train: applies dropout when true.
          targets: <int32>[B, T] next tokens; when given, returns their
            cross-entropies (nats) through the fused output-layer loss.

        Returns:
          <float32>[B, T, V] next-token logits, or <float32>[B, T] with targets.
        """
        x = self.drop_in(self.embed(inputs), deterministic=not train)
        zs = jnp.broadcast_to(z[:, None, :], (*inputs.shape, z.shape[-1]))
        hs, _ = self.lstm(jnp.concatenate([x, zs], -1), *self.initial_state(z))
        hs = self.drop_out(hs, deterministic=not train)
        # Skip-VAE's output layer reads [h_t; z] at every step.
        return self.out(jnp.concatenate([hs, zs], -1) if self.cfg.skip else hs, targets)

    def step(self, state, token: jax.Array, z: jax.Array):
        """One generation step (no dropout).

        Args:
          state: (h, c), each <float32>[B, H].
          token: <int32>[B] previous token.
          z: <float32>[B, n].

        Returns:
          the new state and <float32>[B, V] logits of the next token.
        """
        x = jnp.concatenate([self.embed(token), z], -1)
        h, c = self.lstm.step(x, *state)
        return (h, c), self.out(jnp.concatenate([h, z], -1) if self.cfg.skip else h)


class TextVAE(nn.Module):
    """q(z|x) through a named posterior head, p(x|z) through the LSTM decoder.

    RNG streams: 'sample' (posterior samples) and 'dropout'.
    """

    cfg: ModelConfig
    axis_name: str | None = None

    @property
    def family(self) -> latents.LatentFamily:
        """How to sample, score and take the KL of this model's posterior."""
        cfg = self.cfg
        if cfg.head == "vmf":
            return latents.vmf_family(cfg.kappa, cfg.latent_dim, cfg.vmf_kl)
        return latents.GAUSSIAN

    def setup(self):
        cfg = self.cfg
        if cfg.latent_dim:  # the language model has no encoder
            self.encoder = Encoder(cfg)
        if cfg.head == "vmf":
            self.head = latents.DirectionHead(name="head")
        else:
            names = ("gamma", "learn_gamma", "gamma_min", "delta", "bn_remedy")
            names += ("du_gamma", "du_dropout", "du_alpha")
            hp = {name: getattr(cfg, name) for name in names}
            hp |= {"momentum": cfg.bn_momentum, "eps": cfg.bn_eps}
            self.head = posteriors.make_head(cfg.head, axis_name=self.axis_name, **hp)
        self.decoder = Decoder(cfg)

    def encode(self, tokens, lengths, mask, *, train: bool):
        """Posterior parameters for rows <int32>[B, T]; ``mask`` <float32>[B]."""
        if self.cfg.latent_dim:
            mu, logvar = self.encoder(tokens, lengths)
        else:  # the language model: a zero-width posterior
            mu = logvar = jnp.zeros((tokens.shape[0], 0), jnp.float32)
        return self.head(mu, logvar, mask, train=train)

    def reconstruction(self, tokens, lengths, z, *, train: bool) -> jax.Array:
        """-log p(x|z) summed over the L+1 targets: <float32>[B]."""
        nll = self.decoder(tokens[:, :-1], z, train=train, targets=tokens[:, 1:])
        return jnp.sum(nll * target_mask(lengths, nll.shape[1]), axis=1)

    def __call__(self, tokens, lengths, mask, *, train: bool) -> VAEOutput:
        """One-sample ELBO terms for a batch of rows."""
        post = self.encode(tokens, lengths, mask, train=train)
        family = self.family
        z = family.sample(post, self.make_rng("sample"))
        rec = self.reconstruction(tokens, lengths, z, train=train)
        return VAEOutput(rec, family.kl(post), post, z)

    def decode_step(self, state, token, z):
        return self.decoder.step(state, token, z)

    def decode_init(self, z):
        return self.decoder.initial_state(z)
