"""Small file helpers: UTF-8 reads with one-line errors, atomic writes.

An atomic write never leaves half a file behind an interrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import re
import sys
import tempfile

from bnvae_jax.errors import DataError


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of the file ``path``, without a leading byte order mark.

    Raises:
        DataError: the file is missing, a directory or unreadable, or it is not
            UTF-8 (the message names the line and column).
    """
    try:
        return pathlib.Path(path).read_bytes().decode("utf-8-sig")  # drops a BOM
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:  # e.object: the bytes after a BOM
        breaks = list(re.finditer(rb"\r\n|\r|\n", e.object[: e.start]))
        line_start = breaks[-1].end() if breaks else 0
        raise DataError(
            f"{path} line {len(breaks) + 1}: not valid UTF-8 "
            f"(byte 0x{e.object[e.start]:02x} at column {e.start - line_start + 1})"
        ) from None


def write_text_atomic(path: str | os.PathLike, text: str | bytes) -> None:
    """Writes ``text`` (UTF-8) or bytes to a file beside ``path``, renamed over it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(value):
    """``value`` as JSON holds it: numpy scalars as Python ones, NaN/inf as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Writes ``data`` as indented JSON (numpy scalars converted, NaN as a string)."""
    write_text_atomic(path, json.dumps(jsonable(data), indent=2, sort_keys=True) + "\n")


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


class Closing:
    """A base for objects a ``with`` block closes: ``__exit__`` calls ``close()``."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
