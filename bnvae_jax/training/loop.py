"""The one training loop: every task's epochs, checkpoints, resume and devices.

A task (``bnvae_jax.tasks.text_vae``, ``bnvae_jax.tasks.dialog``) subclasses
``Trainer`` and supplies what differs between tasks: its batches, its train
step, how step metrics read as scalars, its validation and its selection and
stopping rule, and its final evaluation. This module owns the rest, once:

* the host-side ``LoopState`` saved with every checkpoint, so that a killed or
  interrupted run resumes at the same batch with the same random numbers;
* latest and best checkpoints, best-checkpoint reload for the final scores;
* the non-finite-loss guard (``DivergedError``, the last good checkpoint kept);
* progress bar, metric writer, Ctrl-C (the last completed step is saved);
* device placement and data parallelism (``parallel.Parallel``): the state is
  replicated, batches are sharded and placed one step ahead (``prefetch``),
  the step count is kept on the host, and metrics stay on the devices until a
  log or checkpoint point, so between two such points the loop never waits.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import pathlib
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax
import ml_collections
import numpy as np
import tqdm

from bnvae_jax import fileio
from bnvae_jax.errors import ConfigError, UserError
from bnvae_jax.training import checkpoints, parallel, writers


class DivergedError(UserError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class LoopState:
    """Host-side progress, saved with every checkpoint (JSON).

    Tasks subclass it for the state of their own rules (learning-rate plateau,
    patience); float fields that are infinite are written as null.
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
        d = dataclasses.asdict(self)
        return {k: None if _is_inf(v) else v for k, v in d.items()}

    @classmethod
    def from_json(cls, d: dict) -> LoopState:
        floats = {f.name for f in dataclasses.fields(cls) if f.type == "float"}
        return cls(
            **{k: math.inf if k in floats and v is None else v for k, v in d.items()}
        )


def _is_inf(value) -> bool:
    return isinstance(value, float) and math.isinf(value)


def state_tree(state) -> dict:
    """The arrays of a train state that a checkpoint holds."""
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


StepRunner = Callable[[Any, dict, LoopState, int], tuple[Any, dict]]


@dataclasses.dataclass
class Trainer:
    """What the loop touches. Tasks subclass it and fill in the hooks below.

    Attributes:
      config: the run's config (saved with the results).
      workdir: the run directory.
      ckpt: latest and best checkpoints.
      writer: the metric writer (process 0 writes).
      rng: the run's train key, replicated over the devices.
      eval_key: the key evaluation draws from.
      par: the devices and how steps and passes map onto them.
      run: the task's typed config (``resolve_config``).
      data: the task's data (``load_data``).
    """

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    ckpt: checkpoints.Checkpointer
    writer: writers.MetricWriter
    rng: jax.Array
    eval_key: jax.Array
    par: parallel.Parallel
    run: Any
    data: Any

    loop_state_class: ClassVar[type[LoopState]] = LoopState
    # Step metrics summed into ``LoopState.epoch_sums``; each ``<k>_sum`` is
    # logged at the epoch's end as ``epoch/train_<k>`` (divided by ``count``).
    sum_keys: ClassVar[tuple[str, ...]] = ("rec_sum", "kl_sum", "count", "tokens")

    @property
    def settings(self):
        """The run's loop settings.

        Read: ``epochs``, ``max_steps``, ``log_every_steps``,
        ``checkpoint_every_steps`` and ``min_batch``.
        """
        raise NotImplementedError

    # -- the task's hooks: building a run (``setup``) ---------------------------

    @staticmethod
    def validate_config(config: ml_collections.ConfigDict) -> None:
        """Raises ``ConfigError`` for any value the task cannot run with."""
        raise NotImplementedError

    @staticmethod
    def load_data(config: ml_collections.ConfigDict, workdir: pathlib.Path):
        """The task's data (``data.vocab`` is its vocabulary)."""
        raise NotImplementedError

    @staticmethod
    def run_info(config: ml_collections.ConfigDict, data) -> dict:
        """What a workdir's checkpoints depend on (shapes, vocabulary)."""
        raise NotImplementedError

    @staticmethod
    def resolve_config(config: ml_collections.ConfigDict, data):
        """The typed run config (``.seed`` is the run's seed)."""
        raise NotImplementedError

    @staticmethod
    def eval_key_of(run) -> jax.Array:
        raise NotImplementedError

    @staticmethod
    def task_fields(config, run, data, par: parallel.Parallel) -> dict:
        """The task's own trainer fields (model, batch plan, ...)."""
        return {}

    def init_state(self, key: jax.Array):
        """A fresh train state (parameters from ``key``)."""
        raise NotImplementedError

    # -- the task's hooks: training ------------------------------------------

    def new_loop(self) -> LoopState:
        """The loop state of a run that starts from scratch."""
        return self.loop_state_class()

    def fresh_start(self, state):
        """The state of a run that starts from scratch (e.g. another run's encoder)."""
        return state

    def num_positions(self) -> int:
        """Batch positions in one epoch."""
        raise NotImplementedError

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The epoch's order, a pure function of the run seed and ``epoch``."""
        raise NotImplementedError

    def make_batch(self, order: np.ndarray, position: int) -> tuple[Any, int]:
        """The host batch at ``position`` and its number of real rows."""
        raise NotImplementedError

    def train_arrays(self, batch) -> dict:
        """The numpy arrays of a host batch that the train step reads."""
        raise NotImplementedError

    def batch_tokens(self, batch) -> int:
        return 0

    def make_runner(self) -> StepRunner:
        """``run(state, arrays, loop, step) -> (state, metrics)`` for one batch."""
        raise NotImplementedError

    def step_loss(self, metrics: dict) -> float:
        """The loss of one step's host metrics (checked to be finite)."""
        raise NotImplementedError

    def train_scalars(self, host: list[dict], loop: LoopState) -> dict:
        """The logged ``train/*`` scalars of the steps in ``host``."""
        raise NotImplementedError

    def validate_epoch(self, state) -> tuple[dict, float]:
        """Validation metrics and the loss that selects the best checkpoint."""
        raise NotImplementedError

    def after_validation(
        self, state, loop: LoopState, val: dict, improved: bool
    ) -> tuple[Any, dict]:
        """The task's rule after validation (LR decay, patience): state, scalars."""
        return state, {}

    def epoch_message(self, epoch: int, val: dict, loop: LoopState) -> str:
        raise NotImplementedError

    def final_results(self, state, loop: LoopState) -> dict:
        """Scores of the selected state (``state`` is the best checkpoint)."""
        raise NotImplementedError

    def method_name(self) -> str:
        raise NotImplementedError

    def write_outputs(self, results: dict) -> None:
        """Files beside ``results.json`` (process 0)."""

    # -- shared by every task ------------------------------------------------

    def put_batch(self, batch) -> dict:
        """A training batch on the devices."""
        return self.par.shard_batch(self.train_arrays(batch))

    def save_latest(self, state, loop: LoopState) -> None:
        self.ckpt.save_latest(int(state.step), state_tree(state), loop.to_json())


def restore_or_start(trainer: Trainer, state) -> tuple[Any, LoopState]:
    """The latest checkpoint and its loop state, or a fresh start."""
    restored = trainer.ckpt.restore_latest(state_tree(state))
    if restored is None:
        return trainer.fresh_start(state), trainer.new_loop()
    tree, meta = restored
    logging.info("resuming from step %d", int(tree["step"]))
    state = trainer.par.replicate(state.replace(**tree))
    return state, trainer.loop_state_class.from_json(meta)


def flush(trainer: Trainer, pending: list, loop: LoopState, step: int) -> dict:
    """Moves per-step device metrics to the host, checks them, logs the mean."""
    if not pending:
        return {}
    host = jax.device_get(pending)
    pending.clear()
    for offset, m in enumerate(host):
        if not (np.isfinite(trainer.step_loss(m)) and np.isfinite(m["grad_norm"])):
            bad = step - len(host) + offset + 1
            raise DivergedError(
                f"training loss became non-finite at step {bad} (epoch "
                f"{loop.epoch}); the last good checkpoint is kept"
            )
    sums = loop.epoch_sums
    for m in host:
        for k in trainer.sum_keys:
            sums[k] = sums.get(k, 0.0) + float(m[k])
    scalars = trainer.train_scalars(host, loop)
    trainer.writer.write_scalars(step, scalars)
    return scalars


def reached_max_steps(trainer: Trainer, step: int) -> bool:
    limit = trainer.settings.max_steps
    return bool(limit) and step >= limit


def _epoch_batches(trainer: Trainer, order, loop: LoopState, bar) -> Iterator:
    """``(position, batch)`` of the epoch's usable batches from ``loop.position``.

    Batches with fewer than ``min_batch`` real rows are skipped (the bar still
    counts them).
    """
    for position in range(loop.position, trainer.num_positions()):
        batch, real = trainer.make_batch(order, position)
        if real < trainer.settings.min_batch:
            bar.update(1)
            continue
        yield position, batch


def prefetch(items, place, size: int = 2):
    """Yields ``(item, place(item))`` with the next ``size - 1`` items placed.

    ``place`` puts a batch on the devices; JAX dispatches steps asynchronously,
    so placing batch i+1 before step i is awaited overlaps the host work and
    the transfer with the device's computation.
    """
    queue = collections.deque()
    for item in items:
        queue.append((item, place(item)))
        if len(queue) >= size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def train_epochs(trainer: Trainer, state, loop: LoopState):
    """Runs epochs from ``loop`` onwards; returns the final state.

    Stops when the task's rule says so (``loop.done``), after ``epochs`` or at
    ``max_steps`` (a rerun with a larger limit carries on). Ctrl-C saves the
    last completed step before exiting.
    """
    cfg = trainer.settings
    run_step = trainer.make_runner()
    state = trainer.par.replicate(state)
    step = int(state.step)  # the host's count; the device's is not read again
    pending: list = []  # device metrics not yet checked and logged
    busy = False  # inside a step or an epoch's end: no consistent state to save
    total = trainer.num_positions()
    try:
        while not loop.done and loop.epoch < cfg.epochs:
            if reached_max_steps(trainer, step):
                break
            order = trainer.epoch_order(loop.epoch)
            bar = tqdm.tqdm(
                total=total,
                initial=loop.position,
                desc=f"epoch {loop.epoch}",
                unit="batch",
                leave=False,
            )
            usable = _epoch_batches(trainer, order, loop, bar)
            since = time.perf_counter()  # training time not yet in the loop state
            for (position, batch), arrays in prefetch(
                usable, lambda item: trainer.put_batch(item[1])
            ):
                bar.update(1)
                busy = True
                state, metrics = run_step(state, arrays, loop, step)
                busy = False
                step, loop.position = step + 1, position + 1
                pending.append(metrics)
                loop.train_tokens += trainer.batch_tokens(batch)
                log = step % cfg.log_every_steps == 0
                save = step % cfg.checkpoint_every_steps == 0 and position + 1 < total
                if log or save:
                    scalars = flush(trainer, pending, loop, step)
                    loop.train_seconds += time.perf_counter() - since
                    if log and "train/loss" in scalars:
                        bar.set_postfix(loss=f"{scalars['train/loss']:.2f}")
                    if save:
                        trainer.save_latest(state, loop)
                    since = time.perf_counter()
                if reached_max_steps(trainer, step):
                    break
            else:
                loop.position = total  # trailing batches too small to use
            bar.close()
            flush(trainer, pending, loop, step)
            loop.train_seconds += time.perf_counter() - since
            busy = True
            if loop.position >= total:
                state = end_of_epoch(trainer, state, loop)
            elif loop.best_epoch < 0:
                # Stopped by max_steps before any validation: select this state.
                state = end_of_epoch(trainer, state, loop, advance=False)
            busy = False
            trainer.save_latest(state, loop)
    except KeyboardInterrupt:
        # ``state`` is the last completed step and ``loop`` matches it, unless
        # the interrupt came inside a step (e.g. between the encoder and the
        # decoder updates of an aggressive batch) or inside an epoch's end (its
        # rule may have counted the epoch, which a rerun of it would count
        # again): then the last checkpoint stands, and the resumed run repeats
        # what followed it, with the same batches and random numbers.
        flush(trainer, pending, loop, step)
        if not busy:
            trainer.save_latest(state, loop)
        raise
    return state


def end_of_epoch(trainer: Trainer, state, loop: LoopState, advance: bool = True):
    """Validation, best checkpoint and the task's rule; moves ``loop`` on an epoch."""
    step, epoch = int(state.step), loop.epoch
    val, val_loss = trainer.validate_epoch(state)
    improved = val_loss < loop.best_loss
    if improved:
        loop.best_loss, loop.best_epoch = val_loss, epoch
        trainer.ckpt.save_best(step, state_tree(state), {"epoch": epoch, "valid": val})
    sums = loop.epoch_sums
    count = max(sums.get("count", 0.0), 1.0)
    scalars = {f"valid/{k}": v for k, v in val.items()}
    scalars["epoch"] = epoch
    for key in trainer.sum_keys:
        if key.endswith("_sum"):
            scalars[f"epoch/train_{key[:-4]}"] = sums.get(key, 0.0) / count
    state, extra = trainer.after_validation(state, loop, val, improved)
    scalars.update(extra)
    # Metrics a method does not define (vMF has no MI) are None: not logged.
    trainer.writer.write_scalars(
        step, {k: v for k, v in scalars.items() if v is not None}
    )
    logging.info(trainer.epoch_message(epoch, val, loop))
    if advance:
        loop.epoch += 1
        loop.position = 0
        loop.epoch_sums = {}
    return state


# The loop's settings every task's ``train`` section holds, and their least values.
SETTINGS_MIN = (
    ("epochs", 1),
    ("max_steps", 0),  # 0: no limit
    ("min_batch", 1),
    ("checkpoint_every_steps", 1),
    ("log_every_steps", 1),
)


def check_settings(settings, section: str = "train") -> None:
    """Raises a one-line ``ConfigError`` for a loop setting no run can use.

    ``settings`` is a config section or any object with the settings as
    attributes; ``section`` names it in the message.
    """
    for name, least in SETTINGS_MIN:
        value = getattr(settings, name)
        if value < least:
            raise ConfigError(f"{section}.{name} must be >= {least}, got {value}")


def setup_devices(config: ml_collections.ConfigDict) -> parallel.Parallel:
    """Joins the hosts (multi-host runs) and picks the devices the run uses.

    Raises:
      ConfigError: the hosts were given different configs, a host lacks the
        devices asked for, or data.batch_size does not divide over them.
    """
    cfg = parallel.config_from(config)
    parallel.initialize_distributed(cfg)
    par = parallel.build(cfg, config.data.batch_size)
    par.check_hosts_agree(config)
    par.check_divides(config.data.batch_size, "data.batch_size")
    logging.info(par.describe(config.data.batch_size))
    return par


def setup(
    cls: type[Trainer],
    config: ml_collections.ConfigDict,
    workdir: str,
    write: bool = True,
) -> tuple[Trainer, Any]:
    """Reads data, checks the workdir, builds the task's trainer and a fresh state.

    The run's key ``key(run.seed)`` gives the initial parameters
    (``fold_in(key, 0)``) and the train steps' randomness (``fold_in(key, 1)``).
    With ``write`` (training), records the vocabulary, run info and resolved
    config in the workdir; evaluation only reads them.
    """
    cls.validate_config(config)
    par = setup_devices(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Process 0 first: it may write files into the shared workdir.
    data = parallel.first_host_then_others(
        lambda: cls.load_data(config, workdir), "reading the data"
    )
    info = cls.run_info(config, data)
    ckpt, writer = open_run(workdir, info, write)
    run = cls.resolve_config(config, data)
    root = jax.random.key(run.seed)
    trainer = cls(
        config=config,
        workdir=workdir,
        ckpt=ckpt,
        writer=writer,
        rng=par.replicate(jax.random.fold_in(root, 1)),
        eval_key=cls.eval_key_of(run),
        par=par,
        run=run,
        data=data,
        **cls.task_fields(config, run, data, par),
    )
    state = par.replicate(trainer.init_state(jax.random.fold_in(root, 0)))
    if write:
        record_run(workdir, data.vocab, info, config)
    return trainer, state


def open_run(
    workdir: pathlib.Path, info: dict, write: bool
) -> tuple[checkpoints.Checkpointer, writers.MetricWriter]:
    """Checks ``workdir`` holds this run (or none) and opens its checkpoints and writer.

    Raises:
      WorkdirError: the workdir holds a run with another architecture or data.
    """
    checkpoints.check_run_info(workdir, info, keys=list(info))
    ckpt = checkpoints.Checkpointer(workdir)
    resume_step = ckpt.latest_step()
    # TensorBoard hides events a killed run logged after its last checkpoint.
    writer = writers.create_writer(
        str(workdir),
        enabled=write and jax.process_index() == 0,
        purge_step=None if resume_step is None else resume_step + 1,
    )
    return ckpt, writer


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


def final_results(trainer: Trainer, state, loop: LoopState) -> dict:
    """The best checkpoint's scores (the task's) and what every run records."""
    steps_run = int(state.step)
    if loop.best_epoch >= 0:
        tree, _ = trainer.ckpt.restore_best(state_tree(state))
        state = state.replace(**tree)
    results = trainer.final_results(state, loop)
    results.update(
        method=trainer.method_name(),
        steps=steps_run,
        epochs_run=loop.epoch,
        best_epoch=loop.best_epoch,
        train_seconds=loop.train_seconds,
        num_devices=trainer.par.num_devices,
        num_hosts=trainer.par.num_hosts,
        parallel_mode=trainer.par.mode,
        config=json.loads(trainer.config.to_json_best_effort()),
    )
    return results


def run(trainer: Trainer, state) -> dict:
    """Trains (or resumes) and writes ``results.json``; returns the results.

    A finished run reruns as a no-op returning its saved results.
    """
    try:
        state, loop = restore_or_start(trainer, state)
        start_step = int(state.step)
        state = train_epochs(trainer, state, loop)
        saved = trainer.workdir / "results.json"
        if int(state.step) == start_step and saved.exists():
            logging.info("%s: nothing left to train; results as saved", trainer.workdir)
            return json.loads(saved.read_text())
        results = final_results(trainer, state, loop)
        steps_run = results["steps"]
        if jax.process_index() == 0:
            fileio.write_json_atomic(saved, results)
            trainer.write_outputs(results)
        trainer.writer.write_scalars(
            steps_run,
            {
                f"final/{s}/{k}": v
                for s in ("valid", "test")
                for k, v in results[s].items()
                if isinstance(v, float | int) and not isinstance(v, bool)
            },
        )
        return results
    finally:
        trainer.writer.close()
        trainer.ckpt.close()
