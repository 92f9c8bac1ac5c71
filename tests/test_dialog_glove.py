"""GloVe initialisation of the dialog word embeddings (``metrics.glove_table``)."""

import numpy as np
import pytest

from bnvae_jax.data.vocab import PAD, Vocab
from bnvae_jax.errors import DataError, UserError
from bnvae_jax.tasks.dialog import metrics

VOCAB = Vocab(("<pad>", "<s>", "</s>", "<unk>", "music", "dog", "zyzzyva"))

# "<pad>" has a vector in the file but its row must stay zero; "cat" is not in
# the vocabulary; "zyzzyva", "<s>", "</s>" and "<unk>" are not in the file.
GLOVE_LINES = [
    "music 0.5 -1.25 2.0",
    "cat 9.0 9.0 9.0",
    "<pad> 7.0 7.0 7.0",
    "dog -0.75 0.125 3.5",
]


def write_glove(tmp_path, lines, name="glove.3d.txt"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def original_table(dtype=np.float32):
    rng = np.random.default_rng(0)
    return rng.uniform(0.1, 1.0, (len(VOCAB), 3)).astype(dtype)


def test_found_words_get_the_file_vectors_exactly(tmp_path):
    table = original_table()
    out = metrics.glove_table(write_glove(tmp_path, GLOVE_LINES), VOCAB, table)
    assert out.shape == table.shape and out.dtype == table.dtype
    np.testing.assert_array_equal(out[VOCAB.id("music")], [0.5, -1.25, 2.0])
    np.testing.assert_array_equal(out[VOCAB.id("dog")], [-0.75, 0.125, 3.5])


def test_missing_words_keep_their_rows_and_pad_is_zero(tmp_path):
    table = original_table()
    before = table.copy()
    out = metrics.glove_table(write_glove(tmp_path, GLOVE_LINES), VOCAB, table)
    for word in ("<s>", "</s>", "<unk>", "zyzzyva"):
        np.testing.assert_array_equal(out[VOCAB.id(word)], before[VOCAB.id(word)])
    np.testing.assert_array_equal(out[PAD], np.zeros(3))
    # The input is not modified (a pure function).
    np.testing.assert_array_equal(table, before)


def test_pad_row_is_zero_even_without_any_word_in_the_file(tmp_path):
    table = original_table()
    out = metrics.glove_table(write_glove(tmp_path, ["cat 1 2 3"]), VOCAB, table)
    np.testing.assert_array_equal(out[PAD], np.zeros(3))
    np.testing.assert_array_equal(out[1:], table[1:])


def test_width_mismatch_is_a_one_line_error_naming_the_file(tmp_path):
    path = write_glove(tmp_path, ["music 1 2", "dog 3 4"], name="glove.2d.txt")
    with pytest.raises(UserError) as info:
        metrics.glove_table(path, VOCAB, original_table())
    message = str(info.value)
    assert message.startswith(f"{path}: vectors have 2 values")
    assert "model.emb_dim is 3" in message
    assert "\n" not in message


def test_missing_file_is_a_clear_error(tmp_path):
    path = str(tmp_path / "no_glove.txt")
    with pytest.raises(DataError) as info:
        metrics.glove_table(path, VOCAB, original_table())
    assert str(info.value) == f"{path}: GloVe file not found"


def test_ragged_file_names_the_line(tmp_path):
    path = write_glove(tmp_path, ["music 1 2 3", "dog 1 2"])
    with pytest.raises(DataError, match=r"glove.3d.txt:2: 2 values, expected 3"):
        metrics.glove_table(path, VOCAB, original_table())
