"""The three splits of a run, read from plain files or from the embedded generator."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import pathlib

import numpy as np

from bnvae_jax.config import DataConfig
from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.data import synthetic
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import ConfigError

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass(frozen=True)
class Datasets:
    """Encoded splits: each a tuple of <int32>[L+2] rows ``<s> w_1 .. w_L </s>``."""

    vocab: Vocab
    train: tuple[np.ndarray, ...]
    valid: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]
    files: dict[str, str]
    stats: dict[str, corpus_lib.ReadStats]

    def split(self, name: str) -> tuple[np.ndarray, ...]:
        return getattr(self, name)


def data_files(data_cfg: DataConfig, workdir: str) -> dict[str, str]:
    """Paths of the three splits: the given files, or the generated corpus."""
    given = {s: getattr(data_cfg, f"{s}_file") for s in SPLITS}
    if any(given.values()):
        missing = [f"data.{s}_file" for s, path in given.items() if not path]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} not set: give all of data.train_file, "
                "data.valid_file and data.test_file"
            )
        return given
    if data_cfg.source != "synthetic":
        raise ConfigError(
            f"data.source={data_cfg.source!r} needs --config.data.train_file=..., "
            "--config.data.valid_file=... and --config.data.test_file=..."
        )
    spec = synthetic.SyntheticSpec(**dataclasses.asdict(data_cfg.synthetic))
    # One folder per spec: a changed spec never overwrites a run's corpus.
    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:10]
    paths = synthetic.write_corpus(
        spec, pathlib.Path(workdir) / "data" / f"synthetic-{digest}"
    )
    return {s: str(paths[s]) for s in SPLITS}


def load_datasets(
    data_cfg: DataConfig, workdir: str, vocab: Vocab | None = None
) -> Datasets:
    """Reads the splits; the vocabulary comes from the training file unless given."""
    if data_cfg.source == "tfds":
        # Imported here: TFDS stays out of the import path of file-based runs.
        from bnvae_jax.data import tfds_builders

        corpora = tfds_builders.load_corpora(data_cfg)
    else:
        files = data_files(data_cfg, workdir)
        kw = dict(labelled=data_cfg.labelled, max_tokens=data_cfg.max_tokens)
        corpora = {s: corpus_lib.read_corpus(files[s], **kw) for s in SPLITS}
    for split, corpus in corpora.items():
        logging.info("%s: %s", split, corpus.summary())
    if vocab is None:
        vocab = Vocab.from_sentences(corpora["train"].sentences)
    return Datasets(
        vocab=vocab,
        files={s: c.path for s, c in corpora.items()},
        stats={s: c.stats for s, c in corpora.items()},
        **{s: tuple(corpus_lib.encode_corpus(c, vocab)) for s, c in corpora.items()},
    )
