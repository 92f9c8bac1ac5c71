"""Speed and memory benchmarks of training and IW-NLL; prints a table, writes JSON.

    python benchmarks/run.py --out benchmarks/results.json

Workloads (SPEC §8 sizes; batches of identical length, as the reference's):
  ptb:   V 10k, E 256, H 256, n 32, 32 sentences of 22 words
  yahoo: V 20k, E 512, H 1024, n 32, 32 sentences of 38 words
  iw:    500-sample IW-NLL of PTB-size sentences
Every rate counts real predicted tokens only (words + </s>), never padding. FLOPs
count the matrix products (LSTM gates, vocabulary projection); the float32 GEMM
rate measured in the same run is the machine's ceiling.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bnvae_jax import schedules, steps
from bnvae_jax.config_lib import ModelConfig
from bnvae_jax.evaluation import passes
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.objectives import kl_identity

SIZES = {
    "ptb": dict(vocab=10_000, emb=256, hidden=256, latent=32, words=22),
    "yahoo": dict(vocab=20_000, emb=512, hidden=1024, latent=32, words=38),
}
BATCH = 32


def model_config(size: dict, head: str) -> ModelConfig:
    return ModelConfig(
        vocab_size=size["vocab"],
        emb_dim=size["emb"],
        enc_hidden=size["hidden"],
        dec_hidden=size["hidden"],
        latent_dim=size["latent"],
        head=head,
        gamma=0.6,
        bn_momentum=0.1,
        bn_eps=1e-5,
        dec_dropout_in=0.5,
        dec_dropout_out=0.5,
        enc_init="torch_default",
        dec_init="uniform",
    )


def make_batch(size: dict, batch: int, seed: int = 0) -> dict:
    """``batch`` rows of exactly ``words`` words: <s> w.. </s>, no padding."""
    rng = np.random.default_rng(seed)
    width = size["words"] + 2
    tokens = rng.integers(4, size["vocab"], (batch, width)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 1, 2
    return {
        "tokens": tokens,
        "lengths": np.full(batch, width, np.int32),
        "mask": np.ones(batch, np.float32),
    }


def train_flops(size: dict, batch: int) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3x forward)."""
    e, h, n, v = size["emb"], size["hidden"], size["latent"], size["vocab"]
    t_enc, t_dec = size["words"] + 2, size["words"] + 1
    enc = 2 * batch * t_enc * (e + h) * 4 * h
    dec = 2 * batch * t_dec * (e + n + h) * 4 * h
    vocab = 2 * batch * t_dec * h * v
    return 3.0 * (enc + dec + vocab)


def iw_flops(size: dict, samples: int) -> float:
    """Matmul FLOPs of the decoder over ``samples`` copies of one sentence."""
    e, h, n, v = size["emb"], size["hidden"], size["latent"], size["vocab"]
    t_dec = size["words"] + 1
    return 2.0 * samples * t_dec * ((e + n + h) * 4 * h + h * v)


def timeit(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(compile/first-call seconds, median seconds of ``repeats`` calls)."""
    start = time.perf_counter()
    for _ in range(warmup):
        jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, float(np.median(times))


def gemm_gflops(n: int = 4096, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    _, secs = timeit(lambda: matmul(a, b), repeats)
    return 2.0 * n**3 / secs / 1e9


def train_runner(name: str, head: str):
    """A closure running one training step of a fresh model (state kept inside)."""
    size = SIZES[name]
    batch = make_batch(size, BATCH)
    model = TextVAE(model_config(size, head))
    state = steps.create_train_state(
        model, jax.random.key(0), batch, steps.make_optimizer(0.5, 5.0)
    )
    fns = steps.StepFns(
        kl_schedule=schedules.linear(0.0, 1000.0), kl_transform=kl_identity
    )
    step = steps.jit_train_step(fns)
    rng = jax.random.key(1)
    holder = {"state": state}

    def run():
        holder["state"], metrics = step(holder["state"], batch, rng)
        return metrics

    return run


def train_summary(name: str, compile_s: float, secs: float) -> dict:
    size = SIZES[name]
    tokens = BATCH * (size["words"] + 1)
    return {
        "step_ms": secs * 1e3,
        "compile_s": compile_s,
        "train_tokens_per_second": tokens / secs,
        "train_sentences_per_second": BATCH / secs,
        "gflops": train_flops(size, BATCH) / secs / 1e9,
    }


def bench_train(name: str, head: str, repeats: int) -> dict:
    compile_s, secs = timeit(train_runner(name, head), repeats)
    return train_summary(name, compile_s, secs)


def bench_bn_over_vae(rounds: int, per_round: int = 5) -> tuple[dict, dict, float]:
    """PTB-size BN-VAE and VAE steps timed in alternating rounds.

    Alternating keeps drifts of the machine (frequency, other load) out of the
    ratio; each round contributes its median, the ratio is of the medians.
    """
    runners = {h: train_runner("ptb", h) for h in ("bn_gaussian", "gaussian")}
    compiles, times = {}, {h: [] for h in runners}
    for head, run in runners.items():
        compiles[head], _ = timeit(run, 1)
    for _ in range(rounds):
        for head, run in runners.items():
            times[head].append(timeit(run, per_round, warmup=0)[1])
    bn = train_summary("ptb", compiles["bn_gaussian"], np.median(times["bn_gaussian"]))
    vae = train_summary("ptb", compiles["gaussian"], np.median(times["gaussian"]))
    return bn, vae, bn["step_ms"] / vae["step_ms"]


def bench_iw(samples: int, chunk: int, sentences: int, repeats: int) -> dict:
    size = SIZES["ptb"]
    model = TextVAE(model_config(size, "bn_gaussian"))
    batch = make_batch(size, sentences)
    k = jax.random.key(0)
    variables = model.init(
        {"params": k, "sample": k, "dropout": k},
        batch["tokens"],
        batch["lengths"],
        batch["mask"],
        train=False,
    )
    batch["index"] = np.arange(sentences, dtype=np.int32)

    def run():
        return passes.iw_log_likelihood(
            model,
            variables,
            [batch],
            jax.random.key(2),
            num_samples=samples,
            chunk=chunk,
            progress=False,
        )[1]

    compile_s, secs = timeit(run, repeats)
    per_sentence = secs / sentences
    return {
        "seconds_per_sentence": per_sentence,
        "compile_s": compile_s,
        "sentences_per_batch": sentences,
        "chunk": chunk,
        "gflops": iw_flops(size, samples) / per_sentence / 1e9,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iw-chunk", type=int, default=100)
    parser.add_argument("--iw-sentences", type=int, default=2)
    parser.add_argument("--skip-yahoo", action="store_true")
    args = parser.parse_args(argv)

    gemm = gemm_gflops()
    out = {"gemm_gflops": gemm, "backend": jax.default_backend()}
    out["ptb"] = bench_train("ptb", "bn_gaussian", args.repeats)
    out["ptb_vae"] = bench_train("ptb", "gaussian", args.repeats)
    out["bn_vae_over_vae_step_time"] = out["ptb"]["step_ms"] / out["ptb_vae"]["step_ms"]
    if not args.skip_yahoo:
        out["yahoo"] = bench_train("yahoo", "bn_gaussian", max(2, args.repeats // 2))
    iw = bench_iw(500, args.iw_chunk, args.iw_sentences, max(2, args.repeats // 2))
    out["iw"] = iw
    out["iw_nll_seconds_per_sentence"] = iw["seconds_per_sentence"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = [("workload", "ms", "tokens/s", "GFLOP/s", "% GEMM", "compile s")]
    for name in ("ptb", "ptb_vae", "yahoo"):
        if name in out:
            r = out[name]
            rows.append(
                (
                    f"train {name}",
                    f"{r['step_ms']:.1f}",
                    f"{r['train_tokens_per_second']:.0f}",
                    f"{r['gflops']:.1f}",
                    f"{100 * r['gflops'] / gemm:.0f}",
                    f"{r['compile_s']:.1f}",
                )
            )
    rows.append(
        (
            "iw-nll 500 (per sent.)",
            f"{1e3 * iw['seconds_per_sentence']:.0f}",
            "-",
            f"{iw['gflops']:.1f}",
            f"{100 * iw['gflops'] / gemm:.0f}",
            f"{iw['compile_s']:.1f}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(
        f"GEMM {gemm:.1f} GFLOP/s; BN-VAE/VAE step "
        f"{out['bn_vae_over_vae_step_time']:.3f};"
        f" peak RSS {out['peak_rss_mb']:.0f} MB"
    )
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
