"""Data-parallel scaling: train-step time and tokens/s on 1, 2, 4, 8 devices.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python benchmarks/scaling.py --size=ptb --out=benchmarks/scaling.json
    python benchmarks/scaling.py --size=yahoo   # on a GPU machine

Every row runs the train loop's step (``steps.jit_train_step``, or
``steps.train_step`` through ``parallel.Parallel.pmap_step``) on the same global
batch of 32 sentences split over the devices, in both modes (``jit``: mesh +
NamedSharding; ``pmap``), and reports the first step's loss next to the 1-device
loss: they must agree whatever the device count. On fake CPU devices every
"device" shares the host's cores, so the table proves the sharded program, not a
speed-up.

On one accelerator it also projects the paper's Yahoo run: 100k training
sentences in batches of 32 (3,125 steps an epoch) for ``--epochs`` epochs.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time

import jax
import numpy as np

from bnvae_jax import parallel
from bnvae_jax.config import ParallelConfig
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import schedules, steps
from bnvae_jax.training.objectives import kl_identity

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from run import BATCH, SIZES, make_batch, model_config  # noqa: E402

YAHOO_TRAIN_SENTENCES = 100_000


def time_steps(num_devices: int, mode: str, size: dict, repeats: int) -> dict:
    """Compiles and times the BN-VAE train step on ``num_devices`` devices."""
    par = parallel.build(ParallelConfig(mode=mode, num_devices=num_devices))
    cfg = model_config(size, "bn_gaussian")
    model = TextVAE(cfg, axis_name=par.axis_name)
    batch = make_batch(size, BATCH)
    tx = steps.make_optimizer(1.0, 5.0)
    state = steps.create_train_state(model, jax.random.key(0), batch, tx)
    state = par.replicate(state)
    fns = steps.StepFns(
        kl_schedule=schedules.linear(0.1, 1000.0),
        kl_transform=kl_identity,
        axis_name=par.axis_name,
    )
    if mode == "jit":  # as the train loop: shardings come with the arguments
        step = steps.jit_train_step(fns)
    else:
        step = par.pmap_step(functools.partial(steps.train_step, fns=fns), 3)
    rng = par.replicate(jax.random.key(1))
    placed = par.shard_batch(batch)
    start = time.perf_counter()
    state, metrics = step(state, placed, rng)
    loss = float(metrics["loss_sum"]) / float(metrics["count"])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = step(state, placed, rng)
    jax.block_until_ready(metrics)
    ms = 1e3 * (time.perf_counter() - start) / repeats
    tokens = BATCH * (size["words"] + 1)
    return {
        "devices": num_devices,
        "mode": mode,
        "ms_per_step": ms,
        "tokens_per_s": tokens / ms * 1e3,
        "first_loss": loss,
        "compile_s": compile_s,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), default="ptb")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=100, help="for the projection")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    size = SIZES[args.size]
    available = len(jax.local_devices())
    counts = [n for n in (1, 2, 4, 8) if n <= available]
    rows = [
        time_steps(n, mode, size, args.repeats)
        for n in counts
        for mode in ("jit", "pmap")
    ]
    platform = jax.local_devices()[0].platform
    print(f"{args.size} size, global batch {BATCH}, {platform} x {available}")
    print("| devices | mode | ms / step | tokens/s | first loss | compile s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['devices']} | {r['mode']} | {r['ms_per_step']:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['first_loss']:.5f} | "
            f"{r['compile_s']:.1f} |"
        )
    losses = [r["first_loss"] for r in rows]
    spread = float(np.max(losses) - np.min(losses))
    print(f"first-step loss spread over all rows: {spread:.2e}")
    report = {"size": args.size, "platform": platform, "rows": rows}
    if platform != "cpu":
        one = rows[0]["ms_per_step"] / 1e3
        steps_per_epoch = -(-YAHOO_TRAIN_SENTENCES // BATCH)
        hours = one * steps_per_epoch * args.epochs / 3600
        report["projection"] = {
            "steps_per_epoch": steps_per_epoch,
            "epochs": args.epochs,
            "train_hours_one_device": hours,
        }
        print(
            f"projected {args.epochs} epochs of {YAHOO_TRAIN_SENTENCES:,} sentences "
            f"({steps_per_epoch} steps each) on one {platform}: {hours:.1f} h "
            "of training steps (evaluation not included)"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
