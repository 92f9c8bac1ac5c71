"""Checkpoints of a run (a thin orbax wrapper) and the workdir's ``run_info.json``.

Layout::

    workdir/run_info.json           architecture keys + vocabulary fingerprint
    workdir/checkpoints/<step>/     the last ``max_to_keep`` states ("latest")
        state/                      the pytree (orbax StandardSave)
        meta/                       a JSON dict (epoch, lr, counters, ...)
    workdir/checkpoints/best/<n>/   the one best state; ``n`` counts best saves
        state/ meta/ info/          ``info`` holds the training step
    workdir/checkpoints_corrupt/    unreadable checkpoints, moved aside

Saves are synchronous and atomic: orbax writes a step into
``<step>.orbax-checkpoint-tmp*``, writes ``commit_success.txt`` into it and
renames it to ``<step>`` only when complete; older checkpoints are deleted only
after that rename. A run killed mid-save leaves the previous checkpoint
restorable; the temporary directory is ignored and removed when the next
``Checkpointer`` opens the directory. The best checkpoint is numbered by a save
counter, not by the training step, so replacing it is atomic even when a
resumed run saves a best state at a step it saved before.

A restore takes the newest checkpoint that reads. Newer ones that do not (a
truncated or damaged file) are then moved to ``checkpoints_corrupt/``, never
deleted, with one warning line each. When none reads, restoring raises
``WorkdirError`` and moves nothing: a fresh start would replace the run's best
checkpoint and results, and a rerun would no longer see that anything was lost.
A checkpoint that reads as saved but not onto the template (other shapes or
leaves) is another model's (``WorkdirError``), not a damaged one.

In a multi-host run every process calls the same methods (orbax synchronises
them and writes from the primary host); process 0 moves unreadable checkpoints
and writes ``run_info.json``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging as pylogging
import os
import pathlib
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from bnvae_jax import fileio
from bnvae_jax.errors import WorkdirError

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
CORRUPT_DIR = "checkpoints_corrupt"
RUN_INFO_FILE = "run_info.json"
_COMMIT_FILE = "commit_success.txt"
_MISSING = object()


def _jsonable(value: Any) -> Any:
    """``value`` with numpy/JAX scalars and arrays as Python numbers and lists.

    Tuples become lists; non-finite floats stay floats.
    """

    def plain(x):
        if not isinstance(x, np.generic | np.ndarray | jax.Array):
            raise TypeError(f"{type(x).__name__} {x!r} is not JSON-able")
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise TypeError("a typed PRNG key: store jax.random.key_data(key)")
        return np.asarray(x).tolist()

    return json.loads(json.dumps(value, default=plain))


def _manager(
    directory: pathlib.Path, item_names: tuple[str, ...], max_to_keep: int
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=item_names)


def complete_steps(folder: pathlib.Path) -> list[int]:
    """The numbered checkpoints in ``folder`` that finished saving, newest first."""
    found = folder.iterdir() if folder.is_dir() else ()
    done = [p for p in found if (p / _COMMIT_FILE).is_file()]
    return sorted((int(p.name) for p in done if p.name.isdigit()), reverse=True)


def _save(manager: ocp.CheckpointManager, step: int, state, meta, **info) -> None:
    """Saves ``state``, JSON ``meta`` and ``info`` as ``step``; returns when written."""
    items = {k: ocp.args.JsonSave(v) for k, v in {"meta": meta, **info}.items()}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state), **items)
    if not manager.save(step, args=args, force=True):
        raise RuntimeError(f"orbax skipped the save of {manager.directory}/{step}")
    manager.wait_until_finished()


def _restore(manager: ocp.CheckpointManager, step: int, template: Any) -> dict:
    """The ``state`` and ``meta`` of ``manager``'s checkpoint ``step``."""
    state, meta = ocp.args.StandardRestore(template), ocp.args.JsonRestore()
    return manager.restore(step, args=ocp.args.Composite(state=state, meta=meta))


def _readable(manager: ocp.CheckpointManager, step: int) -> bool:
    """Whether checkpoint ``step`` reads as saved (without a template)."""
    try:
        _restore(manager, step, None)
    except Exception:  # orbax's many error types
        return False
    return True


def _reason(error: Exception) -> str:
    """``error`` as a short one-line reason."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}"[:120]


@contextlib.contextmanager
def _quiet_failed_restores():
    """Silences what a failed orbax restore leaves behind.

    A restore that fails on one array closes its event loop while tensorstore
    finishes the other reads. Each then reports, through
    ``sys.unraisablehook``, that it cannot reach the closed loop; asyncio logs
    the failed reads as "exception was never retrieved" and Python warns of
    coroutines "never awaited": a traceback apiece, all dropped in this
    context, at whose end the leftovers are collected.
    """
    previous = sys.unraisablehook

    def hook(unraisable):
        if not (
            unraisable.exc_type is RuntimeError
            and str(unraisable.exc_value) == "Event loop is closed"
        ):
            previous(unraisable)

    asyncio_log = pylogging.getLogger("asyncio")
    disabled = asyncio_log.disabled
    sys.unraisablehook, asyncio_log.disabled = hook, True
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "coroutine .* never awaited", RuntimeWarning)
        try:
            yield
        finally:
            gc.collect()
            sys.unraisablehook, asyncio_log.disabled = previous, disabled


def _free_path(path: pathlib.Path) -> pathlib.Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first that does not exist."""
    candidate, copy = path, 0
    while candidate.exists():
        copy += 1
        candidate = path.with_name(f"{path.name}.{copy}")
    return candidate


class Checkpointer(fileio.Closing):
    """The run's "latest" and "best" checkpoints under ``workdir/checkpoints/``.

    Each checkpoint holds a state pytree (restored onto a template with the same
    structure, shapes and dtypes, or as saved when the template is None) and a
    JSON-able ``meta`` dict.
    """

    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 2):
        """Opens (and creates) the checkpoint directories of ``workdir``.

        Args:
            workdir: The run's directory.
            max_to_keep: How many "latest" checkpoints to keep (at least 1).
        """
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep={max_to_keep} must be at least 1")
        self.directory = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
        self.best_directory = self.directory / BEST_DIR
        self._latest = _manager(self.directory, ("state", "meta"), max_to_keep)
        self._best = _manager(self.best_directory, ("state", "meta", "info"), 1)

    def save_latest(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Saves ``state`` and ``meta`` as checkpoint ``step``; returns when written.

        Keeps the newest ``max_to_keep`` checkpoints. A checkpoint at ``step``
        (saved mid-epoch and again at the epoch's end, or by a run resumed from
        it) is replaced; later ones (from a run resumed from an earlier step)
        are deleted with a warning.

        Args:
            step: The training step (the checkpoint's name).
            state: A pytree of arrays and scalars.
            meta: A JSON-able dict (numpy/JAX scalars are converted).
        """
        step, meta = int(step), _jsonable(meta)
        for old in self._latest.all_steps():
            if old > step:
                msg = "deleting checkpoint %s/%d: this run saves step %d after it"
                logging.warning(msg, self.directory, old, step)
            if old >= step:
                self._latest.delete(old)
        _save(self._latest, step, state, meta)

    def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
        """The newest readable "latest" checkpoint, None when there is none.

        Args:
            template: A pytree with the saved structure, shapes and dtypes (e.g.
                a freshly initialised state); leaves come back with its types.

        Returns:
            ``(state, meta)`` or None.

        Raises:
            WorkdirError: a checkpoint does not fit ``template``, or none reads.
        """
        return self._restore_newest(self._latest, template)

    def save_best(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Replaces the best checkpoint by ``state`` and ``meta``; returns when done.

        Args:
            step: The training step (kept in the checkpoint's ``info``).
            state: A pytree of arrays and scalars.
            meta: A JSON-able dict (numpy/JAX scalars are converted).
        """
        count = max(self._best.all_steps(), default=-1) + 1
        _save(self._best, count, state, _jsonable(meta), info={"step": int(step)})

    def restore_best(self, template: Any) -> tuple[Any, dict]:
        """The best checkpoint (the newest readable one).

        Args:
            template: As for ``restore_latest``, or None for the tree as saved
                (another run's parameters, to initialise this one from).

        Returns:
            ``(state, meta)``.

        Raises:
            WorkdirError: there is no best checkpoint, it does not fit
                ``template``, or none reads.
        """
        restored = self._restore_newest(self._best, template)
        if restored is None:
            raise WorkdirError(f"{self.best_directory} holds no best checkpoint")
        return restored

    @_quiet_failed_restores()
    def _restore_newest(
        self, manager: ocp.CheckpointManager, template: Any
    ) -> tuple[Any, dict] | None:
        """``(state, meta)`` of ``manager``'s newest readable checkpoint.

        Unreadable newer ones are moved aside once an older one has been read.
        """
        unreadable = []
        for step in complete_steps(pathlib.Path(manager.directory)):
            folder = pathlib.Path(manager.directory) / str(step)
            try:
                restored = _restore(manager, step, template)
            except Exception as e:  # orbax's many error types: one line
                if template is not None and _readable(manager, step):
                    raise WorkdirError(
                        f"checkpoint {folder} does not fit this model "
                        f"({_reason(e)}); does this workdir hold a run of another "
                        "model? use a new --workdir"
                    ) from e
                unreadable.append((folder, _reason(e)))
                continue
            self._move_aside(manager, unreadable, folder)
            return restored["state"], restored["meta"]
        if unreadable:
            reasons = "; ".join(f"{f.name}: {why}" for f, why in unreadable)
            raise WorkdirError(
                f"no checkpoint in {manager.directory} can be read ({reasons}); "
                "use a new --workdir"
            )
        return None

    def _move_aside(self, manager, unreadable: list, restored: pathlib.Path) -> None:
        """Moves ``unreadable`` ``(folder, reason)`` into ``checkpoints_corrupt/``."""
        if not unreadable:
            return
        if jax.process_index() == 0:
            for folder, reason in unreadable:
                name = folder.relative_to(self.directory)
                dest = _free_path(self.directory.parent / CORRUPT_DIR / name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                folder.rename(dest)
                msg = "checkpoint %s is unreadable (%s); moved to %s, restored %s"
                done = restored.relative_to(self.directory)
                logging.warning(msg, name, reason, dest, done)
        ocp.multihost.sync_global_processes(f"moved aside before {restored}")
        manager.reload()

    def close(self) -> None:
        """Waits for pending operations and releases the managers."""
        self._latest.close()
        self._best.close()


# -- run_info.json -----------------------------------------------------------


def read_run_info(workdir: str | os.PathLike) -> dict | None:
    """The stored run description, None when the workdir has none.

    Raises:
        WorkdirError: the file is not a JSON object.
    """
    path = pathlib.Path(workdir) / RUN_INFO_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WorkdirError(
            f"{path} is not valid JSON ({e}); use a new --workdir"
        ) from e
    if not isinstance(info, dict):
        raise WorkdirError(f"{path} is not a JSON object; use a new --workdir")
    return info


def write_run_info(workdir: str | os.PathLike, info: Mapping[str, Any]) -> None:
    """Writes ``workdir/run_info.json`` atomically (process 0 only).

    Call ``check_run_info`` first: this overwrites whatever is there.

    Args:
        workdir: The run's directory.
        info: JSON-able description (e.g. architecture keys and the vocabulary
            fingerprint); keys may be dotted paths such as ``model.latent_dim``.
    """
    if jax.process_index() != 0:
        return
    fileio.write_json_atomic(pathlib.Path(workdir) / RUN_INFO_FILE, _jsonable(info))


def _lookup(info: Mapping[str, Any], key: str) -> Any:
    """``info[key]`` (or at the dotted path ``key``) as JSON holds it, or ``_MISSING``.

    As JSON holds it: lists for tuples, strings for non-finite floats.
    """
    try:
        value = info
        for part in [key] if key in info else key.split("."):
            value = value[part]
    except (KeyError, TypeError):  # a part missing, or not a dict
        return _MISSING
    return fileio.jsonable(_jsonable(value))


def check_run_info(
    workdir: str | os.PathLike, info: Mapping[str, Any], keys: Sequence[str]
) -> bool:
    """Checks that the run stored in ``workdir`` (if any) matches ``info`` on ``keys``.

    Args:
        workdir: The run's directory.
        info: The description of the run about to start.
        keys: The keys that must agree (dotted paths into nested dicts work).

    Returns:
        True if the workdir holds a matching run, False if it holds none.

    Raises:
        WorkdirError: one line naming the first key that differs.
    """
    stored = read_run_info(workdir)
    if stored is None:
        return False
    for key in keys:
        old, new = _lookup(stored, key), _lookup(info, key)
        if old != new:
            raise WorkdirError(
                f"workdir {workdir} holds a run with {key}={_show(old)}, "
                f"this config has {_show(new)}; use a new --workdir"
            )
    return True


def _show(value: Any) -> str:
    if value is _MISSING:
        return "<unset>"
    return value if isinstance(value, str) else json.dumps(value)
