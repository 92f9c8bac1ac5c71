"""Replies to new contexts: ``data.context_batch`` and sampled ``generate``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, Vocab
from bnvae_jax.models import posteriors
from bnvae_jax.tasks.dialog import data
from bnvae_jax.tasks.dialog import model as model_lib
from bnvae_jax.tasks.dialog.train import BATCH_KEYS

WORDS = "hello there how are you ? fine thanks well i think so".split()
VOCAB = Vocab(SPECIAL_TOKENS + tuple(WORDS))
TOPICS = ("<unk>", "MUSIC", "SPORTS")
MAX_LEN = 6  # decoded tokens per response


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
    """Cheap XLA compiles for this module's small programs; restored after."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def batch_of(contexts, **kw):
    kw = {"max_utt_len": 10, "context_size": 3, **kw}
    return data.context_batch(contexts, VOCAB, TOPICS, **kw)


def ids(*words):
    return [VOCAB.id(w) for w in words]


def padded(row, width):
    return row + [PAD] * (width - len(row))


# -- context_batch ---------------------------------------------------------------


def test_context_batch_matches_a_hand_built_batch():
    contexts = [["Hello there", "How are YOU?", "fine zebra"]]
    out = batch_of(contexts, topic="MUSIC")
    b = out.batch
    assert set(b) == set(BATCH_KEYS)
    # context_size 3: the last two turns; the longest (6 tokens) rounds up to 8.
    assert b["context"].shape == (1, 2, 8)
    assert b["context"].dtype == np.int32
    np.testing.assert_array_equal(
        b["context"][0],
        [
            padded([BOS, *ids("how", "are", "you", "?"), EOS], 8),
            padded([BOS, VOCAB.id("fine"), UNK, EOS], 8),
        ],
    )
    np.testing.assert_array_equal(b["context_utt_lens"], [[6, 4]])
    np.testing.assert_array_equal(b["context_lens"], [2])
    # The responder did not say the last turn: it said the one before.
    np.testing.assert_array_equal(b["floors"], [[1, 0]])
    np.testing.assert_array_equal(b["response"], [padded([BOS, EOS], 8)])
    np.testing.assert_array_equal(b["response_lens"], [2])
    np.testing.assert_array_equal(b["topic"], [1])
    np.testing.assert_array_equal(b["my_meta"], np.zeros((1, data.META_DIM)))
    np.testing.assert_array_equal(b["other_meta"], np.zeros((1, data.META_DIM)))
    assert b["my_meta"].dtype == np.float32
    np.testing.assert_array_equal(b["mask"], [1.0])
    assert b["mask"].dtype == np.float32
    # "hello there" fell out of the window: only the kept "zebra" counts.
    assert out.oov == 1 and out.unknown_words == ("zebra",)


def test_context_batch_reads_contexts_as_training_read_the_text_format(tmp_path):
    turns = ["Well, I think so!", "you?", "Uh-huh... FINE thanks", "how are you"]
    path = tmp_path / "d.txt"
    path.write_text(" ||| ".join([*turns, "a reply"]) + "\n")
    dialogs = data.read_dialogs(str(path), "text", 7)
    split = data.make_split(dialogs, VOCAB, TOPICS, context_size=4, utt_len=7)
    want = split.batch(np.array([0]), 1)
    got = batch_of([turns], max_utt_len=7, context_size=4).batch
    for key in BATCH_KEYS:
        if key not in ("response", "response_lens"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_floors_alternate_and_windows_keep_the_last_turns():
    turns = [f"t{i}" for i in range(5)]
    b = batch_of([turns], context_size=7).batch  # room for 6 turns: 5 present
    np.testing.assert_array_equal(b["context_lens"], [5])
    np.testing.assert_array_equal(b["floors"], [[0, 1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(b["context_utt_lens"], [[3, 3, 3, 3, 3, 0]])
    assert not b["context"][0, 5].any()
    # context_size 4 keeps t2 t3 t4; the responder said t3.
    b = batch_of([turns], context_size=4).batch
    np.testing.assert_array_equal(b["context_lens"], [3])
    np.testing.assert_array_equal(b["floors"], [[0, 1, 0]])
    out = batch_of([["so", "well", "zzz"]], context_size=3)
    assert out.oov == 1 and out.unknown_words == ("zzz",)
    out = batch_of([["zzz", "so", "well"]], context_size=3)
    assert out.oov == 0 and out.unknown_words == ()  # "zzz" left the window


def test_one_turn_context():
    out = batch_of([["How are you?"]], context_size=4)
    b = out.batch
    np.testing.assert_array_equal(b["context_lens"], [1])
    np.testing.assert_array_equal(b["floors"], [[0, 0, 0]])
    np.testing.assert_array_equal(b["context_utt_lens"], [[6, 0, 0]])
    np.testing.assert_array_equal(b["topic"], [0])
    assert out.oov == 0


def test_lower_casing_punctuation_and_unknown_words():
    out = batch_of([["HELLO, Zebra... zebra Yak"]], context_size=2, max_utt_len=20)
    row = out.batch["context"][0, 0]
    assert VOCAB.decode(row) == ["hello", "<unk>", "<unk>", "<unk>", "<unk>", "<unk>"]
    # "," and "..." are tokens too (WordPunct), and out of this vocabulary.
    assert out.oov == 5
    assert out.unknown_words == (",", "zebra", "...", "yak")


def test_utterance_width_buckets():
    def width(text, **kw):
        return batch_of([[text]], context_size=2, **kw).batch["context"].shape[2]

    assert width("hi", max_utt_len=40) == 8  # 3 tokens
    assert width("a b c d e f", max_utt_len=40) == 8  # exactly 8
    assert width("a b c d e f g", max_utt_len=40) == 16  # 9
    assert width(" ".join("a" * 30), max_utt_len=40) == 32
    assert width(" ".join("a" * 80), max_utt_len=40) == 40  # cut, then capped
    assert width(" ".join("a" * 30), max_utt_len=12) == 12
    assert width("a b c", max_utt_len=40, width_multiple=1) == 5
    # Utterances are cut to max_utt_len keeping the final </s>.
    b = batch_of([[" ".join("a" * 30)]], context_size=2, max_utt_len=12).batch
    assert b["context_utt_lens"][0, 0] == 12 and b["context"][0, 0, -1] == EOS


def test_several_contexts_share_a_width_and_pad_to_a_batch_size():
    out = batch_of(
        [["hi"], ["how are you", "fine thanks well i think so"]],
        topic=[None, '"SPORTS"'],
        batch_size=3,
    )
    b = out.batch
    assert b["context"].shape == (3, 2, 8)
    np.testing.assert_array_equal(b["mask"], [1, 1, 0])
    np.testing.assert_array_equal(b["context_lens"][:2], [1, 2])
    np.testing.assert_array_equal(b["topic"][:2], [0, 2])
    assert out.oov == 1 and out.unknown_words == ("hi",)


def test_topics_unknown_or_none_get_id_zero():
    def topic(value):
        return int(batch_of([["hi"]], topic=value).batch["topic"][0])

    assert topic(None) == 0
    assert topic("SPORTS") == 2
    assert topic("GARDENING") == 0
    assert topic("") == 0


def test_the_dialog_start_turn():
    b = batch_of([["<s> <d> </s>", "hello"]], max_utt_len=2).batch
    assert VOCAB.decode(b["context"][0, 0], strip_special=False)[:3] == [
        "<s>",
        "<unk>",
        "</s>",
    ]
    np.testing.assert_array_equal(b["context_utt_lens"], [[3, 2]])


@pytest.mark.parametrize(
    "contexts, kw, message",
    [
        ([], {}, "contexts is empty"),
        ("hello", {}, "contexts must be a list of contexts"),
        (["hello", "there"], {}, r"contexts\[0\] must be a list of utterance"),
        ([["ok"], []], {}, r"contexts\[1\] has no turns"),
        ([["ok", 3]], {}, r"contexts\[0\]\[1\] must be a string, got int"),
        ([["ok", None]], {}, r"contexts\[0\]\[1\] must be a string, got NoneType"),
        ([["ok"]], {"topic": 3}, "topic must be a topic name .* got int"),
        ([["ok"]], {"topic": {"a": 1}}, "topic must be a topic name .* got dict"),
        ([["a"], ["b"]], {"topic": ["A", 1.5]}, r"topic\[1\] must be .* got float"),
        ([["ok"]], {"topic": ["A", "B"]}, "2 topics for 1 contexts"),
        ([["ok"]], {"context_size": 1}, "context_size must be an integer >= 2"),
        ([["ok"]], {"max_utt_len": 1}, "max_utt_len must be an integer >= 2"),
        ([["ok"]], {"width_multiple": 0}, "width_multiple must be an integer >= 1"),
        ([["a"], ["b"]], {"batch_size": 1}, "2 contexts do not fit a batch of 1"),
    ],
)
def test_context_batch_errors(contexts, kw, message):
    with pytest.raises(ValueError, match=message):
        batch_of(contexts, **kw)


# -- generate ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    cfg = model_lib.DialogModelConfig(
        vocab_size=len(VOCAB),
        num_topics=len(TOPICS),
        emb_dim=8,
        utt_hidden=8,
        ctx_hidden=8,
        dec_hidden=8,
        latent_dim=4,
        topic_dim=2,
        prior_hidden=8,
        bow_hidden=8,
        head="bn_gaussian",
    )
    module = model_lib.DialogCVAE(cfg)
    batch = batch_of([["hello there", "how are you"]]).batch
    keys = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    variables = module.init(keys, batch, train=False)
    # Sharper logits than the initialisation's: fewer near-ties.
    variables = jax.tree.map(lambda x: 3.0 * x, variables)
    return module, variables


CONTEXTS = [
    ["hello there", "how are you ?"],
    ["well i think so"],
    ["fine thanks", "how are you", "i think so"],
]


def generate(model, batch, key=5, num_samples=4, **kw):
    module, variables = model
    return np.asarray(
        module.apply(
            variables,
            batch,
            num_samples=num_samples,
            max_len=MAX_LEN,
            method="generate",
            rngs={"sample": jax.random.key(key)},
            **kw,
        )
    )


def reference_greedy(module, batch, num_samples, max_len):
    """Greedy decoding by re-running the teacher-forced decoder on each prefix."""
    c = module.condition(batch)
    z = posteriors.gaussian_sample(
        module.prior(c), module.make_rng("sample"), num_samples
    )
    rows = c.shape[0] * num_samples
    c = jnp.repeat(c, num_samples, 0)
    z = z.reshape(rows, -1)
    tokens = jnp.full((rows, 1), BOS, jnp.int32)
    for t in range(max_len):
        logits = module.decode_logits(c, z, tokens, jnp.full((rows,), t + 1))
        tokens = jnp.concatenate([tokens, jnp.argmax(logits[:, -1:], -1)], 1)
    out = tokens[:, 1:]
    ended = jnp.cumsum(out == EOS, 1) - (out == EOS)  # an EOS before t
    out = jnp.where(ended > 0, PAD, out)
    return out.reshape(-1, num_samples, max_len)


def test_generate_replies_to_a_context_batch(model):
    b = data.context_batch(
        CONTEXTS, VOCAB, TOPICS, max_utt_len=10, context_size=3, batch_size=4
    ).batch
    out = generate(model, b)
    assert out.shape == (4, 4, MAX_LEN) and out.dtype == np.int32
    assert ((out >= 0) & (out < len(VOCAB))).all()
    sampled = generate(model, b, temperature=1.0)
    assert sampled.shape == (4, 4, MAX_LEN)


def test_greedy_decoding_is_unchanged(model):
    module, variables = model
    b = batch_of(CONTEXTS).batch
    greedy = generate(model, b)
    np.testing.assert_array_equal(generate(model, b, temperature=None), greedy)
    want = module.apply(
        variables,
        b,
        4,
        MAX_LEN,
        method=reference_greedy,
        rngs={"sample": jax.random.key(5)},
    )
    np.testing.assert_array_equal(greedy, np.asarray(want))


def test_padding_width_does_not_change_replies(model):
    narrow = batch_of(CONTEXTS, width_multiple=1).batch
    wide = batch_of(CONTEXTS, width_multiple=16, max_utt_len=40).batch
    assert narrow["context"].shape[2] == 6 and wide["context"].shape[2] == 16
    np.testing.assert_array_equal(generate(model, narrow), generate(model, wide))
    np.testing.assert_array_equal(
        generate(model, narrow, temperature=1.0),
        generate(model, wide, temperature=1.0),
    )


def test_sampling_tends_to_greedy_as_the_temperature_falls(model):
    b = batch_of(CONTEXTS).batch
    greedy = generate(model, b, num_samples=8)
    # The prior samples come first from the rng: the same z as greedy's.
    np.testing.assert_array_equal(
        generate(model, b, num_samples=8, temperature=1e-6), greedy
    )
    hot = generate(model, b, num_samples=8, temperature=100.0)
    assert (hot != greedy).mean() > 0.5
    # Seeded: the same rng gives the same samples, another rng others.
    np.testing.assert_array_equal(
        generate(model, b, num_samples=8, temperature=100.0), hot
    )
    other = generate(model, b, key=6, num_samples=8, temperature=100.0)
    assert (other != hot).any()
    # Positions after the first </s> are <pad>, as in greedy decoding.
    ended = np.cumsum(hot == EOS, -1) - (hot == EOS)
    assert (hot[ended > 0] == PAD).all()
    assert (ended > 0).any()


def test_temperature_may_be_a_traced_argument_and_must_be_positive(model):
    module, variables = model
    b = batch_of(CONTEXTS).batch
    traces = []

    @jax.jit
    def sample(batch, temperature):
        traces.append(1)
        return module.apply(
            variables,
            batch,
            num_samples=2,
            max_len=MAX_LEN,
            temperature=temperature,
            method="generate",
            rngs={"sample": jax.random.key(5)},
        )

    for t in (1e-6, 100.0):
        np.testing.assert_array_equal(
            sample(b, jnp.float32(t)), generate(model, b, num_samples=2, temperature=t)
        )
    # Contexts of other lengths in the same width bucket reuse the compilation.
    sample(batch_of([["hi", "how are you"], ["ok"], ["so"]]).batch, jnp.float32(1))
    assert len(traces) == 1
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            generate(model, b, temperature=bad)
