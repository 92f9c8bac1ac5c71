"""Metric writers without TensorFlow: JSONL + TensorBoard (tensorboardX) + logging.

The method names follow ``clu.metric_writers`` so CLU's writers could be dropped in.
``create_writer`` combines three sinks:

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
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


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
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _from_json_float(value: Any) -> Any:
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


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
    """Writes metrics; this base class is the no-op writer (``enabled=False``)."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Writes scalar metrics of ``step`` (Python, numpy or JAX scalars)."""

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        """Writes text summaries of ``step``."""

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        """Writes the run's hyperparameters (a possibly nested mapping)."""

    def flush(self) -> None:
        """Pushes buffered writes to disk."""

    def close(self) -> None:
        """Flushes and releases files; the writer is not used afterwards."""

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _JsonlWriter(MetricWriter):
    """Appends one JSON object a write to ``workdir/metrics.jsonl``."""

    def __init__(self, workdir: pathlib.Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self._file = open(workdir / METRICS_FILE, "a", encoding="utf-8")

    def _write(self, step: int, kind: str, values: Mapping[str, Any]) -> None:
        record = {"step": int(step), "time": time.time(), "kind": kind}
        record["values"] = dict(values)
        self._file.write(json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
        self._file.flush()  # a killed run keeps every line it wrote

    def write_scalars(self, step, scalars):
        self._write(
            step,
            "scalars",
            {k: _json_float(_to_float(k, v)) for k, v in scalars.items()},
        )

    def write_texts(self, step, texts):
        self._write(step, "texts", {k: str(v) for k, v in texts.items()})

    def write_hparams(self, hparams):
        self._write(0, "hparams", _jsonable(hparams))

    def flush(self):
        self._file.flush()

    def close(self):
        if not self._file.closed:
            self._file.close()


class _TensorBoardWriter(MetricWriter):
    """Event files under ``workdir/tensorboard/`` through tensorboardX."""

    def __init__(self, logdir: pathlib.Path, purge_step: int | None):
        # A unique suffix: two writers opened in the same second (a quick
        # restart) must not truncate each other's event file.
        self._writer = tensorboardX.SummaryWriter(
            logdir=str(logdir),
            purge_step=purge_step,
            flush_secs=30,
            filename_suffix=f".{os.getpid()}.{uuid.uuid4().hex[:8]}",
        )

    def write_scalars(self, step, scalars):
        for key, value in scalars.items():
            self._writer.add_scalar(key, _to_float(key, value), global_step=int(step))

    def write_texts(self, step, texts):
        for key, value in texts.items():
            self._writer.add_text(key, str(value), global_step=int(step))

    def write_hparams(self, hparams):
        text = json.dumps(_jsonable(hparams), indent=2, sort_keys=True)
        # Markdown code block: TensorBoard's text plugin renders markdown.
        indented = "\n".join("    " + line for line in text.splitlines())
        self._writer.add_text("hparams", indented, global_step=0)

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


class _LoggingWriter(MetricWriter):
    """One log record for each ``write_scalars`` (the log file, not the console)."""

    def write_scalars(self, step, scalars):
        parts = [f"{k}={_to_float(k, v):.6g}" for k, v in scalars.items()]
        _LOG.info("[%d] %s", int(step), ", ".join(parts))

    def write_hparams(self, hparams):
        _LOG.info("hparams: %s", json.dumps(_jsonable(hparams), sort_keys=True))


class MultiWriter(MetricWriter):
    """Forwards every call to each of ``writers`` in order."""

    def __init__(self, writers: list[MetricWriter]):
        self._writers = list(writers)

    def write_scalars(self, step, scalars):
        for writer in self._writers:
            writer.write_scalars(step, scalars)

    def write_texts(self, step, texts):
        for writer in self._writers:
            writer.write_texts(step, texts)

    def write_hparams(self, hparams):
        for writer in self._writers:
            writer.write_hparams(hparams)

    def flush(self):
        for writer in self._writers:
            writer.flush()

    def close(self):
        for writer in self._writers:
            writer.close()


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
    if not enabled:
        return MetricWriter()
    workdir = pathlib.Path(workdir)
    return MultiWriter(
        [
            _JsonlWriter(workdir),
            _TensorBoardWriter(workdir / TENSORBOARD_DIR, purge_step),
            _LoggingWriter(),
        ]
    )


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
            values[key] = _from_json_float(value) if kind == "scalars" else value
        if values:
            kept.append({**record, "values": values})
    kept.reverse()
    kept.sort(key=lambda r: r["step"])
    return kept
