"""Tests of the embedded synthetic corpus generator."""

import dataclasses
import json

import numpy as np
import pytest

from bnvae_jax.data import synthetic

SMALL = synthetic.SyntheticSpec(
    num_train=300,
    num_valid=40,
    num_test=30,
    vocab_size=50,
    length=7,
    emb_dim=16,
    hidden_dim=16,
)


def _sentences(spec):
    return {split: data.sentences for split, data in synthetic.sample(spec)[1].items()}


def _unigram(sentences, vocab_size):
    counts = np.zeros(vocab_size)
    for words in sentences:
        for word in words:
            counts[int(word[1:])] += 1
    return counts / counts.sum()


def _js(p, q):
    m = 0.5 * (p + q)

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / b[nz])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_sizes_lengths_and_vocab():
    corpus = _sentences(SMALL)
    assert set(corpus) == {"train", "valid", "test"}
    for split in ("train", "valid", "test"):
        assert len(corpus[split]) == getattr(SMALL, f"num_{split}")
        for words in corpus[split]:
            assert len(words) == SMALL.length
            for word in words:
                assert word.startswith("w")
                assert 0 <= int(word[1:]) < SMALL.vocab_size


def test_deterministic_for_a_seed_and_different_across_seeds():
    a = _sentences(SMALL)
    b = _sentences(SMALL)
    c = _sentences(dataclasses.replace(SMALL, seed=1))
    assert a == b
    assert a["train"] != c["train"]


def test_splits_have_independent_streams():
    a = _sentences(SMALL)
    b = _sentences(dataclasses.replace(SMALL, num_train=100))
    assert b["valid"] == a["valid"]
    assert b["test"] == a["test"]


def test_latents_follow_the_mixture():
    _, splits = synthetic.sample(dataclasses.replace(SMALL, num_train=2000))
    train = splits["train"]
    assert train.z.shape == (2000, 2)
    assert train.component.shape == (2000,)
    means = np.array([[2, 2], [2, -2], [-2, 2], [-2, -2]])
    for k in range(4):
        zk = train.z[train.component == k]
        assert len(zk) > 300
        np.testing.assert_allclose(zk.mean(0), means[k], atol=0.2)
        np.testing.assert_allclose(zk.std(0), 1.0, atol=0.15)


def test_other_latent_dims_get_random_means():
    spec = dataclasses.replace(SMALL, latent_dim=3, num_components=5)
    train = synthetic.sample(spec)[1]["train"]
    assert train.z.shape == (SMALL.num_train, 3)
    assert set(np.unique(train.component)) <= set(range(5))


def test_sentences_depend_on_the_latent():
    # The default demo sizes: components differ far more than sampling noise.
    spec = synthetic.SyntheticSpec(
        num_train=4000,
        num_valid=0,
        num_test=0,
        vocab_size=200,
        emb_dim=32,
        hidden_dim=32,
    )
    train = synthetic.sample(spec)[1]["train"]
    by_comp = [
        [s for s, c in zip(train.sentences, train.component, strict=True) if c == k]
        for k in range(4)
    ]
    hists = [_unigram(s, spec.vocab_size) for s in by_comp]
    between = [_js(hists[a], hists[b]) for a in range(4) for b in range(a + 1, 4)]
    within = _js(
        _unigram(by_comp[0][::2], spec.vocab_size),
        _unigram(by_comp[0][1::2], spec.vocab_size),
    )
    assert within < 0.03
    assert min(between) > 0.08
    assert min(between) > 4 * within
    # Not uniform noise: the overall unigram entropy is well below log V.
    overall = _unigram(train.sentences, spec.vocab_size)
    entropy = -np.sum(overall[overall > 0] * np.log(overall[overall > 0]))
    assert entropy < np.log(spec.vocab_size) - 0.1


def test_variable_length_with_end_token():
    spec = dataclasses.replace(SMALL, min_length=3, length=9)
    corpus = _sentences(spec)
    lengths = {len(s) for s in corpus["train"]}
    assert min(lengths) >= 3
    assert max(lengths) <= 9
    assert len(lengths) > 1
    for words in corpus["train"]:
        assert all(0 <= int(w[1:]) < spec.vocab_size for w in words)


def test_invalid_spec_is_rejected():
    with pytest.raises(ValueError, match="min_length"):
        synthetic.SyntheticSpec(length=5, min_length=6)
    with pytest.raises(ValueError, match="temperature"):
        synthetic.SyntheticSpec(temperature=0.0)


def test_write_corpus_writes_reuses_and_regenerates(tmp_path):
    paths = synthetic.write_corpus(SMALL, tmp_path)
    corpus = _sentences(SMALL)
    for split in ("train", "valid", "test"):
        assert paths[split] == tmp_path / f"synthetic.{split}.txt"
        lines = paths[split].read_text().splitlines()
        assert [line.split(" ") for line in lines] == corpus[split]
    latents = np.load(paths["latents"])
    assert latents["train_z"].shape == (SMALL.num_train, SMALL.latent_dim)
    assert latents["valid_component"].shape == (SMALL.num_valid,)
    assert latents["means"].shape == (4, 2)
    assert json.loads(paths["spec"].read_text())["spec"]["seed"] == 0

    # Same spec: files are reused untouched.
    paths["train"].write_text("sentinel\n")
    again = synthetic.write_corpus(SMALL, tmp_path)
    assert again == paths
    assert paths["train"].read_text() == "sentinel\n"

    # Another spec: regenerated.
    other = dataclasses.replace(SMALL, seed=3)
    synthetic.write_corpus(other, tmp_path)
    lines = paths["train"].read_text().splitlines()
    assert [line.split(" ") for line in lines] == _sentences(other)["train"]

    # A missing file (e.g. an interrupted write) also regenerates.
    paths["valid"].unlink()
    synthetic.write_corpus(other, tmp_path)
    assert paths["valid"].is_file()
