"""The dialog CVAEs (Zhao et al.) on the shared loop (``training.loop``).

The task supplies Zhao et al.'s batches (a shuffled pass over the training
examples cut at ``train.steps_per_epoch`` batches), the Adam step of the
method's loss, the validation ELBO as the selection loss, Zhao et al.'s
patience rule for stopping, and the final scores: valid/test ELBO, KL, PPL and,
on test, sampled responses scored by BLEU, A-bow and E-bow; samples and a CSV
for human rating go to the workdir. Resume, checkpoints, NaN guard, progress,
devices (data parallelism with global BN statistics) and Ctrl-C are the loop's.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state

from bnvae_jax import fileio, parallel
from bnvae_jax.data.vocab import BOS, EOS, PAD
from bnvae_jax.tasks.dialog import config as config_lib
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import metrics as metrics_lib
from bnvae_jax.tasks.dialog import objectives
from bnvae_jax.tasks.dialog.model import DialogCVAE
from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import schedules, steps
from bnvae_jax.training.loop import (  # noqa: F401  (the task's public names)
    DivergedError,
    restore_or_start,
    train_epochs,
)

_state_tree = loop_lib.state_tree
SUM_KEYS = ("rec_sum", "kl_sum", "prior_kl_sum", "bow_sum", "tokens", "count")
# The arrays of a batch, in the order the mapped evaluation functions take them.
BATCH_KEYS = (
    "context",
    "context_utt_lens",
    "context_lens",
    "floors",
    "response",
    "response_lens",
    "topic",
    "my_meta",
    "other_meta",
    "mask",
)


class TrainState(train_state.TrainState):
    """Parameters, BN running statistics and Adam state; ``step`` counts batches."""

    batch_stats: dict


@dataclasses.dataclass
class LoopState(loop_lib.LoopState):
    """The loop's progress plus Zhao et al.'s patience rule."""

    patience: float = 10.0
    threshold: float = math.inf


def patience_update(
    loop: LoopState, val_loss: float, improved: bool, done_epochs: int, cfg
) -> None:
    """Zhao et al.'s early-stopping rule, after an epoch whose loss is ``val_loss``.

    A new best (``improved``) that beats the last threshold by the factor
    ``improve_threshold`` extends the patience to ``done_epochs *
    patience_increase`` epochs; training stops once ``patience <= done_epochs``.
    """
    if improved and val_loss <= loop.threshold * cfg.improve_threshold:
        loop.patience = max(loop.patience, done_epochs * cfg.patience_increase)
        loop.threshold = val_loss
    if cfg.early_stop and loop.patience <= done_epochs:
        loop.done = True


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


def train_step(
    state, batch, rng, *, method, kl_schedule, prior_schedule, axis_name=None
):
    """One Adam step on ``method``'s loss over the global batch; pure.

    Under pmap (``axis_name``) each device holds some rows: the loss is its
    share of the global mean, gradients and sums are summed over devices, the
    BN head normalises with global statistics, and the device draws its rows
    of the global noise, so the step equals the one-device step.

    Returns:
      the new state and scalar sums over the real examples of the batch.
    """
    mask = batch["mask"]
    key = jax.random.fold_in(rng, state.step)
    key = parallel.row_offset_key(key, axis_name, mask.shape[0])
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
        loss = objectives.method_loss(
            method, _terms(out, mask), kl_weight, prior_weight
        )
        return steps.global_mean(loss, mask, axis_name), (out, updates)

    grads, (out, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = parallel.psum(grads, axis_name)
    new_state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    metrics = parallel.psum(_sums(out, mask), axis_name)
    metrics.update(
        kl_weight=kl_weight,
        prior_kl_weight=prior_weight,
        grad_norm=optax.tree.norm(grads),
    )
    return new_state, metrics


def _row_terms(model, variables, key, *rows, axis_name=None):
    """Per-example terms with z ~ q (BN running statistics): tuple of [B]."""
    batch = dict(zip(BATCH_KEYS, rows, strict=True))
    key = parallel.row_offset_key(key, axis_name, batch["mask"].shape[0])
    out = model.apply(variables, batch, train=False, rngs={"sample": key})
    return out.rec, out.kl, out.prior_kl, out.bow, out.tokens


def _row_responses(model, variables, key, *rows, num_samples, max_len, axis_name):
    """Greedy responses from z ~ p(z|c): <int32>[B, num_samples, max_len]."""
    batch = dict(zip(BATCH_KEYS, rows, strict=True))
    key = parallel.row_offset_key(key, axis_name, batch["mask"].shape[0])
    ids = model.apply(
        variables,
        batch,
        num_samples=num_samples,
        max_len=max_len,
        method="generate",
        rngs={"sample": key},
    )
    return (ids,)


@functools.lru_cache(maxsize=8)
def make_optimizer(learning_rate: float, clip_norm: float):
    """Adam after global-norm clipping (one object per setting: jit caches on it)."""
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(learning_rate))


# -- the task ------------------------------------------------------------------


SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}  # evaluation key per split


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield np.arange(start, min(start + size, n))


@dataclasses.dataclass
class DialogTrainer(loop_lib.Trainer):
    """The dialog task; built once by ``setup``."""

    run: config_lib.DialogRunConfig
    data: data_lib.DialogData
    model: DialogCVAE

    loop_state_class = LoopState
    sum_keys = SUM_KEYS

    # -- building the run ------------------------------------------------------

    @staticmethod
    def resolve_config(config) -> config_lib.DialogRunConfig:
        return config_lib.resolve(config)

    @staticmethod
    def load_data(run: config_lib.DialogRunConfig, workdir) -> data_lib.DialogData:
        data = load_data(run.data)
        if run.eval.multi_ref_file:  # a broken file fails now, not after training
            data_lib.read_multi_ref(run.eval.multi_ref_file, run.data.max_utt_len)
        return data

    @staticmethod
    def with_data(run, data: data_lib.DialogData) -> config_lib.DialogRunConfig:
        return run.with_sizes(len(data.vocab), len(data.topics))

    @staticmethod
    def run_info(run, data: data_lib.DialogData) -> dict:
        return run_info(run, data)

    @staticmethod
    def eval_key_of(run) -> jax.Array:
        return jax.random.key(run.eval.seed)

    @staticmethod
    def task_fields(run, data, par: parallel.Parallel) -> dict:
        return {"model": DialogCVAE(run.model, axis_name=par.axis_name)}

    def init_state(self, key: jax.Array) -> TrainState:
        # Parameters are initialised without the device axis (same values).
        state = create_train_state(
            dataclasses.replace(self, model=DialogCVAE(self.run.model)), key
        )
        return state.replace(apply_fn=self.model.apply)

    @property
    def settings(self):
        return self.run.train

    @property
    def batch_size(self) -> int:
        return self.run.data.batch_size

    @property
    def eval_batch_size(self) -> int:
        """``data.eval_batch_size`` rounded up to a multiple of the devices."""
        return self.par.padded(self.run.data.eval_batch_size)

    def new_loop(self) -> LoopState:
        return LoopState(patience=float(self.run.train.patience))

    def method_name(self) -> str:
        return self.run.method_name

    # -- batches ---------------------------------------------------------------

    def num_positions(self) -> int:
        n = len(self.data.splits["train"])
        return min(-(-n // self.batch_size), self.run.train.steps_per_epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.run.seed, epoch])
        return rng.permutation(len(self.data.splits["train"]))

    def make_batch(self, order, position: int):
        rows = order[position * self.batch_size :][: self.batch_size]
        if len(rows) < self.run.train.min_batch:
            return None, len(rows)
        return self.data.splits["train"].batch(rows, self.batch_size), len(rows)

    def train_arrays(self, batch: dict) -> dict:
        return batch

    # -- steps -----------------------------------------------------------------

    def make_runner(self) -> loop_lib.StepRunner:
        t = self.run.train
        kl = schedules.linear(0.0, float(t.full_kl_steps))
        prior = kl if t.prior_kl_schedule == "annealed" else schedules.constant(1.0)
        fn = functools.partial(
            train_step,
            method=self.run.method,
            kl_schedule=kl,
            prior_schedule=prior,
            axis_name=self.par.axis_name,
        )
        if self.par.mode == "jit":
            step = jax.jit(fn, donate_argnums=0)
        else:
            step = self.par.pmap_step(fn, num_args=3)
        return lambda state, arrays, loop, n: step(state, arrays, self.rng)

    # -- metrics ---------------------------------------------------------------

    def step_loss(self, m: dict) -> float:
        return m["rec_sum"] + m["kl_sum"]

    def train_scalars(self, host: list, loop: LoopState) -> dict:
        totals = {k: sum(float(m[k]) for m in host) for k in SUM_KEYS}
        count = max(totals["count"], 1.0)
        mean_nll = totals["rec_sum"] / max(totals["tokens"], 1.0)
        return {
            "train/rec": totals["rec_sum"] / count,
            "train/kl": totals["kl_sum"] / count,
            "train/prior_kl": totals["prior_kl_sum"] / count,
            "train/bow": totals["bow_sum"] / count,
            "train/ppl": math.exp(min(mean_nll, 50)),
            "train/kl_weight": float(host[-1]["kl_weight"]),
            "train/grad_norm": float(host[-1]["grad_norm"]),
        }

    # -- validation and the patience rule --------------------------------------

    def variables(self, state) -> dict:
        return {"params": state.params, "batch_stats": state.batch_stats}

    @functools.cached_property
    def _terms_fn(self):
        fn = functools.partial(_row_terms, self.model, axis_name=self.par.axis_name)
        return self.par.map_rows(fn, len(BATCH_KEYS))

    def evaluate_split(self, state, split_name: str) -> dict:
        """ELBO terms with z ~ q; PPL is exp(Σ rec / Σ target tokens)."""
        split = self.data.splits[split_name]
        size = self.eval_batch_size
        key = jax.random.fold_in(self.eval_key, SPLIT_IDS[split_name])
        variables = self.variables(state)
        totals = np.zeros(5)
        count = 0.0
        for i, rows in enumerate(_batches(len(split), size)):
            batch = split.batch(rows, size)
            terms = self._terms_fn(
                variables, jax.random.fold_in(key, i), *(batch[k] for k in BATCH_KEYS)
            )
            mask = batch["mask"].astype(np.float64)
            totals += [float(np.sum(np.asarray(t, np.float64) * mask)) for t in terms]
            count += float(mask.sum())
        rec_sum, kl_sum, prior_kl_sum, bow_sum, tokens = totals
        n = max(count, 1.0)
        return {
            "rec": rec_sum / n,
            "kl": kl_sum / n,
            "prior_kl": prior_kl_sum / n,
            "bow": bow_sum / n,
            "elbo": (rec_sum + kl_sum) / n,
            "ppl": math.exp(rec_sum / max(tokens, 1.0)),
            "examples": int(count),
        }

    def validate_epoch(self, state):
        val = self.evaluate_split(state, "valid")
        return val, val["elbo"]

    def after_validation(self, state, loop: LoopState, val: dict, improved: bool):
        patience_update(loop, val["elbo"], improved, loop.epoch + 1, self.run.train)
        return state, {"patience": loop.patience}

    def epoch_message(self, epoch: int, val: dict, loop: LoopState) -> str:
        return (
            f"epoch {epoch}: valid elbo {val['elbo']:.3f} ppl {val['ppl']:.2f} "
            f"kl {val['kl']:.3f}"
        )

    # -- final evaluation ------------------------------------------------------

    @functools.cached_property
    def _generate_fn(self):
        cfg = self.run.eval
        fn = functools.partial(
            _row_responses,
            self.model,
            num_samples=cfg.num_samples,
            max_len=cfg.max_decode_len,
            axis_name=self.par.axis_name,
        )
        return self.par.map_rows(fn, len(BATCH_KEYS))

    def sample_responses(self, state, split: data_lib.DialogSplit, rows) -> list:
        """``eval.num_samples`` greedy responses from z ~ p(z|c) for ``rows``.

        Randomness is fixed by ``eval.seed`` and the batch index.
        """
        size = self.eval_batch_size
        key = jax.random.fold_in(self.eval_key, 0x5A)
        variables = self.variables(state)
        outputs = []
        for i, chunk in enumerate(_batches(len(rows), size)):
            batch = split.batch(rows[chunk], size)
            (ids,) = self._generate_fn(
                variables, jax.random.fold_in(key, i), *(batch[k] for k in BATCH_KEYS)
            )
            outputs.extend(ids[: len(chunk)])
        return outputs

    def scored_contexts(self) -> tuple[data_lib.DialogSplit, np.ndarray, list]:
        """The contexts whose sampled responses are scored, and their references.

        The test split's eligible contexts with their one reference each, or,
        with ``eval.multi_ref_file``, that file's eligible contexts with all
        their references (utterances padded as the test split's).
        """
        cfg, vocab = self.run.eval, self.data.vocab
        test = self.data.splits["test"]
        if not cfg.multi_ref_file:
            rows = eligible_contexts(test, cfg)
            return test, rows, single_references(vocab, test, rows)
        width = test.utterances.shape[1]
        max_len = self.run.data.max_utt_len
        items = data_lib.read_multi_ref(cfg.multi_ref_file, max_len)
        split, refs = data_lib.multi_ref_split(
            items,
            vocab,
            self.data.topics,
            context_size=self.run.data.context_size,
            utt_len=width,
        )
        rows = eligible_contexts(split, cfg)
        return split, rows, [refs[r] for r in rows]

    def final_results(self, state, loop: LoopState) -> dict:
        """Valid/test ELBO terms and test response metrics of the selected state."""
        results = {s: self.evaluate_split(state, s) for s in ("valid", "test")}
        split, rows, refs = self.scored_contexts()
        outputs = self.sample_responses(state, split, rows)
        results["test"].update(score_responses(self, refs, outputs))
        results["test"]["references"] = (
            "multi_ref_file" if self.run.eval.multi_ref_file else "test_split"
        )
        if jax.process_index() == 0:
            write_samples(self, split, rows, outputs)
        results.update(
            early_stopped=loop.done,
            num_samples=self.run.eval.num_samples,
            data={
                s: {"dialogs": len(self.data.dialogs[s]), "examples": len(sp)}
                for s, sp in self.data.splits.items()
            },
            vocab_size=len(self.data.vocab),
        )
        return results

    def write_outputs(self, results: dict) -> None:
        fileio.write_text_atomic(
            self.workdir / "results.txt", format_table(results) + "\n"
        )


Trainer = DialogTrainer


# -- setup ---------------------------------------------------------------------


def load_data(d: config_lib.DialogDataConfig) -> data_lib.DialogData:
    """The three splits of the ``data`` section's files."""
    return data_lib.load_dialog_data(
        {"train": d.train_file, "valid": d.valid_file, "test": d.test_file},
        file_format=d.format,
        max_vocab=d.max_vocab,
        max_utt_len=d.max_utt_len,
        context_size=d.context_size,
    )


def create_train_state(trainer: DialogTrainer, key: jax.Array) -> TrainState:
    split = trainer.data.splits["train"]
    example = split.batch(
        np.arange(min(len(split), trainer.batch_size)), trainer.batch_size
    )
    init = jax.jit(functools.partial(trainer.model.init, train=False))
    variables = init({"params": key, "sample": jax.random.fold_in(key, 1)}, example)
    params = variables["params"]
    path = trainer.run.embedding_file
    if path:
        vocab, table = trainer.data.vocab, params["embed"]["embedding"]
        table = metrics_lib.glove_table(path, vocab, table)
        params = {**params, "embed": {"embedding": jnp.asarray(table, jnp.float32)}}
    t = trainer.run.train
    state = TrainState.create(
        apply_fn=trainer.model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=make_optimizer(t.learning_rate, t.clip_norm),
    )
    return state.replace(step=jnp.zeros((), jnp.int32))


def run_info(run: config_lib.DialogRunConfig, data: data_lib.DialogData) -> dict:
    info = dict(run.architecture)
    info["vocab_size"] = len(data.vocab)
    info["vocab_fingerprint"] = data.vocab.fingerprint()
    info["topics"] = list(data.topics)
    return info


def setup(config: ml_collections.ConfigDict, workdir: str, write: bool = True):
    """The dialog task's trainer and a fresh state (``training.loop.setup``)."""
    return loop_lib.setup(DialogTrainer, config, workdir, write)


# -- scoring and outputs -------------------------------------------------------


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


def single_references(vocab, split: data_lib.DialogSplit, rows) -> list:
    """Each row's one reference: the dialog's own response."""
    return [[reference_words(vocab, split.utterances[split.response[r]])] for r in rows]


def score_responses(trainer: Trainer, refs: list, outputs: list) -> dict:
    """BLEU and A-bow/E-bow of the sampled ``outputs`` against ``refs`` per context."""
    vocab = trainer.data.vocab
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


def write_samples(trainer: Trainer, split: data_lib.DialogSplit, rows, outputs) -> None:
    """``samples.txt`` (every context) and ``human_rating.csv`` (a seeded subset)."""
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
    return loop_lib.run(trainer, state)
