"""``benchmarks/run.py --suite=gpu`` runs end to end at tiny sizes on CPU."""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_gpu_suite_at_tiny_size(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--suite=gpu",
            "--tiny",
            "--repeats=2",
            "--iw-repeats=1",
            "--iw-chunk=50",
            f"--out={out}",
        ],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["suite"] == "gpu" and report["platform"] == "cpu"
    for name in ("ptb", "yahoo"):
        (row,) = report[name]["train"]  # one CPU device: 1 == all
        assert row["devices"] == 1
        assert 0 < row["step_ms_min"] <= row["step_ms"] <= row["step_ms_max"]
        assert row["peak_device_memory_mb"] is None  # CPU reports none
        assert report[name]["iw"]["sentences_per_second"] > 0
        assert report[name]["iw"]["sentences_per_batch"] == 4  # CPU eval size
    projection = report["yahoo_projection"]
    assert projection["steps_per_epoch"] == 3125 and projection["epochs"] == 100
    parts = ("train_hours", "validation_hours", "iw_hours")
    assert abs(sum(projection[p] for p in parts) - projection["total_hours"]) < 1e-9
    assert "projected Yahoo run" in proc.stdout
