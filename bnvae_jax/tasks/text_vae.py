"""The text VAEs: ``train_and_evaluate`` in the shape of the Flax examples.

The task builds the text VAE's batches (length-bucketed), its train steps (SGD
on the annealed ELBO; He et al.'s aggressive encoder steps; SA-VAE), the
selection loss of its method, the reference's plateau rule (LR decay with
best-checkpoint reload, stop at the ``max_decay``-th decay), He et al.'s
aggressive-training switch, and the final evaluation (ELBO, KL, MI, AU,
500-sample IW-NLL, decoded samples), and runs them on ``training.loop``, which
owns resume, checkpoints, NaN guard, progress, devices and Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import sys

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
from bnvae_jax.training import (
    bn_health,
    checkpoints,
    objectives,
    rules,
    schedules,
    steps,
)
from bnvae_jax.training import loop as loop_lib


@dataclasses.dataclass
class LoopState(loop_lib.LoopState):
    """The loop's progress plus the plateau rule's and the aggressive switch's."""

    learning_rate: float = 1.0
    decay_count: int = 0
    ref_loss: float = 1e4  # the reference's last non-worsening validation loss
    not_improved: int = 0
    # agg_vae's switch: aggressive updates until validation MI drops.
    aggressive: bool = True
    pre_mi: float = 0.0
    inner_steps: int = 0  # encoder-only steps taken (agg_vae)
    bn_warning: str = ""  # BN bound problems last warned about (bn_health.warn)


@dataclasses.dataclass(frozen=True)
class Setup:
    """A built run: its configs, data, batch plan, model, workdir and keys.

    Attributes:
      run: the typed config.
      data: the corpus splits and vocabulary.
      plan: the training batches (length buckets).
      model: the model as validation and evaluation apply it.
      ctx: the workdir, checkpoints, writer, devices and loop settings.
      rng: the train steps' key, replicated over the devices.
      eval_key: the key evaluation draws from.
    """

    run: RunConfig
    data: datasets.Datasets
    plan: batching.BatchPlan
    model: TextVAE
    ctx: loop_lib.Context
    rng: jax.Array
    eval_key: jax.Array


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
    """The typed run; one warning line when a BN head starts below eps."""
    run = config_lib.resolve(config)
    if run.method.head in ("bn_gaussian", "du_gaussian") and (
        line := bn_health.start_warning(run.model)
    ):
        logging.warning("%s", line)
    return run


def setup(
    config: ml_collections.ConfigDict, workdir: str, write: bool = True
) -> tuple[Setup, steps.TrainState]:
    """Reads the data, checks the workdir, builds the run and a fresh state.

    The run's key ``key(run.seed)`` gives the initial parameters
    (``fold_in(key, 0)``) and the train steps' randomness (``fold_in(key, 1)``).
    With ``write`` (training), records the vocabulary, run info and config in
    the workdir.
    """
    run = resolve(config)
    par = loop_lib.setup_devices(run, config)
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    # Process 0 first: it may write prepared data into the shared workdir.
    data = parallel.first_host_then_others(
        lambda: datasets.load_datasets(run.data, str(workdir)), "reading the data"
    )
    run = run.with_vocab(len(data.vocab))
    # What the workdir's checkpoints depend on (shapes, vocabulary).
    info = dict(
        run.architecture,
        vocab_size=len(data.vocab),
        vocab_fingerprint=data.vocab.fingerprint(),
    )
    ctx = loop_lib.open_context(workdir, info, par, run.train, write)
    batches = batching.BatchingConfig(
        batch_size=run.data.batch_size,
        bucket_width=run.data.bucket_width,
        mode=run.data.batching,
    )
    plan = batching.plan_batches(data.train, batches)
    if len(plan) == 0:
        raise UserError(f"{data.files['train']} gives no training batch")
    root = jax.random.key(run.seed)
    # The train steps' model, in their precision.
    mixed = run.model.mixed_precision or run.train.mixed_precision
    train_model = TextVAE(
        dataclasses.replace(run.model, mixed_precision=mixed), axis_name=par.axis_name
    )
    state = steps.create_train_state(
        train_model,
        jax.random.fold_in(root, 0),
        eval_run.batch_arrays(plan.make_batch(0)),
        steps.make_optimizer(run.train.learning_rate, run.train.clip_norm),
    )
    if write:
        loop_lib.record_run(ctx.workdir, data.vocab, info, config)
    s = Setup(
        run=run,
        data=data,
        plan=plan,
        model=TextVAE(run.model, axis_name=par.axis_name),
        ctx=ctx,
        rng=par.replicate(jax.random.fold_in(root, 1)),
        eval_key=eval_run.root_key(run.eval, run.seed),
    )
    return s, par.replicate(state)


# -- batches and steps -----------------------------------------------------------


def epoch_batches(s: Setup, epoch: int, start: int):
    """``(position, arrays, tokens)`` of the epoch's batches from ``start``."""
    batches = batching.iterate(s.plan, seed=s.run.seed, epoch=epoch, start=start)
    for position, batch in batches:
        usable = batch.num_real >= s.run.train.min_batch
        yield position, train_arrays(batch) if usable else None, batch.num_tokens


def train_arrays(batch: batching.Batch) -> dict:
    """The numpy arrays of a host batch that the train step reads.

    Evaluation batches also carry sentence ids.
    """
    return {k: getattr(batch, k) for k in ("tokens", "lengths", "mask")}


def schedule_spec(s: Setup) -> schedules.ScheduleSpec:
    t = s.run.train
    per_epoch = sum(1 for g in s.plan.groups if len(g) >= t.min_batch)
    return schedules.ScheduleSpec(
        kl_start=t.kl_start,
        warmup_steps=t.kl_warmup_epochs * len(s.data.train) / s.run.data.batch_size,
        beta=t.beta,
        steps_per_epoch=per_epoch,
        total_steps=per_epoch * t.epochs,
        num_cycles=t.cycles,
        cycle_ratio=t.cycle_ratio,
        cycle_epochs=t.cycle_epochs,
    )


def step_fns(s: Setup) -> steps.StepFns:
    method, t = s.run.method, s.run.train
    return steps.StepFns(
        kl_schedule=schedules.SCHEDULES[method.schedule](schedule_spec(s)),
        kl_transform=objectives.KL_TRANSFORMS[method.kl_transform](t.target_kl),
        clip_norm=t.clip_norm,
        svi=s.run.model if method.procedure == "svi" else None,
        axis_name=s.ctx.par.axis_name,
    )


def compile_steps(s: Setup, updates=("all",)) -> list:
    """Train steps ``(state, batch, rng, sub=0)`` over the run's devices.

    jit: ``steps.jit_train_step``, which takes its shardings from the
    replicated state and the sharded batch; pmap: the same step mapped. Both
    donate the state.
    """
    fns, par = step_fns(s), s.ctx.par
    if par.mode == "jit":
        return [steps.jit_train_step(fns, update=u) for u in updates]

    def mapped(update):
        fn = functools.partial(steps.train_step, fns=fns, update=update)
        step = par.pmap_step(fn, num_args=4)
        return lambda state, batch, rng, sub=0: step(state, batch, rng, np.int32(sub))

    return [mapped(u) for u in updates]


def make_step(s: Setup):
    """``step(state, arrays, loop, step) -> (state, metrics)`` of the method.

    The encoder- and decoder-only steps compile when 'aggressive' first runs one.
    """
    all_step, enc_step, dec_step = compile_steps(s, steps.UPDATES)
    aggressive = s.run.method.procedure == "aggressive"

    def step(state, arrays, loop, step):
        if not (aggressive and loop.aggressive):
            return all_step(state, arrays, s.rng)
        state = _aggressive_encoder_steps(s, state, loop, arrays, enc_step, step)
        return dec_step(state, arrays, s.rng)

    return step


def _aggressive_encoder_steps(s: Setup, state, loop, first, enc_step, step: int):
    """He et al.'s inner loop: encoder-only steps until the loss stops falling.

    The first step uses the current batch, later ones a uniformly random
    training batch (with replacement, drawn from a generator seeded by the run
    seed and the outer step ``step``, so a resumed run repeats them). Every
    ``agg_check_every`` steps the per-word loss since the last check is
    compared with the previous one; the loop stops when it went up (so this
    loop, unlike the plain one, reads the device at every check).
    """
    cfg, plan = s.run.train, s.plan
    usable = [i for i, g in enumerate(plan.groups) if len(g) >= cfg.min_batch]
    rng = np.random.default_rng([s.run.seed, step, 0xA66])
    arrays, previous, pending = first, 1e4, []
    for sub in range(1, cfg.agg_inner_steps):
        state, metrics = enc_step(state, arrays, s.rng, sub=np.int32(sub))
        pending.append(metrics)
        loop.inner_steps += 1
        batch = plan.make_batch(int(rng.choice(usable)))
        arrays = s.ctx.par.shard_batch(train_arrays(batch))
        if sub % cfg.agg_check_every == 0:
            host, pending = jax.device_get(pending), []
            words = sum(float(m["tokens"]) for m in host)
            current = sum(float(m["loss_sum"]) for m in host) / max(words, 1.0)
            if not np.isfinite(current):
                raise loop_lib.DivergedError(
                    f"encoder loss became non-finite in the aggressive loop at "
                    f"step {step}"
                )
            if previous - current < 0:
                break
            previous = current
    return state


def summarize(host: list, loop: LoopState) -> dict:
    """The ``train/*`` scalars of the steps in ``host``; warns on BN problems."""
    count = max(sum(float(m["count"]) for m in host), 1.0)
    scalars = {
        f"train/{k}": sum(float(m[f"{k}_sum"]) for m in host) / count
        for k in ("rec", "kl")
    }
    for k in ("kl_weight", "grad_norm", "param_norm", "learning_rate"):
        scalars[f"train/{k}"] = float(host[-1][k])
    scalars["train/loss"] = (
        scalars["train/rec"] + scalars["train/kl_weight"] * scalars["train/kl"]
    )
    scalars.update(bn_health.host_scalars(host))
    loop.bn_warning = bn_health.warn(scalars, loop.bn_warning)
    return scalars


# -- validation and the plateau rule -----------------------------------------------


def selection_loss(run: RunConfig, val: dict) -> float:
    """The validation loss that picks the best checkpoint."""
    selection = run.method.selection
    if selection == "rec":
        return val["rec"]
    if selection == "beta":
        return val["rec"] + run.train.beta * val["kl"]
    return val["elbo_nll"]


def validate(s: Setup, state, split: str = "valid") -> dict:
    """ELBO, KL, MI and AU of ``split`` (one sample each)."""
    return eval_run.evaluate_split(
        s.model,
        steps.variables(state),
        s.data.split(split),
        s.eval_key,
        s.run.eval,
        batch_size=s.run.data.eval_batch_size,
        bucket_width=s.run.data.bucket_width,
        par=s.ctx.par,
    )


def rule(s: Setup, state, loop: LoopState, val: dict, improved: bool):
    """Test pass, the aggressive switch and the plateau rule after validation."""
    cfg, epoch, scalars = s.run.train, loop.epoch, {}
    if cfg.test_every_epochs and epoch % cfg.test_every_epochs == 0:
        scalars.update({f"test/{k}": v for k, v in validate(s, state, "test").items()})
    if s.run.method.procedure == "aggressive":
        # He et al.: stop aggressive training once the (per-batch) MI drops.
        if loop.aggressive and val["mi_batch"] < loop.pre_mi:
            loop.aggressive = False
            logging.info("epoch %d: aggressive training switched off", epoch)
        loop.pre_mi = val["mi_batch"]
        scalars.update(aggressive=float(loop.aggressive), inner_steps=loop.inner_steps)
    if rules.plateau(loop, selection_loss(s.run, val), epoch, cfg):
        state = rules.reload_best(s.ctx, state, loop.learning_rate)
        logging.info("epoch %d: learning rate decayed to %g", epoch, loop.learning_rate)
    scalars["lr"] = loop.learning_rate
    loop.done = loop.decay_count >= cfg.max_decay
    mi = "-" if val["mi"] is None else f"{val['mi']:.3f}"
    logging.info(
        f"epoch {epoch}: valid nll {val['elbo_nll']:.3f}  kl {val['kl']:.3f}  "
        f"mi {mi}  au {val['au']}  lr {loop.learning_rate:g}  "
        f"({loop.train_seconds:.0f} s training)"
    )
    return state, scalars


# -- final evaluation --------------------------------------------------------------


def final(s: Setup, state, loop: LoopState) -> dict:
    """Valid and test metrics (with IW-NLL) of the selected state; samples."""
    results = evaluate_model(
        s.model,
        steps.variables(state),
        s.data,
        s.run,
        s.ctx.par,
        samples_dir=s.ctx.workdir / "samples",
    )
    results.update(
        train_tokens_per_second=loop.train_tokens / max(loop.train_seconds, 1e-9),
        init_from=s.run.init_from or None,
        aggressive_inner_steps=loop.inner_steps,
        # Lines read, kept, and dropped as empty or over data.max_tokens.
        data={k: dataclasses.asdict(v) for k, v in s.data.stats.items()},
    )
    return results


def evaluate_model(
    model: TextVAE,
    variables: dict,
    data: datasets.Datasets,
    run: RunConfig,
    par: parallel.Parallel,
    samples_dir: pathlib.Path | None = None,
) -> dict:
    """The ``valid`` and ``test`` entries of ``results.json``; decoded samples.

    Split i draws its ELBO pass from the first and its IW-NLL from the second
    half of ``split(fold_in(eval_key, i))`` of the run's evaluation key
    (``bnvae_jax.load(...).score`` repeats the test split's draws). Warns when
    a BN head's running statistics lag behind its encoder on the validation
    sentences (``bn_stats``).
    """
    eval_key = eval_run.root_key(run.eval, run.seed)
    batch_size, bucket_width = run.data.eval_batch_size, run.data.bucket_width
    results = {}
    for i, split in enumerate(("valid", "test")):
        elbo_key, iw_key = jax.random.split(jax.random.fold_in(eval_key, i))
        results[split] = eval_run.evaluate_split(
            model,
            variables,
            data.split(split),
            elbo_key,
            run.eval,
            batch_size=batch_size,
            bucket_width=bucket_width,
            iw_key=iw_key if split in run.eval.iw_splits.split(",") else None,
            progress=True,
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


def init_from_run(state, source: str, vocab: Vocab):
    """Li et al.'s recipe: another run's encoder, a fresh decoder.

    The encoder comes from ``source``'s best checkpoint; the decoder, the head
    and the BN statistics keep this run's fresh initialisation.

    Raises:
      WorkdirError: ``source`` is not a finished run with this vocabulary and
        encoder shape.
    """
    info = checkpoints.read_run_info(source)
    if info is None:
        raise WorkdirError(f"init_from={source}: not a run directory (no run info)")
    if info.get("vocab_fingerprint") != vocab.fingerprint():
        raise WorkdirError(
            f"init_from={source}: that run was trained with another vocabulary"
        )
    loaded = checkpoints.Checkpointer(source).restore_best(None)[0]["params"]
    if "encoder" not in loaded:
        raise WorkdirError(f"init_from={source}: its checkpoint has no encoder")
    fresh = state.params["encoder"]
    if jax.tree.map(np.shape, fresh) != jax.tree.map(np.shape, loaded["encoder"]):
        raise WorkdirError(
            f"init_from={source}: its encoder has other sizes than this run's "
            "(model.emb_dim, enc_hidden and latent_dim must match)"
        )
    encoder = jax.tree.map(
        lambda f, x: jax.numpy.asarray(x, f.dtype), fresh, loaded["encoder"]
    )
    params = {**state.params, "encoder": encoder}
    logging.info("encoder initialised from %s; decoder and head fresh", source)
    return state.replace(params=params, opt_state=state.tx.init(params))


def start(s: Setup, state) -> tuple[steps.TrainState, LoopState]:
    """The latest checkpoint and its loop state, or a fresh start.

    A fresh start takes its encoder from ``init_from`` when the config names
    a finished run.
    """
    restored = loop_lib.restore(s.ctx, state, LoopState)
    if restored is not None:
        return restored
    if s.run.init_from:
        state = init_from_run(state, s.run.init_from, s.data.vocab)
    return state, LoopState(learning_rate=s.run.train.learning_rate)


def num_batches(s: Setup) -> int:
    return len(s.plan)


def evaluate(s: Setup, state) -> tuple[dict, float]:
    """Validation metrics and the loss that selects the best checkpoint."""
    val = validate(s, state)
    return val, selection_loss(s.run, val)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) in ``workdir`` and writes ``results.json``.

    A finished run reruns as a no-op returning its saved results.

    Returns:
      the results dict that was written.
    """
    s, state = setup(config, workdir)
    fns = loop_lib.task_fns(sys.modules[__name__], s)
    return loop_lib.train(
        s.ctx, *start(s, state), method=s.run.method_name, config=config, **fns
    )
