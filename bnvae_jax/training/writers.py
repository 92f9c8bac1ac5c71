"""Metric writers without TensorFlow: JSONL + TensorBoard (tensorboardX) + logging.

The method names follow ``clu.metric_writers`` so CLU's writers could be dropped in.
``MetricWriter`` writes to three sinks:

* ``workdir/metrics.jsonl``: one JSON object a write, appended (a resumed run
  appends to the same file; ``read_metrics`` drops the replayed duplicates);
  non-finite scalars are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``
  so every line is valid JSON;
* TensorBoard event files under ``workdir/tensorboard/``;
* one log record for each ``write_scalars`` (logger ``bnvae_jax.file.metrics``:
  the run's log file, not the console).
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorboardX

from bnvae_jax import fileio

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_LOG = logging.getLogger("bnvae_jax.file.metrics")
_NON_FINITE = ("nan", "inf", "-inf")


def _to_float(key: str, value: Any) -> float:
    """A Python float from a Python, numpy or JAX scalar (or a size-1 array)."""
    try:
        return float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError) as e:  # not a number, or several
        raise ValueError(f"scalar {key!r} is not one number: {value!r}") from e


class MetricWriter(fileio.Closing):
    """Writes metrics to the three sinks; without a workdir it writes nothing.

    A run's writer is given no workdir on processes other than 0; ``close()``
    it at the end of the run.

    ``purge_step`` is read when the first scalars are written: a run resumed
    from step ``T`` sets it to ``T + 1`` once it knows which checkpoint it
    restored, and TensorBoard hides the events of later steps written before
    the restart (they are replayed).
    """

    def __init__(self, workdir: pathlib.Path | None = None):
        """Opens ``workdir/metrics.jsonl`` (creating the directory), if a workdir."""
        self._dir, self._file, self._tb, self.purge_step = workdir, None, None, None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            self._file = open(workdir / METRICS_FILE, "a", encoding="utf-8")

    def _board(self) -> tensorboardX.SummaryWriter:
        if self._tb is None:
            # A unique suffix: two writers opened in the same second (a quick
            # restart) must not truncate each other's event file.
            self._tb = tensorboardX.SummaryWriter(
                logdir=str(self._dir / TENSORBOARD_DIR),
                purge_step=self.purge_step,
                flush_secs=30,
                filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}",
            )
        return self._tb

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes scalar metrics of ``step`` (Python, numpy or JAX scalars)."""
        if self._file is None:
            return
        step, values = int(step), {k: _to_float(k, v) for k, v in scalars.items()}
        record = {"step": step, "time": time.time(), "kind": "scalars"}
        record["values"] = {k: fileio.jsonable(v) for k, v in values.items()}
        self._file.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        self._file.flush()  # a killed run keeps every line it wrote
        for key, value in values.items():
            self._board().add_scalar(key, value, global_step=step)
        _LOG.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))

    def close(self) -> None:
        """Flushes and releases files; the writer is not used afterwards."""
        if self._file is not None and not self._file.closed:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``, with replays of a resumed run removed.

    A resumed run writes again the steps after its checkpoint; for each
    ``(step, kind, key)`` only the last value written is kept, and records left
    without values are dropped. Records are returned sorted by step (stable, so
    records of one step keep their order); non-finite scalars come back as floats.
    A truncated last line (a run killed mid-write) is ignored.

    Args:
        workdir: The run's directory.

    Returns:
        ``[{"step": int, "time": float, "kind": str, "values": {...}}, ...]``;
        empty when there is no metrics file.
    """
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                logging.warning("%s:%d is not valid JSON; skipped", path, number)
    seen, kept = set(), []  # (step, kind, key) written later; records kept
    for record in reversed(records):
        step, kind = record["step"], record["kind"]
        values = {
            key: float(value) if kind == "scalars" and value in _NON_FINITE else value
            for key, value in record["values"].items()
            if (step, kind, key) not in seen
        }
        seen.update((step, kind, key) for key in values)
        if values:
            kept.append({**record, "values": values})
    return sorted(reversed(kept), key=lambda r: r["step"])
