"""Training cost of every method relative to the VAE; prints a table, writes JSON.

    python benchmarks/methods.py --out docs/benchmarks_methods_cpu.json

PTB size (V 10k, E 256, H 256, n 32; 32 sentences of 22 words). Methods are timed
in alternating rounds (each round one median per method) so that drifts of the
machine stay out of the ratios. One "step" is what a method does per training
batch; for agg_vae that is one encoder-only step (its cost per batch is
``inner steps + 1`` such steps while aggressive training is on, and one joint
step afterwards: the run-level ratio comes from the sweep's train_seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

from bnvae_jax import config as config_lib
from bnvae_jax import methods
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import objectives, schedules, steps

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from run import SIZES, make_batch, timeit  # noqa: E402

BATCH = 32


def resolved(method: str, vocab: int):
    size = SIZES["ptb"]
    c = config_lib.default_config()
    c.method = method
    c.data.batch_size = BATCH
    c.model.emb_dim = size["emb"]
    c.model.enc_hidden = c.model.dec_hidden = size["hidden"]
    c.model.latent_dim = size["latent"]
    return config_lib.resolve(c, vocab)


def runner(method: str, update: str = "all"):
    """A closure running one training step of ``method`` (state kept inside)."""
    size = SIZES["ptb"]
    run = resolved(method, size["vocab"])
    batch = make_batch(size, BATCH)
    model = TextVAE(run.model)
    state = steps.create_train_state(
        model, jax.random.key(0), batch, steps.make_optimizer(0.5, 5.0)
    )
    spec = schedules.ScheduleSpec(warmup_steps=1000.0, total_steps=4000)
    fns = steps.StepFns(
        kl_schedule=schedules.SCHEDULES[run.method.schedule](spec),
        kl_transform=objectives.KL_TRANSFORMS[run.method.kl_transform](4.0),
        svi=run.model if run.method.procedure == "svi" else None,
    )
    step = steps.jit_train_step(fns, update=update)
    rng = jax.random.key(1)
    holder = {"state": state}

    def go():
        holder["state"], metrics = step(holder["state"], batch, rng)
        return metrics

    return go


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/methods.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per_round", type=int, default=3)
    parser.add_argument("--methods", default=",".join(sorted(methods.METHODS)))
    args = parser.parse_args(argv)
    names = args.methods.split(",")
    runners = {}
    for name in names:
        update = "encoder" if methods.METHODS[name].procedure == "aggressive" else "all"
        runners[name] = runner(name, update)
    compiles = {name: timeit(go, 1)[0] for name, go in runners.items()}
    times = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, go in runners.items():
            times[name].append(timeit(go, args.per_round, warmup=0)[1])
    base = float(np.median(times["vae"])) if "vae" in times else None
    rows = {}
    for name in names:
        ms = float(np.median(times[name])) * 1e3
        rows[name] = {
            "step_ms": ms,
            "compile_s": compiles[name],
            "ratio_to_vae": ms / (base * 1e3) if base else None,
        }
    print(f"{'method':<20} {'step ms':>9} {'x VAE':>7} {'compile s':>10}")
    for name, r in rows.items():
        ratio = "-" if r["ratio_to_vae"] is None else f"{r['ratio_to_vae']:.2f}"
        print(f"{name:<20} {r['step_ms']:9.1f} {ratio:>7} {r['compile_s']:10.1f}")
    result = {
        "device": str(jax.devices()[0]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "workload": "PTB size, 32 x 22 words",
        "methods": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
