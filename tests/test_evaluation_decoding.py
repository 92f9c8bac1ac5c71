"""Greedy, sampled and beam decoding against step-by-step Python references."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.config import EvalConfig
from bnvae_jax.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, Vocab
from bnvae_jax.evaluation import decoding
from bnvae_jax.models import vae as vae_lib

MAX_LEN = 8
BATCH = 3


@functools.partial(jax.jit, static_argnames=("model",))
def _sequence_log_prob(model, variables, z, seqs) -> jax.Array:
    """Teacher-forced log p(seq | z) of decoded sequences.

    Args:
      model: the TextVAE (static).
      variables: its variables.
      z: <float32>[B, n] latent codes.
      seqs: <int32>[B, T] generated tokens without ``<s>`` (decoder output); the
        sum runs to the first ``</s>`` (included) or over all T tokens.

    Returns:
      <float32>[B] summed log-probabilities.
    """
    batch = seqs.shape[0]
    tokens = jnp.concatenate([jnp.full((batch, 1), BOS, seqs.dtype), seqs], axis=1)
    lengths = jnp.sum(decoding.valid_token_mask(seqs), axis=1, dtype=jnp.int32) + 1
    return -model.apply(
        variables, tokens, lengths, z, train=False, method="reconstruction"
    )


def _model(tiny_model_config, head="gaussian"):
    cfg = tiny_model_config(head=head, dec_dropout_in=0.0, dec_dropout_out=0.0)
    return vae_lib.TextVAE(cfg)


def _variables(model, seed, scale=1.0):
    """Initialised variables with every parameter redrawn from N(0, scale²).

    The reference init (U(±0.01)) gives near-uniform next-token distributions;
    larger weights make the decoders' choices differ from step to step.
    """
    tokens = jnp.asarray([[BOS, 5, 6, EOS]], jnp.int32)
    k = jax.random.key(seed)
    variables = model.init(
        {"params": k, "sample": k, "dropout": k},
        tokens,
        jnp.asarray([4], jnp.int32),
        jnp.ones(1),
        train=False,
    )
    leaves, treedef = jax.tree.flatten(variables["params"])
    keys = jax.random.split(jax.random.fold_in(k, 1), len(leaves))
    leaves = [scale * jax.random.normal(kk, x.shape) for kk, x in zip(keys, leaves)]
    return {**variables, "params": jax.tree.unflatten(treedef, leaves)}


def _z(seed, batch=BATCH, latent=4):
    return jax.random.normal(jax.random.key(100 + seed), (batch, latent))


def _stepper(model, variables):
    init = jax.jit(lambda z: model.apply(variables, z, method="decode_init"))
    step = jax.jit(
        lambda s, t, z: model.apply(variables, s, t, z, method="decode_step")
    )
    return init, step


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _reference_greedy(model, variables, z, max_len):
    init, step = _stepper(model, variables)
    out = np.full((z.shape[0], max_len), PAD, np.int32)
    for b in range(z.shape[0]):
        zb = z[b : b + 1]
        state, token = init(zb), jnp.asarray([BOS], jnp.int32)
        for t in range(max_len):
            state, logits = step(state, token, zb)
            token = jnp.argmax(logits, -1).astype(jnp.int32)
            out[b, t] = int(token[0])
            if out[b, t] == EOS:
                break
    return out


def _reference_beam(model, variables, z, beam_size, max_len):
    """Port of He et al.'s per-sentence ``beam_search_decode`` (Python lists)."""
    init, step = _stepper(model, variables)
    tokens = np.full((z.shape[0], max_len), PAD, np.int32)
    scores = np.zeros(z.shape[0])
    for b in range(z.shape[0]):
        zb = z[b : b + 1]
        h, c = init(zb)
        live = [(0.0, [], (h[0], c[0]), BOS)]  # (logp, words, state, last word)
        completed = []
        t = 0
        while len(completed) < beam_size and t < max_len:
            t += 1
            state = tuple(jnp.stack([node[2][i] for node in live]) for i in (0, 1))
            last = jnp.asarray([node[3] for node in live], jnp.int32)
            (h, c), logits = step(state, last, jnp.repeat(zb, len(live), 0))
            prev = np.asarray([node[0] for node in live])
            total = (_log_softmax(logits) + prev[:, None]).reshape(-1)
            vocab = logits.shape[-1]
            best = np.argsort(-total, kind="stable")[: beam_size - len(completed)]
            new_live = []
            for index in best:
                parent, word = divmod(int(index), vocab)
                node = (
                    total[index],
                    live[parent][1] + [word],
                    (h[parent], c[parent]),
                    word,
                )
                (completed if word == EOS else new_live).append(node)
            live = new_live
        ranked = sorted(completed + live, key=lambda node: node[0], reverse=True)
        words = ranked[0][1]
        tokens[b, : len(words)] = words
        scores[b] = ranked[0][0]
    return tokens, scores


def _assert_pad_after_eos(seqs):
    for row in np.asarray(seqs):
        eos = np.flatnonzero(row == EOS)
        if eos.size:
            assert (row[eos[0] + 1 :] == PAD).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_matches_python_loop(tiny_model_config, seed):
    model = _model(tiny_model_config)
    variables = _variables(model, seed)
    z = _z(seed)
    got = np.asarray(decoding.sample_decode(model, variables, z, None, max_len=MAX_LEN))
    assert got.shape == (BATCH, MAX_LEN) and got.dtype == np.int32
    np.testing.assert_array_equal(got, _reference_greedy(model, variables, z, MAX_LEN))
    _assert_pad_after_eos(got)


def test_sampling_is_keyed(tiny_model_config):
    model = _model(tiny_model_config)
    variables = _variables(model, 0, scale=0.5)
    z = _z(0)

    def sample(seed):
        key = jax.random.key(seed)
        return np.asarray(
            decoding.sample_decode(model, variables, z, key, max_len=MAX_LEN)
        )

    first = sample(0)
    np.testing.assert_array_equal(first, sample(0))
    assert any(not np.array_equal(first, sample(s)) for s in (1, 2, 3))
    for s in (0, 1, 2):
        _assert_pad_after_eos(sample(s))


def test_low_temperature_sampling_is_greedy(tiny_model_config):
    model = _model(tiny_model_config)
    variables = _variables(model, 1)
    z = _z(1)
    cold = decoding.sample_decode(
        model, variables, z, jax.random.key(5), max_len=MAX_LEN, temperature=1e-4
    )
    greedy = decoding.sample_decode(model, variables, z, None, max_len=MAX_LEN)
    np.testing.assert_array_equal(cold, greedy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_is_greedy(tiny_model_config, seed):
    model = _model(tiny_model_config)
    variables = _variables(model, seed)
    z = _z(seed)
    beam = decoding.beam_search(
        model, variables, z, beam_size=1, max_len=MAX_LEN
    ).tokens
    greedy = decoding.sample_decode(model, variables, z, None, max_len=MAX_LEN)
    np.testing.assert_array_equal(beam, greedy)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_matches_reference_and_beats_greedy(tiny_model_config, seed):
    model = _model(tiny_model_config)
    variables = _variables(model, seed)
    z = _z(seed)
    result = decoding.beam_search(model, variables, z, beam_size=5, max_len=MAX_LEN)
    tokens, scores = np.asarray(result.tokens), np.asarray(result.scores)
    ref_tokens, ref_scores = _reference_beam(model, variables, z, 5, MAX_LEN)
    np.testing.assert_array_equal(tokens, ref_tokens)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-4)
    _assert_pad_after_eos(tokens)

    beam_lp = _sequence_log_prob(model, variables, z, result.tokens)
    np.testing.assert_allclose(beam_lp, scores, rtol=1e-5, atol=1e-4)
    greedy = decoding.sample_decode(model, variables, z, None, max_len=MAX_LEN)
    greedy_lp = _sequence_log_prob(model, variables, z, greedy)
    assert np.all(np.asarray(beam_lp) >= np.asarray(greedy_lp) - 1e-5)


def test_sequence_log_prob_matches_steps(tiny_model_config):
    model = _model(tiny_model_config)
    variables = _variables(model, 2)
    z = _z(2, batch=2)
    seqs = np.asarray(
        [[5, 6, EOS, PAD, PAD], [7, 4, 9, 8, 5]], np.int32
    )  # 2nd: no </s>
    init, step = _stepper(model, variables)
    state, token = init(z), jnp.full((2,), BOS, jnp.int32)
    want = np.zeros(2)
    for t in range(seqs.shape[1]):
        state, logits = step(state, token, z)
        lp = _log_softmax(logits)
        for b in range(2):
            if t <= 2 or b == 1:
                want[b] += lp[b, seqs[b, t]]
        token = jnp.asarray(seqs[:, t])
    got = _sequence_log_prob(model, variables, z, jnp.asarray(seqs))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_eos_preferring_model_stops_at_first_step(tiny_model_config):
    model = _model(tiny_model_config)
    variables = _variables(model, 0)
    params = variables["params"]
    dec = params["decoder"]
    hidden = dec["lstm"]["b_ih"].shape[0] // 4
    # i, f, g, o gates saturated: c ≈ 1 and h ≈ tanh(1) > 0 whatever the input.
    bias = jnp.concatenate([jnp.full((hidden,), v) for v in (20.0, -20.0, 20.0, 20.0)])
    lstm = {**dec["lstm"], "b_ih": bias}
    kernel = dec["out"]["kernel"].at[:, EOS].add(20.0)
    dec = {**dec, "lstm": lstm, "out": {"kernel": kernel}}
    variables = {**variables, "params": {**params, "decoder": dec}}
    z = _z(0)
    want = np.full((BATCH, MAX_LEN), PAD, np.int32)
    want[:, 0] = EOS
    outputs = [
        decoding.sample_decode(model, variables, z, None, max_len=MAX_LEN),
        decoding.sample_decode(model, variables, z, jax.random.key(0), max_len=MAX_LEN),
        decoding.beam_search(model, variables, z, beam_size=5, max_len=MAX_LEN).tokens,
    ]
    for out in outputs:
        np.testing.assert_array_equal(out, want)


def _eval_config(**overrides):
    values = dict(
        iw_samples=2,
        iw_chunk=2,
        iw_batch=2,
        iw_max_sentences=0,
        iw_max_logits=1 << 20,
        au_threshold=0.01,
        num_reconstructions=3,
        num_prior_samples=4,
        beam_size=2,
        max_decode_len=MAX_LEN,
        seed=0,
    )
    values.update(overrides)
    return EvalConfig(**values)


def test_write_outputs(tiny_model_config, tmp_path):
    model = _model(tiny_model_config, head="bn_gaussian")  # carries batch_stats
    variables = _variables(model, 3, scale=0.5)
    words = SPECIAL_TOKENS + tuple(f"w{i}é" for i in range(8))
    vocab = Vocab(words)
    rows = [[5, 6], [7, 8, 9, 4], [10], [11, 4, 5], [6, 6]]
    test = tuple(np.asarray([BOS, *r, EOS], np.int32) for r in rows)
    data = types.SimpleNamespace(vocab=vocab, test=test)
    cfg = _eval_config()

    paths = decoding.write_outputs(
        model,
        variables,
        data,
        cfg,
        tmp_path / "samples",
        jax.random.key(0),
        batch_size=2,
    )
    assert set(paths) == {"reconstructions", "prior_samples", "prior_samples_sampled"}

    text = paths["reconstructions"].read_text(encoding="utf-8")
    blocks = text.split("\n\n")
    assert blocks[-1] == ""
    blocks = blocks[:-1]
    assert len(blocks) == cfg.num_reconstructions
    for block, row in zip(blocks, rows):
        lines = block.split("\n")
        assert [line.split(":")[0] for line in lines] == [
            "x",
            "greedy",
            "sample",
            "beam",
        ]
        assert lines[0] == "x: " + " ".join(words[i] for i in row)
        for line in lines[1:]:
            assert "<s>" not in line and "</s>" not in line and "<pad>" not in line

    for name in ("prior_samples", "prior_samples_sampled"):
        lines = paths[name].read_text(encoding="utf-8").split("\n")
        assert lines[-1] == ""
        assert len(lines) - 1 == cfg.num_prior_samples

    # The same key writes the same files.
    again = decoding.write_outputs(
        model, variables, data, cfg, tmp_path / "again", jax.random.key(0), batch_size=2
    )
    for name, path in paths.items():
        assert again[name].read_text(encoding="utf-8") == path.read_text(
            encoding="utf-8"
        )
