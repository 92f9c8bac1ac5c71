"""TFDS builders for the paper's corpora, written and read without TensorFlow.

Every builder reads files the user places in a manual directory (none of the
corpora can be downloaded by a script), writes ``array_record`` files into a
TFDS data directory, and is read back with ``builder.as_data_source()``;
``tfds.load`` and ``as_dataset`` would import TensorFlow and are never used.

The classes skip TFDS's global registry (``skip_registration=True``): they are
found through the literal ``BUILDERS`` table, so importing this module changes
no state and cannot collide with TFDS's own datasets of the same name (snli).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds

from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.errors import ConfigError, DataError

FILE_FORMAT = "array_record"
# Our split names and the TFDS ones (TFDS calls the validation split so).
SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
_VERSION = tfds.core.Version("1.0.0")
_RELEASE_NOTES = {"1.0.0": "First version."}


def _text_features(labelled: bool) -> tfds.features.FeaturesDict:
    features = {"text": tfds.features.Text()}
    if labelled:
        features["label"] = tfds.features.Text()
    return tfds.features.FeaturesDict(features)


def _corpus_examples(corpus: corpus_lib.Corpus) -> Iterator[tuple[int, dict]]:
    """(key, example) for every kept sentence, in file order."""
    for i, tokens in enumerate(corpus.sentences):
        example = {"text": " ".join(tokens)}
        if corpus.labels is not None:
            example["label"] = corpus.labels[i]
        yield i, example


class _SentenceCorpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """One whitespace-tokenised sentence a line, one file per split.

    Subclasses set ``FILES`` (split -> file name in the manual directory) and
    ``LABELLED`` (lines are ``LABEL<TAB>TEXT``). Lines without a token are left
    out, as the plain-file reader does.
    """

    VERSION = _VERSION
    RELEASE_NOTES = _RELEASE_NOTES
    FILES: Mapping[str, str] = {}
    LABELLED = False
    HOMEPAGE = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=_text_features(self.LABELLED),
            # File order is corpus order: the vocabulary (first occurrence) and
            # the batches match the plain-file pipeline only if TFDS keeps it.
            disable_shuffling=True,
            homepage=self.HOMEPAGE,
            description=(self.__doc__ or "").strip().splitlines()[0],
        )

    def _split_generators(self, dl_manager):
        manual = pathlib.Path(dl_manager.manual_dir)
        return {
            SPLIT_NAMES[split]: self._generate_examples(manual / name)
            for split, name in self.FILES.items()
        }

    def _generate_examples(self, path):
        yield from _corpus_examples(
            corpus_lib.read_corpus(path, labelled=self.LABELLED)
        )

    @classmethod
    def required_files(cls, manual_dir: pathlib.Path) -> list[pathlib.Path]:
        """The files ``manual_dir`` must hold for a build."""
        return [manual_dir / name for name in cls.FILES.values()]


def _split_files(stem: str) -> dict[str, str]:
    return {split: f"{stem}.{split}.txt" for split in SPLIT_NAMES}


class Ptb(_SentenceCorpus, skip_registration=True):
    """Penn Treebank, Mikolov's language-modelling split (one sentence a line)."""

    FILES = _split_files("ptb")
    HOMEPAGE = "https://www.fit.vutbr.cz/~imikolov/rnnlm/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Mikolov's PTB split, `data/` of simple-examples.tgz
    (https://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz). Put into the
    manual directory: ptb.train.txt, ptb.valid.txt, ptb.test.txt.
    """


class Yahoo(_SentenceCorpus, skip_registration=True):
    """Yahoo Answers documents of Yang et al. 2017 (unlabelled LM set)."""

    FILES = _split_files("yahoo")
    HOMEPAGE = "https://github.com/jxhe/vae-lagging-encoder"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Yang et al. (2017)'s Yahoo set as distributed by He et al. (2019): run
    `prepare_data.py` of https://github.com/jxhe/vae-lagging-encoder and take
    `datasets/yahoo_data/`. Put into the manual directory: yahoo.train.txt,
    yahoo.valid.txt, yahoo.test.txt (one document a line, 100k/10k/10k).
    """


class Yelp(_SentenceCorpus, skip_registration=True):
    """Yelp reviews of Yang et al. 2017; lines are LABEL<TAB>TEXT."""

    FILES = _split_files("yelp")
    LABELLED = True
    HOMEPAGE = "https://github.com/jxhe/vae-lagging-encoder"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Yang et al. (2017)'s Yelp set as distributed by He et al. (2019): run
    `prepare_data.py` of https://github.com/jxhe/vae-lagging-encoder and take
    `datasets/yelp_data/`. Put into the manual directory: yelp.train.txt,
    yelp.valid.txt, yelp.test.txt (LABEL<TAB>TEXT lines).
    """


class Snli(_SentenceCorpus, skip_registration=True):
    """SNLI sentences as used for text VAEs (Li et al. 2019), unlabelled."""

    FILES = _split_files("snli")
    HOMEPAGE = "https://github.com/bohanli/vae-pretraining-encoder"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    The SNLI sentence files of Li et al. (2019): run `prepare_data.py` of
    https://github.com/bohanli/vae-pretraining-encoder and take
    `datasets/snli_data/`. Put into the manual directory: snli.train.txt,
    snli.valid.txt, snli.test.txt (one tokenised sentence a line).
    """


# Shen et al.'s release: sentiment.{train,dev,test}.{0,1}, label = suffix.
_SHEN_SPLITS = {"train": "train", "valid": "dev", "test": "test"}
_SHEN_LABELS = ("0", "1")


class ShortYelp(_SentenceCorpus, skip_registration=True):
    """Short Yelp sentiment sentences (Shen et al. 2017; Li et al. 2019's copy).

    Reads either Li et al.'s ``short_yelp.{train,valid,test}.txt``
    (``LABEL<TAB>TEXT``) or Shen et al.'s ``sentiment.{train,dev,test}.{0,1}``
    (the label is the file suffix; negative 0, positive 1).
    """

    FILES = _split_files("short_yelp")
    LABELLED = True
    HOMEPAGE = "https://github.com/shentianxiao/language-style-transfer"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put into the manual directory either Li et al. (2019)'s short Yelp files
    (`prepare_data.py` of https://github.com/bohanli/vae-pretraining-encoder,
    `datasets/short_yelp_data/`):
    short_yelp.train.txt, short_yelp.valid.txt, short_yelp.test.txt with
    LABEL<TAB>TEXT lines; or Shen et al. (2017)'s sentiment sentences
    (https://github.com/shentianxiao/language-style-transfer, `data/yelp/`):
    sentiment.train.0, sentiment.train.1, sentiment.dev.0, sentiment.dev.1,
    sentiment.test.0, sentiment.test.1 (label = file suffix). If both are
    present the short_yelp files are used.
    """

    @classmethod
    def _uses_shen(cls, manual_dir: pathlib.Path) -> bool:
        li_files = [manual_dir / name for name in cls.FILES.values()]
        return not any(p.exists() for p in li_files) and any(
            manual_dir.glob("sentiment.*.[01]")
        )

    @classmethod
    def required_files(cls, manual_dir: pathlib.Path) -> list[pathlib.Path]:
        if cls._uses_shen(manual_dir):
            return [
                manual_dir / f"sentiment.{part}.{label}"
                for part in _SHEN_SPLITS.values()
                for label in _SHEN_LABELS
            ]
        return super().required_files(manual_dir)

    def _split_generators(self, dl_manager):
        manual = pathlib.Path(dl_manager.manual_dir)
        if not self._uses_shen(manual):
            return super()._split_generators(dl_manager)
        return {
            SPLIT_NAMES[split]: self._generate_shen(manual, part)
            for split, part in _SHEN_SPLITS.items()
        }

    def _generate_shen(self, manual: pathlib.Path, part: str):
        key = 0
        for label in _SHEN_LABELS:
            corpus = corpus_lib.read_corpus(manual / f"sentiment.{part}.{label}")
            for tokens in corpus.sentences:
                yield key, {"text": " ".join(tokens), "label": label}
                key += 1


def _clean(value) -> str:
    """Zhao et al.'s metadata strings carry spaces and quotes: ' "MALE"'."""
    return str(value).strip().strip('"').strip()


def _as_int(value, where: str) -> int:
    try:
        return int(_clean(value))
    except ValueError:
        raise DataError(f"{where}: expected an integer, got {value!r}") from None


_UTTERANCE_KEYS = ("speaker", "text", "act", "sentiment")


def _speaker_features() -> tfds.features.FeaturesDict:
    """A caller's metadata: age in years, education code (9: unknown), sex, dialect."""
    return tfds.features.FeaturesDict(
        {
            "age": np.int32,
            "education": np.int32,
            "sex": tfds.features.Text(),
            "dialect": tfds.features.Text(),
        }
    )


def parse_dialog(line: str, where: str) -> dict:
    """One JSONL line of Zhao et al.'s Switchboard corpus as a TFDS example.

    Args:
        line: a JSON object with ``A``/``B`` speaker metadata, ``topic``,
            ``prompt`` and ``utts`` = ``[speaker, text, [act, sentiment]]``.
        where: ``file line N`` for error messages.

    Raises:
        DataError: not JSON, or a field is missing or malformed.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not JSON ({e.msg})") from None
    try:
        speakers = {
            side: {
                "age": _as_int(record[side]["age"], f"{where} {side}.age"),
                "education": _as_int(
                    record[side]["education"], f"{where} {side}.education"
                ),
                "sex": _clean(record[side]["sex"]),
                "dialect": _clean(record[side].get("dialect", "")),
            }
            for side in ("A", "B")
        }
        utts = [
            {
                "speaker": str(speaker),
                "text": str(text),
                "act": str(meta[0]),
                "sentiment": np.asarray(meta[1], np.float32).reshape(4),
            }
            for speaker, text, meta in record["utts"]
        ]
        return {
            "topic": _clean(record["topic"]),
            "prompt": _clean(record["prompt"]),
            "speaker_a": speakers["A"],
            "speaker_b": speakers["B"],
            "utterances": {k: [u[k] for u in utts] for k in _UTTERANCE_KEYS},
        }
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise DataError(f"{where}: not a Switchboard dialog ({e!r})") from None


class Switchboard(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Switchboard dialogs as prepared by Zhao et al. 2017 (one dialog a line)."""

    VERSION = _VERSION
    RELEASE_NOTES = _RELEASE_NOTES
    FILES = {split: f"{split}.jsonl" for split in SPLIT_NAMES}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Zhao et al. (2017)'s Switchboard corpus (https://github.com/snakeztc/NeuralDialog-CVAE,
    `data/`, derived from LDC's SWDA): the JSONL copies of the train/valid/test
    dialogs. Put into the manual directory: train.jsonl, valid.jsonl, test.jsonl
    (one dialog a line: A/B speaker metadata, topic, prompt, utts).
    """

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "topic": tfds.features.Text(),
                    "prompt": tfds.features.Text(),
                    "speaker_a": _speaker_features(),
                    "speaker_b": _speaker_features(),
                    "utterances": tfds.features.Sequence(
                        {
                            "speaker": tfds.features.Text(),
                            "text": tfds.features.Text(),
                            "act": tfds.features.Text(),
                            "sentiment": tfds.features.Tensor(
                                shape=(4,), dtype=np.float32
                            ),
                        }
                    ),
                }
            ),
            homepage="https://github.com/snakeztc/NeuralDialog-CVAE",
            disable_shuffling=True,
            description=(self.__doc__ or "").strip(),
        )

    def _split_generators(self, dl_manager):
        manual = pathlib.Path(dl_manager.manual_dir)
        return {
            SPLIT_NAMES[split]: self._generate_examples(manual / name)
            for split, name in self.FILES.items()
        }

    def _generate_examples(self, path):
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, parse_dialog(line, f"{path} line {number}")

    @classmethod
    def required_files(cls, manual_dir: pathlib.Path) -> list[pathlib.Path]:
        return [manual_dir / name for name in cls.FILES.values()]


BUILDERS = {
    "ptb": Ptb,
    "yahoo": Yahoo,
    "yelp": Yelp,
    "short_yelp": ShortYelp,
    "snli": Snli,
    "switchboard": Switchboard,
}
TEXT_CORPORA = ("ptb", "yahoo", "yelp", "short_yelp", "snli")


def builder_class(name: str):
    """The builder class called ``name``; ConfigError lists the known ones."""
    if name not in BUILDERS:
        raise ConfigError(
            f"unknown TFDS corpus {name!r}; known: {', '.join(sorted(BUILDERS))}"
        )
    return BUILDERS[name]


def prepare(
    name: str, *, data_dir: str | pathlib.Path, manual_dir: str | pathlib.Path = ""
) -> tfds.core.DatasetBuilder:
    """The builder of ``name`` in ``data_dir``, built from ``manual_dir`` if needed.

    A data directory that already holds the prepared corpus needs no manual
    directory; preparing writes ``array_record`` files (no TensorFlow).

    Raises:
        ConfigError: unknown name, or no data directory.
        DataError: the corpus is not prepared and ``manual_dir`` lacks files.
    """
    cls = builder_class(name)
    if not str(data_dir):
        raise ConfigError("data.tfds_data_dir must be set for data.source='tfds'")
    builder = cls(data_dir=str(data_dir), file_format=FILE_FORMAT)
    if builder.is_prepared():
        return builder
    if not str(manual_dir):
        raise DataError(
            f"TFDS corpus {name!r} is not prepared in {data_dir}: set "
            f"data.tfds_manual_dir to a directory holding its files"
        )
    manual = pathlib.Path(manual_dir)
    missing = [p.name for p in cls.required_files(manual) if not p.is_file()]
    if missing:
        raise DataError(
            f"{manual}: missing {', '.join(missing)} for TFDS corpus {name!r} "
            f"({' '.join(cls.MANUAL_DOWNLOAD_INSTRUCTIONS.split())})"
        )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)),
        file_format=FILE_FORMAT,
    )
    return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    """Every example of ``split`` (our name: train/valid/test) in stored order.

    Strings come back as ``str`` (TFDS returns bytes).
    """
    source = builder.as_data_source(split=SPLIT_NAMES[split])
    return [_decoded(source[i]) for i in range(len(source))]


def _decoded(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.tolist()
    if isinstance(value, list):
        items = [_decoded(v) for v in value]
        # A sequence of fixed-shape tensors reads back as one array.
        if items and all(isinstance(v, np.ndarray) for v in items):
            return np.stack(items)
        return items
    return value


def split_corpus(
    examples: list[dict], *, labelled: bool, where: str, max_tokens: int | None
) -> corpus_lib.Corpus:
    """A ``Corpus`` of a text builder's examples (the plain-file reader's rules)."""
    if labelled and examples and "label" not in examples[0]:
        raise ConfigError(f"{where} has no labels but data.labelled is true")
    sentences, labels = [], []
    dropped_empty = dropped_long = 0
    for example in examples:
        tokens = tuple(example["text"].split())
        if not tokens:
            dropped_empty += 1
        elif max_tokens is not None and len(tokens) > max_tokens:
            dropped_long += 1
        else:
            sentences.append(tokens)
            labels.append(example.get("label", ""))
    stats = corpus_lib.ReadStats(
        lines=len(examples),
        kept=len(sentences),
        dropped_empty=dropped_empty,
        dropped_long=dropped_long,
    )
    if not sentences:
        raise DataError(f"{where}: has no sentences ({stats.summary()})")
    return corpus_lib.Corpus(
        sentences=tuple(sentences),
        labels=tuple(labels) if labelled else None,
        stats=stats,
        path=where,
    )


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Where a run's corpus comes from when ``data.source='tfds'``."""

    name: str
    data_dir: str
    manual_dir: str = ""


def load_corpora(
    source: TfdsSource, *, labelled: bool, max_tokens: int | None
) -> dict[str, corpus_lib.Corpus]:
    """train/valid/test corpora of a text builder, prepared on first use."""
    if source.name not in TEXT_CORPORA:
        raise ConfigError(
            f"TFDS corpus {source.name!r} is not a sentence corpus; "
            f"a VAE run takes one of {', '.join(TEXT_CORPORA)}"
        )
    builder = prepare(
        source.name, data_dir=source.data_dir, manual_dir=source.manual_dir
    )
    return {
        split: split_corpus(
            read_split(builder, split),
            labelled=labelled,
            where=f"tfds:{source.name}/{SPLIT_NAMES[split]}",
            max_tokens=max_tokens,
        )
        for split in SPLIT_NAMES
    }
