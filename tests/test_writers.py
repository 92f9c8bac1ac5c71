"""Tests of the TensorFlow-free metric writers."""

import json
import math
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.record_writer import masked_crc32c

from bnvae_jax.training import writers


def _read_events(logdir):
    """Every Event of the event files under ``logdir`` (TFRecord framing)."""
    events = []
    files = sorted(logdir.glob("events.out.tfevents.*"))
    for path in files:
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            assert header_crc == masked_crc32c(header)
            payload = data[pos + 12 : pos + 12 + length]
            (payload_crc,) = struct.unpack(
                "<I", data[pos + 12 + length : pos + 16 + length]
            )
            assert payload_crc == masked_crc32c(payload)
            events.append(event_pb2.Event.FromString(payload))
            pos += 16 + length
    return files, events


def _strict_json(line):
    def reject(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=reject)


def test_jsonl_round_trip(tmp_path):
    with writers.MetricWriter(tmp_path) as writer:
        writer.write_scalars(
            1,
            {
                "loss": np.float32(2.5),
                "kl": jnp.asarray(0.25),
                "au": 3,
                "bad": float("nan"),
                "big": np.inf,
                "small": -math.inf,
            },
        )
        writer.write_scalars(2, {"loss": 1.5})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    raw = [_strict_json(line) for line in lines]
    assert raw[0]["values"]["bad"] == "nan"
    assert raw[0]["values"]["big"] == "inf"
    assert {r["kind"] for r in raw} == {"scalars"}

    records = writers.read_metrics(tmp_path)
    assert [(r["step"], r["kind"]) for r in records] == [(1, "scalars"), (2, "scalars")]
    scalars = records[0]["values"]
    assert scalars["loss"] == 2.5 and scalars["kl"] == 0.25 and scalars["au"] == 3.0
    assert all(type(v) is float for v in scalars.values())
    assert math.isnan(scalars["bad"])
    assert scalars["big"] == math.inf and scalars["small"] == -math.inf
    assert records[1]["values"] == {"loss": 1.5}
    assert isinstance(records[0]["time"], float)


def test_read_metrics_without_file(tmp_path):
    assert writers.read_metrics(tmp_path) == []


def test_non_scalar_is_rejected(tmp_path):
    with writers.MetricWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="'v'"):
            writer.write_scalars(0, {"v": np.zeros(3)})


def test_resumed_run_keeps_the_last_value(tmp_path):
    with writers.MetricWriter(tmp_path) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": float(step), "lr": 1.0})
        writer.write_scalars(3, {"valid": 30.0})
    # Killed after step 5; resumed from a checkpoint at step 3.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "kind": "scal')  # a line cut by the kill
        f.write("\n")
    with writers.MetricWriter(tmp_path) as writer:
        writer.purge_step = 4  # as the loop sets it after restoring step 3
        for step in range(4, 7):
            writer.write_scalars(step, {"loss": 100.0 + step})
    records = writers.read_metrics(tmp_path)
    loss = [(r["step"], r["values"]["loss"]) for r in records if "loss" in r["values"]]
    assert loss == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 104.0), (5, 105.0), (6, 106.0)]
    # Keys not replayed survive; records are sorted by step.
    lr = [r["step"] for r in records if "lr" in r["values"]]
    assert lr == [1, 2, 3, 4, 5]
    assert any(r["values"].get("valid") == 30.0 for r in records)
    steps = [r["step"] for r in records]
    assert steps == sorted(steps)
    # TensorBoard hides the first run's events from the purge step on.
    _, events = _read_events(tmp_path / "tensorboard")
    assert [e.step for e in events if e.HasField("session_log")] == [4]


def test_tensorboard_event_files(tmp_path):
    with writers.MetricWriter(tmp_path) as writer:
        writer.write_scalars(7, {"train/loss": np.float32(1.25), "lr": 0.5})
    files, events = _read_events(tmp_path / "tensorboard")
    assert files
    scalars = {
        (value.tag, event.step): value.simple_value
        for event in events
        for value in event.summary.value
        if value.HasField("simple_value")
    }
    assert scalars == {("train/loss", 7): 1.25, ("lr", 7): 0.5}


def test_noop_writer_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    with writers.MetricWriter(None) as writer:
        writer.write_scalars(1, {"loss": 1.0})
    assert not workdir.exists()
    assert writers.read_metrics(workdir) == []


def test_logging_line(tmp_path, caplog):
    caplog.set_level("INFO")
    with writers.MetricWriter(tmp_path) as writer:
        writer.write_scalars(12, {"loss": 0.125})
    assert "[12] loss=0.125" in caplog.text


def test_no_tensorflow_import(tmp_path):
    with writers.MetricWriter(tmp_path) as writer:
        writer.write_scalars(0, {"x": 1.0})
    assert "tensorflow" not in sys.modules
