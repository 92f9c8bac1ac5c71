"""Checkpoints of a run (a thin orbax wrapper) and the workdir's ``run_info.json``.

Layout::

    workdir/run_info.json           architecture keys + vocabulary fingerprint
    workdir/checkpoints/<step>/     the last ``max_to_keep`` states ("latest")
        state/                      the pytree (orbax StandardSave)
        meta/                       a JSON dict (epoch, lr, counters, ...)
    workdir/checkpoints/best/<n>/   the one best state; ``n`` counts best saves
        state/ meta/ info/          ``info`` holds the training step

Saves are synchronous (``enable_async_checkpointing=False``) and atomic: orbax
writes a step into ``<step>.orbax-checkpoint-tmp*``, writes
``commit_success.txt`` into it and renames it to ``<step>`` only when complete;
older checkpoints are deleted only after that rename. A run killed mid-save
leaves the previous checkpoint restorable, and the temporary directory is
ignored by ``all_steps`` and removed when the next ``Checkpointer`` opens the
directory. The best checkpoint is numbered by a save counter, not by the
training step, so replacing it is atomic even when a resumed run saves a best
state at a step it saved before.

In a multi-host run every process calls the same methods (orbax synchronises
them and writes from the primary host); ``write_run_info`` writes on process 0
only.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
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
RUN_INFO_FILE = "run_info.json"
_COMMIT_FILE = "commit_success.txt"
_MISSING = object()


def _jsonable(value: Any, where: str = "meta") -> Any:
    """``value`` with numpy/JAX scalars and arrays as Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            raise TypeError(
                f"{where} is a typed PRNG key: store jax.random.key_data(key)"
            )
        return np.asarray(value).tolist()
    raise TypeError(f"{where} is not JSON-able: {type(value).__name__}")


def _is_complete(step_dir: pathlib.Path) -> bool:
    return (step_dir / _COMMIT_FILE).is_file()


def _manager(
    directory: pathlib.Path, item_names: tuple[str, ...], max_to_keep: int
) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
    )
    return ocp.CheckpointManager(directory, options=options, item_names=item_names)


class Checkpointer:
    """The run's "latest" and "best" checkpoints under ``workdir/checkpoints/``.

    Each checkpoint holds a state pytree (restored onto a template with the same
    structure, shapes and dtypes) and a JSON-able ``meta`` dict.
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

    # -- latest -------------------------------------------------------------

    def _complete_steps(self, manager: ocp.CheckpointManager) -> list[int]:
        """Steps of ``manager`` that finished saving, newest first."""
        steps = []
        for step in sorted(manager.all_steps(), reverse=True):
            if _is_complete(pathlib.Path(manager.directory) / str(step)):
                steps.append(step)
            else:
                logging.warning(
                    "checkpoint %s/%d is incomplete (no %s); ignored",
                    manager.directory,
                    step,
                    _COMMIT_FILE,
                )
        return steps

    def latest_step(self) -> int | None:
        """The step of the newest complete "latest" checkpoint, None if none."""
        steps = self._complete_steps(self._latest)
        return steps[0] if steps else None

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
        step = int(step)
        meta = _jsonable(meta)
        for old in self._latest.all_steps():
            if old > step:
                logging.warning(
                    "deleting checkpoint %s/%d: this run saves step %d after it",
                    self.directory,
                    old,
                    step,
                )
            if old >= step:
                self._latest.delete(old)
        saved = self._latest.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self._latest.wait_until_finished()
        if not saved:
            raise RuntimeError(f"orbax skipped the save of step {step}")

    def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
        """The newest complete "latest" checkpoint, None when there is none.

        Args:
            template: A pytree with the saved structure, shapes and dtypes (e.g.
                a freshly initialised state); leaves come back with its types.

        Returns:
            ``(state, meta)`` or None.

        Raises:
            WorkdirError: the checkpoint does not fit ``template``.
        """
        steps = self._complete_steps(self._latest)
        if not steps:
            return None
        return self._restore(self._latest, steps[0], template)

    # -- best ---------------------------------------------------------------

    def best_step(self) -> int | None:
        """The training step of the best checkpoint, None if there is none."""
        indices = self._complete_steps(self._best)
        if not indices:
            return None
        info = self._best.restore(
            indices[0], args=ocp.args.Composite(info=ocp.args.JsonRestore())
        )["info"]
        return int(info["step"])

    def save_best(self, step: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Replaces the best checkpoint by ``state`` and ``meta``; returns when done.

        Args:
            step: The training step (kept in the checkpoint; see ``best_step``).
            state: A pytree of arrays and scalars.
            meta: A JSON-able dict (numpy/JAX scalars are converted).
        """
        meta = _jsonable(meta)
        index = max(self._best.all_steps(), default=-1) + 1
        saved = self._best.save(
            index,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                meta=ocp.args.JsonSave(meta),
                info=ocp.args.JsonSave({"step": int(step)}),
            ),
            force=True,
        )
        self._best.wait_until_finished()
        if not saved:
            raise RuntimeError(f"orbax skipped the best save of step {step}")

    def restore_best(self, template: Any) -> tuple[Any, dict]:
        """The best checkpoint.

        Args:
            template: As for ``restore_latest``.

        Returns:
            ``(state, meta)``.

        Raises:
            WorkdirError: there is no best checkpoint, or it does not fit
                ``template``.
        """
        indices = self._complete_steps(self._best)
        if not indices:
            raise WorkdirError(f"{self.best_directory} holds no best checkpoint")
        return self._restore(self._best, indices[0], template)

    def restore_best_params(self) -> dict:
        """The best checkpoint's parameters as saved (nested dict of arrays).

        Used to initialise another run from this one (no template needed).

        Raises:
            WorkdirError: there is no best checkpoint or it cannot be read.
        """
        indices = self._complete_steps(self._best)
        if not indices:
            raise WorkdirError(f"{self.best_directory} holds no best checkpoint")
        try:
            restored = self._best.restore(
                indices[0],
                args=ocp.args.Composite(state=ocp.args.StandardRestore()),
            )
        except Exception as e:  # reported as one line, logged in full
            logging.warning("restoring %s failed", self.best_directory, exc_info=True)
            raise WorkdirError(
                f"cannot read the best checkpoint in {self.best_directory} "
                f"({type(e).__name__})"
            ) from e
        return restored["state"]["params"]

    # -- common -------------------------------------------------------------

    def _restore(
        self, manager: ocp.CheckpointManager, step: int, template: Any
    ) -> tuple[Any, dict]:
        try:
            restored = manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(template),
                    meta=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # reported as one line, logged in full
            logging.warning(
                "restoring %s/%d failed", manager.directory, step, exc_info=True
            )
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise WorkdirError(
                f"cannot restore checkpoint {manager.directory}/{step} "
                f"({type(e).__name__}: {detail}); does this workdir hold a run "
                "of another model? use a new --workdir"
            ) from e
        return restored["state"], restored["meta"]

    def close(self) -> None:
        """Waits for pending operations and releases the managers."""
        self._latest.close()
        self._best.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- run_info.json -----------------------------------------------------------


def run_info_path(workdir: str | os.PathLike) -> pathlib.Path:
    """Where the workdir's run description lives."""
    return pathlib.Path(workdir) / RUN_INFO_FILE


def read_run_info(workdir: str | os.PathLike) -> dict | None:
    """The stored run description, None when the workdir has none.

    Raises:
        WorkdirError: the file is not a JSON object.
    """
    path = run_info_path(workdir)
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
    fileio.write_json_atomic(run_info_path(workdir), _jsonable(info, "info"))


def _lookup(info: Mapping[str, Any], key: str) -> Any:
    """``info[key]``, or the nested value at the dotted path ``key``."""
    if key in info:
        return info[key]
    value: Any = info
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _normalise(value: Any) -> Any:
    """As stored in JSON: tuples become lists, non-finite floats strings."""
    if value is _MISSING:
        return value
    value = _jsonable(value, "info")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.loads(json.dumps(value))


def _show(value: Any) -> str:
    if value is _MISSING:
        return "<unset>"
    return json.dumps(value) if not isinstance(value, str) else value


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
        old = _normalise(_lookup(stored, key))
        new = _normalise(_lookup(info, key))
        if old != new:
            raise WorkdirError(
                f"workdir {workdir} holds a run with {key}={_show(old)}, "
                f"this config has {_show(new)}; use a new --workdir"
            )
    return True
