"""The text VAEs on the shared loop (``training.loop``).

The task supplies the text VAE's batches (length-bucketed), its train steps
(SGD on the annealed ELBO; He et al.'s aggressive encoder steps; SA-VAE),
the selection loss of its method, the reference's plateau rule (LR decay with
best-checkpoint reload, stop at the ``max_decay``-th decay), He et al.'s
aggressive-training switch, and the final evaluation (ELBO, KL, MI, AU,
500-sample IW-NLL, decoded samples). Resume, checkpoints, NaN guard,
progress, devices and Ctrl-C are the loop's.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import jax
import ml_collections
import numpy as np

from bnvae_jax import config as config_lib
from bnvae_jax import parallel
from bnvae_jax.config import RunConfig
from bnvae_jax.data import batching, datasets
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import UserError, WorkdirError
from bnvae_jax.evaluation import bn_stats, decoding
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import bn_health, checkpoints, objectives, schedules, steps
from bnvae_jax.training import (
    loop as loop_lib,
)
from bnvae_jax.training.loop import (  # noqa: F401  (the task's public names)
    DivergedError,
    end_of_epoch,
    final_results,
    prefetch,
    restore_or_start,
    setup_devices,
    train_epochs,
)

# The arrays a train step reads; evaluation batches also carry sentence ids.
TRAIN_KEYS = ("tokens", "lengths", "mask")
_state_tree = loop_lib.state_tree


@dataclasses.dataclass
class LoopState(loop_lib.LoopState):
    """The loop's progress plus the plateau rule's and the aggressive controller's."""

    learning_rate: float = 1.0
    decay_count: int = 0
    ref_loss: float = 1e4  # the reference's last non-worsening validation loss
    not_improved: int = 0
    # agg_vae's controller: aggressive updates until validation MI drops.
    aggressive: bool = True
    pre_mi: float = 0.0
    inner_steps: int = 0  # encoder-only steps taken (agg_vae)
    bn_warning: str = ""  # BN bound problems last warned about (bn_health.monitor)


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


def run_info(run: RunConfig, vocab: Vocab) -> dict:
    info = dict(run.architecture)
    info["vocab_size"] = len(vocab)
    info["vocab_fingerprint"] = vocab.fingerprint()
    return info


@dataclasses.dataclass
class TextVAETrainer(loop_lib.Trainer):
    """The text VAE task; built once by ``setup``."""

    run: RunConfig
    data: datasets.Datasets
    model: TextVAE
    plan: batching.BatchPlan

    loop_state_class = LoopState

    # -- building the run ------------------------------------------------------

    @staticmethod
    def resolve_config(config) -> RunConfig:
        """The typed run; one warning line when a BN head starts below eps."""
        run = config_lib.resolve(config)
        if run.method.head == "bn_gaussian":
            line = bn_health.start_warning(run.model)
            if line:
                logging.warning("%s", line)
        return run

    @staticmethod
    def load_data(run: RunConfig, workdir: pathlib.Path) -> datasets.Datasets:
        return datasets.load_datasets(run.data, str(workdir))

    @staticmethod
    def with_data(run: RunConfig, data: datasets.Datasets) -> RunConfig:
        return run.with_vocab(len(data.vocab))

    @staticmethod
    def run_info(run: RunConfig, data: datasets.Datasets) -> dict:
        return run_info(run, data.vocab)

    @staticmethod
    def eval_key_of(run: RunConfig) -> jax.Array:
        return eval_run.root_key(run.eval, run.seed)

    @staticmethod
    def task_fields(run: RunConfig, data, par: parallel.Parallel) -> dict:
        plan = batching.plan_batches(
            data.train,
            batching.BatchingConfig(
                batch_size=run.data.batch_size,
                bucket_width=run.data.bucket_width,
                mode=run.data.batching,
            ),
        )
        if len(plan) == 0:
            raise UserError(f"{data.files['train']} gives no training batch")
        return {"model": build_model(run, par.axis_name), "plan": plan}

    def init_state(self, key: jax.Array) -> steps.TrainState:
        run = self.run
        return steps.create_train_state(
            build_model(run, self.par.axis_name, training=True),
            key,
            _example_batch(self.plan),
            steps.make_optimizer(run.train.learning_rate, run.train.clip_norm),
        )

    @property
    def settings(self):
        return self.run.train

    def new_loop(self) -> LoopState:
        return LoopState(learning_rate=self.run.train.learning_rate)

    def fresh_start(self, state):
        if self.run.init_from:
            state = init_from_run(state, self.run.init_from, self.data.vocab)
        return state

    def method_name(self) -> str:
        return self.run.method_name

    # -- batches ---------------------------------------------------------------

    def num_positions(self) -> int:
        return len(self.plan)

    def epoch_order(self, epoch: int) -> np.ndarray:
        return batching.epoch_order(self.plan, self.run.seed, epoch)

    def make_batch(self, order, position: int):
        batch = self.plan.make_batch(int(order[position]))
        return batch, batch.num_real

    def train_arrays(self, batch: batching.Batch) -> dict:
        """The step reads no sentence ids."""
        arrays = eval_run.batch_arrays(batch)
        return {k: arrays[k] for k in TRAIN_KEYS}

    def batch_tokens(self, batch: batching.Batch) -> int:
        return batch.num_tokens

    # -- steps -----------------------------------------------------------------

    def schedule_spec(self) -> schedules.ScheduleSpec:
        t = self.run.train
        per_epoch = sum(1 for g in self.plan.groups if len(g) >= t.min_batch)
        return schedules.ScheduleSpec(
            kl_start=t.kl_start,
            warmup_steps=schedules.warmup_steps(
                t.kl_warmup_epochs, len(self.data.train), self.run.data.batch_size
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
        Both donate the state.
        """
        fns = self.step_fns()
        if self.par.mode == "jit":
            return [steps.jit_train_step(fns, update=u) for u in updates]
        return [_pmap_step(self.par, fns, u) for u in updates]

    def make_runner(self) -> loop_lib.StepRunner:
        if self.run.method.procedure != "aggressive":
            (step_fn,) = self.compile_steps()
            return lambda state, arrays, loop, step: step_fn(state, arrays, self.rng)
        all_step, enc_step, dec_step = self.compile_steps(steps.UPDATES)

        def run(state, arrays, loop, step):
            if not loop.aggressive:
                return all_step(state, arrays, self.rng)
            state = _aggressive_encoder_steps(self, state, loop, arrays, enc_step, step)
            return dec_step(state, arrays, self.rng)

        return run

    # -- metrics ---------------------------------------------------------------

    def step_loss(self, m: dict) -> float:
        return (m["rec_sum"] + m["kl_weight"] * m["kl_sum"]) / max(m["count"], 1.0)

    def train_scalars(self, host: list, loop: LoopState) -> dict:
        count = max(sum(float(m["count"]) for m in host), 1.0)
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
            scalars["train/rec"] + scalars["train/kl_weight"] * scalars["train/kl"]
        )
        scalars.update(bn_health.host_scalars(host))
        loop.bn_warning = bn_health.warn(scalars, loop.bn_warning)
        return scalars

    # -- validation and the plateau rule ---------------------------------------

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
            batch_size=self.run.data.eval_batch_size,
            bucket_width=self.run.data.bucket_width,
            au_threshold=self.run.eval.au_threshold,
            par=self.par,
        )
        return metrics

    def validate_epoch(self, state):
        val = self.validate(state)
        return val, self.selection_loss(val)

    def after_validation(self, state, loop: LoopState, val: dict, improved: bool):
        cfg, epoch, scalars = self.run.train, loop.epoch, {}
        if cfg.test_every_epochs and epoch % cfg.test_every_epochs == 0:
            test = self.validate(state, "test")
            scalars.update({f"test/{k}": v for k, v in test.items()})
        if self.run.method.procedure == "aggressive":
            # He et al.: stop aggressive training once the (per-batch) MI drops.
            if loop.aggressive and val["mi_batch"] < loop.pre_mi:
                loop.aggressive = False
                logging.info("epoch %d: aggressive training switched off", epoch)
            loop.pre_mi = val["mi_batch"]
            scalars["aggressive"] = float(loop.aggressive)
            scalars["inner_steps"] = loop.inner_steps
        if plateau_update(loop, self.selection_loss(val), epoch, cfg):
            restored, _ = self.ckpt.restore_best(loop_lib.state_tree(state))
            state = steps.reset_optimizer(
                state, restored["params"], restored["batch_stats"], loop.learning_rate
            )
            state = self.par.replicate(state)
            logging.info(
                "epoch %d: learning rate decayed to %g", epoch, loop.learning_rate
            )
        scalars["lr"] = loop.learning_rate
        if loop.decay_count >= cfg.max_decay:
            loop.done = True
        return state, scalars

    def epoch_message(self, epoch: int, val: dict, loop: LoopState) -> str:
        mi = "-" if val["mi"] is None else f"{val['mi']:.3f}"
        return (
            f"epoch {epoch}: valid nll {val['elbo_nll']:.3f}  kl {val['kl']:.3f}  "
            f"mi {mi}  au {val['au']}  lr {loop.learning_rate:g}  "
            f"({loop.train_seconds:.0f} s training)"
        )

    # -- final evaluation ------------------------------------------------------

    def final_results(self, state, loop: LoopState) -> dict:
        """Valid and test metrics (with IW-NLL) of the selected state; samples."""
        results = evaluate_model(
            self.model,
            self.variables(state),
            self.data,
            self.run,
            self.eval_key,
            batch_size=self.run.data.eval_batch_size,
            bucket_width=self.run.data.bucket_width,
            par=self.par,
            samples_dir=self.workdir / "samples",
        )
        results.update(
            {
                "train_tokens_per_second": loop.train_tokens
                / max(loop.train_seconds, 1e-9),
                "init_from": self.run.init_from or None,
                "aggressive_inner_steps": loop.inner_steps,
                # Lines read, kept, and dropped as empty or over data.max_tokens.
                "data": {
                    split: dataclasses.asdict(stats)
                    for split, stats in self.data.stats.items()
                },
            }
        )
        return results


Trainer = TextVAETrainer


def evaluate_model(
    model: TextVAE,
    variables: dict,
    data: datasets.Datasets,
    run: RunConfig,
    eval_key: jax.Array,
    *,
    batch_size: int,
    bucket_width: int,
    par: parallel.Parallel,
    samples_dir: pathlib.Path | None = None,
) -> dict:
    """The ``valid`` and ``test`` entries of ``results.json``; decoded samples.

    Split i draws from ``fold_in(eval_key, i)`` (``bnvae_jax.load(...).score``
    repeats the test split's draws). Warns when a BN head's running statistics
    lag behind its encoder on the validation sentences (``bn_stats``).
    """
    results = {}
    for i, split in enumerate(("valid", "test")):
        results[split] = eval_run.evaluate_split(
            model,
            variables,
            data.split(split),
            jax.random.fold_in(eval_key, i),
            run.eval,
            batch_size=batch_size,
            bucket_width=bucket_width,
            with_iw=split in run.eval.iw_splits.split(","),
            par=par,
        )
    local = par.local_copy(variables)
    if bn_stats.has_bn_head(local):
        report = bn_stats.lag_report(
            model, local, data.valid, batch_size=batch_size, bucket_width=bucket_width
        )
        if report.message:
            logging.warning("%s", report.message)
    if samples_dir is not None and jax.process_index() == 0:
        # Decoding is host-local; one host writes it.
        decoding.write_outputs(
            model, local, data, run.eval, samples_dir, jax.random.fold_in(eval_key, 7)
        )
    return results


def _pmap_step(par: parallel.Parallel, fns: steps.StepFns, update: str):
    def step(state, batch, rng, sub):
        return steps.train_step(state, batch, rng, fns=fns, update=update, sub=sub)

    mapped = par.pmap_step(step, num_args=4)

    def run(state, batch, rng, sub=0):
        return mapped(state, batch, rng, np.int32(sub))

    return run


def _aggressive_encoder_steps(
    trainer: TextVAETrainer, state, loop: LoopState, first, enc_step, step: int
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


def _example_batch(plan: batching.BatchPlan) -> dict:
    return eval_run.batch_arrays(plan.make_batch(0))


def setup(
    config: ml_collections.ConfigDict, workdir: str, write: bool = True
) -> tuple[TextVAETrainer, object]:
    """The text VAE's trainer and a fresh state (``training.loop.setup``)."""
    return loop_lib.setup(TextVAETrainer, config, workdir, write)


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) in ``workdir`` and writes ``results.json``.

    Returns:
      the results dict that was written.
    """
    trainer, state = setup(config, workdir)
    return loop_lib.run(trainer, state)
