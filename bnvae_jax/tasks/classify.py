"""Few-label classification on a trained run's posterior means (paper Table 3).

    python -m bnvae_jax.classify --workdir=RUN \
      --train_file=short_yelp.train.txt --valid_file=short_yelp.valid.txt \
      --test_file=short_yelp.test.txt --labels=100,500,1000,2000,10000 --seeds=10

Files are ``LABEL<TAB>TEXT``. For every number of labels N and every seed, N
labelled sentences are drawn from the training file (balanced over the classes or
at random), a linear classifier is trained on the posterior means of RUN's
encoder (after the BN head, eval mode: running statistics) and scored on the
test file. By default the encoder is fine-tuned with the classifier (dropout 0.5
on the mean), as the reference's default does; ``--mode=frozen`` keeps it fixed.
Optimisation follows the reference: SGD with learning rate 1, batch
16, gradient clipping at 5, and, with a validation file, the classifier of the
best validation loss, halving the learning rate after 2 epochs without
improvement and stopping at the 5th halving. Writes ``RUN/classification.json``
and the table ``RUN/classification.md`` (mean ± std of test accuracy over seeds).

Every fit (one number of labels, one seed) is a run of the shared training loop
(``training.loop``) in its own directory ``RUN/classification/labels<N>_seed<S>/``:
the loop owns its epochs, checkpoints, resume, NaN guard, progress and Ctrl-C,
and writes its ``results.json``. A killed command resumes in the fit it was in;
fits already finished are read back, not trained again.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import pathlib
import sys
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bnvae_jax import config as config_lib
from bnvae_jax import parallel
from bnvae_jax.data import batching
from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import ConfigError, DataError
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import checkpoints, rules, steps
from bnvae_jax.training import loop as loop_lib

# The seeds of the reference's t_s_f.py, in its order; more seeds continue the
# pattern (1010, 1111, ...).
REFERENCE_SEEDS = (783435, 101, 202, 303, 404, 505, 606, 707, 808, 909)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """How the classifier is trained (defaults: the reference's)."""

    mode: str = config_lib.key("finetune", choices=config_lib.CLF_MODES)
    subsets: str = config_lib.key("balanced", choices=config_lib.CLF_SUBSETS)
    epochs: int = config_lib.key(100, least=1)
    batch_size: int = config_lib.key(16, least=2)
    eval_batch_size: int = config_lib.key(128, least=1)
    learning_rate: float = 1.0
    clip_norm: float = 5.0
    lr_decay: float = 0.5
    decay_epoch: int = 2
    max_decay: int = 5
    dropout: float = 0.5  # on the mean, fine-tuning only

    def __post_init__(self):
        config_lib.check_keys(self)  # choices and least values
        if self.learning_rate <= 0 or self.clip_norm <= 0:
            raise ConfigError("learning_rate and clip_norm must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def seed_list(num: int) -> tuple[int, ...]:
    """The first ``num`` seeds: the reference's ten, then 1010, 1111, ..."""
    if num < 1:
        raise ConfigError(f"--seeds must be >= 1, got {num}")
    return (REFERENCE_SEEDS + tuple(101 * k for k in range(10, num)))[:num]


# -- data ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelledRows:
    """Encoded sentences with class ids.

    Attributes:
        rows: <int32>[L+2] id rows ``<s> w_1 .. w_L </s>``.
        labels: <int32>[N] class ids (index into the class names).
    """

    rows: tuple[np.ndarray, ...]
    labels: np.ndarray


def read_labelled(
    path: str, vocab: Vocab, classes: Sequence[str] | None = None
) -> tuple[LabelledRows, tuple[str, ...]]:
    """Reads a ``LABEL<TAB>TEXT`` file with the run's vocabulary.

    Args:
        path: the file.
        vocab: the run's vocabulary (unseen words become ``<unk>``).
        classes: the class names; None takes the file's labels, sorted.

    Returns:
        The rows and the class names.

    Raises:
        DataError: unreadable file, or a label outside ``classes``.
    """
    corpus = corpus_lib.read_corpus(path, labelled=True)
    if classes is None:
        classes = tuple(sorted(set(corpus.labels)))
        if len(classes) < 2:
            raise DataError(f"{path}: needs at least two labels, found {classes}")
    ids = {name: i for i, name in enumerate(classes)}
    if unknown := sorted(set(corpus.labels) - set(ids)):
        raise DataError(
            f"{path}: label(s) {', '.join(unknown[:5])} not in the training file's "
            f"{', '.join(classes)}"
        )
    labels = np.array([ids[label] for label in corpus.labels], dtype=np.int32)
    rows = tuple(corpus_lib.encode_corpus(corpus, vocab))
    return LabelledRows(rows, labels), tuple(classes)


def sample_subset(
    labels: np.ndarray, num: int, seed: int, *, balanced: bool
) -> np.ndarray:
    """Indices of ``num`` labelled examples, drawn without replacement.

    Args:
        labels: <int>[N] class ids of the pool.
        num: examples to draw.
        seed: the draw's seed.
        balanced: ``num // C`` per class (the first ``num % C`` classes get one
            more), as the reference's ``--split_even``; otherwise uniformly.

    Returns:
        <int64>[num] sorted indices into ``labels``.

    Raises:
        ConfigError: the pool (or a class, when balanced) is too small.
    """
    rng = np.random.default_rng(seed)
    if num > len(labels):
        raise ConfigError(f"{num} labels asked, the training file has {len(labels)}")
    if not balanced:
        return np.sort(rng.choice(len(labels), size=num, replace=False))
    classes, picked = np.unique(labels), []
    for i, c in enumerate(classes):
        k = num // len(classes) + (i < num % len(classes))
        members = np.flatnonzero(labels == c)
        if k > len(members):
            raise ConfigError(
                f"balanced subset of {num}: class {c} has only {len(members)} examples"
            )
        picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked))


# -- the trained run -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainedRun:
    """A run's encoder as saved in its best checkpoint."""

    model: TextVAE
    variables: Mapping
    vocab: Vocab
    bucket_width: int


@functools.partial(jax.jit, static_argnames=("model",))
def _locations(variables, tokens, lengths, mask, *, model: TextVAE) -> jax.Array:
    post = model.apply(variables, tokens, lengths, mask, train=False, method="encode")
    return model.family.location(post)


def posterior_means(
    run: TrainedRun, variables: Mapping, rows: Sequence[np.ndarray], batch_size: int
) -> np.ndarray:
    """Eval-mode posterior locations (after the BN head) in row order.

    The encoder's own posterior, without SA-VAE's refinement (which
    ``TextModel.encode`` applies).

    Returns:
        <float32>[N, n].
    """
    plan = eval_run.plan_batches(rows, batch_size, run.bucket_width)
    out = np.zeros((len(rows), run.model.cfg.latent_dim), np.float32)
    for batch in eval_run.iterate_arrays(plan):
        index = batch.pop("index")
        mu = _locations(variables, **batch, model=run.model)
        out[index[index >= 0]] = np.asarray(mu)[index >= 0]
    return out


# -- the linear classifier -----------------------------------------------------


def init_linear(key: jax.Array, features: int, classes: int) -> dict:
    """PyTorch's default Linear init: U(±1/sqrt(features)) for weight and bias."""
    bound = 1.0 / np.sqrt(features)
    w_key, b_key = jax.random.split(key)
    return {
        "w": jax.random.uniform(w_key, (features, classes), jnp.float32, -bound, bound),
        "b": jax.random.uniform(b_key, (classes,), jnp.float32, -bound, bound),
    }


def scores(clf: Mapping, x: np.ndarray, y: np.ndarray) -> dict:
    """Mean cross-entropy and accuracy of the linear classifier on features ``x``."""
    logits = np.asarray(x @ clf["w"] + clf["b"])
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {
        "loss": float(jnp.mean(ce)),
        "accuracy": float(np.mean(logits.argmax(-1) == y)),
    }


def _vae_variables(frozen: Mapping, params: Mapping, batch_stats) -> dict:
    """The VAE's variables: its frozen and its trained parameters, BN statistics."""
    params = {**frozen, **params["encoder_and_head"]}
    return {"params": params, "batch_stats": batch_stats}


# -- one fit on the shared loop --------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fit:
    """One classifier fit: how it is trained, on how many labels, with which seed."""

    cfg: ClassifierConfig
    num_labels: int
    seed: int
    num_classes: int


@dataclasses.dataclass(frozen=True)
class FitData:
    """The examples of one fit.

    Attributes:
        train: the labelled subset.
        valid: the validation examples (model selection), or None.
        test: the scored examples.
        features: frozen mode only: the fixed <float32>[N, n] features of
            "train", "valid" (when given) and "test", in row order.
    """

    train: LabelledRows
    valid: LabelledRows | None
    test: LabelledRows
    features: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """The loop settings of a fit (``loop.Context.settings``)."""

    epochs: int
    max_steps: int = 0
    log_every_steps: int = 50
    checkpoint_every_steps: int = 500
    min_batch: int = 2  # batches of one real example are skipped (the reference)

    def __post_init__(self):
        config_lib.check_settings(self, "fit settings")


@dataclasses.dataclass
class FitLoop(loop_lib.LoopState):
    """The loop's progress plus ``rules.plateau_since_best``'s fields."""

    learning_rate: float = 1.0
    bad_epochs: int = 0  # epochs since the last improvement or decay
    decays: int = 0


@dataclasses.dataclass(frozen=True)
class FitSetup:
    """A built fit.

    The train state's ``params`` hold the linear classifier (``"clf"``) and,
    when fine-tuning, the encoder and BN head (``"encoder_and_head"``), with
    the VAE's running statistics in ``batch_stats`` (``{}`` with a frozen
    encoder).

    Attributes:
        fit: the fit.
        data: its examples.
        vae: the trained run when fine-tuning; None with a frozen encoder.
        frozen: the VAE parameters that are not trained (fine-tuning).
        plan: fine-tuning: the length-bucketed training batches.
        ctx: the fit's workdir, checkpoints, writer, device and loop settings.
        config: what the fit's ``results.json`` records as its config.
        rng: the train step's key (dropout draws).
    """

    fit: Fit
    data: FitData
    vae: TrainedRun | None
    frozen: dict
    plan: batching.BatchPlan | None
    ctx: loop_lib.Context
    config: ml_collections.ConfigDict
    rng: jax.Array


@functools.partial(jax.jit, static_argnames=("model", "dropout"), donate_argnums=0)
def _train_step(state, batch, rng, frozen, *, model, dropout):
    """One clipped SGD step on the classifier's cross-entropy; pure.

    Args:
        state: the fit's train state (``FitSetup``).
        batch: labels <int32>[B], mask <float32>[B], and either the fixed
            features x <float32>[B, n] (``model`` None) or tokens, lengths.
        rng: dropout draws use ``fold_in(rng, state.step)``.
        frozen: the VAE parameters that are not trained (fine-tuning).
        model: the VAE when fine-tuning: features are its posterior locations
            in train mode (BN batch statistics, running statistics updated)
            with dropout on them; None for fixed features.
        dropout: the dropout rate on the features (fine-tuning).

    Returns:
        the new state and sums over the batch's real examples.
    """
    mask, labels = batch["mask"], batch["labels"]

    def loss_fn(params):
        stats = state.batch_stats
        if model is None:
            x = batch["x"]
        else:
            variables = _vae_variables(frozen, params, stats)
            inputs = batch["tokens"], batch["lengths"], mask
            post, updates = model.apply(
                variables, *inputs, train=True, method="encode", mutable=["batch_stats"]
            )
            stats = updates.get("batch_stats", stats)
            x, keep = model.family.location(post), 1.0 - dropout
            key = jax.random.fold_in(rng, state.step)
            x = x * jax.random.bernoulli(key, keep, x.shape) / keep
        logits = x @ params["clf"]["w"] + params["clf"]["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        loss = jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, (logits, stats)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, (logits, stats)), grads = grad_fn(state.params)
    count = jnp.sum(mask)
    metrics = {
        "loss_sum": loss * count,
        "correct_sum": jnp.sum((jnp.argmax(logits, -1) == labels) * mask),
        "count": count,
        "grad_norm": optax.tree.norm(grads),
        "learning_rate": state.opt_state.hyperparams["learning_rate"],
    }
    return state.apply_gradients(grads=grads, batch_stats=stats), metrics


def num_batches(s: FitSetup) -> int:
    if s.plan is not None:
        return len(s.plan)
    return -(-len(s.data.train.labels) // s.fit.cfg.batch_size)


def epoch_batches(s: FitSetup, epoch: int, start: int):
    """``(position, arrays, examples)`` of the epoch's batches from ``start``.

    Fine-tuning: the plan's buckets (``batching.iterate``); frozen: a
    permutation of the examples seeded by ``(seed, epoch)``, in slices of
    ``batch_size`` (the last padded, mask 0). Batches with fewer than
    ``min_batch`` real examples are skipped (arrays None; the plan has none).
    """
    labels, size = s.data.train.labels, s.fit.cfg.batch_size
    if s.plan is not None:
        batches = batching.iterate(s.plan, seed=s.fit.seed, epoch=epoch, start=start)
        for position, batch in batches:
            arrays = {k: getattr(batch, k) for k in ("tokens", "lengths", "mask")}
            arrays["labels"] = labels[np.maximum(batch.index, 0)]
            yield position, arrays, batch.num_real
        return
    order = np.random.default_rng([s.fit.seed, epoch]).permutation(len(labels))
    for position in range(start, num_batches(s)):
        index = order[position * size : (position + 1) * size]
        slots, real = np.pad(index, (0, size - len(index))), len(index)
        mask = (np.arange(size) < real).astype(np.float32)
        x = s.data.features["train"][slots] * mask[:, None]
        arrays = {"x": x, "labels": labels[slots], "mask": mask}
        yield position, arrays if real >= s.ctx.settings.min_batch else None, real


def make_step(s: FitSetup):
    """``step(state, arrays, loop, step) -> (state, metrics)`` of the fit."""
    model = None if s.vae is None else s.vae.model
    return lambda state, arrays, loop, step: _train_step(
        state, arrays, s.rng, s.frozen, model=model, dropout=s.fit.cfg.dropout
    )


def summarize(host: list, loop: FitLoop) -> dict:
    """The ``train/*`` scalars of the steps in ``host``."""
    count = max(sum(float(m["count"]) for m in host), 1.0)
    return {
        "train/loss": sum(float(m["loss_sum"]) for m in host) / count,
        "train/accuracy": sum(float(m["correct_sum"]) for m in host) / count,
        "train/grad_norm": float(host[-1]["grad_norm"]),
        "train/learning_rate": float(host[-1]["learning_rate"]),
    }


def split_scores(s: FitSetup, state, split: str) -> dict:
    """Loss and accuracy on ``split`` ('valid' or 'test'), eval-mode features."""
    rows = getattr(s.data, split)
    if s.vae is None:
        x = s.data.features[split]
    else:
        variables = _vae_variables(s.frozen, state.params, state.batch_stats)
        x = posterior_means(s.vae, variables, rows.rows, s.fit.cfg.eval_batch_size)
    return scores(state.params["clf"], x, rows.labels)


def evaluate(s: FitSetup, state) -> tuple[dict, float]:
    """Validation scores and the selection loss (+inf without a validation file).

    Without validation no epoch improves, no best checkpoint is kept, and the
    state after ``cfg.epochs`` epochs is the result.
    """
    if s.data.valid is None:
        return {}, math.inf
    val = split_scores(s, state, "valid")
    return val, val["loss"]


def rule(s: FitSetup, state, loop: FitLoop, val: dict, improved: bool):
    """The reference's plateau rule (``rules.plateau_since_best``); logs the epoch.

    A decay goes on from the best state with a fresh optimiser at the lower
    rate; the last decay stops (the loop's final scores reload the best).
    """
    head = f"labels {s.fit.num_labels} seed {s.fit.seed} epoch {loop.epoch}"
    if s.data.valid is None:
        logging.info("%s: (no validation file)", head)
        return state, {"lr": loop.learning_rate}
    action = rules.plateau_since_best(loop, improved, s.fit.cfg)
    if action == "decay":
        state = rules.reload_best(s.ctx, state, loop.learning_rate)
    loop.done = action == "stop"
    logging.info(
        f"{head}: valid loss {val['loss']:.4f} accuracy {val['accuracy']:.4f} "
        f"lr {loop.learning_rate:g}"
    )
    return state, {"lr": loop.learning_rate, "decays": loop.decays}


def final(s: FitSetup, state, loop: FitLoop) -> dict:
    """Validation and test scores of the selected state."""
    valid = {} if s.data.valid is None else split_scores(s, state, "valid")
    return {
        "valid": valid,
        "test": split_scores(s, state, "test"),
        "labels": s.fit.num_labels,
        "seed": s.fit.seed,
        "learning_rate": loop.learning_rate,
        "decays": loop.decays,
        "stopped": loop.done,
    }


def fit_info(fit: Fit, data: FitData) -> dict:
    """What a fit's workdir depends on (a longer ``epochs`` carries a fit on)."""
    classifier = dataclasses.asdict(fit.cfg)
    del classifier["epochs"]
    return {
        "classifier": classifier,
        "labels": fit.num_labels,
        "seed": fit.seed,
        "num_classes": fit.num_classes,
        "sizes": [
            None if rows is None else len(rows.labels)
            for rows in (data.train, data.valid, data.test)
        ],
    }


def build_fit(
    fit: Fit,
    data: FitData,
    workdir: str | os.PathLike,
    vae: TrainedRun | None = None,
    settings: FitSettings | None = None,
) -> tuple[FitSetup, steps.TrainState]:
    """One fit in ``workdir`` and its fresh state.

    The key ``key(fit.seed)`` initialises the classifier (when fine-tuning,
    its first split does, and the second draws the dropout masks).

    Args:
        fit: the fit.
        data: its examples (with ``features`` in frozen mode).
        workdir: the fit's directory (created; holds its checkpoints).
        vae: the trained run (fine-tuning).
        settings: the loop settings; by default ``cfg.epochs`` epochs.

    Raises:
        ConfigError: fine-tuning without a run, or without a usable batch.
        WorkdirError: ``workdir`` holds a fit with other settings.
    """
    cfg, root = fit.cfg, jax.random.key(fit.seed)
    settings = settings or FitSettings(epochs=cfg.epochs)
    if cfg.mode == "frozen":
        vae, plan, frozen, params, batch_stats = None, None, {}, {}, {}
        init_key = step_key = root
        dim = data.features["train"].shape[1]
    else:
        if vae is None:
            raise ConfigError("fine-tuning needs the trained run")
        init_key, step_key = jax.random.split(root)
        batches = batching.BatchingConfig(
            cfg.batch_size, vae.bucket_width, min_batch=settings.min_batch
        )
        plan = batching.plan_batches(data.train.rows, batches)
        if len(plan) == 0:
            raise ConfigError(
                f"fine-tuning needs at least {settings.min_batch} labelled "
                "sentences of one length"
            )
        frozen = dict(vae.variables["params"])
        trainable = {k: frozen.pop(k) for k in ("encoder", "head") if k in frozen}
        # Copies: the step donates the state, the run's arrays must stay.
        params = {"encoder_and_head": jax.tree.map(jnp.array, trainable)}
        batch_stats = jax.tree.map(jnp.array, vae.variables.get("batch_stats", {}))
        dim = vae.model.cfg.latent_dim
    params["clf"] = init_linear(init_key, dim, fit.num_classes)
    state = steps.TrainState.create(
        apply_fn=None,
        params=params,
        batch_stats=batch_stats,
        # One optimizer object per setting: the step is compiled once for all fits.
        tx=steps.make_optimizer(cfg.learning_rate, cfg.clip_norm),
    )
    state = state.replace(step=jnp.zeros((), jnp.int32))
    info = fit_info(fit, data)
    ctx = loop_lib.open_context(workdir, info, parallel.single_device(), settings)
    checkpoints.write_run_info(ctx.workdir, info)
    classifier, loop = dataclasses.asdict(cfg), dataclasses.asdict(settings)
    config = ml_collections.ConfigDict(dict(info, classifier=classifier, loop=loop))
    return FitSetup(fit, data, vae, frozen, plan, ctx, config, step_key), state


def train_fit(s: FitSetup, state) -> dict:
    """Trains (or resumes) the fit ``s`` from its latest checkpoint; its results.

    ``state`` is the fresh state ``build_fit`` gives. A finished fit reruns as a
    no-op returning its saved results (``loop.train``).
    """
    restored = loop_lib.restore(s.ctx, state, FitLoop)
    start = restored or (state, FitLoop(learning_rate=s.fit.cfg.learning_rate))
    return loop_lib.train(
        s.ctx,
        *start,
        method=f"classifier_{s.fit.cfg.mode}",
        config=s.config,
        **loop_lib.task_fns(sys.modules[__name__], s),
    )


# -- the experiment ------------------------------------------------------------


def run_classification(
    run: TrainedRun,
    splits: FitData,
    *,
    num_classes: int,
    label_counts: Sequence[int],
    seeds: Sequence[int],
    cfg: ClassifierConfig,
    fits_dir: str | os.PathLike,
) -> dict:
    """Test accuracy for every (number of labels, seed).

    ``splits.train`` is the pool the labelled subsets are drawn from. Each fit
    trains on the shared loop in ``fits_dir/labels<N>_seed<S>/`` (checkpoints,
    metrics and its ``results.json``), so a killed experiment resumes at the
    fit it stopped in, and finished fits are not trained again.

    Returns:
        ``{"results": [{"labels": N, "accuracies": [...], "mean": m, "std": s},
        ...], ...}`` in the order of ``label_counts``
        (std over seeds with ddof 0, as the reference prints it).
    """
    pool, valid, balanced = splits.train, splits.valid, cfg.subsets == "balanced"
    named = {"train": pool, "valid": valid, "test": splits.test}
    feats = {  # frozen only: the fixed features of the pool ("train"), valid, test
        name: posterior_means(run, run.variables, rows.rows, cfg.eval_batch_size)
        for name, rows in named.items()
        if rows is not None and cfg.mode == "frozen"
    }
    results = []
    for num in label_counts:
        accs = []
        for seed in seeds:
            subset = sample_subset(pool.labels, num, seed, balanced=balanced)
            rows = tuple(pool.rows[i] for i in subset)
            train = LabelledRows(rows, pool.labels[subset])
            features = dict(feats, train=feats["train"][subset]) if feats else {}
            fit = Fit(cfg=cfg, num_labels=num, seed=seed, num_classes=num_classes)
            data = dataclasses.replace(splits, train=train, features=features)
            workdir = pathlib.Path(fits_dir) / f"labels{num}_seed{seed}"
            acc = train_fit(*build_fit(fit, data, workdir, vae=run))["test"]["accuracy"]
            logging.info("labels %d seed %d: test accuracy %.4f", num, seed, acc)
            accs.append(acc)
        mean, std = float(np.mean(accs)), float(np.std(accs))
        results.append(dict(labels=num, accuracies=accs, mean=mean, std=std))
    return {
        "results": results,
        "seeds": list(seeds),
        "classifier": dataclasses.asdict(cfg),
        "num_classes": num_classes,
        "pool_size": len(pool.labels),
        "test_size": len(splits.test.labels),
        "valid_size": None if valid is None else len(valid.labels),
    }


def format_table(name: str, report: Mapping) -> str:
    """A markdown table: one row, accuracy (%) mean ± std per number of labels."""
    rows = report["results"]
    header = "| run | " + " | ".join(f"{r['labels']} labels" for r in rows) + " |"
    rule = "|---|" + "---|" * len(rows)
    cells = [f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for r in rows]
    return "\n".join([header, rule, f"| {name} | " + " | ".join(cells) + " |"])
