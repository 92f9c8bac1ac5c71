"""Zhao et al.'s dialog CVAE, with an optional BN head on the recognition mean.

utterance bi-GRU → context GRU → condition c = [topic; my meta; other meta; ctx];
prior p(z|c): Linear-tanh-Linear; recognition q(z|c, y): Linear([c; enc(y)]),
whose mean may go through the ``bn_gaussian`` head; decoder GRU whose initial
state is Linear([c; z]); bag-of-words head Linear-tanh-Linear on [c; z],
as in Zhao et al. GRUs follow TensorFlow's ``GRUCell`` (reset gate applied to the
state before the candidate's matmul; gate bias initialised to 1) because the
reference model is TensorFlow code.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnvae_jax.data.vocab import BOS, EOS, PAD
from bnvae_jax.models import posteriors
from bnvae_jax.models.layers import uniform
from bnvae_jax.tasks.dialog.config import DialogModelConfig


def _gate_bias(key, shape, dtype=jnp.float32):
    """TF's GRU bias [r; u; c]: 1 on the reset and update gates, 0 on the candidate."""
    return (jnp.arange(shape[0]) < 2 * (shape[0] // 3)).astype(dtype)


class GRU(nn.Module):
    """A one-layer GRU over <float32>[B, T, in_dim] with per-row lengths (TF semantics).

    ``r, u = σ(W [x; h] + b_g)``, ``c = tanh(W_c [x; r ⊙ h] + b_c)``,
    ``h' = u ⊙ h + (1 − u) ⊙ c``; positions at or past a row's length leave its
    state unchanged, so the final carry is the state after its last token.
    """

    in_dim: int
    hidden: int
    init_scale: float
    reverse: bool = False

    def setup(self):
        h_dim = self.hidden
        init = uniform(self.init_scale)
        self.w_x = self.param("gate_x", init, (self.in_dim, 3 * h_dim))
        self.w_hg = self.param("gate_h", init, (h_dim, 2 * h_dim))
        self.w_hc = self.param("cand_h", init, (h_dim, h_dim))
        self.bias = self.param("bias", _gate_bias, (3 * h_dim,))

    def input_gates(self, xs):
        """The input half of every gate, <float32>[..., 3H] (hoisted out of scans)."""
        return xs @ self.w_x + self.bias

    def step(self, h, g_x):
        """One step from state <float32>[B, H] and input gates <float32>[B, 3H]."""
        h_dim = self.hidden
        gates = jax.nn.sigmoid(g_x[:, : 2 * h_dim] + h @ self.w_hg)
        r, u = gates[:, :h_dim], gates[:, h_dim:]
        c = jnp.tanh(g_x[:, 2 * h_dim :] + (r * h) @ self.w_hc)
        return u * h + (1.0 - u) * c

    def __call__(self, xs, lengths, h0=None):
        """Returns (final state <float32>[B, H], outputs <float32>[B, T, H])."""
        batch, steps, _ = xs.shape
        t = jnp.arange(steps)
        if self.reverse:
            # Each row read backwards from its last real position.
            idx = jnp.where(t[None] < lengths[:, None], lengths[:, None] - 1 - t, t)
            xs = jnp.take_along_axis(xs, idx[..., None], axis=1)
        gx = self.input_gates(xs).swapaxes(0, 1)  # [T, B, 3H]
        valid = (t[:, None] < lengths[None, :])[..., None]
        h = jnp.zeros((batch, self.hidden), xs.dtype) if h0 is None else h0

        def body(h, inputs):
            g_x, keep = inputs
            new = jnp.where(keep, self.step(h, g_x), h)
            return new, new

        h, outs = jax.lax.scan(body, h, (gx, valid))
        return h, outs.swapaxes(0, 1)


class Dense(nn.Module):
    """``tf.contrib.layers.fully_connected``: Xavier-uniform weights, zero bias."""

    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.features, kernel_init=nn.initializers.xavier_uniform())(x)


class CVAEOutput(NamedTuple):
    """Per-example terms, each <float32>[B] unless noted.

    Attributes:
      rec: −log p(y|c, z) summed over response tokens after ``<s>``.
      kl: KL(q(z|c, y) ‖ p(z|c)), summed over dimensions.
      prior_kl: KL(p(z|c) ‖ N(0, I)).
      bow: bag-of-words loss (summed over response tokens after ``<s>``).
      tokens: number of target tokens.
      posterior / prior: the Gaussians, <float32>[B, n] each.
    """

    rec: jax.Array
    kl: jax.Array
    prior_kl: jax.Array
    bow: jax.Array
    tokens: jax.Array
    posterior: posteriors.Posterior
    prior: posteriors.Posterior


def gaussian_kl_between(q: posteriors.Posterior, p: posteriors.Posterior) -> jax.Array:
    """Per-dimension KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) <float32>[..., n].

    ½ [log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²)/σ_p² − 1].
    """
    # First, as ever: the order fixes the gradient's rounding.
    logvar_ratio = p.logvar - q.logvar
    spread = (jnp.exp(q.logvar) + jnp.square(q.mu - p.mu)) * jnp.exp(-p.logvar)
    return 0.5 * (logvar_ratio + spread - 1.0)


def bow_loss(bow_logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """Bag-of-words loss: Σ_t −log softmax(bow_logits)[y_t] over masked positions.

    Args:
      bow_logits: <float32>[B, V], one distribution per response.
      targets: <int32>[B, T] response tokens after ``<s>``.
      mask: <float32>[B, T] 1 on real target positions.

    Returns:
      <float32>[B].
    """
    logp = jax.nn.log_softmax(bow_logits, axis=-1)
    picked = jnp.take_along_axis(logp, targets, axis=-1)
    return -jnp.sum(picked * mask, axis=-1)


class DialogCVAE(nn.Module):
    """Zhao et al.'s CVAE (see above); ``cfg.head`` picks the recognition head."""

    cfg: DialogModelConfig
    axis_name: str | None = None  # pmap: BN statistics over the devices' rows

    def setup(self):
        cfg = self.cfg
        init = uniform(cfg.init_scale)
        self.embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, embedding_init=init)
        self.topic_embed = nn.Embed(cfg.num_topics, cfg.topic_dim, embedding_init=init)
        self.utt_fw = GRU(cfg.emb_dim, cfg.utt_hidden, cfg.init_scale)
        self.utt_bw = GRU(cfg.emb_dim, cfg.utt_hidden, cfg.init_scale, reverse=True)
        self.ctx_rnn = GRU(2 * cfg.utt_hidden + 2, cfg.ctx_hidden, cfg.init_scale)
        self.recog = Dense(2 * cfg.latent_dim)
        self.prior_fc = Dense(cfg.prior_hidden)
        self.prior_out = Dense(2 * cfg.latent_dim)
        bn = {"gamma": cfg.gamma, "momentum": cfg.bn_momentum, "eps": cfg.bn_eps}
        self.head = posteriors.make_head(cfg.head, **bn, axis_name=self.axis_name)
        self.bow_fc = Dense(cfg.bow_hidden)
        self.bow_out = Dense(cfg.vocab_size)
        self.dec_init = Dense(cfg.dec_hidden)
        self.decoder = GRU(cfg.emb_dim, cfg.dec_hidden, cfg.init_scale)
        self.dec_out = nn.Dense(cfg.vocab_size, kernel_init=init)  # zero bias

    def encode_utterances(self, tokens, lengths):
        """<int32>[..., U] → <float32>[..., 2·utt_hidden] (final fw; final bw)."""
        flat, lens = tokens.reshape(-1, tokens.shape[-1]), lengths.reshape(-1)
        x = self.embed(flat)
        h_fw, h_bw = self.utt_fw(x, lens)[0], self.utt_bw(x, lens)[0]
        return jnp.concatenate([h_fw, h_bw], -1).reshape(*tokens.shape[:-1], -1)

    def condition(self, batch):
        """The condition [topic; my meta; other meta; context] <float32>[B, C]."""
        utt = self.encode_utterances(batch["context"], batch["context_utt_lens"])
        floor = jax.nn.one_hot(batch["floors"], 2, dtype=utt.dtype)
        ctx, _ = self.ctx_rnn(jnp.concatenate([utt, floor], -1), batch["context_lens"])
        topic = self.topic_embed(batch["topic"])
        return jnp.concatenate([topic, batch["my_meta"], batch["other_meta"], ctx], -1)

    def prior(self, c) -> posteriors.Posterior:
        mu, logvar = jnp.split(self.prior_out(jnp.tanh(self.prior_fc(c))), 2, -1)
        return posteriors.Posterior(mu, logvar)

    def decode_logits(self, c, z, inputs, lengths):
        """Teacher-forced logits <float32>[B, T, V] for input tokens <int32>[B, T]."""
        h0 = self.dec_init(jnp.concatenate([c, z], -1))
        _, outs = self.decoder(self.embed(inputs), lengths, h0)
        return self.dec_out(outs)

    def __call__(self, batch, *, train: bool) -> CVAEOutput:
        """All loss terms with z ~ q(z|c, y) (the ``sample`` rng stream)."""
        c = self.condition(batch)
        prior = self.prior(c)
        response, lens = batch["response"], batch["response_lens"]
        y = self.encode_utterances(response, lens)
        mu, logvar = jnp.split(self.recog(jnp.concatenate([c, y], -1)), 2, -1)
        post = self.head(mu, logvar, batch["mask"], train=train)
        z = posteriors.gaussian_sample(post, self.make_rng("sample"))
        inputs, targets = response[:, :-1], response[:, 1:]
        steps = jnp.arange(targets.shape[1])
        target_mask = (steps[None] < (lens - 1)[:, None]).astype(jnp.float32)
        logits = self.decode_logits(c, z, inputs, lens - 1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        bow_logits = self.bow_out(jnp.tanh(self.bow_fc(jnp.concatenate([c, z], -1))))
        return CVAEOutput(
            rec=jnp.sum(nll * target_mask, -1),
            kl=jnp.sum(gaussian_kl_between(post, prior), -1),
            prior_kl=jnp.sum(posteriors.gaussian_kl(*prior), -1),
            bow=bow_loss(bow_logits, targets, target_mask),
            tokens=jnp.sum(target_mask, -1),
            posterior=post,
            prior=prior,
        )

    def generate(
        self,
        batch,
        *,
        num_samples: int,
        max_len: int,
        temperature: float | jax.Array | None = None,
    ):
        """Responses from z ~ p(z|c), one per prior sample.

        z is drawn from the ``sample`` rng stream (its first key, so a given rng
        gives the same z with or without ``temperature``). Each token is then
        the argmax of the decoder's logits (``temperature`` None, greedy), or
        sampled from softmax(logits / temperature), one key of the ``sample``
        stream per step shared by the rows.

        Args:
          batch: the ``condition`` arrays of <B> contexts (``response`` unused).
          num_samples: prior samples per context.
          max_len: decoded tokens per response.
          temperature: None for greedy decoding; a number > 0 (or a scalar
            array, e.g. a traced argument) to sample. Small temperatures tend
            to greedy decoding.

        Returns:
          <int32>[B, num_samples, max_len] tokens after ``<s>``; positions after
          the first ``</s>`` are ``<pad>``.

        Raises:
          ValueError: a concrete ``temperature`` that is not > 0.
        """
        concrete = temperature is not None and not isinstance(temperature, jax.Array)
        if concrete and not temperature > 0:
            raise ValueError(
                f"temperature must be > 0 (None: greedy), got {temperature!r}"
            )
        c = self.condition(batch)
        prior = self.prior(c)
        z = posteriors.gaussian_sample(prior, self.make_rng("sample"), num_samples)
        b, rows = c.shape[0], c.shape[0] * num_samples
        c_rep = jnp.repeat(c[:, None], num_samples, 1).reshape(rows, -1)
        h = self.dec_init(jnp.concatenate([c_rep, z.reshape(rows, -1)], -1))
        gru = self.decoder

        def body(carry, key):
            h, token, done = carry
            h = gru.step(h, gru.input_gates(self.embed(token)))
            logits = self.dec_out(h)
            if greedy:
                token = jnp.argmax(logits, -1)
            else:
                token = jax.random.categorical(key, logits / temperature, -1)
            token = token.astype(jnp.int32)
            return (h, token, done | (token == EOS)), jnp.where(done, PAD, token)

        greedy = temperature is None
        keys = None if greedy else jax.random.split(self.make_rng("sample"), max_len)
        carry = (h, jnp.full((rows,), BOS, jnp.int32), jnp.zeros((rows,), bool))
        _, out = jax.lax.scan(body, carry, keys, length=max_len)
        return out.T.reshape(b, num_samples, max_len)
