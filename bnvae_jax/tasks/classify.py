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
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bnvae_jax.data import batching
from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import ConfigError, DataError, WorkdirError
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.training import checkpoints, config_lib

# The seeds of the reference's t_s_f.py, in its order; more seeds continue the
# pattern (1010, 1111, ...).
REFERENCE_SEEDS = (783435, 101, 202, 303, 404, 505, 606, 707, 808, 909)
MODES = ("frozen", "finetune")
SUBSETS = ("balanced", "random")


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """How the classifier is trained (defaults: the reference's)."""

    mode: str = "finetune"
    subsets: str = "balanced"
    epochs: int = 100
    batch_size: int = 16
    eval_batch_size: int = 128
    learning_rate: float = 1.0
    clip_norm: float = 5.0
    lr_decay: float = 0.5
    decay_epoch: int = 2
    max_decay: int = 5
    dropout: float = 0.5  # on the mean, fine-tuning only

    def __post_init__(self):
        if self.mode not in MODES:
            raise ConfigError(f"mode={self.mode!r} is not one of {', '.join(MODES)}")
        if self.subsets not in SUBSETS:
            raise ConfigError(
                f"subsets={self.subsets!r} is not one of {', '.join(SUBSETS)}"
            )
        if self.epochs < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise ConfigError("epochs >= 1, batch_size >= 2, eval_batch_size >= 1")
        if self.learning_rate <= 0 or self.clip_norm <= 0:
            raise ConfigError("learning_rate and clip_norm must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")


def seed_list(num: int) -> tuple[int, ...]:
    """The first ``num`` seeds: the reference's ten, then 1010, 1111, ..."""
    if num < 1:
        raise ConfigError(f"--seeds must be >= 1, got {num}")
    extra = tuple(101 * k for k in range(10, num))
    return (REFERENCE_SEEDS + extra)[:num]


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
    unknown = sorted(set(corpus.labels) - set(ids))
    if unknown:
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
    classes = np.unique(labels)
    per_class = [
        num // len(classes) + (i < num % len(classes)) for i in range(len(classes))
    ]
    picked = []
    for c, k in zip(classes, per_class, strict=True):
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


def load_run(workdir: str) -> TrainedRun:
    """Reads ``config.json``, ``vocab.txt`` and the best checkpoint of a run.

    Raises:
        WorkdirError: not a finished run, or a run without a latent.
    """
    path = pathlib.Path(workdir)
    config_path = path / "config.json"
    if not config_path.is_file():
        raise WorkdirError(f"{workdir} holds no run (no config.json)")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    vocab = Vocab.load(path / "vocab.txt")
    run = config_lib.resolve(config, len(vocab))
    if not run.model.latent_dim:
        raise WorkdirError(f"{workdir}: method {run.method_name} has no latent code")
    if not (path / checkpoints.CHECKPOINT_DIR / checkpoints.BEST_DIR).is_dir():
        raise WorkdirError(f"{workdir} has no best checkpoint yet")
    # No template: the saved tree comes back as it was written.
    tree, _ = checkpoints.Checkpointer(path).restore_best(None)
    # A head without running statistics may come back without the entry.
    variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats") or {}}
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    return TrainedRun(
        model=TextVAE(run.model),
        variables=variables,
        vocab=vocab,
        bucket_width=int(config.data.bucket_width),
    )


def _batch_dict(batch: batching.Batch) -> dict[str, np.ndarray]:
    return {"tokens": batch.tokens, "lengths": batch.lengths, "mask": batch.mask}


@functools.partial(jax.jit, static_argnames=("model",))
def _locations(variables, tokens, lengths, mask, *, model: TextVAE) -> jax.Array:
    post = model.apply(variables, tokens, lengths, mask, train=False, method="encode")
    return model.family.location(post)


def posterior_means(
    run: TrainedRun, variables: Mapping, rows: Sequence[np.ndarray], batch_size: int
) -> np.ndarray:
    """Eval-mode posterior locations (after the BN head) in row order.

    Returns:
        <float32>[N, n].
    """
    plan = batching.plan_batches(
        rows,
        batching.BatchingConfig(batch_size=batch_size, bucket_width=run.bucket_width),
    )
    out = np.zeros((len(rows), run.model.cfg.latent_dim), np.float32)
    for i in range(len(plan)):
        batch = plan.make_batch(i)
        mu = _locations(variables, **_batch_dict(batch), model=run.model)
        real = batch.index >= 0
        out[batch.index[real]] = np.asarray(mu)[real]
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


def linear_logits(clf: Mapping, x: jax.Array) -> jax.Array:
    """<float32>[B, C] logits of features <float32>[B, n]."""
    return x @ clf["w"] + clf["b"]


def masked_cross_entropy(logits, labels, mask) -> jax.Array:
    """Mean cross-entropy over the real (mask 1) examples."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _sgd(params, grads, lr, clip_norm):
    norm = optax.tree.norm(grads)
    scale = lr * jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))
    return jax.tree_util.tree_map(lambda p, g: p - scale * g, params, grads)


@functools.partial(jax.jit, static_argnames=("clip_norm",))
def _linear_epoch(clf, lr, x, y, mask, *, clip_norm: float):
    """SGD over batches x <float32>[K, B, n], y <int32>[K, B], mask [K, B]."""

    def step(clf, batch):
        xb, yb, mb = batch

        def loss(c):
            return masked_cross_entropy(linear_logits(c, xb), yb, mb)

        new = _sgd(clf, jax.grad(loss)(clf), lr, clip_norm)
        # Batches of one real example are skipped, as in the reference.
        keep = jnp.sum(mb) >= 2
        return jax.tree_util.tree_map(
            functools.partial(jnp.where, keep), new, clf
        ), None

    clf, _ = jax.lax.scan(step, clf, (x, y, mask))
    return clf


def _epoch_batches(num: int, batch_size: int, rng: np.random.Generator):
    """A shuffled order cut into [K, B] index slots and their mask."""
    order = rng.permutation(num)
    k = -(-num // batch_size)
    slots = np.zeros(k * batch_size, np.int64)
    mask = np.zeros(k * batch_size, np.float32)
    slots[:num], mask[:num] = order, 1.0
    return slots.reshape(k, batch_size), mask.reshape(k, batch_size)


@dataclasses.dataclass(frozen=True)
class Plateau:
    """The reference's decay-on-plateau state (host side)."""

    learning_rate: float
    best_loss: float = float("inf")
    bad_epochs: int = 0
    decays: int = 0


def plateau_step(
    state: Plateau, loss: float, cfg: ClassifierConfig
) -> tuple[Plateau, str]:
    """Next state after an epoch's validation loss.

    Returns:
        the new state and what to do: 'best' (save), 'decay' (reload the best,
        lower the rate), 'stop' (the last decay was reached) or 'keep'.
    """
    if loss < state.best_loss:
        return dataclasses.replace(state, best_loss=loss, bad_epochs=0), "best"
    bad = state.bad_epochs + 1
    if bad < cfg.decay_epoch:
        return dataclasses.replace(state, bad_epochs=bad), "keep"
    state = dataclasses.replace(
        state,
        learning_rate=state.learning_rate * cfg.lr_decay,
        bad_epochs=0,
        decays=state.decays + 1,
    )
    return state, "stop" if state.decays >= cfg.max_decay else "decay"


def train_linear(
    key: jax.Array,
    x: np.ndarray,
    y: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray] | None,
    num_classes: int,
    cfg: ClassifierConfig,
    seed: int,
) -> dict:
    """A linear classifier on fixed features (the frozen-encoder setting).

    Args:
        key: initialisation key.
        x: <float32>[N, n] features.
        y: <int32>[N] labels.
        valid: validation features and labels for model selection, or None
            (then the classifier after ``cfg.epochs`` epochs is returned).
        num_classes: C.
        cfg: optimisation settings.
        seed: batch-order seed.

    Returns:
        the classifier parameters {'w': [n, C], 'b': [C]}.
    """
    clf = init_linear(key, x.shape[1], num_classes)
    best, plateau = clf, Plateau(cfg.learning_rate)
    rng = np.random.default_rng(seed)
    for _ in range(cfg.epochs):
        slots, mask = _epoch_batches(len(x), cfg.batch_size, rng)
        clf = _linear_epoch(
            clf,
            jnp.float32(plateau.learning_rate),
            x[slots],
            y[slots],
            mask,
            clip_norm=cfg.clip_norm,
        )
        if valid is None:
            continue
        loss = float(
            masked_cross_entropy(
                linear_logits(clf, valid[0]), valid[1], jnp.ones(len(valid[1]))
            )
        )
        plateau, action = plateau_step(plateau, loss, cfg)
        if action == "best":
            best = clf
        elif action in ("decay", "stop"):
            clf = best
            if action == "stop":
                break
    return best if valid is not None else clf


def accuracy(clf: Mapping, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(np.asarray(linear_logits(clf, x)), -1) == y))


# -- fine-tuning the encoder ---------------------------------------------------


def _split_trainable(variables: Mapping) -> tuple[dict, dict]:
    """(encoder + head params, the rest) of a TextVAE's params."""
    params = dict(variables["params"])
    trainable = {k: params.pop(k) for k in ("encoder", "head") if k in params}
    return trainable, params


@functools.partial(jax.jit, static_argnames=("model", "cfg"))
def _finetune_step(trainable, clf, frozen, batch_stats, batch, key, lr, *, model, cfg):
    def loss_fn(trainable, clf):
        variables = {"params": {**frozen, **trainable}, "batch_stats": batch_stats}
        post, updates = model.apply(
            variables,
            batch["tokens"],
            batch["lengths"],
            batch["mask"],
            train=True,
            method="encode",
            mutable=["batch_stats"],
        )
        x = model.family.location(post)
        keep = 1.0 - cfg.dropout
        x = x * jax.random.bernoulli(key, keep, x.shape) / keep
        logits = linear_logits(clf, x)
        loss = masked_cross_entropy(logits, batch["labels"], batch["mask"])
        return loss, updates.get("batch_stats", batch_stats)

    grads, new_stats = jax.grad(loss_fn, argnums=(0, 1), has_aux=True)(trainable, clf)
    trainable, clf = _sgd((trainable, clf), grads, lr, cfg.clip_norm)
    return trainable, clf, new_stats


def _merged(trainable, frozen, batch_stats) -> dict:
    return {"params": {**frozen, **trainable}, "batch_stats": batch_stats}


def finetune(
    key: jax.Array,
    run: TrainedRun,
    train: LabelledRows,
    valid: LabelledRows | None,
    num_classes: int,
    cfg: ClassifierConfig,
    seed: int,
) -> tuple[dict, dict]:
    """Encoder, BN head and linear classifier trained together (reference default).

    As in the reference, the encoder runs in train mode while fine-tuning (BN
    batch statistics, running statistics updated) on length-bucketed batches of
    fixed membership; features for validation and test use eval mode.

    Returns:
        (variables of the fine-tuned TextVAE, classifier parameters).
    """
    init_key, drop_key = jax.random.split(key)
    trainable, frozen = _split_trainable(run.variables)
    batch_stats = run.variables.get("batch_stats", {})
    clf = init_linear(init_key, run.model.cfg.latent_dim, num_classes)
    plan = batching.plan_batches(
        train.rows,
        batching.BatchingConfig(
            batch_size=cfg.batch_size, bucket_width=run.bucket_width, min_batch=2
        ),
    )
    if len(plan) == 0:
        raise ConfigError(
            "fine-tuning needs at least 2 labelled sentences of one length"
        )
    best = (trainable, clf, batch_stats)
    plateau, step = Plateau(cfg.learning_rate), 0
    for epoch in range(cfg.epochs):
        for _, batch in batching.iterate(plan, seed=seed, epoch=epoch):
            arrays = _batch_dict(batch)
            arrays["labels"] = train.labels[np.maximum(batch.index, 0)]
            trainable, clf, batch_stats = _finetune_step(
                trainable,
                clf,
                frozen,
                batch_stats,
                arrays,
                jax.random.fold_in(drop_key, step),
                jnp.float32(plateau.learning_rate),
                model=run.model,
                cfg=cfg,
            )
            step += 1
        if valid is None:
            continue
        x = posterior_means(
            run,
            _merged(trainable, frozen, batch_stats),
            valid.rows,
            cfg.eval_batch_size,
        )
        loss = float(
            masked_cross_entropy(
                linear_logits(clf, x), valid.labels, jnp.ones(len(valid.labels))
            )
        )
        plateau, action = plateau_step(plateau, loss, cfg)
        if action == "best":
            best = (trainable, clf, batch_stats)
        elif action in ("decay", "stop"):
            trainable, clf, batch_stats = best
            if action == "stop":
                break
    if valid is not None:
        trainable, clf, batch_stats = best
    return _merged(trainable, frozen, batch_stats), clf


# -- the experiment ------------------------------------------------------------


def run_classification(
    run: TrainedRun,
    pool: LabelledRows,
    valid: LabelledRows | None,
    test: LabelledRows,
    *,
    num_classes: int,
    label_counts: Sequence[int],
    seeds: Sequence[int],
    cfg: ClassifierConfig,
) -> dict:
    """Test accuracy for every (number of labels, seed).

    Returns:
        ``{"results": [{"labels": N, "accuracies": [...], "mean": m, "std": s},
        ...], ...}`` in the order of ``label_counts``
        (std over seeds with ddof 0, as the reference prints it).
    """
    balanced = cfg.subsets == "balanced"
    if cfg.mode == "frozen":
        feats = {
            "pool": posterior_means(run, run.variables, pool.rows, cfg.eval_batch_size),
            "test": posterior_means(run, run.variables, test.rows, cfg.eval_batch_size),
        }
        if valid is not None:
            feats["valid"] = posterior_means(
                run, run.variables, valid.rows, cfg.eval_batch_size
            )
    results = []
    for num in label_counts:
        accs = []
        for seed in seeds:
            subset = sample_subset(pool.labels, num, seed, balanced=balanced)
            key = jax.random.key(seed)
            if cfg.mode == "frozen":
                v = None if valid is None else (feats["valid"], valid.labels)
                clf = train_linear(
                    key,
                    feats["pool"][subset],
                    pool.labels[subset],
                    v,
                    num_classes,
                    cfg,
                    seed,
                )
                acc = accuracy(clf, feats["test"], test.labels)
            else:
                train = LabelledRows(
                    tuple(pool.rows[i] for i in subset), pool.labels[subset]
                )
                variables, clf = finetune(
                    key, run, train, valid, num_classes, cfg, seed
                )
                x = posterior_means(run, variables, test.rows, cfg.eval_batch_size)
                acc = accuracy(clf, x, test.labels)
            logging.info("labels %d seed %d: test accuracy %.4f", num, seed, acc)
            accs.append(acc)
        results.append(
            {
                "labels": num,
                "accuracies": accs,
                "mean": float(np.mean(accs)),
                "std": float(np.std(accs)),
            }
        )
    return {
        "results": results,
        "seeds": list(seeds),
        "classifier": dataclasses.asdict(cfg),
        "num_classes": num_classes,
        "pool_size": len(pool.labels),
        "test_size": len(test.labels),
        "valid_size": None if valid is None else len(valid.labels),
    }


def format_table(name: str, report: Mapping) -> str:
    """A markdown table: one row, accuracy (%) mean ± std per number of labels."""
    rows = report["results"]
    header = "| run | " + " | ".join(f"{r['labels']} labels" for r in rows) + " |"
    rule = "|---|" + "---|" * len(rows)
    cells = [f"{100 * r['mean']:.1f} ± {100 * r['std']:.1f}" for r in rows]
    return "\n".join([header, rule, f"| {name} | " + " | ".join(cells) + " |"])
