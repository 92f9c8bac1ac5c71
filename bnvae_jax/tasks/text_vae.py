"""``train_and_evaluate``: the one train loop, with plateau decay and exact resume."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import pathlib
import time

import jax
import ml_collections
import numpy as np
import tqdm

from bnvae_jax import fileio
from bnvae_jax.data import batching, datasets
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import UserError, WorkdirError
from bnvae_jax.evaluation import decoding
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import (
    bn_health,
    checkpoints,
    config_lib,
    objectives,
    parallel,
    schedules,
    steps,
    writers,
)
from bnvae_jax.training.config_lib import RunConfig

# The arrays a train step reads; evaluation batches also carry sentence ids.
TRAIN_KEYS = ("tokens", "lengths", "mask")


class DivergedError(UserError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class LoopState:
    """Host-side progress, saved with every checkpoint (JSON)."""

    epoch: int = 0  # current epoch
    position: int = 0  # next batch position within the epoch's order
    learning_rate: float = 1.0
    decay_count: int = 0
    best_loss: float = math.inf
    best_epoch: int = -1
    ref_loss: float = 1e4  # the reference's last non-worsening validation loss
    not_improved: int = 0
    train_seconds: float = 0.0
    train_tokens: int = 0
    done: bool = False  # stopped for good by the max_decay-th LR decay
    epoch_sums: dict = dataclasses.field(default_factory=dict)
    # agg_vae's controller: aggressive updates until validation MI drops.
    aggressive: bool = True
    pre_mi: float = 0.0
    inner_steps: int = 0  # encoder-only steps taken (agg_vae)
    bn_warning: str = ""  # BN bound problems last warned about (bn_health.monitor)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["best_loss"] = None if math.isinf(self.best_loss) else self.best_loss
        return d

    @classmethod
    def from_json(cls, d: dict) -> LoopState:
        d = dict(d)
        d["best_loss"] = math.inf if d.get("best_loss") is None else d["best_loss"]
        return cls(**d)


def plateau_update(loop: LoopState, val_loss: float, epoch: int, cfg) -> bool:
    """The reference's LR-decay rule; returns True when LR decays.

    ``ref_loss`` is the last validation loss that did not get worse; after
    ``decay_epoch`` worse epochs (and not before ``load_best_epoch``) the rate is
    multiplied by ``lr_decay`` and the caller reloads the best checkpoint.
    """
    if val_loss > loop.ref_loss:
        loop.not_improved += 1
        if loop.not_improved >= cfg.decay_epoch and epoch >= cfg.load_best_epoch:
            loop.ref_loss = val_loss
            loop.not_improved = 0
            loop.learning_rate *= cfg.lr_decay
            loop.decay_count += 1
            return True
    else:
        loop.not_improved = 0
        loop.ref_loss = val_loss
    return False


def build_model(
    run: RunConfig, axis_name: str | None = None, training: bool = False
) -> TextVAE:
    """The model; with ``training``, in the train steps' precision."""
    cfg = run.model
    if training and run.train.mixed_precision:
        cfg = dataclasses.replace(cfg, mixed_precision=True)
    return TextVAE(cfg, axis_name=axis_name)


def _example_batch(plan: batching.BatchPlan) -> dict:
    return eval_run.batch_arrays(plan.make_batch(0))


def _state_tree(state: steps.TrainState) -> dict:
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


def _with_tree(state: steps.TrainState, tree: dict) -> steps.TrainState:
    return state.replace(**tree)


def run_info(config: ml_collections.ConfigDict, vocab: Vocab) -> dict:
    info = {k: config_lib.get_path(config, k) for k in config_lib.ARCHITECTURE_KEYS}
    info["vocab_size"] = len(vocab)
    info["vocab_fingerprint"] = vocab.fingerprint()
    return info


@dataclasses.dataclass
class Trainer:
    """Everything the loop touches; built once by ``train_and_evaluate``."""

    config: ml_collections.ConfigDict
    run: RunConfig
    workdir: pathlib.Path
    data: datasets.Datasets
    model: TextVAE
    plan: batching.BatchPlan
    ckpt: checkpoints.Checkpointer
    writer: writers.MetricWriter
    rng: jax.Array
    eval_key: jax.Array
    par: parallel.Parallel

    def schedule_spec(self) -> schedules.ScheduleSpec:
        t = self.run.train
        per_epoch = sum(1 for g in self.plan.groups if len(g) >= t.min_batch)
        return schedules.ScheduleSpec(
            kl_start=t.kl_start,
            warmup_steps=schedules.warmup_steps(
                t.kl_warmup_epochs, len(self.data.train), self.config.data.batch_size
            ),
            beta=t.beta,
            steps_per_epoch=per_epoch,
            total_steps=per_epoch * t.epochs,
            num_cycles=t.cycles,
            cycle_ratio=t.cycle_ratio,
            cycle_epochs=t.cycle_epochs,
        )

    def step_fns(self) -> steps.StepFns:
        method, t = self.run.method, self.run.train
        return steps.StepFns(
            kl_schedule=schedules.build(method.schedule, self.schedule_spec()),
            kl_transform=objectives.KL_TRANSFORMS[method.kl_transform](t.target_kl),
            clip_norm=t.clip_norm,
            svi=self.run.model if method.procedure == "svi" else None,
            axis_name=self.par.axis_name,
        )

    def compile_steps(self, updates=("all",)) -> list:
        """Train steps ``(state, batch, rng, sub=0)`` over the run's devices.

        jit: ``steps.jit_train_step``, which takes its shardings from the
        replicated state and the sharded batch; pmap: the same step mapped.
        """
        fns = self.step_fns()
        if self.par.mode == "jit":
            return [steps.jit_train_step(fns)] + [
                steps.jit_train_step(fns, update=u) for u in updates[1:]
            ]
        return [_pmap_step(self.par, fns, u) for u in updates]

    def put_batch(self, batch: batching.Batch) -> dict:
        """A training batch on the devices (the step reads no sentence ids)."""
        arrays = eval_run.batch_arrays(batch)
        return self.par.shard_batch({k: arrays[k] for k in TRAIN_KEYS})

    def selection_loss(self, val: dict) -> float:
        """The validation loss that picks the best checkpoint."""
        selection = self.run.method.selection
        if selection == "rec":
            return val["rec"]
        if selection == "beta":
            return val["rec"] + self.run.train.beta * val["kl"]
        return val["elbo_nll"]

    def variables(self, state) -> dict:
        return {"params": state.params, "batch_stats": state.batch_stats}

    def validate(self, state, split: str = "valid") -> dict:
        metrics, _ = eval_run.elbo_metrics(
            self.model,
            self.variables(state),
            self.data.split(split),
            self.eval_key,
            batch_size=self.config.data.eval_batch_size,
            bucket_width=self.config.data.bucket_width,
            au_threshold=self.run.eval.au_threshold,
            par=self.par,
        )
        return metrics

    def save_latest(self, state, loop: LoopState):
        self.ckpt.save_latest(int(state.step), _state_tree(state), loop.to_json())


def _pmap_step(par: parallel.Parallel, fns: steps.StepFns, update: str):
    def step(state, batch, rng, sub):
        return steps.train_step(state, batch, rng, fns=fns, update=update, sub=sub)

    mapped = par.pmap_step(step, num_args=4)

    def run(state, batch, rng, sub=0):
        return mapped(state, batch, rng, np.int32(sub))

    return run


def _flush(pending: list, loop: LoopState, writer, step: int) -> dict:
    """Moves per-step device metrics to the host, checks them, logs the mean."""
    if not pending:
        return {}
    host = jax.device_get(pending)
    for offset, m in enumerate(host):
        loss = (m["rec_sum"] + m["kl_weight"] * m["kl_sum"]) / max(m["count"], 1.0)
        if not np.isfinite(loss) or not np.isfinite(m["grad_norm"]):
            bad = step - len(host) + offset + 1
            raise DivergedError(
                f"training loss became non-finite at step {bad} (epoch "
                f"{loop.epoch}); the last good checkpoint is kept"
            )
    sums = loop.epoch_sums
    for m in host:
        for k in ("rec_sum", "kl_sum", "count", "tokens"):
            sums[k] = sums.get(k, 0.0) + float(m[k])
    count = sum(float(m["count"]) for m in host)
    last = host[-1]
    scalars = {
        "train/rec": sum(float(m["rec_sum"]) for m in host) / count,
        "train/kl": sum(float(m["kl_sum"]) for m in host) / count,
        "train/kl_weight": float(last["kl_weight"]),
        "train/grad_norm": float(last["grad_norm"]),
        "train/param_norm": float(last["param_norm"]),
        "train/learning_rate": float(last["learning_rate"]),
    }
    scalars["train/loss"] = (
        scalars["train/rec"] + scalars["train/kl_weight"] * (scalars["train/kl"])
    )
    scalars.update(bn_health.host_scalars(host))
    loop.bn_warning = bn_health.warn(scalars, loop.bn_warning)
    writer.write_scalars(step, scalars)
    pending.clear()
    return scalars


def _reached_max_steps(cfg, step: int) -> bool:
    return bool(cfg.max_steps) and step >= cfg.max_steps


def _epoch_batches(trainer: Trainer, order, loop: LoopState, bar):
    """``(position, batch)`` of the epoch's usable batches from ``loop.position``.

    Batches with fewer than ``train.min_batch`` real rows are skipped (the bar
    still counts them).
    """
    for position in range(loop.position, len(trainer.plan)):
        batch = trainer.plan.make_batch(int(order[position]))
        if batch.num_real < trainer.run.train.min_batch:
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


def _aggressive_encoder_steps(
    trainer: Trainer, state, loop: LoopState, first, enc_step, step: int
):
    """He et al.'s inner loop: encoder-only steps until the loss stops falling.

    The first step uses the current batch, later ones a uniformly random
    training batch (with replacement, drawn from a generator seeded by the run
    seed and the outer step ``step``, so a resumed run repeats them). Every
    ``agg_check_every`` steps the per-word loss since the last check is
    compared with the previous one; the loop stops when it went up (so this
    loop, unlike the plain one, reads the device at every check).
    """
    cfg = trainer.run.train
    plan = trainer.plan
    usable = [i for i, g in enumerate(plan.groups) if len(g) >= cfg.min_batch]
    rng = np.random.default_rng([trainer.run.seed, step, 0xA66])
    arrays, previous, pending = first, 1e4, []
    for sub in range(1, cfg.agg_inner_steps):
        state, metrics = enc_step(state, arrays, trainer.rng, sub=np.int32(sub))
        pending.append(metrics)
        loop.inner_steps += 1
        arrays = trainer.put_batch(plan.make_batch(int(rng.choice(usable))))
        if sub % cfg.agg_check_every == 0:
            host = jax.device_get(pending)
            pending.clear()
            words = sum(float(m["tokens"]) for m in host)
            current = sum(float(m["loss_sum"]) for m in host) / max(words, 1.0)
            if not np.isfinite(current):
                raise DivergedError(
                    f"encoder loss became non-finite in the aggressive loop at "
                    f"step {step}"
                )
            if previous - current < 0:
                break
            previous = current
    return state


def train_epochs(trainer: Trainer, state, loop: LoopState):
    """Runs epochs from ``loop`` onwards; returns the final state.

    Stops at the ``max_decay``-th decay (for good: ``loop.done``), after
    ``train.epochs`` or at ``train.max_steps`` (a rerun with a larger limit
    carries on). Ctrl-C saves the last completed step before exiting.

    Between two log points the loop never waits for the devices: the step
    count is kept on the host, the next batch is placed while the current step
    runs, the state is donated to the step, and metrics stay on the devices
    until ``_flush`` fetches them (at log, checkpoint and epoch ends).
    """
    cfg = trainer.run.train
    aggressive = trainer.run.method.procedure == "aggressive"
    if aggressive:
        step_fn, enc_step, dec_step = trainer.compile_steps(steps.UPDATES)
    else:
        (step_fn,) = trainer.compile_steps()
    state = trainer.par.replicate(state)
    plan, writer = trainer.plan, trainer.writer
    step = int(state.step)  # the host's count; the device's is not read again
    pending: list = []  # device metrics not yet checked and logged
    mid_batch = False  # inside an aggressive batch: no consistent state to save
    try:
        while not loop.done and loop.epoch < cfg.epochs:
            if _reached_max_steps(cfg, step):
                break
            order = batching.epoch_order(plan, trainer.run.seed, loop.epoch)
            bar = tqdm.tqdm(
                total=len(plan),
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
                if aggressive and loop.aggressive:
                    mid_batch = True
                    state = _aggressive_encoder_steps(
                        trainer, state, loop, arrays, enc_step, step
                    )
                    state, metrics = dec_step(state, arrays, trainer.rng)
                    mid_batch = False
                else:
                    state, metrics = step_fn(state, arrays, trainer.rng)
                step, loop.position = step + 1, position + 1
                pending.append(metrics)
                loop.train_tokens += batch.num_tokens
                log = step % cfg.log_every_steps == 0
                save = step % cfg.checkpoint_every_steps == 0
                if log or save:
                    scalars = _flush(pending, loop, writer, step)
                    loop.train_seconds += time.perf_counter() - since
                    if log:
                        bar.set_postfix(loss=f"{scalars['train/loss']:.2f}")
                    if save:
                        trainer.save_latest(state, loop)
                    since = time.perf_counter()
                if _reached_max_steps(cfg, step):
                    break
            else:
                loop.position = len(plan)  # trailing batches too small to use
            bar.close()
            _flush(pending, loop, writer, step)
            loop.train_seconds += time.perf_counter() - since
            if loop.position >= len(plan):
                state = end_of_epoch(trainer, state, loop)
            elif loop.best_epoch < 0:
                # Stopped by max_steps before any validation: select this state.
                state = end_of_epoch(trainer, state, loop, advance=False)
            trainer.save_latest(state, loop)
    except KeyboardInterrupt:
        # ``state`` is the last completed step and ``loop`` matches it, unless
        # the interrupt came inside an aggressive batch (its encoder steps are
        # done, its decoder step is not): then the last checkpoint stands.
        _flush(pending, loop, writer, step)
        if not mid_batch:
            trainer.save_latest(state, loop)
        raise
    return state


def end_of_epoch(trainer: Trainer, state, loop: LoopState, advance: bool = True):
    """Validation, best checkpoint, plateau decay; moves ``loop`` to the next epoch."""
    cfg = trainer.run.train
    step, epoch = int(state.step), loop.epoch
    val = trainer.validate(state)
    val_loss = trainer.selection_loss(val)
    sums = loop.epoch_sums
    count = max(sums.get("count", 0.0), 1.0)
    scalars = {f"valid/{k}": v for k, v in val.items()}
    scalars.update(
        {
            "epoch": epoch,
            "epoch/train_rec": sums.get("rec_sum", 0.0) / count,
            "epoch/train_kl": sums.get("kl_sum", 0.0) / count,
        }
    )
    if val_loss < loop.best_loss:
        loop.best_loss, loop.best_epoch = val_loss, epoch
        trainer.ckpt.save_best(step, _state_tree(state), {"epoch": epoch, "valid": val})
    if cfg.test_every_epochs and epoch % cfg.test_every_epochs == 0:
        test = trainer.validate(state, "test")
        scalars.update({f"test/{k}": v for k, v in test.items()})
    if trainer.run.method.procedure == "aggressive":
        # He et al.: stop aggressive training once the (per-batch) MI drops.
        if loop.aggressive and val["mi_batch"] < loop.pre_mi:
            loop.aggressive = False
            logging.info("epoch %d: aggressive training switched off", epoch)
        loop.pre_mi = val["mi_batch"]
        scalars["aggressive"] = float(loop.aggressive)
        scalars["inner_steps"] = loop.inner_steps
    decayed = plateau_update(loop, val_loss, epoch, cfg)
    if decayed:
        restored, _ = trainer.ckpt.restore_best(_state_tree(state))
        state = steps.reset_optimizer(
            state, restored["params"], restored["batch_stats"], loop.learning_rate
        )
        state = trainer.par.replicate(state)
        logging.info("epoch %d: learning rate decayed to %g", epoch, loop.learning_rate)
    scalars["lr"] = loop.learning_rate
    # Metrics a method does not define (vMF has no MI) are None: not logged.
    trainer.writer.write_scalars(
        step, {k: v for k, v in scalars.items() if v is not None}
    )
    logging.info(
        "epoch %d: valid nll %.3f  kl %.3f  mi %s  au %d  lr %g  (%.0f s training)",
        epoch,
        val["elbo_nll"],
        val["kl"],
        "-" if val["mi"] is None else f"{val['mi']:.3f}",
        val["au"],
        loop.learning_rate,
        loop.train_seconds,
    )
    if advance:
        loop.epoch += 1
        loop.position = 0
        loop.epoch_sums = {}
    if loop.decay_count >= cfg.max_decay:
        loop.done = True
    return state


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
    config: ml_collections.ConfigDict, workdir: str, write: bool = True
) -> tuple[Trainer, object]:
    """Reads data, checks the workdir, builds the model and a fresh train state.

    With ``write`` (training), records the vocabulary, run info and resolved
    config in the workdir; evaluation only reads them.
    """
    workdir = pathlib.Path(workdir)
    config_lib.validate(config)
    par = setup_devices(config)
    workdir.mkdir(parents=True, exist_ok=True)
    # Process 0 writes the synthetic corpus into the shared workdir first.
    data = parallel.first_host_then_others(
        lambda: datasets.load_datasets(config.data, str(workdir)), "reading the data"
    )
    info = run_info(config, data.vocab)
    checkpoints.check_run_info(workdir, info, keys=list(info))
    run = config_lib.resolve(config, len(data.vocab))
    plan = batching.plan_batches(
        data.train,
        batching.BatchingConfig(
            batch_size=config.data.batch_size,
            bucket_width=config.data.bucket_width,
            mode=config.data.batching,
        ),
    )
    if len(plan) == 0:
        raise UserError(f"{data.files['train']} gives no training batch")
    root = jax.random.key(run.seed)
    model = build_model(run, par.axis_name)
    ckpt = checkpoints.Checkpointer(workdir)
    resume_step = ckpt.latest_step()
    # TensorBoard hides events a killed run logged after its last checkpoint.
    writer = writers.create_writer(
        str(workdir),
        enabled=write and jax.process_index() == 0,
        purge_step=None if resume_step is None else resume_step + 1,
    )
    trainer = Trainer(
        config=config,
        run=run,
        workdir=workdir,
        data=data,
        model=model,
        plan=plan,
        ckpt=ckpt,
        writer=writer,
        rng=par.replicate(jax.random.fold_in(root, 1)),
        eval_key=eval_run.root_key(run.eval, run.seed),
        par=par,
    )
    tx = steps.make_optimizer(run.train.learning_rate, run.train.clip_norm)
    state = steps.create_train_state(
        build_model(run, par.axis_name, training=True),
        jax.random.fold_in(root, 0),
        _example_batch(plan),
        tx,
    )
    state = par.replicate(state)
    if write and jax.process_index() == 0:
        data.vocab.save(workdir / "vocab.txt")
        checkpoints.write_run_info(workdir, info)
        fileio.write_text_atomic(
            workdir / "config.json", config.to_json_best_effort(indent=2)
        )
    return trainer, state


def init_from_run(state, source: str, vocab: Vocab):
    """Li et al.'s recipe: another run's encoder, a fresh decoder.

    The encoder comes from ``source``'s best checkpoint; the decoder, the head
    and the BN statistics keep this run's fresh initialisation.

    Raises:
      WorkdirError: ``source`` is not a finished run with this vocabulary and
        encoder shape.
    """
    source_dir = pathlib.Path(source)
    if not (source_dir / checkpoints.RUN_INFO_FILE).is_file():
        raise WorkdirError(f"init_from={source}: not a run directory (no run info)")
    info = checkpoints.read_run_info(source_dir)
    if info.get("vocab_fingerprint") != vocab.fingerprint():
        raise WorkdirError(
            f"init_from={source}: that run was trained with another vocabulary"
        )
    loaded = checkpoints.Checkpointer(source_dir).restore_best_params()
    if "encoder" not in loaded:
        raise WorkdirError(f"init_from={source}: its checkpoint has no encoder")
    fresh = state.params["encoder"]
    want = jax.tree_util.tree_map(np.shape, fresh)
    got = jax.tree_util.tree_map(np.shape, loaded["encoder"])
    if jax.tree_util.tree_structure(want) != jax.tree_util.tree_structure(
        got
    ) or jax.tree_util.tree_leaves(want) != jax.tree_util.tree_leaves(got):
        raise WorkdirError(
            f"init_from={source}: its encoder has other sizes than this run's "
            "(model.emb_dim, enc_hidden and latent_dim must match)"
        )
    encoder = jax.tree_util.tree_map(
        lambda f, x: jax.numpy.asarray(x, f.dtype), fresh, loaded["encoder"]
    )
    params = dict(state.params)
    params["encoder"] = encoder
    state = state.replace(params=params, opt_state=state.tx.init(params))
    logging.info("encoder initialised from %s; decoder and head fresh", source)
    return state


def restore_or_start(trainer: Trainer, state) -> tuple[object, LoopState]:
    restored = trainer.ckpt.restore_latest(_state_tree(state))
    if restored is None:
        loop = LoopState(learning_rate=trainer.run.train.learning_rate)
        if trainer.config.init_from:
            state = init_from_run(state, trainer.config.init_from, trainer.data.vocab)
        return state, loop
    tree, meta = restored
    logging.info("resuming from step %d", int(tree["step"]))
    state = trainer.par.replicate(_with_tree(state, tree))
    return state, LoopState.from_json(meta)


def final_results(trainer: Trainer, state, loop: LoopState) -> dict:
    """Best checkpoint → valid and test metrics (with IW-NLL) → results.json."""
    steps_run = int(state.step)
    if loop.best_epoch >= 0:
        tree, _ = trainer.ckpt.restore_best(_state_tree(state))
        state = _with_tree(state, tree)
    variables = trainer.variables(state)
    results = {}
    for i, split in enumerate(("valid", "test")):
        results[split] = eval_run.evaluate_split(
            trainer.model,
            variables,
            trainer.data.split(split),
            jax.random.fold_in(trainer.eval_key, i),
            trainer.run.eval,
            batch_size=trainer.config.data.eval_batch_size,
            bucket_width=trainer.config.data.bucket_width,
            with_iw=split in trainer.run.eval.iw_splits.split(","),
            par=trainer.par,
        )
    if jax.process_index() == 0:  # decoding is host-local; one host writes it
        decoding.write_outputs(
            trainer.model,
            trainer.par.local_copy(variables),
            trainer.data,
            trainer.run.eval,
            trainer.workdir / "samples",
            jax.random.fold_in(trainer.eval_key, 7),
        )
    results.update(
        {
            "train_seconds": loop.train_seconds,
            "train_tokens_per_second": loop.train_tokens
            / max(loop.train_seconds, 1e-9),
            "epochs_run": loop.epoch,
            "steps": steps_run,
            "best_epoch": loop.best_epoch,
            "method": trainer.run.method_name,
            "init_from": trainer.config.init_from or None,
            "aggressive_inner_steps": loop.inner_steps,
            "num_devices": trainer.par.num_devices,
            "num_hosts": trainer.par.num_hosts,
            "parallel_mode": trainer.par.mode,
            # Lines read, kept, and dropped as empty or over data.max_tokens.
            "data": {
                split: dataclasses.asdict(stats)
                for split, stats in trainer.data.stats.items()
            },
            "config": json.loads(trainer.config.to_json_best_effort()),
        }
    )
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) in ``workdir`` and writes ``results.json``.

    Returns:
      the results dict that was written.
    """
    trainer, state = setup(config, workdir)
    state, loop = restore_or_start(trainer, state)
    start_step = int(state.step)
    state = train_epochs(trainer, state, loop)
    saved = trainer.workdir / "results.json"
    if int(state.step) == start_step and saved.exists():
        logging.info("%s: nothing left to train; results as saved", workdir)
        trainer.writer.close()
        return json.loads(saved.read_text())
    results = final_results(trainer, state, loop)
    if jax.process_index() == 0:
        fileio.write_json_atomic(trainer.workdir / "results.json", results)
    trainer.writer.write_scalars(
        int(state.step),
        {
            f"final/{s}/{k}": v
            for s in ("valid", "test")
            for k, v in results[s].items()
            if v is not None
        },
    )
    trainer.writer.close()
    return results
