"""Multi-reference response metrics of Zhao et al. (2017): smoothed BLEU, A-bow, E-bow.

For a context with references r_1..r_M and sampled hypotheses h_1..h_N, and a
similarity d(r, h) in [0, 1]:
precision = (1/N) Σ_i max_j d(r_j, h_i) and recall = (1/M) Σ_j max_i d(r_j, h_i),
Zhao et al.'s definitions. With one reference, precision is the mean and recall
the max of d(r, h_i) over the samples, as in Zhao et al.'s single-reference test.

BLEU is NLTK's ``sentence_bleu([r], h, weights=(1/k,)*k,
smoothing_function=SmoothingFunction().method7)`` (Chen & Cherry 2014, method 7 =
method 4 then method 5, NLTK ≥ 3.4 semantics), written out here so the library
does not need NLTK; tests compare both where NLTK is installed.
"""

from __future__ import annotations

import collections
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from bnvae_jax.data.vocab import PAD, Vocab
from bnvae_jax.errors import DataError, UserError

Tokens = Sequence[str]
SMOOTHING_K = 5  # NLTK SmoothingFunction(k=5), method 4's constant


def modified_precision(reference: Tokens, hypothesis: Tokens, n: int):
    """(clipped matches, max(1, hypothesis n-grams)) of order ``n``: BLEU's p_n."""
    hyp, ref = (
        collections.Counter(zip(*(t[i:] for i in range(n))))
        for t in (hypothesis, reference)
    )
    matches = sum(min(count, ref[gram]) for gram, count in hyp.items())
    return matches, max(1, sum(hyp.values()))


def sentence_bleu(reference: Tokens, hypothesis: Tokens, order: int) -> float:
    """Smoothed sentence BLEU-``order`` of ``hypothesis`` against one reference.

    Zero without a hypothesis or a unigram match. Otherwise p_1..p_order after
    Chen & Cherry's method 4 then method 5 (NLTK's method7). Method 4: the i-th
    zero-match order (counting from 1) gets ``1 / (2^i · k / ln|h|) /
    denominator`` when |h| > 1. Method 5: each p_n becomes the mean of the
    previous smoothed value (p_1 + 1 before the first), itself, and the next
    order's value, where the order after the last is always the unsmoothed
    5-gram precision (NLTK's behaviour, even for BLEU-1..3).
    """
    counts = [
        modified_precision(reference, hypothesis, n) for n in (*range(1, order + 1), 5)
    ]
    if not hypothesis or counts[0][0] == 0:
        return 0.0
    hyp_len, ref_len = len(hypothesis), len(reference)
    p, zeros_seen = [], 1
    for matches, total in counts[:-1]:
        if matches == 0 and hyp_len > 1:
            p.append(1.0 / (2**zeros_seen * SMOOTHING_K / math.log(hyp_len)) / total)
            zeros_seen += 1
        else:
            p.append(matches / total)
    smoothed, previous = [], p[0] + 1.0
    for value, nxt in zip(p, [*p[1:], counts[-1][0] / counts[-1][1]]):
        previous = (previous + value + nxt) / 3.0
        smoothed.append(previous)
    log_mean = math.fsum(math.log(v) / order for v in smoothed if v > 0)
    brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
    return brevity * math.exp(log_mean)


def precision_recall(similarity: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a <float>[M refs, N hyps] similarity matrix."""
    return float(similarity.max(0).mean()), float(similarity.max(1).mean())


# -- bag-of-words embedding similarity ----------------------------------------


def load_glove(path: str, words: set[str] | None = None) -> dict[str, np.ndarray]:
    """Vectors of a GloVe text file (``word v1 … vd`` a line).

    Args:
      path: the file.
      words: when given, only these words are kept (saves memory).

    Raises:
      DataError: missing file, or a line whose width differs from the first.
    """
    file = pathlib.Path(path)
    if not file.is_file():
        raise DataError(f"{path}: GloVe file not found")
    vectors: dict[str, np.ndarray] = {}
    dim = None
    with open(file, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            word, *values = line.rstrip().split(" ")
            if not values:
                continue
            dim = dim or len(values)
            if len(values) != dim:
                raise DataError(
                    f"{path}:{number}: {len(values)} values, expected {dim}"
                )
            if words is None or word in words:
                try:
                    vectors[word] = np.asarray(values, np.float64)
                except ValueError:
                    raise DataError(
                        f"{path}:{number}: a value is not a number"
                    ) from None
    if dim is None:
        raise DataError(f"{path}: no vectors")
    return vectors


def glove_table(path: str, vocab: Vocab, table: np.ndarray) -> np.ndarray:
    """A copy of ``table`` with the rows of words found in the GloVe file replaced.

    Initialises the word embeddings (``model.embedding_file``): rows of words
    the file lacks keep their values, the ``<pad>`` row is zero.

    Args:
      path: a GloVe text file.
      vocab: the vocabulary; row i of ``table`` embeds ``vocab.words[i]``.
      table: <float>[V, D] embeddings.

    Returns:
      <table.dtype>[V, D].

    Raises:
      DataError: a missing or malformed file (``load_glove``).
      UserError: the file's vectors are not D wide.
    """
    glove = load_glove(path, set(vocab.words))
    width = next((len(v) for v in glove.values()), table.shape[1])
    if width != table.shape[1]:
        raise UserError(
            f"{path}: vectors have {width} values but model.emb_dim is {table.shape[1]}"
        )
    table = np.array(table)
    for i, word in enumerate(vocab.words):
        if word in glove:
            table[i] = glove[word]
    table[PAD] = 0.0
    return table


def average_embedding(tokens: Tokens, glove) -> np.ndarray | None:
    """Mean of the GloVe vectors of ``tokens`` (words without one skipped)."""
    vecs = [glove[w] for w in tokens if w in glove]
    return np.mean(vecs, 0) if vecs else None


def extrema_embedding(tokens: Tokens, glove) -> np.ndarray | None:
    """Per dimension the extreme value: the max if |min| <= max, else the min."""
    vecs = [glove[w] for w in tokens if w in glove]
    if not vecs:
        return None
    hi, lo = np.max(vecs, 0), np.min(vecs, 0)
    return np.where(np.abs(lo) <= hi, hi, lo)


def embedding_scores(
    references: Sequence[Tokens], hypotheses: Sequence[Tokens], glove, embed
) -> tuple[float, float] | None:
    """(precision, recall) with sentence vectors from ``embed``; d = (cos + 1) / 2.

    A zero vector has cosine 0. Sentences without any GloVe word are dropped;
    None when no reference or no hypothesis is left (the context is then not
    counted).
    """
    refs = [v for v in (embed(r, glove) for r in references) if v is not None]
    hyps = [v for v in (embed(h, glove) for h in hypotheses) if v is not None]
    if not refs or not hyps:
        return None

    def similarity(a: np.ndarray, b: np.ndarray) -> float:
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        return ((float(a @ b / denom) if denom > 0 else 0.0) + 1.0) / 2.0

    return precision_recall(np.array([[similarity(r, h) for h in hyps] for r in refs]))


def score_contexts(
    references: Sequence[Sequence[Tokens]],
    hypotheses: Sequence[Sequence[Tokens]],
    glove: dict[str, np.ndarray] | None,
) -> dict[str, float]:
    """Averages over contexts of BLEU-1..4, A-bow and E-bow precision and recall.

    Args:
      references: per context, its reference responses (tokens).
      hypotheses: per context, its sampled responses (tokens).
      glove: word vectors; None leaves out A-bow and E-bow.

    Returns:
      ``bleu{k}_precision``/``_recall`` (k = 1..4), ``bleu{k}_f1``, and with
      GloVe ``abow_*`` and ``ebow_*``, plus ``num_contexts``; values in [0, 1].
    """
    embeds = {"abow": average_embedding, "ebow": extrema_embedding}
    pairs: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for refs, hyps in zip(references, hypotheses, strict=True):
        for k in range(1, 5):
            bleu = [[sentence_bleu(r, h, k) for h in hyps] for r in refs]
            pairs[f"bleu{k}"].append(precision_recall(np.array(bleu)))
        for name, embed in embeds.items() if glove is not None else ():
            score = embedding_scores(refs, hyps, glove, embed)
            if score is not None:
                pairs[name].append(score)
    results = {}
    for name, scores in pairs.items():
        p, r = (float(np.mean(column)) for column in zip(*scores))
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
        results |= {f"{name}_precision": p, f"{name}_recall": r, f"{name}_f1": f1}
    results["num_contexts"] = len(references)
    return results
