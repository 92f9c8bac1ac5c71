"""The one training loop, as functions: epochs, checkpoints, resume, NaN guard.

A task's ``train_and_evaluate`` builds its state, batches and steps, opens the
workdir (``open_context``), restores (``restore``) and calls ``train`` with a
few plain callables:

* ``epoch_batches(epoch, start)`` yields ``(position, arrays, tokens)`` for the
  epoch's batch positions from ``start`` on: the host arrays of the train step
  (None for a batch too small to use) and its token count. The order is a pure
  function of the run's seed and ``epoch``, so a resumed run sees the same
  batches.
* ``step(state, arrays, loop, step) -> (state, metrics)``: one update on
  device arrays. Metrics are device scalars with at least ``loss_sum``,
  ``count`` and ``grad_norm``; keys ending in ``_sum`` are summed over the
  epoch and logged as ``epoch/train_<name>`` (per example).
* ``summarize(host_metrics, loop) -> scalars``: the ``train/*`` scalars logged
  every ``log_every_steps``.
* ``evaluate(state) -> (metrics, loss)``: validation after every epoch; a lower
  loss than any before saves the best checkpoint.
* ``rule(state, loop, metrics, improved) -> (state, scalars)``: the task's
  learning-rate and stopping rule (``training.rules``); sets ``loop.done``.
* ``final(state, loop) -> results``: the scores of the best checkpoint.

The loop owns, once: the host-side ``LoopState`` saved with every checkpoint
(a killed run resumes at the same batch with the same random numbers), latest
and best checkpoints, the non-finite-loss guard, progress bar and metric
writer, Ctrl-C (the last completed step is saved), and device placement: the
state is replicated, batches are sharded and placed one step ahead, the step
count is kept on the host, and metrics stay on the devices until a log or
checkpoint point.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import math
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from bnvae_jax import fileio, parallel
from bnvae_jax.errors import ConfigError, UserError
from bnvae_jax.training import checkpoints, writers


class DivergedError(UserError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class LoopState:
    """Host-side progress, saved with every checkpoint (JSON).

    Tasks subclass it for the state of their rules (``training.rules``);
    infinite floats are written as null.
    """

    epoch: int = 0  # current epoch
    position: int = 0  # next batch position within the epoch's order
    best_loss: float = math.inf
    best_epoch: int = -1
    train_seconds: float = 0.0
    train_tokens: int = 0
    done: bool = False  # stopped for good by the task's rule
    epoch_sums: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            k: None if isinstance(v, float) and math.isinf(v) else v
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_json(cls, d: dict) -> LoopState:
        floats = {f.name for f in dataclasses.fields(cls) if f.type == "float"}
        return cls(
            **{k: math.inf if k in floats and v is None else v for k, v in d.items()}
        )


@dataclasses.dataclass(frozen=True)
class Context:
    """Where a run lives and what it runs on.

    Attributes:
      workdir: the run directory.
      ckpt: its latest and best checkpoints.
      writer: the metric writer (process 0 writes).
      par: the devices and how steps and passes map onto them.
      settings: the loop settings: ``epochs``, ``max_steps``, ``min_batch``,
        ``log_every_steps`` and ``checkpoint_every_steps`` (``config.SETTINGS_MIN``).
    """

    workdir: pathlib.Path
    ckpt: checkpoints.Checkpointer
    writer: writers.MetricWriter
    par: parallel.Parallel
    settings: Any


def state_tree(state) -> dict:
    """The arrays of a train state that a checkpoint holds."""
    return {
        k: getattr(state, k) for k in ("step", "params", "batch_stats", "opt_state")
    }


def setup_devices(run, config: ml_collections.ConfigDict) -> parallel.Parallel:
    """Picks the devices the typed ``run`` uses (multi-host runs joined in main).

    ``config`` is the raw config the hosts compare.

    Raises:
      ConfigError: the hosts were given different configs, a host lacks the
        devices asked for, or data.batch_size does not divide over them.
    """
    batch_size = run.data.batch_size
    par = parallel.build(run.parallel, batch_size)
    par.check_hosts_agree(config)
    if batch_size % par.num_devices:
        raise ConfigError(
            f"data.batch_size={batch_size} does not divide over {par.num_devices} "
            f"devices; use a multiple of {par.num_devices} or set parallel.num_devices"
        )
    logging.info(par.describe(batch_size))
    return par


def open_context(
    workdir: str | pathlib.Path,
    info: dict,
    par: parallel.Parallel,
    settings,
    write: bool = True,
) -> Context:
    """Checks ``workdir`` holds this run (or none) and opens checkpoints and writer.

    Raises:
      WorkdirError: the workdir holds a run with another architecture or data.
    """
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints.check_run_info(workdir, info, keys=list(info))
    writer = writers.MetricWriter(
        workdir if write and jax.process_index() == 0 else None
    )
    return Context(workdir, checkpoints.Checkpointer(workdir), writer, par, settings)


def record_run(
    workdir: pathlib.Path, vocab, info: dict, config: ml_collections.ConfigDict
) -> None:
    """Vocabulary, run info and the resolved config, written by process 0."""
    if jax.process_index() != 0:
        return
    vocab.save(workdir / "vocab.txt")
    checkpoints.write_run_info(workdir, info)
    fileio.write_text_atomic(
        workdir / "config.json", config.to_json_best_effort(indent=2)
    )


def restore(ctx: Context, state, loop_class: type[LoopState] = LoopState):
    """``(state, loop)`` of the latest checkpoint, or None when there is none."""
    restored = ctx.ckpt.restore_latest(state_tree(state))
    if restored is None:
        return None
    tree, meta = restored
    logging.info("resuming from step %d", int(tree["step"]))
    # TensorBoard hides what a killed run logged after the checkpoint restored
    # (the newest readable one: a damaged newer one was moved aside).
    ctx.writer.purge_step = int(tree["step"]) + 1
    return ctx.par.replicate(state.replace(**tree)), loop_class.from_json(meta)


def save_latest(ctx: Context, state, loop: LoopState) -> None:
    ctx.ckpt.save_latest(int(state.step), state_tree(state), loop.to_json())


def flush(ctx, pending: list, loop: LoopState, step: int, summarize) -> dict:
    """Moves per-step device metrics to the host, checks them, logs them."""
    if not pending:
        return {}
    host = jax.device_get(pending)
    pending.clear()
    for offset, m in enumerate(host):
        if not (np.isfinite(m["loss_sum"]) and np.isfinite(m["grad_norm"])):
            raise DivergedError(
                f"training loss became non-finite at step "
                f"{step - len(host) + offset + 1} (epoch {loop.epoch}); the last "
                "good checkpoint is kept"
            )
        for k, v in m.items():
            if k.endswith("_sum") or k == "count":
                loop.epoch_sums[k] = loop.epoch_sums.get(k, 0.0) + float(v)
    scalars = summarize(host, loop)
    ctx.writer.write_scalars(step, scalars)
    return scalars


def prefetch(items, place, size: int = 2):
    """Yields ``(item, place(item))`` with the next ``size - 1`` items placed.

    JAX dispatches steps asynchronously, so placing batch i+1 before step i is
    awaited overlaps the host work and the transfer with the computation.
    """
    queue = collections.deque()
    for item in items:
        queue.append((item, place(item)))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def train_epochs(ctx: Context, state, loop: LoopState, *, num_batches: int, **fns):
    """Runs epochs from ``loop`` on; returns the final state.

    ``fns``: ``epoch_batches``, ``step``, ``summarize``, ``evaluate`` and ``rule``
    (the module docstring says what each does); ``num_batches`` is the number
    of batch positions of an epoch.

    Stops when the task's rule says so (``loop.done``), after ``epochs`` or at
    ``max_steps`` (a rerun with a larger limit carries on). Ctrl-C saves the
    last completed step before exiting.
    """
    cfg = ctx.settings
    state = ctx.par.replicate(state)
    step = int(state.step)  # the host's count; the device's is not read again
    pending: list = []  # device metrics not yet checked and logged
    busy = False  # inside a step or an epoch's end: no consistent state to save

    def at_limit():
        return bool(cfg.max_steps) and step >= cfg.max_steps

    try:
        while not loop.done and loop.epoch < cfg.epochs and not at_limit():
            # The bar counts every position; batches too small to use are skipped.
            bar = tqdm.tqdm(
                fns["epoch_batches"](loop.epoch, loop.position),
                total=num_batches,
                initial=loop.position,
                desc=f"epoch {loop.epoch}",
                unit="batch",
                leave=False,
            )
            since = time.perf_counter()  # training time not yet in the loop state
            batches = (item for item in bar if item[1] is not None)
            for (position, _, tokens), arrays in prefetch(
                batches, lambda item: ctx.par.shard_batch(item[1])
            ):
                busy = True
                state, metrics = fns["step"](state, arrays, loop, step)
                busy = False
                step, loop.position = step + 1, position + 1
                pending.append(metrics)
                loop.train_tokens += tokens
                log = step % cfg.log_every_steps == 0
                # No periodic save on an epoch's last batch: its end saves next.
                save = step % cfg.checkpoint_every_steps == 0
                save = save and position + 1 < num_batches
                if log or save:
                    scalars = flush(ctx, pending, loop, step, fns["summarize"])
                    loop.train_seconds += time.perf_counter() - since
                    since = time.perf_counter()
                    if log and "train/loss" in scalars:
                        bar.set_postfix(loss=f"{scalars['train/loss']:.2f}")
                    if save:
                        save_latest(ctx, state, loop)
                if at_limit():
                    break
            else:
                loop.position = num_batches  # trailing batches too small to use
            bar.close()
            flush(ctx, pending, loop, step, fns["summarize"])
            loop.train_seconds += time.perf_counter() - since
            busy, ended = True, loop.position >= num_batches
            # Stopped by max_steps before any validation: this state is selected.
            if ended or loop.best_epoch < 0:
                state = end_of_epoch(ctx, state, loop, advance=ended, **fns)
            busy = False
            save_latest(ctx, state, loop)
    except KeyboardInterrupt:
        # ``state`` is the last completed step and ``loop`` matches it, unless
        # the interrupt came inside a step (between the encoder and decoder
        # updates of an aggressive batch) or inside an epoch's end (its rule
        # may have counted the epoch): then the last checkpoint stands, and
        # the resumed run repeats what followed it with the same numbers.
        flush(ctx, pending, loop, step, fns["summarize"])
        if not busy:
            save_latest(ctx, state, loop)
        raise
    return state


def end_of_epoch(ctx, state, loop: LoopState, advance: bool = True, **fns):
    """Validation, best checkpoint and the task's rule; moves ``loop`` on an epoch."""
    step, epoch = int(state.step), loop.epoch
    val, val_loss = fns["evaluate"](state)
    improved = val_loss < loop.best_loss
    if improved:
        loop.best_loss, loop.best_epoch = val_loss, epoch
        ctx.ckpt.save_best(step, state_tree(state), {"epoch": epoch, "valid": val})
    sums = loop.epoch_sums
    count = max(sums.get("count", 0.0), 1.0)
    train = {k[:-4]: total / count for k, total in sums.items() if k.endswith("_sum")}
    scalars = {f"valid/{k}": v for k, v in val.items()} | {"epoch": epoch}
    scalars |= {f"epoch/train_{k}": v for k, v in train.items()}
    state, extra = fns["rule"](state, loop, val, improved)
    scalars.update(extra)
    # Metrics a method does not define (vMF has no MI) are None: not logged.
    ctx.writer.write_scalars(step, {k: v for k, v in scalars.items() if v is not None})
    if advance:
        loop.epoch += 1
        loop.position = 0
        loop.epoch_sums = {}
    return state


def task_fns(task, s) -> dict:
    """``train_epochs``' callables from a task module's functions of its setup ``s``.

    ``task`` defines ``epoch_batches(s, epoch, start)``, ``num_batches(s)``,
    ``make_step(s)``, ``summarize(host, loop)``, ``evaluate(s, state)``,
    ``rule(s, state, loop, metrics, improved)`` and ``final(s, state, loop)``.
    """
    return dict(
        epoch_batches=functools.partial(task.epoch_batches, s),
        num_batches=task.num_batches(s),
        step=task.make_step(s),
        summarize=task.summarize,
        evaluate=functools.partial(task.evaluate, s),
        rule=functools.partial(task.rule, s),
        final=functools.partial(task.final, s),
    )


def train(
    ctx: Context,
    state,
    loop: LoopState,
    *,
    method: str,
    config: ml_collections.ConfigDict,
    **fns: Callable,
) -> dict:
    """Trains from ``(state, loop)``, scores the best state, writes ``results.json``.

    ``fns`` are ``train_epochs``' callables and ``final`` (``task_fns``).

    A finished run reruns as a no-op returning its saved results. The results
    are ``final(best_state, loop)`` plus what every run records (method, steps,
    epochs, timing, devices, config). Closes the writer and the checkpoints.
    """
    try:
        start_step = int(state.step)
        state = train_epochs(ctx, state, loop, **fns)
        saved, steps_run = ctx.workdir / "results.json", int(state.step)
        if steps_run == start_step and saved.exists():
            logging.info("%s: nothing left to train; results as saved", ctx.workdir)
            return json.loads(saved.read_text())
        if loop.best_epoch >= 0:
            tree, _ = ctx.ckpt.restore_best(state_tree(state))
            state = state.replace(**tree)
        results = fns["final"](state, loop)
        results.update(
            method=method,
            steps=steps_run,
            epochs_run=loop.epoch,
            best_epoch=loop.best_epoch,
            train_seconds=loop.train_seconds,
            num_devices=ctx.par.num_devices,
            num_hosts=ctx.par.num_hosts,
            parallel_mode=ctx.par.mode,
            config=json.loads(config.to_json_best_effort()),
        )
        if jax.process_index() == 0:
            fileio.write_json_atomic(saved, results)
        finals = {
            f"final/{s}/{k}": v
            for s in ("valid", "test")
            for k, v in results.get(s, {}).items()
            if isinstance(v, float | int) and not isinstance(v, bool)
        }
        ctx.writer.write_scalars(steps_run, finals)
        return results
    finally:
        ctx.writer.close()
        ctx.ckpt.close()
