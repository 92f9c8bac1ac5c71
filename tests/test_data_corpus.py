import numpy as np
import pytest

from bnvae_jax.data.corpus import encode_corpus, read_corpus
from bnvae_jax.data.vocab import BOS, EOS, UNK, Vocab
from bnvae_jax.errors import ConfigError, DataError


def _write(tmp_path, data: bytes, name="data.txt"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_plain_lines_and_stats(tmp_path):
    path = _write(tmp_path, b"a b c\n\n  \nd e\n")
    corpus = read_corpus(path)
    assert corpus.sentences == (("a", "b", "c"), ("d", "e"))
    assert corpus.labels is None
    assert corpus.stats.lines == 4
    assert corpus.stats.kept == 2
    assert corpus.stats.dropped_empty == 2
    assert corpus.stats.dropped_long == 0
    assert "2 sentences" in corpus.summary() and "\n" not in corpus.summary()
    assert corpus.path == str(path)


def test_bom_crlf_cr(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbfa b\r\nc\rd e f\r\n")
    corpus = read_corpus(path)
    assert corpus.sentences == (("a", "b"), ("c",), ("d", "e", "f"))
    assert corpus.stats.lines == 3


def test_no_trailing_newline_and_utf8(tmp_path):
    path = _write(tmp_path, "héllo wörld\nlast".encode())
    assert read_corpus(path).sentences == (("héllo", "wörld"), ("last",))


def test_max_tokens(tmp_path):
    path = _write(tmp_path, b"a\na b\na b c\n\n")
    corpus = read_corpus(path, max_tokens=2)
    assert corpus.sentences == (("a",), ("a", "b"))
    assert corpus.stats.dropped_long == 1
    assert corpus.stats.dropped_empty == 1
    with pytest.raises(ConfigError):
        read_corpus(path, max_tokens=0)


def test_labelled(tmp_path):
    path = _write(tmp_path, b"1\ta b\tc\n\n2\t   \n0\td\n")
    corpus = read_corpus(path, labelled=True)
    assert corpus.sentences == (("a", "b", "c"), ("d",))
    assert corpus.labels == ("1", "0")
    assert corpus.stats.dropped_empty == 2


def test_labelled_missing_tab_names_line(tmp_path):
    path = _write(tmp_path, b"1\ta b\n2 c d\n")
    with pytest.raises(DataError, match=r"data\.txt line 2: expected LABEL<TAB>TEXT"):
        read_corpus(path, labelled=True)
    path = _write(tmp_path, b"1\ta b\n\tc d\n")
    with pytest.raises(DataError, match="line 2.*label is empty"):
        read_corpus(path, labelled=True)


def test_invalid_utf8_names_line_and_column(tmp_path):
    path = _write(tmp_path, b"ok line\r\nfine\rab\xffcd\n")
    with pytest.raises(DataError) as info:
        read_corpus(path)
    message = str(info.value)
    assert "data.txt line 3" in message
    assert "0xff" in message and "column 3" in message
    assert "\n" not in message


def test_missing_empty_directory(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_corpus(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="no sentences"):
        read_corpus(_write(tmp_path, b""))
    with pytest.raises(DataError, match="no sentences"):
        read_corpus(_write(tmp_path, b"\n \n\t\n"))
    with pytest.raises(DataError, match="directory"):
        read_corpus(tmp_path)


def test_encode_corpus(tmp_path):
    corpus = read_corpus(_write(tmp_path, b"a b c\nb zz\n"))
    vocab = Vocab.from_sentences([["a", "b", "c"]])
    rows = encode_corpus(corpus, vocab)
    assert all(row.dtype == np.int32 for row in rows)
    np.testing.assert_array_equal(rows[0], [BOS, 4, 5, 6, EOS])
    np.testing.assert_array_equal(rows[1], [BOS, 5, UNK, EOS])
    assert [len(r) for r in encode_corpus(corpus.sentences, vocab)] == [5, 4]
