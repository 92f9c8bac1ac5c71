"""Speed and memory benchmarks of training and IW-NLL; prints a table, writes JSON.

    python benchmarks/run.py --out benchmarks/results.json
    python benchmarks/run.py --suite=precision   # float32 vs bfloat16 mixed steps
    python benchmarks/run.py --suite=gpu         # the day an accelerator is lent
    python benchmarks/run.py --compare=pytorch   # next to the PyTorch yardstick

Every time is a median over repeated calls, reported with its min and max; two
workloads compared with each other (BN-VAE vs VAE, float32 vs mixed) are timed
in alternating rounds, so drifts of the machine fall on both alike.

Workloads (SPEC §8 sizes; batches of identical length, as the reference's):
  ptb:   V 10k, E 256, H 256, n 32, 32 sentences of 22 words
  yahoo: V 20k, E 512, H 1024, n 32, 32 sentences of 38 words
  iw:    500-sample IW-NLL of PTB-size sentences
Every rate counts real predicted tokens only (words + </s>), never padding. FLOPs
count the matrix products (LSTM gates, vocabulary projection); the float32 GEMM
rate measured in the same run is the machine's ceiling.

``--compare=pytorch`` (needs the ``bench`` extra: CPU torch) also times
``benchmarks/pytorch_reference.py``, the same model, step and IW-NLL written in
PyTorch, on the same inputs: its PTB-size step in the alternating rounds of the
JAX BN-VAE and VAE steps, its Yahoo-size step and IW-NLL with the same repeated
calls as the JAX ones, and torch.mm's float32 GEMM rate on the same n. It prints
both sides, the ratios (JAX speed / PyTorch speed) and the CPU model and flags,
and writes them under the JSON's ``pytorch`` key. ``--tiny`` runs the cpu suite
at toy sizes (a smoke test; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from bnvae_jax.config import ModelConfig
from bnvae_jax.evaluation import passes
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import schedules, steps
from bnvae_jax.training.objectives import kl_identity

SIZES = {
    "ptb": dict(vocab=10_000, emb=256, hidden=256, latent=32, words=22),
    "yahoo": dict(vocab=20_000, emb=512, hidden=1024, latent=32, words=38),
}
# --tiny (smoke tests): toy sizes and GEMM; the numbers mean nothing.
TINY_SIZES = {
    "ptb": dict(vocab=50, emb=8, hidden=16, latent=4, words=5),
    "yahoo": dict(vocab=80, emb=8, hidden=24, latent=4, words=7),
}
GEMM_N = 4096
TINY_GEMM_N = 128
BATCH = 32
# The flags that decide which GEMM kernels either library can use.
CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_bf16",
)


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
        svi_steps=0,
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


def timed_calls(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """(compile/first-call seconds, seconds of each of ``repeats`` calls)."""
    start = time.perf_counter()
    for _ in range(warmup):
        jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, times


def timeit(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(compile/first-call seconds, median seconds of ``repeats`` calls)."""
    first, times = timed_calls(fn, repeats, warmup)
    return first, float(np.median(times))


def spread(values, scale: float = 1.0) -> dict:
    """Median, min and max of ``values`` times ``scale``."""
    v = np.asarray(values, np.float64) * scale
    return {"median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def alternating(runners: dict, rounds: int, per_round: int) -> tuple[dict, dict]:
    """Compile seconds and per-round median seconds of each runner.

    The runners take turns round by round, so a drift of the machine
    (frequency, other load) falls on all of them alike.
    """
    compiles = {name: timeit(run, 1)[0] for name, run in runners.items()}
    rounds_s = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            rounds_s[name].append(timeit(run, per_round, warmup=0)[1])
    return compiles, rounds_s


def gemm_gflops(n: int = GEMM_N, repeats: int = 5) -> dict:
    """float32 [n, n] x [n, n] GEMM rate: median with min and max (GFLOP/s)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    _, times = timed_calls(lambda: matmul(a, b), repeats)
    rates = 2.0 * n**3 / np.asarray(times) / 1e9
    return spread(rates)


def train_runner(name: str, head: str, mixed: bool = False, sizes=None):
    """A closure running one training step of a fresh model (state kept inside)."""
    size = (sizes or SIZES)[name]
    batch = make_batch(size, BATCH)
    cfg = dataclasses.replace(model_config(size, head), mixed_precision=mixed)
    model = TextVAE(cfg)
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


def train_summary(name: str, compile_s: float, times, sizes=None) -> dict:
    """Step time (median, min, max over ``times``) and the rates at the median."""
    size = (sizes or SIZES)[name]
    tokens = BATCH * (size["words"] + 1)
    ms = spread(times, 1e3)
    secs = ms["median"] / 1e3
    return {
        "step_ms": ms["median"],
        "step_ms_min": ms["min"],
        "step_ms_max": ms["max"],
        "compile_s": compile_s,
        "train_tokens_per_second": tokens / secs,
        "train_sentences_per_second": BATCH / secs,
        "gflops": train_flops(size, BATCH) / secs / 1e9,
    }


def bench_train(name: str, head: str, repeats: int, sizes=None) -> dict:
    compile_s, times = timed_calls(train_runner(name, head, sizes=sizes), repeats)
    return train_summary(name, compile_s, times, sizes)


def bench_bn_over_vae(
    rounds: int, per_round: int = 5, sizes=None, extra=None
) -> tuple[dict, dict, float, dict]:
    """PTB-size BN-VAE and VAE steps timed in alternating rounds.

    Each round contributes its median; the ratio is of the medians of rounds.
    ``extra`` runners (name -> closure of one PTB-size step) take their turns in
    the same rounds; their summaries are the last value returned.
    """
    runners = {
        h: train_runner("ptb", h, sizes=sizes) for h in ("bn_gaussian", "gaussian")
    }
    runners.update(extra or {})
    compiles, rounds_s = alternating(runners, rounds, per_round)
    out = {k: train_summary("ptb", compiles[k], rounds_s[k], sizes) for k in runners}
    bn, vae = out.pop("bn_gaussian"), out.pop("gaussian")
    return bn, vae, bn["step_ms"] / vae["step_ms"], out


def bench_precision(name: str, rounds: int, per_round: int) -> dict:
    """BN-VAE step in float32 and in bfloat16 mixed precision, alternating."""
    runners = {
        "float32": train_runner(name, "bn_gaussian"),
        "mixed_bf16": train_runner(name, "bn_gaussian", mixed=True),
    }
    compiles, rounds_s = alternating(runners, rounds, per_round)
    out = {k: train_summary(name, compiles[k], rounds_s[k]) for k in runners}
    out["mixed_over_float32"] = out["mixed_bf16"]["step_ms"] / out["float32"]["step_ms"]
    return out


def bench_iw(
    samples: int, chunk: int, sentences: int, repeats: int, size=None, par=None
) -> dict:
    size = size or SIZES["ptb"]
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
            par=par,
        )[1]

    compile_s, times = timed_calls(run, repeats)
    return iw_summary(size, samples, chunk, sentences, compile_s, times)


def iw_summary(size, samples, chunk, sentences, compile_s, times) -> dict:
    """Seconds per sentence (median, min, max) of calls over ``sentences`` each."""
    per = spread(times, 1.0 / sentences)
    per_sentence = per["median"]
    return {
        "seconds_per_sentence": per_sentence,
        "seconds_per_sentence_min": per["min"],
        "seconds_per_sentence_max": per["max"],
        "sentences_per_second": 1.0 / per_sentence,
        "compile_s": compile_s,
        "sentences_per_batch": sentences,
        "chunk": chunk,
        "gflops": iw_flops(size, samples) / per_sentence / 1e9,
    }


def cpu_info() -> dict:
    """CPU model name and the GEMM-relevant flags, from ``lscpu`` (or /proc/cpuinfo)."""
    fields = {}
    try:
        text = subprocess.run(
            ["lscpu"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        source = "lscpu"
    except (OSError, subprocess.SubprocessError):
        text, source = "", None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model, flags = fields.get("Model name"), fields.get("Flags", "").split()
    if not flags and os.path.exists("/proc/cpuinfo"):
        source = "/proc/cpuinfo"
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = value.split()
    present = set(flags)
    return {
        "model": model,
        "cores": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "flags": {flag: flag in present for flag in CPU_FLAGS},
        "source": source,
    }


def torch_gemm_gflops(n: int, repeats: int) -> dict:
    """PyTorch's float32 GEMM rate (``torch.mm``), as ``gemm_gflops`` measures XLA's."""
    import pytorch_reference as ref  # noqa: PLC0415

    _, times = timed_calls(ref.gemm_runner(n), repeats)
    return spread(2.0 * n**3 / np.asarray(times) / 1e9)


def torch_iw(samples, chunk, sentences, repeats, size) -> dict:
    """The reference's IW-NLL of the same sentences as ``bench_iw``, one at a time."""
    import pytorch_reference as ref  # noqa: PLC0415

    run = ref.iw_runner(size, make_batch(size, sentences), samples, chunk)
    compile_s, times = timed_calls(run, repeats)
    return iw_summary(size, samples, chunk, sentences, compile_s, times)


def import_reference():
    """Imports torch and ``pytorch_reference`` (only for --compare=pytorch)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import pytorch_reference as ref  # noqa: PLC0415
    except ImportError as e:
        raise SystemExit(
            f"--compare=pytorch needs torch ({e}): pip install -e '.[bench]'"
        ) from e
    return ref


def cpu_suite(args) -> dict:
    """GEMM, PTB-size BN-VAE and VAE steps, Yahoo-size step, IW-NLL.

    With ``args.compare == 'pytorch'`` the same workloads of the PyTorch
    reference too, under ``out['pytorch']``.
    """
    sizes = TINY_SIZES if args.tiny else SIZES
    gemm_n = TINY_GEMM_N if args.tiny else GEMM_N
    ref = import_reference() if args.compare == "pytorch" else None
    extra = {}
    if ref is not None:
        ref.set_threads()
        extra["pytorch"] = ref.train_runner(
            sizes["ptb"], make_batch(sizes["ptb"], BATCH)
        )
    gemm = gemm_gflops(gemm_n, repeats=args.repeats)
    out = {"gemm_gflops": gemm["median"], "gemm": gemm, "gemm_n": gemm_n}
    if args.tiny:
        out["sizes"] = sizes
    out["ptb"], out["ptb_vae"], out["bn_vae_over_vae_step_time"], others = (
        bench_bn_over_vae(args.rounds, args.repeats, sizes, extra)
    )
    if not args.skip_yahoo:
        out["yahoo"] = bench_train("yahoo", "bn_gaussian", args.repeats, sizes)
    iw = bench_iw(
        500, args.iw_chunk, args.iw_sentences, args.iw_repeats, size=sizes["ptb"]
    )
    out["iw"] = iw
    out["iw_nll_seconds_per_sentence"] = iw["seconds_per_sentence"]
    if ref is not None:
        out["pytorch"] = pytorch_side(args, ref, sizes, gemm_n, others["pytorch"], out)
    return out


def pytorch_side(args, ref, sizes, gemm_n, ptb, jax_out) -> dict:
    """The reference's Yahoo-size step, IW-NLL and GEMM rate; JAX/PyTorch ratios."""
    gemm = torch_gemm_gflops(gemm_n, args.repeats)
    side = {**ref.versions(), "cpu": cpu_info(), "gemm_gflops": gemm["median"]}
    side.update(gemm=gemm, gemm_n=gemm_n, ptb=ptb)
    if not args.skip_yahoo:
        run = ref.train_runner(sizes["yahoo"], make_batch(sizes["yahoo"], BATCH))
        compile_s, times = timed_calls(run, args.repeats)
        side["yahoo"] = train_summary("yahoo", compile_s, times, sizes)
    side["iw"] = torch_iw(
        500, args.iw_chunk, args.iw_sentences, args.iw_repeats, sizes["ptb"]
    )
    ratios = {
        name: side[name]["step_ms"] / jax_out[name]["step_ms"]
        for name in ("ptb", "yahoo")
        if name in side
    }
    ratios["iw"] = (
        side["iw"]["seconds_per_sentence"] / jax_out["iw"]["seconds_per_sentence"]
    )
    ratios["gemm"] = jax_out["gemm_gflops"] / side["gemm_gflops"]
    side["jax_speed_over_pytorch"] = ratios
    return side


def print_table(out: dict) -> None:
    gemm = out["gemm_gflops"]
    rows = [("workload", "ms (median)", "min", "max", "tokens/s", "% GEMM")]
    for name in ("ptb", "ptb_vae", "yahoo"):
        if name in out:
            r = out[name]
            rows.append(
                (
                    f"train {name}",
                    f"{r['step_ms']:.1f}",
                    f"{r['step_ms_min']:.1f}",
                    f"{r['step_ms_max']:.1f}",
                    f"{r['train_tokens_per_second']:.0f}",
                    f"{100 * r['gflops'] / gemm:.0f}",
                )
            )
    iw = out["iw"]
    rows.append(
        (
            "iw-nll 500 (per sent.)",
            f"{1e3 * iw['seconds_per_sentence']:.0f}",
            f"{1e3 * iw['seconds_per_sentence_min']:.0f}",
            f"{1e3 * iw['seconds_per_sentence_max']:.0f}",
            "-",
            f"{100 * iw['gflops'] / gemm:.0f}",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    print(
        f"GEMM {gemm:.1f} GFLOP/s (min {out['gemm']['min']:.1f}, max "
        f"{out['gemm']['max']:.1f}); BN-VAE/VAE step "
        f"{out['bn_vae_over_vae_step_time']:.3f} (alternating rounds);"
        f" peak RSS {out['peak_rss_mb']:.0f} MB"
    )
    if "pytorch" in out:
        print()
        print_comparison(out)


def _ms_range(median: float, low: float, high: float, digits: int = 1) -> str:
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def _iw_ms(r: dict) -> str:
    keys = (
        "seconds_per_sentence",
        "seconds_per_sentence_min",
        "seconds_per_sentence_max",
    )
    return _ms_range(*(1e3 * r[k] for k in keys), digits=0)


def print_comparison(out: dict) -> None:
    """JAX next to the PyTorch reference: times, ratios, GEMM rates, the CPU."""
    side = out["pytorch"]
    ratios = side["jax_speed_over_pytorch"]
    gemm_jax, gemm_torch = out["gemm_gflops"], side["gemm_gflops"]
    rows = [
        (
            "workload",
            "JAX ms (min-max)",
            "PyTorch ms (min-max)",
            "JAX/PyTorch speed",
            "JAX % GEMM",
            "PyTorch % own GEMM",
        )
    ]
    for name in ("ptb", "yahoo"):
        if name in side:
            j, t = out[name], side[name]
            rows.append(
                (
                    f"train {name} (BN-VAE)",
                    _ms_range(j["step_ms"], j["step_ms_min"], j["step_ms_max"]),
                    _ms_range(t["step_ms"], t["step_ms_min"], t["step_ms_max"]),
                    f"{ratios[name]:.2f}x",
                    f"{100 * j['gflops'] / gemm_jax:.0f}",
                    f"{100 * t['gflops'] / gemm_torch:.0f}",
                )
            )
    j, t = out["iw"], side["iw"]
    rows.append(
        (
            "iw-nll 500 (per sent.)",
            _iw_ms(j),
            _iw_ms(t),
            f"{ratios['iw']:.2f}x",
            f"{100 * j['gflops'] / gemm_jax:.0f}",
            f"{100 * t['gflops'] / gemm_torch:.0f}",
        )
    )
    rows.append(
        (
            f"GEMM f32 {out['gemm_n']}^2 GFLOP/s",
            _ms_range(gemm_jax, out["gemm"]["min"], out["gemm"]["max"]),
            _ms_range(gemm_torch, side["gemm"]["min"], side["gemm"]["max"]),
            f"{ratios['gemm']:.2f}x",
            "-",
            "-",
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    cpu = side["cpu"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu["flags"].items())
    print(
        f"CPU: {cpu['model']} ({cpu['cores']} cores; {flags}); torch "
        f"{side['torch_version']}, {side['threads']} threads, ATen CPU kernels "
        f"{side['cpu_capability']}; jax {jax.__version__}. JAX/PyTorch speed = "
        "PyTorch time / JAX time (GEMM: JAX rate / PyTorch rate); % GEMM is of "
        "each library's own GEMM rate."
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=("cpu", "precision", "gpu"), default="cpu")
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--repeats", type=int, default=8, help="calls per round")
    parser.add_argument("--rounds", type=int, default=12, help="alternating rounds")
    parser.add_argument("--iw-chunk", type=int, default=100)
    parser.add_argument("--iw-sentences", type=int, default=2)
    parser.add_argument("--iw-repeats", type=int, default=8)
    parser.add_argument("--skip-yahoo", action="store_true")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="cpu or gpu suite at tiny sizes (a smoke test; numbers mean nothing)",
    )
    parser.add_argument(
        "--compare",
        choices=("pytorch",),
        default=None,
        help="cpu suite: also time the PyTorch reference (needs the bench extra)",
    )
    args = parser.parse_args(argv)
    if args.compare and args.suite != "cpu":
        parser.error("--compare works with --suite=cpu only")

    out = {"backend": jax.default_backend(), "suite": args.suite}
    if args.suite == "cpu":
        out.update(cpu_suite(args))
    elif args.suite == "precision":
        for name in ("ptb",) + (() if args.skip_yahoo else ("yahoo",)):
            out[name] = bench_precision(name, args.rounds, args.repeats)
            r = out[name]
            print(
                f"{name}: float32 {r['float32']['step_ms']:.1f} ms, mixed bf16 "
                f"{r['mixed_bf16']['step_ms']:.1f} ms "
                f"(x{r['mixed_over_float32']:.3f})"
            )
    else:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import gpu_suite  # noqa: PLC0415

        out.update(gpu_suite.run(args))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.suite == "cpu":
        print_table(out)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
