"""Small file helpers: atomic writes so an interrupted run never leaves half a file."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import sys
import tempfile


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path`` and renames it over."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Writes ``data`` as indented JSON (numpy scalars converted, NaN as a string)."""
    write_text_atomic(
        path, json.dumps(_jsonable(data), indent=2, sort_keys=True) + "\n"
    )


@contextlib.contextmanager
def quiet_broken_pipe():
    """Output piped into ``head`` and the like: stop quietly when it closes."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader is gone: point stdout at /dev/null so that exiting does
        # not try (and fail) to flush it once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
