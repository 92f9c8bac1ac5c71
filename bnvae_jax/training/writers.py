"""Metric writers without TensorFlow: JSONL + TensorBoard (tensorboardX) + logging.

The method names follow ``clu.metric_writers`` so CLU's writers could be dropped in.
The writer of ``create_writer`` writes to three sinks:

* ``workdir/metrics.jsonl``: one JSON object a write, appended (a resumed run
  appends to the same file; ``read_metrics`` drops the replayed duplicates);
  non-finite scalars are written as the strings ``"nan"``, ``"inf"``, ``"-inf"``
  so every line is valid JSON;
* TensorBoard event files under ``workdir/tensorboard/`` (scalars; texts and
  hyperparameters as text summaries);
* one log record for each ``write_scalars`` (logger ``bnvae_jax.file.metrics``:
  the run's log file, not the console).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorboardX

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_LOG = logging.getLogger("bnvae_jax.file.metrics")
_NON_FINITE = ("nan", "inf", "-inf")


def _to_float(key: str, value: Any) -> float:
    """A Python float from a Python, numpy or JAX scalar (or a size-1 array)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"scalar {key!r} is not a number: {value!r}") from e
    if array.size != 1:
        raise ValueError(f"scalar {key!r} has shape {array.shape}, not a scalar")
    return float(array.reshape(()))


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # 'nan', 'inf', '-inf'


def _jsonable(value: Any) -> Any:
    """Hyperparameters as JSON: numpy/JAX scalars to Python, odd values to str."""
    if callable(getattr(value, "to_dict", None)):  # ml_collections.ConfigDict
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | bool | int | None):
        return value
    if isinstance(value, float):
        return _json_float(value)
    if hasattr(value, "item") and getattr(value, "size", None) == 1:
        return _jsonable(value.item())
    return str(value)


class MetricWriter:
    """Writes metrics to the three sinks; without a workdir it writes nothing."""

    def __init__(self, workdir: pathlib.Path | None = None, purge_step=None):
        self._file = self._tb = None
        if workdir is None:
            return
        workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(workdir / METRICS_FILE, "a", encoding="utf-8")
        # A unique suffix: two writers opened in the same second (a quick
        # restart) must not truncate each other's event file.
        self._tb = tensorboardX.SummaryWriter(
            logdir=str(workdir / TENSORBOARD_DIR),
            purge_step=purge_step,
            flush_secs=30,
            filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}",
        )

    def _append(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
        record = {"step": int(step), "time": time.time(), "kind": kind}
        record["values"] = dict(values)
        self._file.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        self._file.flush()  # a killed run keeps every line it wrote

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes scalar metrics of ``step`` (Python, numpy or JAX scalars)."""
        if self._file is None:
            return
        values = {k: _to_float(k, v) for k, v in scalars.items()}
        self._append(step, "scalars", {k: _json_float(v) for k, v in values.items()})
        for key, value in values.items():
            self._tb.add_scalar(key, value, global_step=int(step))
        parts = [f"{k}={v:.6g}" for k, v in values.items()]
        _LOG.info("[%d] %s", int(step), ", ".join(parts))

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Writes text summaries of ``step``."""
        if self._file is None:
            return
        self._append(step, "texts", {k: str(v) for k, v in texts.items()})
        for key, value in texts.items():
            self._tb.add_text(key, str(value), global_step=int(step))

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Writes the run's hyperparameters (a possibly nested mapping)."""
        if self._file is None:
            return
        values = _jsonable(hparams)
        self._append(0, "hparams", values)
        text = json.dumps(values, indent=2, sort_keys=True)
        # Markdown code block: TensorBoard's text plugin renders markdown.
        indented = "\n".join("    " + line for line in text.splitlines())
        self._tb.add_text("hparams", indented, global_step=0)
        _LOG.info("hparams: %s", json.dumps(values, sort_keys=True))

    def flush(self) -> None:
        """Pushes buffered writes to disk."""
        if self._file is not None:
            self._file.flush()
            self._tb.flush()

    def close(self) -> None:
        """Flushes and releases files; the writer is not used afterwards."""
        if self._file is not None and not self._file.closed:
            self._file.close()
            self._tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def create_writer(
    workdir: str | os.PathLike,
    *,
    enabled: bool = True,
    purge_step: int | None = None,
) -> MetricWriter:
    """The run's metric writer: JSONL, TensorBoard and logging.

    Args:
        workdir: The run's directory (created if missing).
        enabled: False gives a writer that writes nothing (processes other than
            0 in a multi-host run).
        purge_step: When resuming from step ``T``, TensorBoard hides events of
            steps ``>= T`` written before the restart (they are replayed).

    Returns:
        The writer; ``close()`` it at the end of the run.
    """
    return MetricWriter(pathlib.Path(workdir) if enabled else None, purge_step)


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
    seen: set[tuple[int, str, str]] = set()
    kept = []
    for record in reversed(records):
        step, kind = record["step"], record["kind"]
        values = {}
        for key, value in record["values"].items():
            if (step, kind, key) in seen:
                continue
            seen.add((step, kind, key))
            if kind == "scalars" and value in _NON_FINITE:
                value = float(value)
            values[key] = value
        if values:
            kept.append({**record, "values": values})
    return sorted(reversed(kept), key=lambda r: r["step"])
