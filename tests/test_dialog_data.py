"""Dialog data: Switchboard JSONL and text parsing, windows, vocabulary, batches."""

import json

import numpy as np
import pytest

from bnvae_jax.errors import DataError
from bnvae_jax.tasks.dialog import data


def dialog_line(utts, topic="MUSIC", **extra):
    record = {
        "topic": f'"{topic}"',
        "A": {"age": 47, "education": " 2", "sex": ' "MALE"'},
        "B": {"age": 53, "education": " 1", "sex": ' "FEMALE"'},
        "utts": [[s, t, ["statement", [0.0, 1.0, 0.0, 0.0]]] for s, t in utts],
    }
    record.update(extra)
    return json.dumps(record)


def test_tokenize_is_lower_case_wordpunct():
    assert data.tokenize("I don't KNOW, uh-huh.") == [
        "i", "don", "'", "t", "know", ",", "uh", "-", "huh", ".",
    ]  # fmt: skip


def test_jsonl_dialog_starts_with_the_dialog_token_and_reads_meta():
    line = dialog_line([("A", "Hello there"), ("B", "hi"), ("B", "so")])
    d = data.parse_jsonl_line(line, 40, "f:1")
    assert d.topic == "MUSIC"
    assert d.utts[0] == ("<s>", "<d>", "</s>")
    assert d.utts[1] == ("<s>", "hello", "there", "</s>")
    assert d.speakers == (0, 0, 1, 1)
    assert d.responses == (1, 2, 3)
    np.testing.assert_allclose(d.meta[0], [0.47, 2 / 3, 0.0, 1.0])
    np.testing.assert_allclose(d.meta[1], [0.53, 1 / 3, 1.0, 0.0])


def test_truncation_keeps_the_end_token():
    assert data.wrap(list("abcdef"), 5) == ("<s>", "a", "b", "c", "</s>")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"topic": "x"}', "'utts' must be a non-empty list"),
        (dialog_line([("C", "hi")]), "speaker 'A' or 'B'"),
        ('{"utts": [["A"]]}', r"utts\[0\] must be"),
        (
            dialog_line([("A", "hi")], A={"age": "old", "education": 1, "sex": "M"}),
            "not a number",
        ),
    ],
)
def test_malformed_lines_are_one_line_errors(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(dialog_line([("A", "ok")]) + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        data.read_dialogs(str(path), "jsonl", 40)
    assert f"{path}:3" in str(info.value)
    assert "\n" not in str(info.value)


def test_text_format_alternates_speakers_and_needs_a_response(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("how are you ||| fine thanks ||| good\n")
    (d,) = data.read_dialogs(str(path), "auto", 40)
    assert d.responses == (2,)
    assert d.speakers == (1, 0, 1)
    path.write_text("no separator here\n")
    with pytest.raises(DataError, match="d.txt:1"):
        data.read_dialogs(str(path), "text", 40)


def test_windows_floors_and_meta_of_examples():
    line = dialog_line([("A", "a"), ("B", "b"), ("A", "c"), ("A", "d")])
    dialogs = [data.parse_jsonl_line(line, 40, "f:1")]
    vocab = data.build_vocab(dialogs, 100)
    split = data.make_split(
        dialogs, vocab, data.build_topics(dialogs), context_size=3, utt_len=6
    )
    assert len(split) == 4
    # Contexts hold up to context_size - 1 = 2 previous utterances.
    np.testing.assert_array_equal(split.context_lens, [1, 2, 2, 2])
    np.testing.assert_array_equal(split.context[3], [2, 3])
    # Response 4 (speaker A): utterance 2 is B's, utterance 3 is A's.
    np.testing.assert_array_equal(split.floors[3], [0, 1])
    np.testing.assert_allclose(split.my_meta[1], dialogs[0].meta[1])
    np.testing.assert_allclose(split.other_meta[1], dialogs[0].meta[0])
    assert split.topics[int(split.topic[0])] == "MUSIC"


def test_vocab_keeps_the_most_frequent_tokens():
    line = dialog_line([("A", "x x x y y z")])
    dialogs = [data.parse_jsonl_line(line, 40, "f:1")]
    # Counts: x 3, <s> 2, </s> 2, y 2, z 1, <d> 1. As in Zhao et al., <s> and
    # </s> take two of the max_vocab places.
    vocab = data.build_vocab(dialogs, 4)
    assert vocab.words[:4] == ("<pad>", "<s>", "</s>", "<unk>")
    assert set(vocab.words[4:]) == {"x", "y"}
    assert vocab.id("z") == vocab.id("<unk>")


def test_batches_have_fixed_shapes_and_mask_padding():
    line = dialog_line([("A", "a b"), ("B", "c")])
    dialogs = [data.parse_jsonl_line(line, 40, "f:1")]
    vocab = data.build_vocab(dialogs, 100)
    split = data.make_split(
        dialogs, vocab, data.build_topics(dialogs), context_size=4, utt_len=5
    )
    batch = split.batch(np.array([1]), 3)
    assert batch["context"].shape == (3, 3, 5)
    np.testing.assert_array_equal(batch["mask"], [1, 0, 0])
    np.testing.assert_array_equal(batch["context_utt_lens"][0], [3, 4, 0])
    assert vocab.decode(batch["response"][0]) == ["c"]
    assert not batch["context"][0, 2].any()
