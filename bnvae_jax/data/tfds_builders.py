"""TFDS builders for the paper's corpora, written and read without TensorFlow.

Every builder reads files the user places in a manual directory (none of the
corpora can be downloaded by a script), writes ``array_record`` files into a
TFDS data directory, and is read back with ``builder.as_data_source()``;
``tfds.load`` and ``as_dataset`` would import TensorFlow and are never used.

The classes skip TFDS's global registry (``skip_registration=True``): they are
found through the ``BUILDERS`` table, so importing this module changes
no state and cannot collide with TFDS's own datasets of the same name (snli).
"""

from __future__ import annotations

import itertools
import json
import pathlib
from collections.abc import Mapping

import numpy as np
import tensorflow_datasets as tfds

from bnvae_jax.config import DataConfig
from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.errors import ConfigError, DataError

# Our split names and the TFDS ones (TFDS calls the validation split so).
SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
# Per split, the (file name, label) sources in the manual directory; a label of
# None means the lines carry their own (LABEL<TAB>TEXT) or there is none.
Layout = Mapping[str, tuple[tuple[str, str | None], ...]]


def _names(layout: Layout) -> list[str]:
    return [name for sources in layout.values() for name, _ in sources]


class _ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A corpus built from files the user puts into the manual directory.

    ``LAYOUTS`` are alternative file sets: a build reads the first one with a
    file present. ``MANUAL_DOWNLOAD_INSTRUCTIONS`` is ``WHERE`` (where the files
    come from) followed by the file names. Records keep file order.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}
    HOMEPAGE = WHERE = ""
    LAYOUTS: tuple[Layout, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        files = [", ".join(_names(layout)) for layout in cls.LAYOUTS]
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
            f"{cls.WHERE}. Put into the manual directory: {'; or '.join(files)}."
        )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(self._features()),
            # File order is corpus order: the vocabulary (first occurrence) and
            # the batches match the plain-file pipeline only if TFDS keeps it.
            disable_shuffling=True,
            homepage=self.HOMEPAGE,
            description=(self.__doc__ or "").strip().splitlines()[0],
        )

    @classmethod
    def _layout(cls, manual_dir: pathlib.Path) -> Layout:
        present = [
            x for x in cls.LAYOUTS if any((manual_dir / n).exists() for n in _names(x))
        ]
        return (present or cls.LAYOUTS)[0]

    def _split_generators(self, dl_manager):
        manual = pathlib.Path(dl_manager.manual_dir)
        return {
            SPLIT_NAMES[split]: self._generate_examples(
                [(manual / name, label) for name, label in sources]
            )
            for split, sources in self._layout(manual).items()
        }


class _SentenceCorpus(_ManualBuilder, skip_registration=True):
    """One whitespace-tokenised sentence a line; lines without a token are left out."""

    LABELLED = False

    def _features(self) -> dict:
        names = ("text", "label") if self.LABELLED else ("text",)
        return {name: tfds.features.Text() for name in names}

    def _generate_examples(self, sources):
        keys = itertools.count()
        for path, label in sources:
            corpus = corpus_lib.read_corpus(path, labelled=self.LABELLED and not label)
            for i, tokens in enumerate(corpus.sentences):
                example = {"text": " ".join(tokens)}
                if self.LABELLED:
                    example["label"] = label or corpus.labels[i]
                yield next(keys), example


_HE = "https://github.com/jxhe/vae-lagging-encoder"
_LI = "https://github.com/bohanli/vae-pretraining-encoder"
_PREPARE = "made by `prepare_data.py` of"
# name: (description, homepage, where the files come from); yelp and short_yelp
# lines are LABEL<TAB>TEXT, or short_yelp reads Shen et al.'s files instead.
TEXT_CORPORA = {
    "ptb": (
        "Penn Treebank, Mikolov's language-modelling split (one sentence a line).",
        "https://www.fit.vutbr.cz/~imikolov/rnnlm/",
        "Mikolov's PTB split, `data/` of "
        "https://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
    ),
    "yahoo": (
        "Yahoo Answers documents of Yang et al. 2017 (unlabelled LM set).",
        _HE,
        f"One document a line (100k/10k/10k): `datasets/yahoo_data/` {_PREPARE} {_HE}",
    ),
    "yelp": (
        "Yelp reviews of Yang et al. 2017; lines are LABEL<TAB>TEXT.",
        _HE,
        f"LABEL<TAB>TEXT lines: `datasets/yelp_data/` {_PREPARE} {_HE}",
    ),
    "short_yelp": (
        "Short Yelp sentiment sentences (Shen et al. 2017; Li et al. 2019's copy).",
        "https://github.com/shentianxiao/language-style-transfer",
        f"Li et al. (2019)'s LABEL<TAB>TEXT lines, `datasets/short_yelp_data/` "
        f"{_PREPARE} {_LI}; or (used if the first are absent) Shen et al. (2017)'s "
        "`data/yelp/` of the homepage, label = file suffix",
    ),
    "snli": (
        "SNLI sentences as used for text VAEs (Li et al. 2019), unlabelled.",
        _LI,
        f"One tokenised sentence a line: `datasets/snli_data/` {_PREPARE} {_LI}",
    ),
}
_SHEN_LAYOUT = {
    split: tuple((f"sentiment.{part}.{label}", label) for label in "01")
    for split, part in zip(SPLIT_NAMES, ("train", "dev", "test"), strict=True)
}


def _text_builder(name: str, doc: str, homepage: str, where: str) -> type:
    """The ``_SentenceCorpus`` of ``name`` (TFDS names it after the class)."""
    files = {split: ((f"{name}.{split}.txt", None),) for split in SPLIT_NAMES}
    attrs = {"__doc__": doc, "__module__": __name__, "HOMEPAGE": homepage}
    attrs |= {"WHERE": where, "LABELLED": name in ("yelp", "short_yelp")}
    attrs["LAYOUTS"] = (files, _SHEN_LAYOUT) if name == "short_yelp" else (files,)
    class_name = name.title().replace("_", "")
    return type(class_name, (_SentenceCorpus,), attrs, skip_registration=True)


def _clean(value) -> str:
    """Zhao et al.'s metadata strings carry spaces and quotes: ' "MALE"'."""
    return str(value).strip().strip('"').strip()


_UTTERANCE_KEYS = ("speaker", "text", "act", "sentiment")
_INTS = ("age", "education")


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
            f"speaker_{side.lower()}": {
                **{k: int(_clean(record[side][k])) for k in _INTS},
                "sex": _clean(record[side]["sex"]),
                "dialect": _clean(record[side].get("dialect", "")),
            }
            for side in "AB"
        }
        utts = [
            (str(who), str(text), str(meta[0]), np.float32(meta[1]).reshape(4))
            for who, text, meta in record["utts"]
        ]
        columns = {k: [u[i] for u in utts] for i, k in enumerate(_UTTERANCE_KEYS)}
        return {
            "topic": _clean(record["topic"]),
            "prompt": _clean(record["prompt"]),
            **speakers,
            "utterances": columns,
        }
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise DataError(f"{where}: not a Switchboard dialog ({e!r})") from None


class Switchboard(_ManualBuilder, skip_registration=True):
    """Switchboard dialogs as prepared by Zhao et al. 2017 (one dialog a line)."""

    HOMEPAGE = "https://github.com/snakeztc/NeuralDialog-CVAE"
    WHERE = (
        f"Zhao et al. (2017)'s Switchboard corpus ({HOMEPAGE}, `data/`, derived "
        "from LDC's SWDA) as JSONL, one dialog a line: A/B speaker metadata, "
        "topic, prompt, utts"
    )
    LAYOUTS = ({split: ((f"{split}.jsonl", None),) for split in SPLIT_NAMES},)

    def _features(self) -> dict:
        # A caller: age in years, education code (9: unknown), sex, dialect.
        text = tfds.features.Text
        speaker = dict.fromkeys(_INTS, np.int32) | {"sex": text(), "dialect": text()}
        utterance = {key: text() for key in _UTTERANCE_KEYS[:3]}
        utterance["sentiment"] = tfds.features.Tensor(shape=(4,), dtype=np.float32)
        speakers = {f"speaker_{side}": dict(speaker) for side in "ab"}
        utterances = tfds.features.Sequence(utterance)
        return {"topic": text(), "prompt": text(), **speakers, "utterances": utterances}

    def _generate_examples(self, sources):
        ((path, _),) = sources
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, parse_dialog(line, f"{path} line {number}")


BUILDERS = {name: _text_builder(name, *row) for name, row in TEXT_CORPORA.items()}
BUILDERS["switchboard"] = Switchboard


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
    builder = cls(data_dir=str(data_dir), file_format="array_record")
    if builder.is_prepared():
        return builder
    if not str(manual_dir):
        raise DataError(
            f"TFDS corpus {name!r} is not prepared in {data_dir}: set "
            f"data.tfds_manual_dir to a directory holding its files"
        )
    manual = pathlib.Path(manual_dir)
    missing = [n for n in _names(cls._layout(manual)) if not (manual / n).is_file()]
    if missing:
        raise DataError(
            f"{manual}: missing {', '.join(missing)} for TFDS corpus {name!r} "
            f"({' '.join(cls.MANUAL_DOWNLOAD_INSTRUCTIONS.split())})"
        )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual))
    )
    return builder


def read_split(builder: tfds.core.DatasetBuilder, split: str) -> list[dict]:
    """Every example of ``split`` (our name: train/valid/test) in stored order.

    Strings come back as ``str`` (TFDS returns bytes).
    """
    source = builder.as_data_source(split=SPLIT_NAMES[split])
    return [_decoded(source[i]) for i in range(len(source))]


def _decoded(value):
    """``value`` with bytes as str and a list of arrays as one array.

    (TFDS reads a sequence of fixed-shape tensors back as a list of arrays.)
    """
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _decoded(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.tolist()
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return np.stack(value)
    return [_decoded(v) for v in value] if isinstance(value, list) else value


def load_corpora(d: DataConfig) -> dict[str, corpus_lib.Corpus]:
    """train/valid/test corpora of the text builder ``d.tfds_name``.

    The corpus is prepared on first use; ``d.labelled`` and ``d.max_tokens``
    apply as to plain files.
    """
    name = d.tfds_name
    if name not in TEXT_CORPORA:
        raise ConfigError(
            f"TFDS corpus {name!r} is not a sentence corpus; "
            f"a VAE run takes one of {', '.join(TEXT_CORPORA)}"
        )
    builder = prepare(name, data_dir=d.tfds_data_dir, manual_dir=d.tfds_manual_dir)
    if d.labelled and not builder.LABELLED:
        raise ConfigError(f"tfds:{name} has no labels but data.labelled is true")
    corpora = {}
    for split, tfds_split in SPLIT_NAMES.items():
        examples, where = read_split(builder, split), f"tfds:{name}/{tfds_split}"
        labels = [e["label"] for e in examples] if d.labelled else None
        corpora[split] = corpus_lib.make_corpus(
            [e["text"] for e in examples], labels, where=where, max_tokens=d.max_tokens
        )
    return corpora
