"""Zhao et al.'s multi-reference test file: parsing, split, references, scores."""

import json

import numpy as np
import pytest

from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import DataError
from bnvae_jax.tasks.dialog import config as config_lib
from bnvae_jax.tasks.dialog import data, metrics

# Two items in the file's layout: the first opens the dialog, the second has
# a long context; responses[0] is the dialog's own reply.
ITEMS = [
    {
        "context": ["A: <s> <d> </s>", "A: Do you like Music?"],
        "responses": ["Yes, I do.", "not really", "zyzzyva music"],
        "resp_dialog_acts": ["yes-answer", "no-answer", "statement-non-opinion"],
        "speaker": "B",
    },
    {
        "context": [
            "A: <s> <d> </s>",
            "A: one",
            "B: two",
            "A: three",
            "B: four",
        ],
        "responses": ["five", "six"],
        "resp_dialog_acts": ["statement", "statement"],
        "speaker": "A",
    },
]

VOCAB = Vocab(
    ("<pad>", "<s>", "</s>", "<unk>", "<d>", "do", "you", "like", "music", "?")
    + ("yes", ",", "i", ".", "not", "really", "one", "two", "three", "four", "five")
)


def write(tmp_path, items, name="test_multi_ref.json"):
    path = tmp_path / name
    path.write_text(json.dumps(items, indent=1))
    return str(path)


def test_items_parse_turns_speakers_and_responses(tmp_path):
    first, second = data.read_multi_ref(write(tmp_path, ITEMS), 40)
    assert first.context == (
        data.DIALOG_START,
        ("<s>", "do", "you", "like", "music", "?", "</s>"),
    )
    assert first.context_speakers == (0, 0)
    assert first.speaker == 1
    assert first.responses[0] == ("<s>", "yes", ",", "i", "do", ".", "</s>")
    assert len(first.responses) == 3
    assert first.resp_dialog_acts == (
        "yes-answer",
        "no-answer",
        "statement-non-opinion",
    )
    # The file has no topic and no speaker metadata.
    assert first.topic == data.UNKNOWN_TOPIC
    assert first.meta == ((0.0,) * data.META_DIM, (0.0,) * data.META_DIM)
    assert second.context_speakers == (0, 0, 1, 0, 1)
    assert second.speaker == 0


def test_bare_dialog_start_and_optional_topic_and_meta(tmp_path):
    item = {
        "context": ["<s> <d> </s>\n", "B:hi there "],
        "responses": ["hello"],
        "speaker": " A",
        "topic": '"MUSIC"',
        "A": {"age": 50, "education": 3, "sex": "MALE"},
        "B": {"age": 20, "education": 0, "sex": "FEMALE"},
    }
    (parsed,) = data.read_multi_ref(write(tmp_path, [item]), 40)
    assert parsed.context == (data.DIALOG_START, ("<s>", "hi", "there", "</s>"))
    assert parsed.context_speakers == (0, 1)
    assert parsed.speaker == 0
    assert parsed.resp_dialog_acts == ()
    assert parsed.topic == "MUSIC"
    np.testing.assert_allclose(parsed.meta[0], [0.5, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(parsed.meta[1], [0.2, 0.0, 1.0, 0.0])


def test_split_floors_truncation_and_topic(tmp_path):
    items = data.read_multi_ref(write(tmp_path, ITEMS), 40)
    topics = ("<unk>", "MUSIC")
    split, refs = data.multi_ref_split(items, VOCAB, topics, context_size=3)
    assert len(split) == len(refs) == 2
    # context_size 3 keeps the last 2 turns, as make_split does.
    np.testing.assert_array_equal(split.context_lens, [2, 2])
    words = [VOCAB.decode(split.utterances[i]) for i in split.context[1]]
    assert words == [["three"], ["four"]]
    # Responder B after A, A: floors 0 0; responder A after A (three), B (four).
    np.testing.assert_array_equal(split.floors, [[0, 0], [1, 0]])
    assert VOCAB.decode(split.utterances[split.response[1]]) == ["five"]
    np.testing.assert_array_equal(split.topic, [0, 0])
    np.testing.assert_array_equal(split.dialog, [0, 1])
    assert not split.my_meta.any() and not split.other_meta.any()
    # A wide window keeps the whole context, left-aligned, -1 after it.
    wide, _ = data.multi_ref_split(items, VOCAB, topics, context_size=8)
    np.testing.assert_array_equal(wide.context_lens, [2, 5])
    assert wide.context[0, 2:].tolist() == [-1] * 5
    np.testing.assert_array_equal(wide.floors[1], [1, 1, 0, 1, 0, 0, 0])
    start = wide.context[1, 0]
    ids = wide.utterances[start][: wide.utt_lens[start]]
    assert VOCAB.decode(ids, strip_special=False) == list(data.DIALOG_START)


def test_split_matches_make_split_on_the_same_dialog():
    # The multi-reference item of a dialog's last response gives the same
    # example as make_split on the dialog: context, floors, response.
    turns = [("A", "one"), ("B", "two"), ("A", "three"), ("B", "four"), ("A", "five")]
    line = json.dumps({"utts": [[s, t, []] for s, t in turns]})
    dialog = data.parse_jsonl_line(line, 40, "f:1")
    item = {
        "context": ["A: <s> <d> </s>", "A: one", "B: two", "A: three", "B: four"],
        "responses": ["five"],
        "speaker": "A",
    }
    parsed = data.parse_multi_ref_item(item, 40, "f: item 0")
    for size in (2, 3, 6, 10):
        single = data.make_split(
            [dialog], VOCAB, ("<unk>",), context_size=size, utt_len=8
        )
        multi, _ = data.multi_ref_split(
            [parsed], VOCAB, ("<unk>",), context_size=size, utt_len=8
        )
        a = single.batch(np.array([len(single) - 1]), 1)
        b = multi.batch(np.array([0]), 1)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} {size}")


def test_references_are_words_without_markers_and_unknowns_are_unk(tmp_path):
    items = data.read_multi_ref(write(tmp_path, ITEMS), 40)
    split, refs = data.multi_ref_split(items, VOCAB, ("<unk>",), context_size=3)
    assert refs[0] == [
        ["yes", ",", "i", "do", "."],
        ["not", "really"],
        ["<unk>", "music"],  # "zyzzyva" is not in the vocabulary
    ]
    assert refs[1] == [["five"], ["<unk>"]]
    # The first reference is the split's response, word for word.
    for row, references in enumerate(refs):
        assert VOCAB.decode(split.utterances[split.response[row]]) == references[0]


def test_references_are_cut_like_the_response(tmp_path):
    item = {"context": ["A: hi"], "responses": ["one two three four five"]}
    item["speaker"] = "B"
    (parsed,) = data.read_multi_ref(write(tmp_path, [item]), 5)
    assert parsed.responses[0] == ("<s>", "one", "two", "three", "</s>")
    _, refs = data.multi_ref_split([parsed], VOCAB, ("<unk>",), context_size=3)
    assert refs == [[["one", "two", "three"]]]


@pytest.mark.parametrize(
    "items, message",
    [
        ({"context": []}, "expected a JSON list of items"),
        ([], "no items"),
        ([ITEMS[0], "text"], "item 1: an item must be a JSON object"),
        ([ITEMS[0], {"context": ["A: hi"]}], "item 1: lacks 'responses', 'speaker'"),
        (
            [{"context": [], "responses": ["x"], "speaker": "A"}],
            "item 0: 'context' must be a non-empty list",
        ),
        (
            [{"context": ["A: hi"], "responses": [1], "speaker": "A"}],
            "item 0: 'responses' must be a non-empty list of strings",
        ),
        (
            [{"context": ["A: hi"], "responses": ["x"], "speaker": "C"}],
            "item 0: 'speaker' must be 'A' or 'B', got 'C'",
        ),
        (
            [
                ITEMS[1],
                {"context": ["A: hi", "hello"], "responses": ["x"], "speaker": "A"},
            ],
            r"item 1: context\[1\] must start with its speaker",
        ),
        (
            [{"context": [["A", "hi"]], "responses": ["x"], "speaker": "A"}],
            r"item 0: context\[0\] must be a string",
        ),
        (
            [
                {
                    "context": ["A: hi"],
                    "responses": ["x"],
                    "speaker": "A",
                    "resp_dialog_acts": "statement",
                }
            ],
            "item 0: 'resp_dialog_acts' must be a list",
        ),
    ],
)
def test_broken_items_are_one_line_errors_naming_file_and_item(
    tmp_path, items, message
):
    path = write(tmp_path, items)
    with pytest.raises(DataError, match=message) as info:
        data.read_multi_ref(path, 40)
    assert str(info.value).startswith(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_json_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="nothere.json: file not found"):
        data.read_multi_ref(str(tmp_path / "nothere.json"), 40)
    path = tmp_path / "bad.json"
    path.write_text(
        '[\n {"context": ["A: hi"],\n  "responses": ["x"] "speaker": "A"}\n]'
    )
    with pytest.raises(DataError) as info:
        data.read_multi_ref(str(path), 40)
    assert str(info.value).startswith(f"{path}:3: not valid JSON")
    assert "\n" not in str(info.value)
    path.write_bytes(b'[{"context": ["A: \xff"]}]')
    with pytest.raises(DataError, match="not valid UTF-8"):
        data.read_multi_ref(str(path), 40)


# -- scoring against several references -----------------------------------------

# BLEU-1 with |h| < 5 (so the 5-gram precision is 0) and |h| = |r| (BP = 1):
# method 5 smooths p1 to (p1 + 1 + p1 + 0) / 3 = (2 p1 + 1) / 3.
TRUE = "a b c d".split()
OTHER = "w x y z".split()
HYPS = ["a b x y".split(), "w x y z".split()]


def test_several_references_by_hand():
    # d(r, h) for r in (TRUE, OTHER), h in HYPS: p1 = 2/4 -> 2/3; no match -> 0;
    # identical -> 1.
    assert metrics.sentence_bleu(TRUE, HYPS[0], 1) == pytest.approx(2 / 3)
    single = metrics.score_contexts([[TRUE]], [HYPS], None)
    multi = metrics.score_contexts([[TRUE, OTHER]], [HYPS], None)
    # One reference: precision = mean(2/3, 0), recall = max(2/3, 0).
    assert single["bleu1_precision"] == pytest.approx(1 / 3)
    assert single["bleu1_recall"] == pytest.approx(2 / 3)
    # Similarities [[2/3, 0], [2/3, 1]]: precision = mean over hypotheses of the
    # max over references = (2/3 + 1) / 2; recall = mean over references of the
    # max over hypotheses = (2/3 + 1) / 2.
    assert multi["bleu1_precision"] == pytest.approx(5 / 6)
    assert multi["bleu1_recall"] == pytest.approx(5 / 6)
    assert multi["bleu1_recall"] >= single["bleu1_recall"]
    assert multi["num_contexts"] == 1


def test_recall_is_a_mean_over_references_so_it_can_drop():
    # Zhao et al.'s recall averages over references: a reference no sample
    # matches lowers it, while precision (a max over references) cannot drop.
    hyps = [TRUE, "p q".split()]
    single = metrics.score_contexts([[TRUE]], [hyps], None)
    multi = metrics.score_contexts([[TRUE, OTHER]], [hyps], None)
    assert single["bleu1_recall"] == pytest.approx(1.0)
    assert multi["bleu1_recall"] == pytest.approx(0.5)
    assert multi["bleu1_precision"] == pytest.approx(single["bleu1_precision"])


def test_precision_never_drops_with_more_references():
    rng = np.random.default_rng(0)
    words = list("abcdef")
    for _ in range(50):
        refs = [list(rng.choice(words, rng.integers(1, 6))) for _ in range(3)]
        hyps = [list(rng.choice(words, rng.integers(1, 6))) for _ in range(4)]
        one = metrics.score_contexts([refs[:1]], [hyps], None)
        all_ = metrics.score_contexts([refs], [hyps], None)
        for k in range(1, 5):
            assert all_[f"bleu{k}_precision"] >= one[f"bleu{k}_precision"] - 1e-12


def test_file_references_raise_recall_over_the_single_reference(tmp_path):
    item = {
        "context": ["A: <s> <d> </s>", "A: so what next"],
        "responses": ["a b c d", "w x y z"],
        "speaker": "B",
    }
    items = data.read_multi_ref(write(tmp_path, [item]), 40)
    vocab = Vocab(("<pad>", "<s>", "</s>", "<unk>", *"abcdwxyz"))
    _, refs = data.multi_ref_split(items, vocab, ("<unk>",), context_size=10)
    assert refs == [[TRUE, OTHER]]
    single = metrics.score_contexts([refs[0][:1]], [HYPS], None)
    multi = metrics.score_contexts(refs, [HYPS], None)
    assert multi["bleu1_recall"] == pytest.approx(5 / 6)
    assert multi["bleu1_recall"] > single["bleu1_recall"]


def test_config_has_the_multi_ref_file_and_the_typed_view_keeps_it():
    config = config_lib.default_config()
    assert config.eval.multi_ref_file == ""
    config.eval.multi_ref_file = "test_multi_ref.json"
    for split in ("train", "valid", "test"):
        config.data[f"{split}_file"] = f"{split}.jsonl"
    run = config_lib.resolve(config, vocab_size=20, num_topics=2)
    assert run.eval.multi_ref_file == "test_multi_ref.json"
