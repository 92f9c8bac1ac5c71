"""Reading a corpus file (one sentence per line) and turning it into id rows."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

from bnvae_jax import fileio
from bnvae_jax.data.vocab import BOS, EOS, Vocab
from bnvae_jax.errors import ConfigError, DataError

# Line ends as Python's universal newlines see them (what the reference's
# ``for line in open(...)`` splits on): LF, CRLF, CR.
_EOL = re.compile(r"\r\n|\r|\n")


@dataclasses.dataclass(frozen=True)
class ReadStats:
    """What happened to the lines of a file.

    Attributes:
        lines: lines in the file.
        kept: lines kept as sentences.
        dropped_empty: lines whose text has no token.
        dropped_long: lines with more than ``max_tokens`` tokens.
    """

    lines: int
    kept: int
    dropped_empty: int
    dropped_long: int

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"{self.kept} sentences from {self.lines} lines "
            f"({self.dropped_empty} empty and {self.dropped_long} too long dropped)"
        )


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The sentences of one file.

    Attributes:
        sentences: the kept sentences, each a tuple of tokens (at least one).
        labels: one label string per kept sentence for labelled files, else None.
        stats: line counts.
        path: the file read.
    """

    sentences: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...] | None
    stats: ReadStats
    path: str

    def __len__(self) -> int:
        return len(self.sentences)

    def summary(self) -> str:
        """One line for the log, naming the file."""
        return f"{self.path}: {self.stats.summary()}"


def read_corpus(
    path: str | os.PathLike, *, labelled: bool = False, max_tokens: int | None = None
) -> Corpus:
    """Reads a file of whitespace-tokenised sentences, one per line.

    Accepts LF, CRLF and CR line ends and a leading UTF-8 BOM. Lines with no
    token are dropped; so are lines longer than ``max_tokens``.

    Args:
        path: the file.
        labelled: lines are ``LABEL<TAB>TEXT``; the label is the text before the
            first tab, the sentence the text after it.
        max_tokens: drop sentences with more tokens; None keeps all.

    Returns:
        The corpus.

    Raises:
        DataError: the file is missing, a directory, not UTF-8, has no sentence,
            or (labelled) a non-empty line has no tab or an empty label.
        ConfigError: ``max_tokens`` < 1.
    """
    lines = _EOL.split(fileio.read_text(path))
    if lines[-1] == "":
        lines.pop()
    labels = [""] * len(lines)
    for i, line in enumerate(lines):
        if labelled and line.strip():
            label, tab, lines[i] = line.partition("\t")
            labels[i] = label.strip()
            if not (tab and labels[i]):
                raise DataError(
                    f"{path} line {i + 1}: expected LABEL<TAB>TEXT, "
                    + ("the label is empty" if tab else "found no tab")
                )
    return make_corpus(
        lines, labels if labelled else None, where=str(path), max_tokens=max_tokens
    )


def make_corpus(
    texts: Sequence[str],
    labels: Sequence[str] | None,
    *,
    where: str,
    max_tokens: int | None,
) -> Corpus:
    """The ``Corpus`` of lines already split from their labels (None: unlabelled).

    Lines with no token, or more than ``max_tokens``, are dropped and counted.

    Raises:
        DataError: no line is kept.
        ConfigError: ``max_tokens`` < 1.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1 or None, got {max_tokens}")
    rows = [(tuple(t.split()), label) for t, label in zip(texts, labels or repeat(""))]
    kept = [row for row in rows if 0 < len(row[0]) <= (max_tokens or math.inf)]
    empty = sum(not t for t, _ in rows)
    stats = ReadStats(len(rows), len(kept), empty, len(rows) - len(kept) - empty)
    if not kept:
        raise DataError(f"{where}: has no sentences ({stats.summary()})")
    sentences, kept_labels = zip(*kept)
    return Corpus(sentences, None if labels is None else kept_labels, stats, where)


def encode_corpus(
    corpus: Corpus | Iterable[Sequence[str]], vocab: Vocab
) -> list[np.ndarray]:
    """Id rows ``[<s>, w_1, .., w_L, </s>]``.

    Args:
        corpus: a ``Corpus`` or tokenised sentences.
        vocab: maps words to ids (unseen words to ``<unk>``).

    Returns:
        One <int32>[L+2] row per sentence.
    """
    sentences = corpus.sentences if isinstance(corpus, Corpus) else corpus
    return [np.array([BOS, *vocab.encode(s), EOS], np.int32) for s in sentences]
