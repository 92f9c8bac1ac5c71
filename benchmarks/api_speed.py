"""Speed of the Python API next to the evaluation passes it wraps.

    python benchmarks/api_speed.py --out benchmarks/api_speed.json

A PTB-size BN-VAE (V 10k, E 256, H 256, n 32; random weights, saved and loaded
as an export) reads 1,000 random sentences of 10-32 words. For each of
``encode``, greedy ``decode`` and ``score`` (500 importance samples) the
sentences per second of the API call are printed beside those of the library
passes it is built on, run on the same rows in the same process:

- encode: the jitted eval-mode encoder over the evaluation batches;
- decode: greedy ``decoding.sample_decode`` over batches of the codes;
- score:  the evaluate command's passes (``passes.posterior_pass`` and
  ``passes.iw_log_likelihood``).

Each figure is the median of ``--repeats`` timed calls after one warm-up call
(which compiles); the two sides of a row alternate, so drifts of the machine
fall on both.
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np

import bnvae_jax
from bnvae_jax import config as config_lib
from bnvae_jax import parallel
from bnvae_jax.api import TextModel
from bnvae_jax.data.vocab import SPECIAL_TOKENS, Vocab
from bnvae_jax.evaluation import decoding, passes, sizing
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models.vae import TextVAE

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def ptb_model(folder: pathlib.Path, vocab_size: int) -> TextModel:
    """A PTB-size BN-VAE with random weights, exported and loaded back."""
    config = config_lib.corpus_config(emb_dim=256, hidden=256)
    config.method = "bn_vae"
    vocab = Vocab(SPECIAL_TOKENS + tuple(f"w{i}" for i in range(vocab_size - 4)))
    run = config_lib.resolve(config, len(vocab))
    module = TextVAE(run.model)
    example = {
        "tokens": np.ones((2, 8), np.int32),
        "lengths": np.full(2, 8, np.int32),
        "mask": np.ones(2, np.float32),
    }
    variables = module.init(
        {"params": jax.random.key(0), "sample": jax.random.key(1)},
        **example,
        train=False,
    )
    model = TextModel(
        module=module,
        variables=dict(variables),
        vocab=vocab,
        config=ml_collections.FrozenConfigDict(config),
        info={"task": "text_vae", "method": "bn_vae", "step": 0},
        run=run,
    )
    return bnvae_jax.load(model.save(folder))


def sentences(num: int, vocab_size: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [
        " ".join(f"w{i}" for i in rng.integers(0, vocab_size - 4, rng.integers(10, 33)))
        for _ in range(num)
    ]


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compare(api_fn, pass_fn, repeats: int, count: int, warm=None) -> dict:
    """Sentences per second of both, timed alternately after a warm-up each.

    ``warm`` (default: one call of each) compiles what both need.
    """
    if warm is None:
        api_fn(), pass_fn()
    else:
        warm()
    api_s, pass_s = [], []
    for _ in range(repeats):
        api_s.append(median_seconds(api_fn, 1))
        pass_s.append(median_seconds(pass_fn, 1))
    api_rate = count / float(np.median(api_s))
    pass_rate = count / float(np.median(pass_s))
    return {
        "api_sentences_per_second": api_rate,
        "pass_sentences_per_second": pass_rate,
        "api_over_pass": api_rate / pass_rate,
        "sentences": count,
    }


@functools.partial(jax.jit, static_argnames=("module",))
def _encode(variables, tokens, lengths, mask, *, module):
    post = module.apply(variables, tokens, lengths, mask, train=False, method="encode")
    return post.mu


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/api_speed.json")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--score-sentences", type=int, default=1000)
    parser.add_argument("--iw-samples", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--score-repeats", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=10_000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = ptb_model(pathlib.Path(tmp) / "export", args.vocab)
    texts = sentences(args.sentences, args.vocab)
    rows = [np.asarray(r) for r in model._rows(texts)[0]]
    data = model.run.data
    plan = eval_run.plan_batches(rows, data.eval_batch_size, data.bucket_width)
    batches = [plan.make_batch(i) for i in range(len(plan))]
    module, variables = model.module, model.variables
    out = {"cpu": cpu_name(), "backend": jax.default_backend(), "rows": {}}

    def encode_pass():
        return [
            _encode(variables, b.tokens, b.lengths, b.mask, module=module)
            for b in batches
        ]

    out["rows"]["encode"] = compare(
        lambda: model.encode(texts), encode_pass, args.repeats, len(texts)
    )
    print("encode", out["rows"]["encode"], flush=True)

    z = model.encode(texts)
    size = data.eval_batch_size
    chunks = [z[i : i + size] for i in range(0, len(z) - size + 1, size)]
    max_len = model.config.eval.max_decode_len
    used = sum(len(c) for c in chunks)

    def decode_pass():
        return [
            decoding.sample_decode(module, variables, c, None, max_len=max_len)
            for c in chunks
        ]

    out["rows"]["decode_greedy"] = compare(
        lambda: model.decode(z[:used]), decode_pass, args.repeats, used
    )
    print("decode_greedy", out["rows"]["decode_greedy"], flush=True)

    scored = texts[: args.score_sentences]
    score_rows = rows[: args.score_sentences]
    ecfg = model.run.eval
    sizes = sizing.iw_sizes(ecfg.iw_batch, ecfg.iw_max_logits, parallel.single_device())
    key = jax.random.key(0)

    def score_pass():
        elbo = eval_run.plan_batches(score_rows, size, data.bucket_width)
        passes.posterior_pass(module, variables, eval_run.iterate_arrays(elbo), key)
        iw = eval_run.plan_batches(score_rows, sizes.batch, data.bucket_width)
        return passes.iw_log_likelihood(
            module,
            variables,
            eval_run.iterate_arrays(iw),
            key,
            num_samples=args.iw_samples,
            chunk=ecfg.iw_chunk,
            progress=False,
            max_logits=sizes.max_logits,
        )[1]

    # Warm-up on one sentence per padded length: every shape compiles once.
    width = data.bucket_width
    firsts = {}
    for text, row in zip(scored, score_rows, strict=True):
        firsts.setdefault(-(-len(row) // width), (text, row))

    def warm():
        few = [t for t, _ in firsts.values()]
        model.score(few, iw_samples=args.iw_samples)
        nonlocal score_rows
        kept, score_rows = score_rows, [r for _, r in firsts.values()]
        score_pass()
        score_rows = kept

    out["rows"]["score"] = compare(
        lambda: model.score(scored, iw_samples=args.iw_samples).iw_nll,
        score_pass,
        args.score_repeats,
        len(scored),
        warm=warm,
    )
    out["iw_samples"] = args.iw_samples
    print(f"{out['cpu']} ({out['backend']})")
    print(f"{'call':<14} {'API sent/s':>11} {'pass sent/s':>12} {'API/pass':>9}")
    for name, row in out["rows"].items():
        print(
            f"{name:<14} {row['api_sentences_per_second']:>11.1f} "
            f"{row['pass_sentences_per_second']:>12.1f} {row['api_over_pass']:>9.3f}"
        )
    pathlib.Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
