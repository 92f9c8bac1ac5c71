"""Data parallelism: 1 device vs 8 (jit mesh and pmap) give the same run.

(Two hosts: tests/test_parallel_hosts.py.)

The multi-device checks run in one subprocess with 8 fake CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``); it prints one JSON
dict of measured differences that the tests below assert on.
"""

import dataclasses
import functools
import json
import os
import pathlib
import signal
import sys
import tempfile
import time

import numpy as np
import pytest
from conftest import (
    EVAL_KEYS,
    NO_DECODING_FLAGS,
    python_module,
    run_results,
    start_child,
    tail,
    wait_child,
    xla_flags,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8
ENV = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": xla_flags(DEVICES),
}
TOL = 1e-5


def _config(**overrides):
    from bnvae_jax import cli

    config = cli.load_config_file(str(ROOT / "configs" / "tiny.py"))
    for dotted, value in overrides.items():
        section, _, key = dotted.rpartition(".")
        (config[section] if section else config)[key] = value
    return config


def _max_diff(a, b) -> float:
    import jax

    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return max((float(np.max(np.abs(x - y))) for x, y in pairs), default=0.0)


def _train_and_eval(workdir, num_steps, evaluate=True, **overrides):
    """``num_steps`` steps through the train loop's step, then an evaluation."""
    import jax

    from bnvae_jax.evaluation import run as eval_run
    from bnvae_jax.tasks import text_vae as train

    trainer, state = train.setup(_config(**overrides), workdir)
    (step,) = train.compile_steps(trainer)
    metrics = []
    for i in range(num_steps):
        batch = trainer.ctx.par.shard_batch(
            train.train_arrays(trainer.plan.make_batch(i))
        )
        before = jax.tree.leaves(state.params)
        state, m = step(state, batch, trainer.rng)
        # Both paths donate the state: its buffers are reused by the new one.
        assert all(x.is_deleted() for x in before), trainer.ctx.par.mode
        metrics.append(jax.device_get(m))
    # The state stays replicated over every device the run uses.
    for leaf in jax.tree.leaves(state):
        assert len(leaf.sharding.device_set) == trainer.ctx.par.num_devices, (
            leaf.sharding
        )
        assert leaf.sharding.is_fully_replicated, leaf.sharding
    if not evaluate:
        return jax.device_get(train.steps.variables(state)), metrics, {}
    # 12 and 3 do not divide over 8 devices: batches are padded up.
    cfg = dataclasses.replace(trainer.run.eval, iw_samples=10, iw_batch=3)
    evaluation = eval_run.evaluate_split(
        trainer.model,
        train.steps.variables(state),
        trainer.data.split("valid")[:30],
        jax.random.key(5),
        cfg,
        batch_size=12,
        bucket_width=8,
        iw_key=jax.random.key(6),
        par=trainer.ctx.par,
    )
    return jax.device_get(train.steps.variables(state)), metrics, evaluation


def _means(metrics):
    return [
        {k: float(m[k]) / float(m["count"]) for k in ("rec_sum", "kl_sum", "loss_sum")}
        | {k: float(m[k]) for k in ("count", "tokens", "grad_norm", "param_norm")}
        # BN head health: statistics of the global batch on every device count.
        | {k: float(m[k]) for k in m if k.startswith("bn_")}
        for m in metrics
    ]


def _compare(ref, got) -> dict:
    (v_ref, m_ref, e_ref), (v_got, m_got, e_got) = ref, got
    return {
        "bn_metrics": sum(k.startswith("bn_") for k in m_got[0]),
        "params": _max_diff(v_ref["params"], v_got["params"]),
        "batch_stats": _max_diff(v_ref["batch_stats"], v_got["batch_stats"]),
        "metrics": max(
            abs(a[k] - b[k]) / max(1.0, abs(a[k]))
            for a, b in zip(_means(m_ref), _means(m_got), strict=True)
            for k in a
        ),
        "eval": max(
            (
                abs(e_ref[k] - e_got[k]) / max(1.0, abs(e_ref[k]))
                for k in EVAL_KEYS
                if e_ref.get(k) is not None
            ),
            default=0.0,
        ),
    }


def _error_of(fn) -> str:
    try:
        fn()
    except Exception as e:  # the worker reports the message
        return f"{type(e).__name__}: {e}"
    return ""


def _worker(out_path: str) -> None:
    """Runs every multi-device check in this process (8 fake devices)."""
    import jax

    from bnvae_jax import config as config_lib
    from bnvae_jax import parallel
    from bnvae_jax.tasks import text_vae as train

    assert jax.device_count() == DEVICES, jax.devices()
    tmp = pathlib.Path(tempfile.mkdtemp())
    report = {}
    key = jax.random.key(3)
    want = jax.random.normal(jax.random.fold_in(key, 1), (16, 3))
    got = jax.pmap(
        lambda k, _: jax.random.normal(
            jax.random.fold_in(parallel.row_offset_key(k, "data", 2), 1), (2, 3)
        ),
        axis_name="data",
        in_axes=(None, 0),
    )(key, np.arange(DEVICES))
    report["row_offset_draw"] = float(np.max(np.abs(got.reshape(16, 3) - want)))
    # SA-VAE: its per-example SVI keys (the eval passes are method-agnostic).
    for method, modes, num_steps, extra in (
        ("bn_vae", ("jit", "pmap"), 3, {}),
        ("sa_vae", ("pmap",), 2, {"model.svi_steps": 2, "evaluate": False}),
    ):
        run = functools.partial(_train_and_eval, num_steps=num_steps, method=method)
        ref = run(tmp / f"{method}_1", **extra, **{"parallel.num_devices": 1})
        for mode in modes:
            got = run(tmp / f"{method}_{mode}", **extra, **{"parallel.mode": mode})
            report[f"{method}/{mode}"] = _compare(ref, got)

    def setup_devices(**overrides):
        config = _config(**overrides)
        return train.loop_lib.setup_devices(config_lib.resolve(config), config)

    report["errors"] = {
        "batch": _error_of(lambda: setup_devices(**{"data.batch_size": 12})),
        "devices": _error_of(lambda: setup_devices(**{"parallel.num_devices": 16})),
    }
    pathlib.Path(out_path).write_text(json.dumps(report))


@pytest.fixture(scope="module")
def multi_device_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel")
    out = tmp / "report.json"
    proc = start_child(
        [sys.executable, __file__, str(out)], tmp / "worker.log", cwd=ROOT, env=ENV
    )
    # Compiles and runs ~10 tiny train and eval programs on 8 fake devices.
    assert wait_child(proc, 600, "8-device worker") == 0, tail(proc.log)
    return json.loads(out.read_text())


@pytest.mark.parametrize("run", ["bn_vae/jit", "bn_vae/pmap", "sa_vae/pmap"])
def test_eight_devices_reproduce_one(multi_device_report, run):
    diffs = multi_device_report[run]
    if run.startswith("bn_vae"):
        assert diffs["bn_metrics"] == 5, diffs  # the BN head's fields were compared
    assert diffs["params"] <= TOL, diffs
    assert diffs["batch_stats"] <= TOL, diffs
    assert diffs["metrics"] <= TOL, diffs
    assert diffs["eval"] <= TOL, diffs


def test_pmap_keys_draw_the_rows_of_the_global_draw(multi_device_report):
    assert multi_device_report["row_offset_draw"] == 0.0


def test_clear_errors_for_devices_and_batch(multi_device_report):
    errors = multi_device_report["errors"]
    assert "data.batch_size=12 does not divide over 8 devices" in errors["batch"]
    assert "parallel.num_devices=16 but this host has 8" in errors["devices"]


def test_config_errors_and_host_digest():
    from bnvae_jax import config as config_lib
    from bnvae_jax import parallel
    from bnvae_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="parallel.mode='spmd' is not one of"):
        config_lib.resolve(_config(**{"parallel.mode": "spmd"}))
    with pytest.raises(ConfigError, match="parallel.num_devices must be >= 0"):
        config_lib.resolve(_config(**{"parallel.num_devices": -1}))
    with pytest.raises(ConfigError, match="heartbeat_timeout_s .* must be >= 1"):
        config_lib.resolve(_config(**{"parallel.heartbeat_timeout_s": 0}))
    base = parallel.config_digest(_config())
    same = parallel.config_digest(_config(**{"parallel.process_id": 1}))
    other = parallel.config_digest(_config(**{"train.learning_rate": 0.5}))
    assert np.array_equal(base, same) and not np.array_equal(base, other)


def _run_main(workdir, log):
    return start_child(
        python_module(
            "bnvae_jax.main",
            f"--config={ROOT / 'configs' / 'tiny.py'}",
            f"--workdir={workdir}",
            "--config.train.epochs=2",
            "--config.train.checkpoint_every_steps=3",
            "--config.eval.iw_samples=10",
            *NO_DECODING_FLAGS,  # decoding on devices: tests/test_parallel_hosts.py
        ),
        log,
        cwd=ROOT,
        env=ENV,
    )


@pytest.mark.slow
def test_sigkill_then_resume_on_eight_devices(tmp_path):
    reference = _run_main(tmp_path / "ref", tmp_path / "ref.log")
    assert wait_child(reference, 600, "reference run") == 0, tail(reference.log)
    killed = tmp_path / "killed"
    proc = _run_main(killed, tmp_path / "killed.log")
    deadline, ckpt = time.time() + 600, killed / "checkpoints"
    while time.time() < deadline and proc.poll() is None:
        names = [p.name for p in ckpt.glob("*")] if ckpt.exists() else []
        if any(n.isdigit() and int(n) >= 6 for n in names):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists()
    resumed = _run_main(killed, tmp_path / "resumed.log")
    assert wait_child(resumed, 600, "resumed run") == 0, tail(resumed.log)
    ref, got = run_results(tmp_path / "ref"), run_results(killed)
    assert got == ref
    assert got["num_devices"] == DEVICES and got["num_hosts"] == 1


if __name__ == "__main__":
    os.environ.update(ENV)
    sys.path.insert(0, str(ROOT))
    _worker(sys.argv[1])
