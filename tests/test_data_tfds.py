"""TFDS builders: built from small files written here, read back without TensorFlow."""

import dataclasses
import json
import sys

import numpy as np
import pytest
from conftest import run_child

from bnvae_jax import config as config_lib
from bnvae_jax.data import datasets
from bnvae_jax.data import tfds_builders as tb
from bnvae_jax.errors import ConfigError, DataError

SPLIT_LINES = {
    "train": ["the cat sat", "", "a dog ran far"],
    "valid": ["the dog sat"],
    "test": ["  a cat  ", "ran"],
}
# Kept sentences of SPLIT_LINES (blank lines dropped, whitespace normalised).
SPLIT_TEXT = {
    "train": ["the cat sat", "a dog ran far"],
    "valid": ["the dog sat"],
    "test": ["a cat", "ran"],
}


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _labelled(split):
    return [f"{i % 3}\t{line}" for i, line in enumerate(SPLIT_LINES[split])]


@pytest.mark.parametrize("name", ["ptb", "yahoo", "snli", "yelp", "short_yelp"])
def test_sentence_builders_round_trip(tmp_path, name):
    manual = tmp_path / "manual"
    manual.mkdir()
    labelled = name in ("yelp", "short_yelp")
    for split in tb.SPLIT_NAMES:
        lines = _labelled(split) if labelled else SPLIT_LINES[split]
        _write(manual / f"{name}.{split}.txt", lines)
    builder = tb.prepare(name, data_dir=tmp_path / "data", manual_dir=manual)
    assert (tmp_path / "data" / name / "1.0.0").is_dir()
    assert list((tmp_path / "data" / name / "1.0.0").glob("*.array_record*"))
    for split in tb.SPLIT_NAMES:
        examples = tb.read_split(builder, split)
        assert [e["text"] for e in examples] == SPLIT_TEXT[split]
        if labelled:
            kept = [i for i, line in enumerate(SPLIT_LINES[split]) if line.split()]
            assert [e["label"] for e in examples] == [str(i % 3) for i in kept]
        else:
            assert all(set(e) == {"text"} for e in examples)


def test_short_yelp_reads_shen_files_with_label_suffix(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for part in ("train", "dev", "test"):
        _write(manual / f"sentiment.{part}.0", [f"bad {part} food", "awful"])
        _write(manual / f"sentiment.{part}.1", [f"great {part}"])
    builder = tb.prepare("short_yelp", data_dir=tmp_path / "data", manual_dir=manual)
    valid = tb.read_split(builder, "valid")
    assert valid == [
        {"label": "0", "text": "bad dev food"},
        {"label": "0", "text": "awful"},
        {"label": "1", "text": "great dev"},
    ]
    assert [e["text"] for e in tb.read_split(builder, "test")][-1] == "great test"


def _dialog(topic, utts):
    return {
        "A": {"dialect": ' "SOUTH"', "age": 47, "education": " 2", "sex": ' "MALE"'},
        "B": {"dialect": ' "WEST"', "age": 53, "education": " 9", "sex": ' "FEMALE"'},
        "topic": f'"{topic}"',
        "prompt": ' "PLEASE DISCUSS IT.',
        "utts": utts,
    }


def test_switchboard_builder_parses_dialogs(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    first = _dialog(
        "MUSIC",
        [
            ["A", "do you like jazz", ["yes-no-question", [0.0, 1.0, 0.0, 0.0]]],
            ["B", "yeah i do", ["yes_answers", [0.1, 0.5, 0.4, 0.8]]],
        ],
    )
    second = _dialog("PETS", [["B", "uh-huh", ["backchannel", [0, 0, 1, 0.3]]]])
    for split in tb.SPLIT_NAMES:
        body = [json.dumps(first), "", json.dumps(second)]
        _write(manual / f"{split}.jsonl", body)
    builder = tb.prepare("switchboard", data_dir=tmp_path / "data", manual_dir=manual)
    dialogs = tb.read_split(builder, "train")
    assert len(dialogs) == 2
    d = dialogs[0]
    assert d["topic"] == "MUSIC" and d["prompt"] == "PLEASE DISCUSS IT."
    assert d["speaker_a"] == {
        "age": 47,
        "education": 2,
        "sex": "MALE",
        "dialect": "SOUTH",
    }
    assert d["speaker_b"]["education"] == 9 and d["speaker_b"]["sex"] == "FEMALE"
    utts = d["utterances"]
    assert utts["speaker"] == ["A", "B"]
    assert utts["text"] == ["do you like jazz", "yeah i do"]
    assert utts["act"] == ["yes-no-question", "yes_answers"]
    np.testing.assert_allclose(utts["sentiment"], [[0, 1, 0, 0], [0.1, 0.5, 0.4, 0.8]])
    assert dialogs[1]["utterances"]["text"] == ["uh-huh"]


def test_switchboard_bad_line_is_one_line_error(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for split in tb.SPLIT_NAMES:
        _write(manual / f"{split}.jsonl", ['{"topic": "x"}'])
    with pytest.raises(DataError, match=r"train.jsonl line 1: not a Switchboard"):
        tb.prepare("switchboard", data_dir=tmp_path / "data", manual_dir=manual)


def test_missing_files_unknown_names_and_reuse(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    _write(manual / "ptb.train.txt", ["a b"])
    with pytest.raises(
        DataError, match=r"missing ptb.valid.txt, ptb.test.txt.*Mikolov"
    ):
        tb.prepare("ptb", data_dir=tmp_path / "data", manual_dir=manual)
    with pytest.raises(DataError, match="not prepared"):
        tb.prepare("ptb", data_dir=tmp_path / "data")
    with pytest.raises(ConfigError, match="unknown TFDS corpus 'wiki'.*short_yelp"):
        tb.prepare("wiki", data_dir=tmp_path / "data", manual_dir=manual)
    for split in ("valid", "test"):
        _write(manual / f"ptb.{split}.txt", ["c"])
    tb.prepare("ptb", data_dir=tmp_path / "data", manual_dir=manual)
    # Prepared once: later uses need neither the manual directory nor its files.
    for path in manual.iterdir():
        path.unlink()
    builder = tb.prepare("ptb", data_dir=tmp_path / "data")
    assert [e["text"] for e in tb.read_split(builder, "train")] == ["a b"]


def test_every_builder_says_where_its_files_come_from():
    for name, cls in tb.BUILDERS.items():
        text = cls.MANUAL_DOWNLOAD_INSTRUCTIONS
        assert "http" in text and "manual directory" in text, name


def _data_config(**overrides):
    config = config_lib.default_config()
    config.data.update(overrides)
    return config


def test_tfds_source_gives_the_same_datasets_as_plain_files(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for split in tb.SPLIT_NAMES:
        _write(manual / f"short_yelp.{split}.txt", _labelled(split))
    common = dict(labelled=True, max_tokens=3)
    plain = _data_config(
        source="files",
        **{f"{s}_file": str(manual / f"short_yelp.{s}.txt") for s in tb.SPLIT_NAMES},
        **common,
    )
    files = datasets.load_datasets(config_lib.resolve(plain).data, str(tmp_path))
    config = _data_config(
        source="tfds",
        tfds_name="short_yelp",
        tfds_manual_dir=str(manual),
        tfds_data_dir=str(tmp_path / "tfds"),
        **common,
    )
    from_tfds = datasets.load_datasets(config_lib.resolve(config).data, str(tmp_path))
    assert from_tfds.vocab.words == files.vocab.words
    for split in tb.SPLIT_NAMES:
        assert len(from_tfds.split(split)) == len(files.split(split))
        for a, b in zip(from_tfds.split(split), files.split(split), strict=True):
            np.testing.assert_array_equal(a, b)
    # max_tokens=3 drops "a dog ran far" in both pipelines.
    assert from_tfds.stats["train"].dropped_long == 1
    assert from_tfds.files["valid"] == "tfds:short_yelp/validation"


def test_tfds_config_validation():
    with pytest.raises(
        ConfigError, match="needs data.tfds_name and data.tfds_data_dir"
    ):
        config_lib.resolve(_data_config(source="tfds", tfds_name="ptb"))
    with pytest.raises(ConfigError, match="reads no files"):
        config_lib.resolve(
            _data_config(
                source="tfds", tfds_name="ptb", tfds_data_dir="/x", train_file="t"
            )
        )
    with pytest.raises(ConfigError, match="not a sentence corpus"):
        tb.load_corpora(
            dataclasses.replace(
                config_lib.resolve(_data_config()).data,
                tfds_name="switchboard",
                tfds_data_dir="/nonexistent",
            )
        )


def test_building_and_reading_never_imports_tensorflow(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    for split in tb.SPLIT_NAMES:
        _write(manual / f"ptb.{split}.txt", SPLIT_LINES[split])
    script = (
        "import sys\n"
        "from bnvae_jax.data import tfds_builders as tb\n"
        f"b = tb.prepare('ptb', data_dir={str(tmp_path / 'd')!r}, "
        f"manual_dir={str(manual)!r})\n"
        "assert tb.read_split(b, 'train')[0]['text'] == 'the cat sat'\n"
        "print('tensorflow' in sys.modules)\n"
    )
    code, out = run_child([sys.executable, "-c", script], 120)
    assert code == 0, out[-2000:]
    assert out.strip().splitlines()[-1] == "False"
