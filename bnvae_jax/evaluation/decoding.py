"""Greedy, sampled and beam-search decoding from latent codes, and the text samples."""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnvae_jax import fileio
from bnvae_jax.config import EvalConfig
from bnvae_jax.data.vocab import BOS, EOS, PAD
from bnvae_jax.evaluation import passes


class BeamResult(NamedTuple):
    """The best hypothesis of each sentence.

    Attributes:
      tokens: <int32>[B, max_len] generated tokens (no leading ``<s>``), ``</s>``
        included when the hypothesis finished, ``PAD`` after it.
      scores: <float32>[B] summed log-probabilities of those tokens.
    """

    tokens: jax.Array
    scores: jax.Array


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def sample_decode(model, variables, z, key, *, max_len, temperature=1.0) -> jax.Array:
    """Multinomial decoding from softmax(logits / temperature), from ``<s>`` on.

    Each row stops at its first ``</s>``; the loop stops when every row has or
    after ``max_len`` positions.

    Args:
      model: the TextVAE (static).
      variables: its variables ({'params', 'batch_stats'}).
      z: <float32>[B, n] latent codes.
      key: PRNG key; the same key gives the same sentences. None: argmax
        (greedy) decoding; the temperature is then unused.
      max_len: number of generated positions (static).
      temperature: softmax temperature (1: the model's distribution).

    Returns:
      <int32>[B, max_len] tokens without the leading ``<s>``; ``</s>`` included,
      ``PAD`` after it.
    """
    batch = z.shape[0]

    def cond(carry):
        t, _, _, _, finished = carry
        return (t < max_len) & ~jnp.all(finished)

    def body(carry):
        t, state, token, out, finished = carry
        state, logits = model.apply(variables, state, token, z, method="decode_step")
        if key is None:
            nxt = jnp.argmax(logits, axis=-1)
        else:
            sub = jax.random.fold_in(key, t)
            nxt = jax.random.categorical(sub, logits / temperature, axis=-1)
        nxt = jnp.where(finished, PAD, nxt.astype(jnp.int32))
        out = lax.dynamic_update_slice_in_dim(out, nxt[:, None], t, axis=1)
        return t + 1, state, nxt, out, finished | (nxt == EOS)

    state = model.apply(variables, z, method="decode_init")
    out = jnp.full((batch, max_len), PAD, jnp.int32)
    token = jnp.full((batch,), BOS, jnp.int32)
    carry = (jnp.int32(0), state, token, out, jnp.zeros((batch,), bool))
    return lax.while_loop(cond, body, carry)[3]


class _Beam(NamedTuple):
    t: jax.Array  # <int32>[]
    state: tuple[jax.Array, jax.Array]  # each <float32>[B*K, H]
    token: jax.Array  # <int32>[B, K] last token of each alive hypothesis
    alive_scores: jax.Array  # <float32>[B, K], -inf for empty slots
    alive_seqs: jax.Array  # <int32>[B, K, max_len]
    fin_scores: jax.Array  # <float32>[B, K], -inf for empty slots
    fin_seqs: jax.Array  # <int32>[B, K, max_len]
    num_fin: jax.Array  # <int32>[B]


@functools.partial(
    jax.jit, static_argnames=("model", "beam_size", "max_len", "length_norm")
)
def beam_search(
    model, variables, z, *, beam_size, max_len, length_norm=False
) -> BeamResult:
    """Batched beam search with the reference's bookkeeping.

    Each step expands every alive hypothesis by every word and keeps the
    ``K - #finished`` best expansions by summed log-probability (no length
    normalisation); an expansion ending in ``</s>`` moves to the finished set,
    so the beam shrinks as hypotheses finish. A sentence stops when it has K
    finished hypotheses; the loop stops when all have or after ``max_len``
    steps. The best of finished and still-alive hypotheses is returned. All
    shapes are fixed: B·K rows go through ``decode_step`` each step.

    With ``length_norm`` (the Python API's beam), ``</s>`` cannot be the first
    token and the returned hypothesis is the best by log-probability per
    generated token, so the empty sentence is never chosen and long sentences
    are not penalised for their length; the search itself is unchanged.

    Args:
      model: the TextVAE (static).
      variables: its variables.
      z: <float32>[B, n] latent codes.
      beam_size: K (static).
      max_len: number of generated positions (static).
      length_norm: see above (static); False is the reference's beam.

    Returns:
      The best hypothesis and its score (summed log-probability) per sentence.
    """
    k = beam_size
    batch = z.shape[0]
    neg_inf = jnp.float32(-jnp.inf)
    zk = jnp.repeat(z, k, axis=0)  # [B*K, n], row b*K + j is slot j of sentence b
    slots = jnp.arange(k)
    beam = _Beam(
        t=jnp.int32(0),
        state=model.apply(variables, zk, method="decode_init"),
        token=jnp.full((batch, k), BOS, jnp.int32),
        alive_scores=jnp.tile(jnp.where(slots == 0, 0.0, neg_inf), (batch, 1)),
        alive_seqs=jnp.full((batch, k, max_len), PAD, jnp.int32),
        fin_scores=jnp.full((batch, k), neg_inf),
        fin_seqs=jnp.full((batch, k, max_len), PAD, jnp.int32),
        num_fin=jnp.zeros((batch,), jnp.int32),
    )

    def cond(beam: _Beam):
        return (beam.t < max_len) & jnp.any(beam.num_fin < k)

    def body(beam: _Beam) -> _Beam:
        token = beam.token.reshape(-1)
        state, logits = model.apply(
            variables, beam.state, token, zk, method="decode_step"
        )
        vocab = logits.shape[-1]
        logp = jax.nn.log_softmax(logits, axis=-1).reshape(batch, k, vocab)
        if length_norm:  # at least one word before </s>
            logp = logp.at[..., EOS].add(jnp.where(beam.t == 0, neg_inf, 0.0))
        cand = (beam.alive_scores[..., None] + logp).reshape(batch, k * vocab)
        scores, index = lax.top_k(cand, k)  # [B, K], best first
        parent, word = index // vocab, (index % vocab).astype(jnp.int32)
        # The reference keeps the top (K - #finished); empty parents give -inf.
        keep = (slots[None, :] < (k - beam.num_fin)[:, None]) & (scores > neg_inf)
        ends = keep & (word == EOS)
        stays = keep & (word != EOS)
        seqs = jnp.take_along_axis(beam.alive_seqs, parent[..., None], axis=1)
        seqs = lax.dynamic_update_slice_in_dim(seqs, word[..., None], beam.t, axis=2)
        # Append the newly finished ones after the num_fin already held.
        pos = beam.num_fin[:, None] + jnp.cumsum(ends, axis=1) - 1
        onehot = ends[:, :, None] & (pos[:, :, None] == slots[None, None, :])
        filled = jnp.any(onehot, axis=1)  # [B, K] finished slots written now
        src = jnp.argmax(onehot, axis=1)  # [B, K] candidate for each such slot
        fin_scores = jnp.where(
            filled, jnp.take_along_axis(scores, src, axis=1), beam.fin_scores
        )
        fin_seqs = jnp.where(
            filled[..., None],
            jnp.take_along_axis(seqs, src[..., None], axis=1),
            beam.fin_seqs,
        )
        rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
        state = jax.tree.map(lambda s: s[rows], state)
        alive = jnp.where(stays, scores, neg_inf)
        num_fin = beam.num_fin + jnp.sum(ends, axis=1, dtype=jnp.int32)
        return _Beam(
            beam.t + 1, state, word, alive, seqs, fin_scores, fin_seqs, num_fin
        )

    beam = lax.while_loop(cond, body, beam)
    all_scores = jnp.concatenate([beam.fin_scores, beam.alive_scores], axis=1)
    all_seqs = jnp.concatenate([beam.fin_seqs, beam.alive_seqs], axis=1)
    ranked = all_scores
    if length_norm:
        lengths = jnp.minimum(jnp.sum(valid_token_mask(all_seqs), -1), beam.t)
        ranked = all_scores / jnp.maximum(lengths, 1)
    best = jnp.argmax(ranked, axis=1)  # ties: finished first, as the reference
    tokens = jnp.take_along_axis(all_seqs, best[:, None, None], axis=1)[:, 0]
    return BeamResult(tokens, jnp.take_along_axis(all_scores, best[:, None], 1)[:, 0])


def valid_token_mask(seqs: jax.Array) -> jax.Array:
    """<bool>[..., T]: positions up to and including the first ``</s>``."""
    is_eos = (seqs == EOS).astype(jnp.int32)
    before = jnp.cumsum(is_eos, axis=-1) - is_eos  # number of </s> strictly before
    return before == 0


def pad_rows(rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Right-pads rows with ``PAD``: (<int32>[B, T_max], lengths <int32>[B])."""
    lengths = np.asarray([len(r) for r in rows], np.int32)
    tokens = np.full((len(rows), int(lengths.max(initial=1))), PAD, np.int32)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = row
    return tokens, lengths


def write_outputs(
    model, variables, data, cfg: EvalConfig, outdir, key, *, batch_size=32
) -> dict[str, pathlib.Path]:
    """Writes reconstructions and prior samples of the test split as text.

    ``reconstructions.txt`` holds, for the first ``cfg.num_reconstructions`` test
    sentences, the input and its greedy, sampled and beam decodings from one
    posterior sample z ~ q(z|x), each block ended by a blank
    line. ``prior_samples.txt`` / ``prior_samples_sampled.txt`` hold
    ``cfg.num_prior_samples`` greedy / sampled sentences from z ~ N(0, I), one a
    line.

    Args:
      model: the TextVAE.
      variables: its variables (eval mode: BN running statistics are used).
      data: anything with ``.vocab`` (Vocab) and ``.test`` (tuple of <int32>[L+2]).
      cfg: the evaluation settings.
      outdir: directory to write into (created when missing).
      key: PRNG key of all decoding randomness.
      batch_size: sentences encoded and decoded together.

    Returns:
      {'reconstructions', 'prior_samples', 'prior_samples_sampled'} -> path.
    """
    k_post, k_sample, k_prior, k_prior_sample = jax.random.split(key, 4)
    mv, max_len = (model, variables), cfg.max_decode_len

    def text(ids) -> str:
        return " ".join(data.vocab.decode(ids))

    def decoded(z, sample_key, beam=False):  # name -> <int32>[B, max_len]
        keys = {"greedy": None, "sample": sample_key}
        out = {k: sample_decode(*mv, z, s, max_len=max_len) for k, s in keys.items()}
        if beam:
            best = beam_search(*mv, z, beam_size=cfg.beam_size, max_len=max_len)
            out["beam"] = best.tokens
        return {name: np.asarray(ids) for name, ids in out.items()}

    lines = {"reconstructions": [], "prior_samples": [], "prior_samples_sampled": []}
    rows = list(data.test[: cfg.num_reconstructions])
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        tokens, lengths = pad_rows(chunk)
        index = np.arange(start, start + len(chunk), dtype=np.int32)
        mask = np.ones(len(chunk), np.float32)
        z = passes.posterior_codes(
            variables, k_post, tokens, lengths, mask, index, model=model, sample=True
        )
        out = decoded(z, jax.random.fold_in(k_sample, start), beam=True)
        for i, row in enumerate(chunk):
            block = [f"x: {text(row)}"] + [f"{k}: {text(v[i])}" for k, v in out.items()]
            lines["reconstructions"].append("\n".join(block) + "\n\n")
    num = cfg.num_prior_samples
    z_all = model.family.prior_sample(k_prior, num, model.cfg.latent_dim)
    for start in range(0, num, batch_size):
        sub = jax.random.fold_in(k_prior_sample, start)
        out = decoded(z_all[start : start + batch_size], sub)
        lines["prior_samples"] += [text(s) + "\n" for s in out["greedy"]]
        lines["prior_samples_sampled"] += [text(s) + "\n" for s in out["sample"]]
    paths = {name: pathlib.Path(outdir) / f"{name}.txt" for name in lines}
    for name, path in paths.items():
        fileio.write_text_atomic(path, "".join(lines[name]))
    return paths
