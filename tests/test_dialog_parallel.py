"""Dialog CVAEs on 8 devices equal the 1-device run (the shared loop's parallelism).

One subprocess with 8 fake CPU devices trains and scores a tiny BN-CVAE on 1
device, on 8 (jit mesh) and on 8 (pmap), and prints the measured differences.

Adam divides each gradient by its running RMS, so a coordinate whose gradient
is ~1e-10 (some GRU gates here) moves by about ±lr whatever float rounding
decided its sign: summing the batch in another order (8 devices) then moves
such parameters apart by O(lr) per step. The comparison therefore uses
lr = 1e-6, where that noise stays below the tolerance; the first step's logged
loss terms and gradient norm come before any update, so they are those of any
learning rate and are compared too.
"""

import json
import os
import pathlib
import sys
import tempfile

import numpy as np
import pytest
from conftest import start_child, tail, wait_child, xla_flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEVICES = 8
TOL = 1e-4
SCORES = ("elbo", "rec", "kl", "prior_kl", "bow", "ppl")
RESPONSE_SCORES = ("bleu1_recall", "bleu4_precision", "abow_precision", "ebow_recall")


def _run(files: dict, workdir: pathlib.Path, lr: float, **parallel):
    import jax
    from test_dialog_train import tiny_config

    from bnvae_jax.tasks.dialog import train
    from bnvae_jax.training import checkpoints

    config = tiny_config(files, "bn_cvae", max_steps=4, epochs=2)
    config.data.batch_size, config.data.eval_batch_size = 16, 16
    config.train.learning_rate = lr
    for key, value in parallel.items():
        config.parallel[key] = value
    results = train.train_and_evaluate(config, str(workdir))
    with checkpoints.Checkpointer(workdir) as ckpt:
        params = ckpt.restore_best(None)[0]["params"]
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
    first = next(r["values"] for r in rows if "train/rec" in r["values"])
    return results, jax.device_get(params), first


def _worker(out_path: str) -> None:
    import jax
    from test_dialog_train import _glove, write_dialogs

    assert jax.device_count() == DEVICES, jax.devices()
    tmp = pathlib.Path(tempfile.mkdtemp())
    files = {
        "train": write_dialogs(tmp / "train.jsonl", 8, 0),
        "valid": write_dialogs(tmp / "valid.jsonl", 2, 1),
        "test": write_dialogs(tmp / "test.jsonl", 2, 2),
        "glove": _glove(tmp / "glove.txt"),
    }
    ref, ref_params, ref_first = _run(files, tmp / "one", 1e-6, num_devices=1)
    report = {"one": {k: ref[k] for k in ("num_devices", "num_hosts", "steps")}}
    for mode in ("jit", "pmap"):
        got, params, first = _run(files, tmp / mode, 1e-6, mode=mode)
        diffs = {
            f"{split}/{k}": abs(got[split][k] - ref[split][k])
            / max(1.0, abs(ref[split][k]))
            for split in ("valid", "test")
            for k in SCORES
        }
        diffs.update(
            {f"test/{k}": abs(got["test"][k] - ref["test"][k]) for k in RESPONSE_SCORES}
        )
        report[mode] = {
            "first_step": max(
                abs(first[k] - ref_first[k]) / max(1.0, abs(ref_first[k]))
                for k in ref_first
            ),
            "num_devices": got["num_devices"],
            "num_hosts": got["num_hosts"],
            "parallel_mode": got["parallel_mode"],
            "steps": got["steps"],
            "scores": max(diffs.values()),
            "worst": max(diffs, key=diffs.get),
            "params": max(
                float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                for a, b in zip(
                    jax.tree.leaves(ref_params), jax.tree.leaves(params), strict=True
                )
            ),
        }
    pathlib.Path(out_path).write_text(json.dumps(report))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dialog_parallel")
    out = tmp / "report.json"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": xla_flags(DEVICES),
    }
    proc = start_child(
        [sys.executable, __file__, str(out)], tmp / "worker.log", cwd=ROOT, env=env
    )
    assert wait_child(proc, 600, "8-device dialog worker") == 0, tail(proc.log)
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_bn_cvae_on_eight_devices_equals_one(report, mode):
    got = report[mode]
    assert report["one"]["num_devices"] == 1
    assert got["num_devices"] == DEVICES and got["num_hosts"] == 1
    assert got["parallel_mode"] == mode
    assert got["steps"] == report["one"]["steps"] == 4
    assert got["params"] <= TOL, got
    assert got["scores"] <= TOL, got
    assert got["first_step"] <= TOL, got


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    _worker(sys.argv[1])
