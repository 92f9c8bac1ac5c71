"""``train_and_evaluate`` for the dialog CVAEs: Zhao et al.'s loop with exact resume.

Adam with global-norm clipping; an epoch is one shuffled pass over the training
examples cut at ``train.steps_per_epoch`` batches; after each epoch the
validation ELBO drives the best checkpoint and Zhao et al.'s patience rule.
Checkpoints (orbax, via ``checkpoints.Checkpointer``) hold the train state and
the host loop state, so a killed run resumes at the same batch with the same
random numbers. The best state is then scored on valid and test (ELBO, KL, PPL)
and on test by sampled responses (BLEU, A-bow, E-bow); samples and a CSV for
human rating are written to the workdir.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import logging
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from bnvae_jax import fileio
from bnvae_jax.data.vocab import BOS, EOS, PAD
from bnvae_jax.errors import UserError
from bnvae_jax.tasks.dialog import config as config_lib
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import metrics as metrics_lib
from bnvae_jax.tasks.dialog import objectives
from bnvae_jax.tasks.dialog.model import DialogCVAE
from bnvae_jax.training import checkpoints, schedules, writers


class DivergedError(UserError):
    """The loss became NaN or infinite."""


class TrainState(train_state.TrainState):
    """Parameters, BN running statistics and Adam state; ``step`` counts batches."""

    batch_stats: dict


@dataclasses.dataclass
class LoopState:
    """Host-side progress, saved with every checkpoint (JSON)."""

    epoch: int = 0
    position: int = 0  # next batch of the epoch's order
    best_loss: float = math.inf
    best_epoch: int = -1
    patience: float = 10.0
    threshold: float = math.inf
    train_seconds: float = 0.0
    done: bool = False  # stopped for good by early stopping
    epoch_sums: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("best_loss", "threshold"):
            d[key] = None if math.isinf(d[key]) else d[key]
        return d

    @classmethod
    def from_json(cls, d: dict) -> LoopState:
        d = dict(d)
        for key in ("best_loss", "threshold"):
            d[key] = math.inf if d.get(key) is None else d[key]
        return cls(**d)


def patience_update(loop: LoopState, val_loss: float, done_epochs: int, cfg) -> bool:
    """Zhao et al.'s early-stopping rule; returns True when ``val_loss`` is a new best.

    A new best that beats the last threshold by the factor ``improve_threshold``
    extends the patience to ``done_epochs * patience_increase`` epochs; training
    stops once ``patience <= done_epochs``.
    """
    improved = val_loss < loop.best_loss
    if improved:
        if val_loss <= loop.threshold * cfg.improve_threshold:
            loop.patience = max(loop.patience, done_epochs * cfg.patience_increase)
            loop.threshold = val_loss
        loop.best_loss = val_loss
    if cfg.early_stop and loop.patience <= done_epochs:
        loop.done = True
    return improved


# -- steps ---------------------------------------------------------------------


def _terms(out, mask) -> objectives.LossTerms:
    return objectives.LossTerms(out.rec, out.kl, out.prior_kl, out.bow, mask)


def _sums(out, mask) -> dict:
    return {
        "rec_sum": jnp.sum(out.rec * mask),
        "kl_sum": jnp.sum(out.kl * mask),
        "prior_kl_sum": jnp.sum(out.prior_kl * mask),
        "bow_sum": jnp.sum(out.bow * mask),
        "tokens": jnp.sum(out.tokens * mask),
        "count": jnp.sum(mask),
    }


def train_step(state, batch, rng, *, method, kl_schedule, prior_schedule):
    """One Adam step on ``method``'s loss; pure, jitted once.

    Returns:
      the new state and scalar sums over the real examples of the batch.
    """
    key = jax.random.fold_in(rng, state.step)
    kl_weight = kl_schedule(state.step)
    prior_weight = prior_schedule(state.step)

    def loss_fn(params):
        out, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch,
            train=True,
            rngs={"sample": key},
            mutable=["batch_stats"],
        )
        terms = _terms(out, batch["mask"])
        loss = objectives.method_loss(method, terms, kl_weight, prior_weight)
        return loss, (out, updates)

    grads, (out, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    metrics = _sums(out, batch["mask"])
    metrics.update(
        kl_weight=kl_weight,
        prior_kl_weight=prior_weight,
        grad_norm=optax.tree.norm(grads),
    )
    return new_state, metrics


def eval_step(variables, batch, key, *, model):
    """Sums of every term with z ~ q (BN running statistics)."""
    out = model.apply(variables, batch, train=False, rngs={"sample": key})
    return _sums(out, batch["mask"])


def generate_step(variables, batch, key, *, model, num_samples, max_len):
    return model.apply(
        variables,
        batch,
        num_samples=num_samples,
        max_len=max_len,
        method="generate",
        rngs={"sample": key},
    )


# -- setup ---------------------------------------------------------------------


@dataclasses.dataclass
class Trainer:
    """Everything the loop touches; built once by ``setup``."""

    config: ml_collections.ConfigDict
    run: config_lib.DialogRunConfig
    workdir: pathlib.Path
    data: data_lib.DialogData
    model: DialogCVAE
    ckpt: checkpoints.Checkpointer
    writer: writers.MetricWriter
    rng: jax.Array
    eval_key: jax.Array

    @property
    def batch_size(self) -> int:
        return self.config.data.batch_size

    def epoch_batches(self) -> int:
        n = len(self.data.splits["train"])
        return min(-(-n // self.batch_size), self.run.train.steps_per_epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.run.seed, epoch])
        return rng.permutation(len(self.data.splits["train"]))

    def variables(self, state) -> dict:
        return {"params": state.params, "batch_stats": state.batch_stats}

    def save_latest(self, state, loop: LoopState) -> None:
        self.ckpt.save_latest(int(state.step), _state_tree(state), loop.to_json())


def _state_tree(state) -> dict:
    return {
        "step": state.step,
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
    }


@functools.lru_cache(maxsize=8)
def make_optimizer(learning_rate: float, clip_norm: float):
    """Adam after global-norm clipping (one object per setting: jit caches on it)."""
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


def load_data(config: ml_collections.ConfigDict) -> data_lib.DialogData:
    d = config.data
    return data_lib.load_dialog_data(
        {"train": d.train_file, "valid": d.valid_file, "test": d.test_file},
        file_format=d.format,
        max_vocab=d.max_vocab,
        max_utt_len=d.max_utt_len,
        context_size=d.context_size,
    )


def glove_embeddings(path: str, vocab, table: np.ndarray) -> np.ndarray:
    """``table`` with the rows of words found in the GloVe file replaced (pad row 0).

    Raises:
      UserError: the file's vectors do not have the embedding width.
    """
    glove = metrics_lib.load_glove(path, set(vocab.words))
    table = np.array(table)
    for i, word in enumerate(vocab.words):
        if word in glove:
            if glove[word].shape[0] != table.shape[1]:
                raise UserError(
                    f"{path}: vectors have {glove[word].shape[0]} values but "
                    f"model.emb_dim is {table.shape[1]}"
                )
            table[i] = glove[word]
    table[PAD] = 0.0
    return table


def create_train_state(trainer: Trainer, key: jax.Array) -> TrainState:
    split = trainer.data.splits["train"]
    example = split.batch(
        np.arange(min(len(split), trainer.batch_size)), trainer.batch_size
    )
    init = jax.jit(functools.partial(trainer.model.init, train=False))
    variables = init({"params": key, "sample": jax.random.fold_in(key, 1)}, example)
    params = variables["params"]
    path = trainer.config.model.embedding_file
    if path:
        table = glove_embeddings(path, trainer.data.vocab, params["embed"]["embedding"])
        params = {**params, "embed": {"embedding": jnp.asarray(table, jnp.float32)}}
    t = trainer.run.train
    state = TrainState.create(
        apply_fn=trainer.model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=make_optimizer(t.learning_rate, t.clip_norm),
    )
    return state.replace(step=jnp.zeros((), jnp.int32))


def run_info(config: ml_collections.ConfigDict, data: data_lib.DialogData) -> dict:
    info = {k: _get(config, k) for k in config_lib.ARCHITECTURE_KEYS}
    info["vocab_size"] = len(data.vocab)
    info["vocab_fingerprint"] = data.vocab.fingerprint()
    info["topics"] = list(data.topics)
    return info


def _get(config, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def setup(config: ml_collections.ConfigDict, workdir: str, write: bool = True):
    """Reads the data, checks the workdir, builds the model and a fresh state."""
    config_lib.validate(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    data = load_data(config)
    info = run_info(config, data)
    checkpoints.check_run_info(workdir, info, keys=list(info))
    run = config_lib.resolve(config, len(data.vocab), len(data.topics))
    ckpt = checkpoints.Checkpointer(workdir)
    resume = ckpt.latest_step()
    writer = writers.create_writer(
        workdir,
        enabled=write and jax.process_index() == 0,
        purge_step=None if resume is None else resume + 1,
    )
    root = jax.random.key(run.seed)
    trainer = Trainer(
        config=config,
        run=run,
        workdir=workdir,
        data=data,
        model=DialogCVAE(run.model),
        ckpt=ckpt,
        writer=writer,
        rng=jax.random.fold_in(root, 1),
        eval_key=jax.random.key(run.eval.seed),
    )
    state = create_train_state(trainer, jax.random.fold_in(root, 0))
    if write and jax.process_index() == 0:
        data.vocab.save(workdir / "vocab.txt")
        checkpoints.write_run_info(workdir, info)
        fileio.write_text_atomic(
            workdir / "config.json", config.to_json_best_effort(indent=2)
        )
    return trainer, state


def restore_or_start(trainer: Trainer, state):
    restored = trainer.ckpt.restore_latest(_state_tree(state))
    if restored is None:
        return state, LoopState(patience=float(trainer.run.train.patience))
    tree, meta = restored
    logging.info("resuming from step %d", int(tree["step"]))
    return state.replace(**tree), LoopState.from_json(meta)


# -- the loop ------------------------------------------------------------------


def step_function(trainer: Trainer):
    return _jitted_train(trainer.run.method, trainer.run.train)


@functools.lru_cache(maxsize=8)
def _jitted_train(method: objectives.DialogMethod, t: config_lib.DialogTrainConfig):
    """The jitted step of ``method``; cached so a resumed run compiles it once."""
    kl = schedules.linear(0.0, float(t.full_kl_steps))
    prior = kl if t.prior_kl_schedule == "annealed" else schedules.constant(1.0)
    fn = functools.partial(
        train_step, method=method, kl_schedule=kl, prior_schedule=prior
    )
    return jax.jit(fn, donate_argnums=0)


def _flush(pending: list, loop: LoopState, writer, step: int) -> dict:
    """Moves step metrics to the host, checks them, logs their mean."""
    if not pending:
        return {}
    host = jax.device_get(pending)
    pending.clear()
    for offset, m in enumerate(host):
        if not (
            np.isfinite(m["rec_sum"] + m["kl_sum"]) and np.isfinite(m["grad_norm"])
        ):
            bad = step - len(host) + offset + 1
            raise DivergedError(
                f"training loss became non-finite at step {bad}"
                f" (epoch {loop.epoch}); the last good checkpoint is kept"
            )
    keys = ("rec_sum", "kl_sum", "prior_kl_sum", "bow_sum", "tokens", "count")
    totals = {k: sum(float(m[k]) for m in host) for k in keys}
    for k, v in totals.items():
        loop.epoch_sums[k] = loop.epoch_sums.get(k, 0.0) + v
    count = max(totals["count"], 1.0)
    scalars = {
        "train/rec": totals["rec_sum"] / count,
        "train/kl": totals["kl_sum"] / count,
        "train/prior_kl": totals["prior_kl_sum"] / count,
        "train/bow": totals["bow_sum"] / count,
        "train/ppl": math.exp(min(totals["rec_sum"] / max(totals["tokens"], 1.0), 50)),
        "train/kl_weight": float(host[-1]["kl_weight"]),
        "train/grad_norm": float(host[-1]["grad_norm"]),
    }
    writer.write_scalars(step, scalars)
    return scalars


def _reached_max_steps(cfg, state) -> bool:
    return bool(cfg.max_steps) and int(state.step) >= cfg.max_steps


def train_epochs(trainer: Trainer, state, loop: LoopState):
    """Runs epochs from ``loop`` on; Ctrl-C saves the last completed step."""
    cfg = trainer.run.train
    step_fn = step_function(trainer)
    split = trainer.data.splits["train"]
    num_batches = trainer.epoch_batches()
    pending: list = []
    try:
        while not loop.done and loop.epoch < cfg.epochs:
            if _reached_max_steps(cfg, state):
                break
            order = trainer.epoch_order(loop.epoch)
            while loop.position < num_batches and not _reached_max_steps(cfg, state):
                rows = order[loop.position * trainer.batch_size :][: trainer.batch_size]
                loop.position += 1
                if len(rows) < cfg.min_batch:
                    continue
                start = time.perf_counter()
                batch = split.batch(rows, trainer.batch_size)
                state, metrics = step_fn(state, batch, trainer.rng)
                pending.append(metrics)
                step = int(state.step)
                if step % cfg.log_every_steps == 0:
                    _flush(pending, loop, trainer.writer, step)
                loop.train_seconds += time.perf_counter() - start
                if step % cfg.checkpoint_every_steps == 0:
                    _flush(pending, loop, trainer.writer, step)
                    trainer.save_latest(state, loop)
            _flush(pending, loop, trainer.writer, int(state.step))
            if loop.position >= num_batches:
                end_of_epoch(trainer, state, loop)
            elif loop.best_epoch < 0:
                end_of_epoch(trainer, state, loop, advance=False)
            trainer.save_latest(state, loop)
    except KeyboardInterrupt:
        _flush(pending, loop, trainer.writer, int(state.step))
        trainer.save_latest(state, loop)
        raise
    return state


def end_of_epoch(trainer: Trainer, state, loop: LoopState, advance: bool = True):
    """Validation ELBO, best checkpoint and the patience rule; next epoch."""
    step, epoch = int(state.step), loop.epoch
    val = evaluate_split(trainer, state, "valid")
    improved = patience_update(loop, val["elbo"], epoch + 1, trainer.run.train)
    if improved:
        loop.best_epoch = epoch
        trainer.ckpt.save_best(step, _state_tree(state), {"epoch": epoch, "valid": val})
    sums, count = loop.epoch_sums, max(loop.epoch_sums.get("count", 0.0), 1.0)
    scalars = {f"valid/{k}": v for k, v in val.items()}
    scalars.update(
        epoch=epoch,
        patience=loop.patience,
        **{
            f"epoch/train_{k}": sums.get(f"{k}_sum", 0.0) / count
            for k in ("rec", "kl", "prior_kl", "bow")
        },
    )
    trainer.writer.write_scalars(step, scalars)
    logging.info(
        "epoch %d: valid elbo %.3f ppl %.2f kl %.3f",
        epoch,
        val["elbo"],
        val["ppl"],
        val["kl"],
    )
    if advance:
        loop.epoch += 1
        loop.position = 0
        loop.epoch_sums = {}


# -- evaluation ----------------------------------------------------------------


SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}  # evaluation key per split


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


def evaluate_split(trainer: Trainer, state, split_name: str) -> dict:
    """ELBO terms on a split with z ~ q; PPL is exp(Σ rec / Σ target tokens)."""
    split = trainer.data.splits[split_name]
    size = trainer.config.data.eval_batch_size
    fn = _jitted_eval(trainer.model)
    key = jax.random.fold_in(trainer.eval_key, SPLIT_IDS[split_name])
    totals: dict[str, float] = {}
    for i, rows in enumerate(_batches(len(split), size)):
        out = jax.device_get(
            fn(
                trainer.variables(state),
                split.batch(rows, size),
                jax.random.fold_in(key, i),
            )
        )
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    n = max(totals["count"], 1.0)
    rec, kl = totals["rec_sum"] / n, totals["kl_sum"] / n
    return {
        "rec": rec,
        "kl": kl,
        "prior_kl": totals["prior_kl_sum"] / n,
        "bow": totals["bow_sum"] / n,
        "elbo": rec + kl,
        "ppl": math.exp(totals["rec_sum"] / max(totals["tokens"], 1.0)),
        "examples": int(totals["count"]),
    }


@functools.lru_cache(maxsize=8)
def _jitted_eval(model):
    return jax.jit(functools.partial(eval_step, model=model))


@functools.lru_cache(maxsize=8)
def _jitted_generate(model, num_samples: int, max_len: int):
    return jax.jit(
        functools.partial(
            generate_step, model=model, num_samples=num_samples, max_len=max_len
        )
    )


def hypothesis_words(vocab, ids) -> list[str]:
    """Sampled tokens as words, without ``<pad>`` and ``</s>`` (Zhao et al.)."""
    return [vocab.words[i] for i in np.asarray(ids).tolist() if i not in (PAD, EOS)]


def reference_words(vocab, ids) -> list[str]:
    """Reference tokens as words, without ``<pad>``, ``<s>`` and ``</s>``."""
    return [
        vocab.words[i] for i in np.asarray(ids).tolist() if i not in (PAD, BOS, EOS)
    ]


def eligible_contexts(split: data_lib.DialogSplit, cfg) -> np.ndarray:
    rows = np.flatnonzero(split.context_lens >= cfg.min_context_utts)
    return rows[: cfg.max_contexts] if cfg.max_contexts else rows


def sample_responses(
    trainer: Trainer, state, split_name: str
) -> tuple[np.ndarray, list]:
    """``eval.num_samples`` greedy responses from z ~ p(z|c) per eligible context.

    Randomness is fixed by ``eval.seed`` and the batch index.
    """
    cfg = trainer.run.eval
    split = trainer.data.splits[split_name]
    rows = eligible_contexts(split, cfg)
    size = trainer.config.data.eval_batch_size
    fn = _jitted_generate(trainer.model, cfg.num_samples, cfg.max_decode_len)
    key = jax.random.fold_in(trainer.eval_key, 0x5A)
    outputs = []
    for i, chunk in enumerate(_batches(len(rows), size)):
        batch = split.batch(rows[chunk], size)
        ids = jax.device_get(
            fn(trainer.variables(state), batch, jax.random.fold_in(key, i))
        )
        outputs.extend(ids[: len(chunk)])
    return rows, outputs


def score_responses(trainer: Trainer, rows, outputs, split_name: str) -> dict:
    split = trainer.data.splits[split_name]
    vocab = trainer.data.vocab
    refs = [[reference_words(vocab, split.utterances[split.response[r]])] for r in rows]
    hyps = [[hypothesis_words(vocab, s) for s in sample] for sample in outputs]
    glove_file = trainer.run.eval.glove_file
    glove = None
    if glove_file:
        words = {w for rs in refs for r in rs for w in r} | {
            w for hs in hyps for h in hs for w in h
        }
        glove = metrics_lib.load_glove(glove_file, words)
    return metrics_lib.score_contexts(refs, hyps, glove)


def _context_lines(trainer: Trainer, split, row: int) -> list[tuple[str, str]]:
    vocab = trainer.data.vocab
    lines = []
    for j in range(int(split.context_lens[row])):
        utt = split.utterances[split.context[row, j]]
        who = "responder" if split.floors[row, j] else "other"
        lines.append((who, " ".join(reference_words(vocab, utt))))
    return lines


def write_samples(trainer: Trainer, rows, outputs, split_name: str) -> None:
    """``samples.txt`` (every context) and ``human_rating.csv`` (a seeded subset)."""
    split = trainer.data.splits[split_name]
    vocab, cfg = trainer.data.vocab, trainer.run.eval
    text = io.StringIO()
    for n, (row, sample) in enumerate(zip(rows, outputs)):
        topic = split.topics[int(split.topic[row])]
        text.write(
            f"=== context {n} (dialog {int(split.dialog[row])}, topic {topic})\n"
        )
        for who, words in _context_lines(trainer, split, row):
            text.write(f"  {who:>9}: {words}\n")
        ref = " ".join(reference_words(vocab, split.utterances[split.response[row]]))
        text.write(f"  {'target':>9}: {ref}\n")
        for i, ids in enumerate(sample, start=1):
            text.write(
                f"  {'sample ' + str(i):>9}: {' '.join(hypothesis_words(vocab, ids))}\n"
            )
        text.write("\n")
    fileio.write_text_atomic(trainer.workdir / "samples.txt", text.getvalue())
    picked = np.random.default_rng([cfg.seed, 0xC5]).permutation(len(rows))
    picked = np.sort(picked[: cfg.rating_contexts])
    table = io.StringIO()
    out = csv.writer(table)
    out.writerow(
        [
            "context_id",
            "topic",
            "context",
            "reference",
            "method",
            "sample",
            "response",
            "fluency",
            "relevance",
            "informativeness",
        ]
    )
    for n in picked:
        row = rows[n]
        context = " | ".join(w for _, w in _context_lines(trainer, split, row)[-3:])
        ref = " ".join(reference_words(vocab, split.utterances[split.response[row]]))
        topic = split.topics[int(split.topic[row])]
        for i, ids in enumerate(outputs[n][: cfg.rating_samples], start=1):
            response = " ".join(hypothesis_words(vocab, ids))
            out.writerow(
                [
                    int(n),
                    topic,
                    context,
                    ref,
                    trainer.run.method_name,
                    i,
                    response,
                    "",
                    "",
                    "",
                ]
            )
    fileio.write_text_atomic(trainer.workdir / "human_rating.csv", table.getvalue())


def final_results(trainer: Trainer, state, loop: LoopState) -> dict:
    """Best checkpoint → valid/test ELBO terms and test response metrics."""
    steps_run = int(state.step)
    if loop.best_epoch >= 0:
        tree, _ = trainer.ckpt.restore_best(_state_tree(state))
        state = state.replace(**tree)
    results = {s: evaluate_split(trainer, state, s) for s in ("valid", "test")}
    rows, outputs = sample_responses(trainer, state, "test")
    results["test"].update(score_responses(trainer, rows, outputs, "test"))
    write_samples(trainer, rows, outputs, "test")
    results.update(
        method=trainer.run.method_name,
        steps=steps_run,
        epochs_run=loop.epoch,
        best_epoch=loop.best_epoch,
        early_stopped=loop.done,
        train_seconds=loop.train_seconds,
        num_samples=trainer.run.eval.num_samples,
        data={
            s: {"dialogs": len(trainer.data.dialogs[s]), "examples": len(sp)}
            for s, sp in trainer.data.splits.items()
        },
        vocab_size=len(trainer.data.vocab),
        config=json.loads(trainer.config.to_json_best_effort()),
    )
    return results


TABLE_KEYS = (
    ("ppl", "PPL", 1.0),
    ("kl", "KL", 1.0),
    ("bleu4_precision", "BLEU-4 P", 100.0),
    ("bleu4_recall", "BLEU-4 R", 100.0),
    ("abow_precision", "A-bow P", 100.0),
    ("abow_recall", "A-bow R", 100.0),
    ("ebow_precision", "E-bow P", 100.0),
    ("ebow_recall", "E-bow R", 100.0),
)


def format_table(results: dict) -> str:
    """The Table-4 columns of ``results`` (BLEU and bow scores × 100)."""
    test = results.get("test", {})
    cells = [
        (label, f"{test[key] * scale:.2f}")
        for key, label, scale in TABLE_KEYS
        if isinstance(test.get(key), float)
    ]
    widths = [max(len(a), len(b)) for a, b in cells]
    return "\n".join(
        "  ".join(c[i].rjust(w) for c, w in zip(cells, widths)) for i in (0, 1)
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) a dialog CVAE in ``workdir``; writes ``results.json``.

    A finished run reruns as a no-op returning its saved results.
    """
    trainer, state = setup(config, workdir)
    try:
        state, loop = restore_or_start(trainer, state)
        start_step = int(state.step)
        state = train_epochs(trainer, state, loop)
        saved = trainer.workdir / "results.json"
        if int(state.step) == start_step and saved.exists():
            logging.info("%s: nothing left to train; results as saved", workdir)
            return json.loads(saved.read_text())
        results = final_results(trainer, state, loop)
        fileio.write_json_atomic(saved, results)
        fileio.write_text_atomic(
            trainer.workdir / "results.txt", format_table(results) + "\n"
        )
        trainer.writer.write_scalars(
            int(state.step),
            {
                f"final/{s}/{k}": v
                for s in ("valid", "test")
                for k, v in results[s].items()
                if isinstance(v, float | int)
            },
        )
        return results
    finally:
        trainer.writer.close()
        trainer.ckpt.close()
