"""Learning curves read from metrics.jsonl and drawn (analysis/curves.py)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bnvae_jax.analysis import curves
from bnvae_jax.errors import WorkdirError
from bnvae_jax.training import writers

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "launch" / "curves.py"


def _write(workdir, records):
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / writers.METRICS_FILE, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _epoch_row(step, epoch, nll, kl, lr=0.5):
    values = {"epoch": float(epoch), "lr": lr, "valid/elbo_nll": nll, "valid/kl": kl}
    return {"kind": "scalars", "step": step, "time": 0.0, "values": values}


def test_epoch_rows_only_last_replay_kept_and_sorted(tmp_path):
    train_row = {"kind": "scalars", "step": 5, "time": 0.0, "values": {"train/loss": 1}}
    records = [
        train_row,
        _epoch_row(10, 0, 130.0, 8.0),
        _epoch_row(20, 1, 125.0, 6.0),
        # a resume from step 10 replays epoch 1 with other values
        _epoch_row(20, 1, 124.5, 5.5, lr=0.25),
        _epoch_row(30, 2, 123.0, 5.0),
    ]
    _write(tmp_path, records)
    c = curves.read_curves(tmp_path)
    np.testing.assert_array_equal(c.epoch, [0, 1, 2])
    np.testing.assert_array_equal(c.step, [10, 20, 30])
    np.testing.assert_allclose(c.elbo_nll, [130.0, 124.5, 123.0])
    np.testing.assert_allclose(c.kl, [8.0, 5.5, 5.0])
    np.testing.assert_allclose(c.lr, [0.5, 0.25, 0.5])
    assert np.isnan(c.mi).all()  # rows without valid/mi


def test_run_without_epoch_rows_is_one_line_error(tmp_path):
    _write(tmp_path, [{"kind": "scalars", "step": 1, "time": 0, "values": {"a": 1}}])
    with pytest.raises(WorkdirError, match="finished an epoch"):
        curves.read_curves(tmp_path)


def test_cli_writes_png_and_reports(tmp_path):
    _write(tmp_path / "a", [_epoch_row(10, 0, 130.0, 8.0), _epoch_row(20, 1, 120, 7)])
    _write(tmp_path / "b", [_epoch_row(10, 0, 131.0, 0.5)])
    out = tmp_path / "fig" / "curves.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            f"--run=A={tmp_path / 'a'}",
            f"--run=B (γ=0.6)={tmp_path / 'b'}",
            f"--output={out}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "A: 2 epochs, last -ELBO 120.00, KL 7.00, best -ELBO 120.00" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), f"--run={tmp_path / 'a'}", f"--output={out}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error:") and "LABEL=WORKDIR" in bad.stderr
    assert "Traceback" not in bad.stderr
