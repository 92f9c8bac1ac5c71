"""The embedded default corpus: sentences from a random LSTM LM driven by a GMM latent.

The recipe of He et al. (2019, App. B), used by BN-VAE (Zhu et al., 2020, App. A.1):

1. draw a mixture component ``k`` uniformly from ``num_components`` and a latent
   ``z ~ N(mu_k, I)``; for ``latent_dim == 2`` and four components the means are
   the corners ``(±2, ±2)``, otherwise they are drawn (seeded) as ``N(0, 2² I)``;
2. run a randomly initialised one-layer LSTM language model that sees ``z`` at
   every step (``[embedding(w_{t-1}); z]`` is its input) and starts from a state
   computed from ``z`` (``h_0 = tanh(A z)``, ``c_0 = C z``);
3. sample each word from ``softmax(W_o h_t / temperature)``.

Scales. The embeddings and LSTM weights are drawn from ``U(-1, 1)``
(``init_scale``), as in He et al.'s generator: the gates are far from their linear
regime, so the state, and with it the word distribution, depends strongly on ``z``.
The output weights are drawn from ``N(0, 6² / hidden_dim)`` (``logit_scale``), which
keeps the word distributions peaked whatever the hidden size. Measured with the
defaults (V=1000, H=100): the entropy of a step's word distribution is about 4.4
nats (log V = 6.9; a perplexity near 80, like real text), and the Jensen-Shannon
divergence between the unigram histograms of two mixture components is 0.09-0.18
nats against 0.01 between two halves of one component (sampling noise). The
default demo config (V=200, H=32) gives about 3.2 nats and 0.17-0.36 against 0.01.
Words are written as ``w0 .. w{V-1}``.

Generation is vectorised over sentences (a Python loop runs over time steps only):
the default 24k sentences take about two seconds on one CPU core.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import pathlib

import numpy as np

from bnvae_jax import fileio

SPLITS = ("train", "valid", "test")
SPEC_FILE = "spec.json"
LATENTS_FILE = "synthetic.latents.npz"
_FORMAT_VERSION = 1
_CHUNK = 4096  # sentences sampled together (bounds the [chunk, V] logits array)


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the generated corpus.

    Attributes:
        num_train: Sentences in the training split.
        num_valid: Sentences in the validation split.
        num_test: Sentences in the test split.
        vocab_size: Words of the generating language model (``w0 .. w{V-1}``).
        length: Tokens per sentence; the maximum length when ``min_length`` is set.
        latent_dim: Dimension of the generating latent ``z``.
        num_components: Gaussian components of the latent's mixture prior.
        emb_dim: Word embedding size of the generating LSTM.
        hidden_dim: Hidden size of the generating LSTM.
        temperature: Softmax temperature of the word distribution.
        seed: Seeds the generator's weights, the mixture means and all samples.
        init_scale: The LSTM's weights and the embeddings are drawn from
            ``U(-init_scale, init_scale)``.
        logit_scale: The output weights are drawn from
            ``N(0, logit_scale² / hidden_dim)``, so a logit's standard deviation is
            about ``logit_scale * rms(h)`` whatever the hidden size.
        min_length: None gives fixed-length sentences of ``length`` words.
            Otherwise the LM has an extra end token that it may emit once
            ``min_length`` words are out (it is masked before); a sentence ends at
            the end token (not written) or after ``length`` words.
    """

    num_train: int = 20000
    num_valid: int = 2000
    num_test: int = 2000
    vocab_size: int = 1000
    length: int = 10
    latent_dim: int = 2
    num_components: int = 4
    emb_dim: int = 100
    hidden_dim: int = 100
    temperature: float = 1.0
    seed: int = 0
    init_scale: float = 1.0
    min_length: int | None = None
    logit_scale: float = 6.0

    def __post_init__(self):
        bad = [  # every size and scale is positive, the split sizes may be 0
            name
            for name, value in dataclasses.asdict(self).items()
            if name not in ("seed", "min_length")
            and not (value >= 0 if name[4:] in SPLITS else value > 0)
        ]
        if self.min_length is not None and not 1 <= self.min_length <= self.length:
            bad.append("min_length")
        if bad:
            raise ValueError(
                f"SyntheticSpec.{bad[0]}={getattr(self, bad[0])!r} is out of range"
            )


@dataclasses.dataclass(frozen=True)
class SyntheticSplit:
    """One generated split with the latents that produced it.

    Attributes:
        sentences: Words of each sentence.
        z: <float32>[N, latent_dim] latent of each sentence.
        component: <int32>[N] mixture component of each sentence.
    """

    sentences: list[list[str]]
    z: np.ndarray
    component: np.ndarray


def _make_generator(spec: SyntheticSpec, rng: np.random.Generator) -> dict:
    """Mixture means and weights of the generating LSTM LM (gate order i, f, g, o).

    ``embed`` row V is the begin-of-sentence input; the output layer has V + 1
    columns when there is an end token.
    """
    v, e, h, d = spec.vocab_size, spec.emb_dim, spec.hidden_dim, spec.latent_dim
    n_out = v + (spec.min_length is not None)

    def u(*shape):
        return rng.uniform(-spec.init_scale, spec.init_scale, shape).astype(np.float32)

    if spec.latent_dim == 2 and spec.num_components == 4:
        means = np.array([[2, 2], [2, -2], [-2, 2], [-2, -2]], np.float64)
    else:
        means = rng.normal(0.0, 2.0, size=(spec.num_components, spec.latent_dim))
    return {
        "means": means,  # [K, D]
        "embed": u(v + 1, e),
        "w_x": u(e + d, 4 * h),
        "w_h": u(h, 4 * h),
        "b": u(4 * h),
        "h0": u(d, h),
        "c0": u(d, h),
        "w_out": (
            rng.standard_normal((h, n_out)) * (spec.logit_scale / np.sqrt(h))
        ).astype(np.float32),
        "b_out": u(n_out),
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _sample_tokens(spec, gen, z, rng) -> np.ndarray:
    """<int32>[N, length] word ids for the latents z [N, D].

    ``vocab_size`` marks the end token and every position after it.
    """
    n, v = z.shape[0], spec.vocab_size
    z = z.astype(np.float32)
    h, c = np.tanh(z @ gen["h0"]), z @ gen["c0"]
    prev = np.full((n,), v, np.int64)  # begin-of-sentence input row
    ended = np.zeros((n,), bool)
    out = np.full((n, spec.length), v, np.int32)
    w_word, w_z = np.split(gen["w_x"], [spec.emb_dim])
    z_part = z @ w_z + gen["b"]  # constant over time
    for t in range(spec.length):
        gates = gen["embed"][prev] @ w_word + z_part + h @ gen["w_h"]
        i, f, g, o = np.split(gates, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        logits = (h @ gen["w_out"] + gen["b_out"]) / spec.temperature
        if spec.min_length is not None and t < spec.min_length:
            logits[:, v] = -np.inf
        # Inverse-CDF sampling: one categorical draw per row.
        cdf = np.cumsum(np.exp(logits - logits.max(axis=-1, keepdims=True)), axis=-1)
        u = rng.random(n, dtype=np.float32) * cdf[:, -1]
        tok = np.minimum((cdf < u[:, None]).sum(axis=-1), cdf.shape[-1] - 1)
        ended |= tok == v
        out[:, t] = np.where(ended, v, tok)
        prev = np.minimum(tok, v)
    return out


def sample(spec: SyntheticSpec) -> tuple[np.ndarray, dict[str, SyntheticSplit]]:
    """Generates the three splits with their latents.

    The weights and each split have their own random stream derived from
    ``spec.seed``, so changing the size of one split leaves the others unchanged.

    Args:
        spec: What to generate.

    Returns:
        The mixture means <float64>[K, D] and the splits
        ``{"train": ..., "valid": ..., "test": ...}``.
    """
    weights_seq, *split_seqs = np.random.SeedSequence(spec.seed).spawn(1 + len(SPLITS))
    gen = _make_generator(spec, np.random.default_rng(weights_seq))
    words = np.array([f"w{i}" for i in range(spec.vocab_size)] + [""], dtype=object)
    splits = {}
    for split, seq in zip(SPLITS, split_seqs, strict=True):
        rng = np.random.default_rng(seq)
        num = getattr(spec, f"num_{split}")
        component = rng.integers(0, spec.num_components, size=num).astype(np.int32)
        z = gen["means"][component] + rng.standard_normal((num, spec.latent_dim))
        # At least one chunk, so that an empty split gives a [0, length] array.
        chunks = (z[i : i + _CHUNK] for i in range(0, max(num, 1), _CHUNK))
        ids = np.concatenate([_sample_tokens(spec, gen, c, rng) for c in chunks])
        lengths = (ids < spec.vocab_size).sum(axis=1)  # after the end all ids are V
        sentences = [list(row[:n]) for row, n in zip(words[ids], lengths, strict=True)]
        splits[split] = SyntheticSplit(sentences, z.astype(np.float32), component)
    return gen["means"], splits


def write_corpus(
    spec: SyntheticSpec, directory: str | pathlib.Path
) -> dict[str, pathlib.Path]:
    """Writes the corpus to ``directory`` unless the same spec is already there.

    Files: ``synthetic.{train,valid,test}.txt`` (one sentence a line, words
    separated by single spaces), ``synthetic.latents.npz`` (arrays
    ``{split}_z``, ``{split}_component`` and ``means``) and ``spec.json``. Each
    file is written atomically and ``spec.json`` last, so an interrupted write is
    regenerated on the next call, never reused.

    Args:
        spec: What to generate.
        directory: Created if missing.

    Returns:
        Paths keyed by ``train``, ``valid``, ``test``, ``latents`` and ``spec``.
    """
    directory = pathlib.Path(directory)
    paths = {split: directory / f"synthetic.{split}.txt" for split in SPLITS}
    paths |= {"latents": directory / LATENTS_FILE, "spec": directory / SPEC_FILE}
    record = {"format_version": _FORMAT_VERSION, "spec": dataclasses.asdict(spec)}
    with contextlib.suppress(OSError, ValueError):
        if all(p.is_file() for p in paths.values()) and record == json.loads(
            paths["spec"].read_text(encoding="utf-8")
        ):
            logging.info("reusing the synthetic corpus in %s", directory)
            return paths
    logging.info("generating the synthetic corpus in %s: %s", directory, spec)
    paths["spec"].unlink(missing_ok=True)
    means, splits = sample(spec)
    arrays = {"means": means.astype(np.float32)}
    for split, data in splits.items():
        text = "".join(" ".join(words) + "\n" for words in data.sentences)
        fileio.write_text_atomic(paths[split], text)
        arrays |= {f"{split}_z": data.z, f"{split}_component": data.component}
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    fileio.write_text_atomic(paths["latents"], npz.getvalue())
    fileio.write_json_atomic(paths["spec"], record)
    return paths
