"""``benchmarks/run.py --suite=gpu``: what to measure the day an accelerator is lent.

PTB-size and Yahoo-size BN-VAE train steps (global batch 32) on one device and
on all local devices, IW-NLL sentences per second at both sizes (batches sized
as the evaluation sizes them for these devices), peak device memory where the
backend reports it, and the projected wall time of the paper's Yahoo run:
100k training sentences in batches of 32 for 100 epochs, a one-sample ELBO
pass over the 10k validation sentences every epoch, and the final 500-sample
IW-NLL of the 10k validation and 10k test sentences. ``--tiny`` runs it at toy
sizes (the tests do, on CPU).
"""

from __future__ import annotations

import jax
from run import (
    BATCH,
    SIZES,
    bench_iw,
    make_batch,
    model_config,
    spread,
    timed_calls,
)

from bnvae_jax import parallel
from bnvae_jax.config import ParallelConfig
from bnvae_jax.evaluation import sizing
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import schedules, steps
from bnvae_jax.training.objectives import kl_identity

TINY_SIZES = {
    "ptb": dict(vocab=50, emb=8, hidden=16, latent=4, words=5),
    "yahoo": dict(vocab=80, emb=8, hidden=24, latent=4, words=7),
}
YAHOO = dict(train=100_000, valid=10_000, test=10_000, epochs=100, samples=500)
# A forward-only ELBO pass costs about a third of a train step (no backward).
FORWARD_SHARE = 1.0 / 3.0


def peak_memory_mb(par: parallel.Parallel) -> float | None:
    """Largest peak of device memory in use over the run's devices (MiB)."""
    peaks = []
    for device in par.local_devices:
        try:
            stats = device.memory_stats() or {}
        except (NotImplementedError, RuntimeError):
            stats = {}
        if "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"] / 2**20)
    return max(peaks) if peaks else None


def step_times(size: dict, num_devices: int, repeats: int) -> dict:
    """BN-VAE train step (jit, batch sharded) on ``num_devices`` devices."""
    par = parallel.build(ParallelConfig(num_devices=num_devices))
    model = TextVAE(model_config(size, "bn_gaussian"))
    batch = make_batch(size, BATCH)
    state = steps.create_train_state(
        model, jax.random.key(0), batch, steps.make_optimizer(0.5, 5.0)
    )
    holder = {"state": par.replicate(state)}
    fns = steps.StepFns(
        kl_schedule=schedules.linear(0.0, 1000.0), kl_transform=kl_identity
    )
    step = steps.jit_train_step(fns)
    placed, rng = par.shard_batch(batch), par.replicate(jax.random.key(1))

    def run():
        holder["state"], metrics = step(holder["state"], placed, rng)
        return metrics

    compile_s, times = timed_calls(run, repeats)
    ms = spread(times, 1e3)
    return {
        "devices": num_devices,
        "step_ms": ms["median"],
        "step_ms_min": ms["min"],
        "step_ms_max": ms["max"],
        "compile_s": compile_s,
        "sentences_per_second": BATCH / ms["median"] * 1e3,
        "peak_device_memory_mb": peak_memory_mb(par),
    }


def run(args) -> dict:
    sizes = TINY_SIZES if args.tiny else SIZES
    available = len(jax.local_devices())
    counts = sorted({1, available} if BATCH % available == 0 else {1})
    out = {
        "platform": jax.local_devices()[0].platform,
        "devices_available": available,
        "sizes": sizes,
    }
    for name in ("ptb", "yahoo"):
        size = sizes[name]
        rows = [step_times(size, n, args.repeats) for n in counts]
        par = parallel.build(ParallelConfig(num_devices=available))
        iw_batch = sizing.iw_sizes(0, 0, par).batch
        iw = bench_iw(
            YAHOO["samples"],
            args.iw_chunk,
            iw_batch,
            args.iw_repeats,
            size=size,
            par=par,
        )
        out[name] = {"train": rows, "iw": iw}
        for r in rows:
            print(
                f"{name} train on {r['devices']} device(s): {r['step_ms']:.1f} ms "
                f"(min {r['step_ms_min']:.1f}, max {r['step_ms_max']:.1f}), "
                f"peak {r['peak_device_memory_mb']} MiB"
            )
        print(
            f"{name} IW-NLL ({YAHOO['samples']} samples, {iw_batch} sentences a "
            f"batch on {available} device(s)): {iw['sentences_per_second']:.2f} "
            "sentences/s"
        )
    out["yahoo_projection"] = project_yahoo(out["yahoo"])
    p = out["yahoo_projection"]
    print(
        f"projected Yahoo run ({YAHOO['epochs']} epochs): {p['total_hours']:.1f} h "
        f"on {p['train_devices']} device(s) (train {p['train_hours']:.1f} h, "
        f"validation {p['validation_hours']:.1f} h, IW-NLL {p['iw_hours']:.1f} h)"
    )
    return out


def project_yahoo(yahoo: dict) -> dict:
    """Wall time of the paper's Yahoo protocol from the measured rates.

    Training uses the faster of the measured device counts; every epoch adds
    a forward ELBO pass over the validation split, the end the IW-NLL of the
    validation and test splits.
    """
    best = min(yahoo["train"], key=lambda r: r["step_ms"])
    step_s = best["step_ms"] / 1e3
    steps_per_epoch = -(-YAHOO["train"] // BATCH)
    train_s = step_s * steps_per_epoch * YAHOO["epochs"]
    valid_s = FORWARD_SHARE * step_s * (-(-YAHOO["valid"] // BATCH)) * YAHOO["epochs"]
    iw_s = (YAHOO["valid"] + YAHOO["test"]) / yahoo["iw"]["sentences_per_second"]
    return {
        "train_devices": best["devices"],
        "steps_per_epoch": steps_per_epoch,
        "epochs": YAHOO["epochs"],
        "train_hours": train_s / 3600,
        "validation_hours": valid_s / 3600,
        "iw_hours": iw_s / 3600,
        "total_hours": (train_s + valid_s + iw_s) / 3600,
    }
