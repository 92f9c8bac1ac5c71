"""Times the custom-VJP LSTM against the autodiff reference and a plain GEMM.

Usage:
  python benchmarks/lstm_kernels.py --out lstm_kernels.json [--unroll-sweep]

FLOPs count only the matrix products: the forward is 2*B*T*(I+H)*4H and the
backward about twice that. Every time is the minimum over rounds of the mean
over calls, with candidates interleaved so that load from other processes
affects them alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from bnvae_jax.models import lstm as lstm_lib

# name: (batch, steps, inputs, hidden, with backward)
CASES = {
    "ptb_train": (32, 24, 256 + 32, 256, True),
    "yahoo_train": (32, 40, 512 + 32, 1024, True),
    "iw_forward_b500": (500, 24, 256 + 32, 256, False),
}
GEMM_N = 4096


def _min_time(fns: dict, calls: int, rounds: int) -> dict:
    """Minimum over rounds of the mean seconds per call, interleaving fns."""
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return best


def gemm_rates(rounds: int) -> dict:
    """GFLOP/s of a float32 GEMM_N^3 product with jax and with numpy."""
    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (GEMM_N, GEMM_N), jnp.float32)
    b = jax.random.normal(key_b, (GEMM_N, GEMM_N), jnp.float32)
    a_np, b_np = np.asarray(a), np.asarray(b)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    times = _min_time(
        {
            "jax": lambda: matmul(a, b).block_until_ready(),
            "numpy": lambda: a_np @ b_np,
        },
        calls=1,
        rounds=rounds,
    )
    return {k: 2 * GEMM_N**3 / t / 1e9 for k, t in times.items()}


def make_case(fn, batch, steps, inputs, hidden, backward):
    """A zero-argument callable running fn's forward (+ backward) once, jitted."""
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    scale = 1.0 / np.sqrt(hidden)
    params = lstm_lib.LSTMParams(
        w_ih=scale * jax.random.normal(keys[0], (inputs, 4 * hidden)),
        w_hh=scale * jax.random.normal(keys[1], (hidden, 4 * hidden)),
        b=scale * jax.random.normal(keys[2], (4 * hidden,)),
    )
    xs = jax.random.normal(keys[3], (batch, steps, inputs))
    h0 = jax.random.normal(keys[4], (batch, hidden))
    c0 = jax.random.normal(keys[5], (batch, hidden))
    w_hs = jax.random.normal(keys[6], (batch, steps, hidden))
    w_state = jax.random.normal(keys[7], (2, batch, hidden))

    if backward:

        def loss(params, xs, h0, c0):
            hs, (h_t, c_t) = fn(params, xs, h0, c0)
            return (
                jnp.sum(w_hs * hs)
                + jnp.sum(w_state[0] * h_t)
                + jnp.sum(w_state[1] * c_t)
            )

        run = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    else:
        run = jax.jit(fn)
    args = (params, xs, h0, c0)
    jax.block_until_ready(run(*args))
    return lambda: jax.block_until_ready(run(*args))


@contextlib.contextmanager
def _unroll(forward: int, backward: int):
    """Traces lstm with other scan unroll factors inside this block.

    The custom VJP's backward is traced during the transpose, after lstm has
    returned, so the setting must span the whole jit trace, not one call.
    """
    saved = lstm_lib._FORWARD_UNROLL, lstm_lib._BACKWARD_UNROLL
    lstm_lib._FORWARD_UNROLL, lstm_lib._BACKWARD_UNROLL = forward, backward
    try:
        yield
    finally:
        lstm_lib._FORWARD_UNROLL, lstm_lib._BACKWARD_UNROLL = saved


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lstm_kernels.json")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--unroll-sweep", action="store_true", help="also time scan unroll 2, 4, 8"
    )
    parser.add_argument(
        "--cases", nargs="+", choices=sorted(CASES), default=list(CASES)
    )
    parser.add_argument("--skip-gemm", action="store_true")
    args = parser.parse_args()

    gemm = {"jax": float("nan"), "numpy": float("nan")}
    if not args.skip_gemm:
        gemm = gemm_rates(args.rounds)
    print(f"GEMM {GEMM_N}^3 float32: jax {gemm['jax']:.1f} GFLOP/s, ", end="")
    print(f"numpy {gemm['numpy']:.1f} GFLOP/s")

    # name: (function, forward unroll, backward unroll)
    variants = {
        "reference": (lstm_lib.lstm_reference, 1, 1),
        "custom": (lstm_lib.lstm, 1, 1),
    }
    if args.unroll_sweep:
        for u in (2, 4, 8):
            variants[f"custom_unroll{u}"] = (lstm_lib.lstm, u, u)

    rows = []
    header = f"{'case':16s} {'variant':16s} {'ms':>9s} {'GFLOP/s':>8s} {'%GEMM':>6s}"
    print(header)
    for case in args.cases:
        batch, steps, inputs, hidden, backward = CASES[case]
        flops = 2 * batch * steps * (inputs + hidden) * 4 * hidden
        flops *= 3 if backward else 1
        fns = {}
        for name, (fn, forward_unroll, backward_unroll) in variants.items():
            with _unroll(forward_unroll, backward_unroll):
                fns[name] = make_case(fn, batch, steps, inputs, hidden, backward)
        # Aim for ~0.2 s per round and candidate so that short cases average out.
        probe = _min_time({"p": fns["custom"]}, calls=1, rounds=2)["p"]
        calls = max(1, int(0.2 / probe))
        times = _min_time(fns, calls=calls, rounds=args.rounds)
        for name, seconds in times.items():
            rate = flops / seconds / 1e9
            row = dict(
                case=case,
                variant=name,
                batch=batch,
                steps=steps,
                inputs=inputs,
                hidden=hidden,
                backward=backward,
                ms=seconds * 1e3,
                gflops=rate,
                pct_gemm=100 * rate / gemm["jax"],
                speedup_vs_reference=times["reference"] / seconds,
            )
            rows.append(row)
            print(
                f"{case:16s} {name:16s} {row['ms']:9.2f} {rate:8.1f} "
                f"{row['pct_gemm']:6.1f}  x{row['speedup_vs_reference']:.2f}"
            )

    result = dict(
        gemm_gflops=gemm,
        rows=rows,
        jax_version=jax.__version__,
        cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
