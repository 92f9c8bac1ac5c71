"""Response metrics: smoothed sentence BLEU (method 7), A-bow / E-bow, P/R."""

import math

import numpy as np
import pytest

from bnvae_jax.errors import DataError
from bnvae_jax.tasks.dialog import metrics


def test_bleu_of_an_identical_pair_by_hand():
    ref = hyp = "a b c d".split()
    # BLEU-1: p1 = 1; method 5 averages (p1 + 1, p1, p5 = 0) -> 1.
    assert metrics.sentence_bleu(ref, hyp, 1) == pytest.approx(1.0)
    # BLEU-2: p1' = (2 + 1 + 1)/3 = 4/3, p2' = (4/3 + 1 + p5 = 0)/3 = 7/9.
    assert metrics.sentence_bleu(ref, hyp, 2) == pytest.approx(math.sqrt(28 / 27))


def test_bleu_with_zero_matches_and_brevity_penalty_by_hand():
    ref, hyp = "a b c".split(), "a x".split()
    k = 5
    ln2 = math.log(2)
    # Method 4: the i-th zero order gets 1 / (2^i k / ln|h|) / denominator.
    p = [0.5, ln2 / (2 * k), ln2 / (4 * k), ln2 / (8 * k)]
    bp = math.exp(1 - 3 / 2)
    for order in (1, 2, 4):
        # Method 5 with NLTK's quirk: after the last order comes p5 (= 0 here).
        following = p[1:order] + [0.0]
        smoothed, prev = [], p[0] + 1
        for value, nxt in zip(p[:order], following):
            prev = (prev + value + nxt) / 3
            smoothed.append(prev)
        want = bp * math.exp(sum(math.log(v) for v in smoothed) / order)
        assert metrics.sentence_bleu(ref, hyp, order) == pytest.approx(want)


def test_bleu_is_zero_without_unigram_matches_or_hypothesis():
    assert metrics.sentence_bleu(["a", "b"], ["c"], 4) == 0.0
    assert metrics.sentence_bleu(["a", "b"], [], 2) == 0.0


def test_bleu_matches_nltk():
    # nltk is in the test extra: this comparison always runs.
    from nltk.translate import bleu_score as nltk_bleu

    smooth = nltk_bleu.SmoothingFunction().method7
    rng = np.random.default_rng(0)
    words = list("abcde")
    for _ in range(300):
        ref = list(rng.choice(words, rng.integers(1, 9)))
        hyp = list(rng.choice(words, rng.integers(0, 9)))
        for k in range(1, 5):
            want = nltk_bleu.sentence_bleu(
                [ref], hyp, weights=[1 / k] * k, smoothing_function=smooth
            )
            assert metrics.sentence_bleu(ref, hyp, k) == pytest.approx(want, abs=1e-12)


def test_precision_and_recall_of_a_similarity_matrix():
    # 2 references x 3 hypotheses.
    sims = np.array([[0.9, 0.1, 0.2], [0.3, 0.4, 0.0]])
    p, r = metrics.precision_recall(sims)
    assert p == pytest.approx((0.9 + 0.4 + 0.2) / 3)
    assert r == pytest.approx((0.9 + 0.4) / 2)


GLOVE = {
    "x": np.array([1.0, 0.0]),
    "y": np.array([0.0, 1.0]),
    "z": np.array([-3.0, 1.0]),
}


def test_average_and_extrema_embeddings_by_hand():
    np.testing.assert_allclose(
        metrics.average_embedding(["x", "y", "oov"], GLOVE), [0.5, 0.5]
    )
    # dim 0: max 1, min -3 -> |min| > max -> -3; dim 1: max 1, min 0 -> 1.
    np.testing.assert_allclose(metrics.extrema_embedding(["x", "z"], GLOVE), [-3, 1])
    assert metrics.average_embedding(["oov"], GLOVE) is None


def test_bow_scores_by_hand():
    refs = [["x"]]
    hyps = [["y"], ["x", "y"], ["unknown"]]  # the last has no vector: dropped
    p, r = metrics.embedding_scores(refs, hyps, GLOVE, metrics.average_embedding)
    cos_xy, cos_x_avg = 0.0, 1 / math.sqrt(2)
    d = [(cos_xy + 1) / 2, (cos_x_avg + 1) / 2]
    assert p == pytest.approx(np.mean(d))
    assert r == pytest.approx(max(d))
    p, r = metrics.embedding_scores(refs, hyps, GLOVE, metrics.extrema_embedding)
    assert r == pytest.approx((cos_x_avg + 1) / 2)  # extrema of {x, y} = (1, 1)
    assert (
        metrics.embedding_scores([["oov"]], hyps, GLOVE, metrics.average_embedding)
        is None
    )


def test_score_contexts_averages_over_contexts():
    refs = [[["x", "y"]], [["z"]]]
    hyps = [[["x", "y"], ["y"]], [["z"]]]
    out = metrics.score_contexts(refs, hyps, GLOVE)
    assert out["num_contexts"] == 2
    assert out["abow_recall"] == pytest.approx(1.0)
    first = (1.0 + (1 / math.sqrt(2) + 1) / 2) / 2
    assert out["abow_precision"] == pytest.approx((first + 1.0) / 2)
    assert 0 < out["bleu4_precision"] < out["bleu4_recall"]
    assert "ebow_f1" in out and "abow_precision" not in metrics.score_contexts(
        refs, hyps, None
    )


def test_load_glove_reads_and_rejects_ragged_lines(tmp_path):
    good = tmp_path / "g.txt"
    good.write_text("the 0.5 -1\ncat 2 3\n")
    vecs = metrics.load_glove(str(good), {"cat"})
    assert list(vecs) == ["cat"]
    np.testing.assert_allclose(vecs["cat"], [2, 3])
    bad = tmp_path / "b.txt"
    bad.write_text("the 0.5 -1\ncat 2\n")
    with pytest.raises(DataError, match="b.txt:2"):
        metrics.load_glove(str(bad))
    with pytest.raises(DataError, match="not found"):
        metrics.load_glove(str(tmp_path / "missing.txt"))
