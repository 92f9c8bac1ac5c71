"""Word vocabulary built from the training file in order of first occurrence."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
from collections.abc import Iterable, Sequence

import numpy as np

from bnvae_jax import fileio
from bnvae_jax.errors import DataError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Ids are positions in ``words``; the four special tokens come first.

    Attributes:
        words: every word of the vocabulary, ``words[i]`` has id ``i``; starts
            with ``SPECIAL_TOKENS``.
    """

    words: tuple[str, ...]
    _ids: dict[str, int] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        words = tuple(self.words)
        if words[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
            raise ValueError(f"a Vocab must start with {SPECIAL_TOKENS}")
        ids = {word: i for i, word in enumerate(words)}
        if len(ids) != len(words):
            raise ValueError("a Vocab must not hold a word twice")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        """The id of ``word``; ``UNK`` for a word not in the vocabulary."""
        return self._ids.get(word, UNK)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """Ids of ``tokens``, without ``<s>`` or ``</s>``.

        Args:
            tokens: L words.

        Returns:
            <int32>[L] ids; unseen words are ``UNK``.

        Raises:
            TypeError: ``tokens`` is one string (split it into words first).
        """
        if isinstance(tokens, str):
            raise TypeError(
                f"Vocab.encode takes a list of words, got the string {tokens[:40]!r}; "
                "split it first"
            )
        return np.array([self.id(word) for word in tokens], np.int32)

    def decode(self, ids: Iterable[int], *, strip_special: bool = True) -> list[str]:
        """Words of ``ids``.

        Args:
            ids: <int>[L] token ids.
            strip_special: stop at the first ``</s>`` and leave out ``<s>`` and
                ``<pad>`` (``<unk>`` is kept).

        Returns:
            The words.

        Raises:
            ValueError: an id outside ``[0, len(self))``.
        """
        ids = np.asarray(ids).reshape(-1).tolist()
        if strip_special and EOS in ids:
            ids = ids[: ids.index(EOS)]
        if bad := [i for i in ids if not 0 <= i < len(self)]:
            raise ValueError(
                f"token id {bad[0]} is outside a vocabulary of size {len(self)}"
            )
        skip = (BOS, PAD) if strip_special else ()
        return [self.words[i] for i in ids if i not in skip]

    def save(self, path: str | os.PathLike) -> None:
        """Writes one word per line (UTF-8); the id of a word is its line index."""
        fileio.write_text_atomic(path, "".join(word + "\n" for word in self.words))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocab:
        """Reads a file written by ``save``.

        Raises:
            DataError: the file is missing, not UTF-8, has an empty or repeated
                word, or does not start with the special tokens.
        """
        words = fileio.read_text(path).splitlines()
        first: dict[str, int] = {}
        for number, word in enumerate(words, start=1):
            if word.split() != [word]:  # empty, spaced, or several words
                problem = f"expected one word per line, got {word!r}"
            elif first.setdefault(word, number) != number:
                problem = f"word {word!r} repeats line {first[word]}"
            else:
                continue
            raise DataError(f"{path} line {number}: {problem}")
        if tuple(words[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise DataError(
                f"{path}: a vocabulary file must start with the lines "
                f"{' '.join(SPECIAL_TOKENS)}"
            )
        return cls(tuple(words))

    def fingerprint(self) -> str:
        """SHA-256 hex digest of the words joined by newlines."""
        return hashlib.sha256("\n".join(self.words).encode("utf-8")).hexdigest()

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]]) -> Vocab:
        """The reference vocabulary.

        Special tokens first, then every word of ``sentences`` in order of first
        occurrence, with no frequency cut-off. A word equal to a special token
        (PTB has ``<unk>`` in its text) keeps the special id.

        Args:
            sentences: the tokenised training sentences.

        Returns:
            The vocabulary.
        """
        return cls(tuple(dict.fromkeys(itertools.chain(SPECIAL_TOKENS, *sentences))))
