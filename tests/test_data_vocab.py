import numpy as np
import pytest

from bnvae_jax.data import vocab as vocab_lib
from bnvae_jax.data.vocab import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, Vocab
from bnvae_jax.errors import DataError


def test_special_ids():
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    assert SPECIAL_TOKENS == ("<pad>", "<s>", "</s>", "<unk>")


def test_first_occurrence_order_no_cutoff():
    vocab = Vocab.from_sentences([["b", "a", "b"], ["c", "a"], ["d"]])
    assert vocab.words == SPECIAL_TOKENS + ("b", "a", "c", "d")
    assert len(vocab) == 8
    assert [vocab.id(w) for w in "bacd"] == [4, 5, 6, 7]


def test_special_word_in_text_not_duplicated():
    vocab = Vocab.from_sentences([["x", "<unk>", "</s>", "y"]])
    assert vocab.words == SPECIAL_TOKENS + ("x", "y")
    assert vocab.id("<unk>") == UNK


def test_unseen_maps_to_unk_and_encode():
    vocab = Vocab.from_sentences([["a", "b"]])
    assert vocab.id("zzz") == UNK
    ids = vocab.encode(["a", "zzz", "b"])
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [4, UNK, 5])
    assert vocab.encode([]).shape == (0,)


def test_decode():
    vocab = Vocab.from_sentences([["a", "b"]])
    ids = np.array([BOS, 4, UNK, 5, EOS, 4, PAD])
    assert vocab.decode(ids) == ["a", "<unk>", "b"]
    assert vocab.decode(ids, strip_special=False) == [
        "<s>",
        "a",
        "<unk>",
        "b",
        "</s>",
        "a",
        "<pad>",
    ]
    with pytest.raises(ValueError):
        vocab.decode([99])


def test_save_load_roundtrip(tmp_path):
    vocab = Vocab.from_sentences([["héllo", "wörld", "<unk>"], ["a"]])
    path = tmp_path / "vocab.txt"
    vocab.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[4] == "héllo" and len(lines) == len(vocab)
    loaded = Vocab.load(str(path))
    assert loaded == vocab
    assert hash(loaded) == hash(vocab)
    assert loaded.id("wörld") == vocab.id("wörld") == 5


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        Vocab.load(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(DataError, match="must start with"):
        Vocab.load(bad)
    bad.write_text("\n".join(SPECIAL_TOKENS + ("a", "a")) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 6"):
        Vocab.load(bad)
    bad.write_text("\n".join(SPECIAL_TOKENS + ("", "b")) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 5"):
        Vocab.load(bad)


def test_fingerprint():
    a = Vocab.from_sentences([["a", "b"]])
    b = Vocab.from_sentences([["b", "a"]])
    assert a.fingerprint() == Vocab.from_sentences([["a"], ["b"]]).fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert len(a.fingerprint()) == 64


def test_constructor_validates():
    with pytest.raises(ValueError):
        Vocab(("a", "b"))
    with pytest.raises(ValueError):
        Vocab(SPECIAL_TOKENS + ("a", "a"))
    assert vocab_lib.Vocab(list(SPECIAL_TOKENS)).words == SPECIAL_TOKENS


def test_encode_refuses_a_string():
    vocab = Vocab.from_sentences([["w10", "w16"]])
    with pytest.raises(TypeError, match="split it first"):
        vocab.encode("w10 w16")
    assert list(vocab.encode("w10 w16".split())) == [4, 5]
