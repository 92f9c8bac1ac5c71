"""The dialog CVAEs (Zhao et al.): ``train_and_evaluate`` on ``training.loop``.

The task builds Zhao et al.'s batches (a shuffled pass over the training
examples cut at ``train.steps_per_epoch`` batches), the Adam step of the
method's loss, the validation ELBO as the selection loss, Zhao et al.'s
patience rule for stopping (``rules.patience``), and the final scores:
valid/test ELBO, KL, PPL and, on test, sampled responses scored by BLEU, A-bow
and E-bow; ``samples.txt`` and ``human_rating.csv`` go to the workdir. Resume,
checkpoints, NaN guard, progress, devices (data parallelism with global BN
statistics) and Ctrl-C are the loop's.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import logging
import math
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bnvae_jax import fileio, parallel
from bnvae_jax.data.vocab import BOS, EOS, PAD
from bnvae_jax.tasks.dialog import config as config_lib
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import metrics as metrics_lib
from bnvae_jax.tasks.dialog import objectives
from bnvae_jax.tasks.dialog.model import DialogCVAE
from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import rules, schedules, steps

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
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}  # evaluation key per split


@dataclasses.dataclass
class LoopState(loop_lib.LoopState):
    """The loop's progress plus Zhao et al.'s patience rule."""

    patience: float = 10.0
    threshold: float = math.inf


@dataclasses.dataclass(frozen=True)
class Setup:
    """A built dialog run.

    Attributes:
      config: the run's config as given (saved with the results).
      run: the typed config.
      data: the vocabulary, topics, dialogs and indexed splits.
      model: the model as steps and evaluation apply it (over the devices).
      ctx: the workdir, checkpoints, writer, devices and loop settings.
      rng: the train steps' key, replicated over the devices.
      eval_key: the key evaluation draws from (``eval.seed``).
    """

    config: ml_collections.ConfigDict
    run: config_lib.DialogRunConfig
    data: data_lib.DialogData
    model: DialogCVAE
    ctx: loop_lib.Context
    rng: jax.Array
    eval_key: jax.Array


# -- building the run ----------------------------------------------------------


def load_data(d: config_lib.DialogDataConfig) -> data_lib.DialogData:
    """The three splits of the ``data`` section's files."""
    return data_lib.load_dialog_data(
        {"train": d.train_file, "valid": d.valid_file, "test": d.test_file},
        file_format=d.format,
        max_vocab=d.max_vocab,
        max_utt_len=d.max_utt_len,
        context_size=d.context_size,
    )


def _load_and_check(run: config_lib.DialogRunConfig) -> data_lib.DialogData:
    data = load_data(run.data)
    if run.eval.multi_ref_file:  # a broken file fails now, not after training
        data_lib.read_multi_ref(run.eval.multi_ref_file, run.data.max_utt_len)
    return data


def run_info(run: config_lib.DialogRunConfig, data: data_lib.DialogData) -> dict:
    """What a workdir's checkpoints depend on (shapes, vocabulary, topics)."""
    info = dict(run.architecture)
    info["vocab_size"] = len(data.vocab)
    info["vocab_fingerprint"] = data.vocab.fingerprint()
    info["topics"] = list(data.topics)
    return info


def setup(
    config: ml_collections.ConfigDict, workdir: str, write: bool = True
) -> tuple[Setup, steps.TrainState]:
    """The dialog run and its fresh state, built as ``text_vae.setup`` builds its own.

    Parameters come from ``fold_in(key(run.seed), 0)``, the steps' noise from
    ``fold_in(.., 1)``; ``write`` records vocabulary, run info and config.
    """
    run = config_lib.resolve(config)
    par = loop_lib.setup_devices(run, config)
    data = parallel.first_host_then_others(
        lambda: _load_and_check(run), "reading the data"
    )
    run = run.with_sizes(len(data.vocab), len(data.topics))
    info = run_info(run, data)
    ctx = loop_lib.open_context(workdir, info, par, run.train, write)
    root = jax.random.key(run.seed)
    s = Setup(
        config=config,
        run=run,
        data=data,
        model=DialogCVAE(run.model, axis_name=par.axis_name),
        ctx=ctx,
        rng=par.replicate(jax.random.fold_in(root, 1)),
        eval_key=jax.random.key(run.eval.seed),
    )
    state = create_train_state(s, jax.random.fold_in(root, 0))
    if write:
        loop_lib.record_run(ctx.workdir, data.vocab, info, config)
    return s, par.replicate(state)


def create_train_state(s: Setup, key: jax.Array) -> steps.TrainState:
    """Fresh parameters (GloVe rows with ``model.embedding_file``) and Adam state.

    Parameters are initialised without the device axis (the same values).
    """
    split, size = s.data.splits["train"], s.run.data.batch_size
    example = split.batch(np.arange(min(len(split), size)), size)
    init = jax.jit(functools.partial(DialogCVAE(s.run.model).init, train=False))
    variables = init({"params": key, "sample": jax.random.fold_in(key, 1)}, example)
    params = variables["params"]
    path = s.run.model.embedding_file
    if path:
        table = params["embed"]["embedding"]
        table = metrics_lib.glove_table(path, s.data.vocab, table)
        params = {**params, "embed": {"embedding": jnp.asarray(table, jnp.float32)}}
    t = s.run.train
    state = steps.TrainState.create(
        apply_fn=s.model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=steps.make_optimizer(t.learning_rate, t.clip_norm, kind="adam"),
    )
    return state.replace(step=jnp.zeros((), jnp.int32))


# -- batches and steps ---------------------------------------------------------


def num_batches(s: Setup) -> int:
    n = len(s.data.splits["train"])
    return min(-(-n // s.run.data.batch_size), s.run.train.steps_per_epoch)


def epoch_batches(s: Setup, epoch: int, start: int):
    """``(position, arrays, response tokens)`` of the epoch's batches from ``start``."""
    train, size = s.data.splits["train"], s.run.data.batch_size
    order = np.random.default_rng([s.run.seed, epoch]).permutation(len(train))
    for position in range(start, num_batches(s)):
        rows = order[position * size :][:size]
        if len(rows) < s.run.train.min_batch:
            yield position, None, 0
        else:
            batch = train.batch(rows, size)
            yield position, batch, int(batch["response_lens"][: len(rows)].sum())


def train_step(
    state, batch, rng, *, method, kl_schedule, prior_schedule, axis_name=None
):
    """One Adam step on ``method``'s loss over the global batch; pure.

    Under pmap (``axis_name``) each device holds some rows: the loss is its
    share of the global mean, gradients and sums are summed over devices, the
    BN head normalises with global statistics, and the device draws its rows
    of the global noise, so the step equals the one-device step.

    Returns:
      the new state and scalar sums over the real examples of the batch
      (``loss_sum`` is the negative ELBO, rec + kl).
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
        terms = objectives.LossTerms(out.rec, out.kl, out.prior_kl, out.bow, mask)
        loss = objectives.method_loss(method, terms, kl_weight, prior_weight)
        return steps.global_mean(loss, mask, axis_name), (out, updates)

    grads, (out, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = parallel.psum(grads, axis_name)
    new_state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    sums = {
        "loss_sum": (out.rec + out.kl) * mask,
        "rec_sum": out.rec * mask,
        "kl_sum": out.kl * mask,
        "prior_kl_sum": out.prior_kl * mask,
        "bow_sum": out.bow * mask,
        "tokens": out.tokens * mask,
        "count": mask,
    }
    metrics = parallel.psum({k: jnp.sum(v) for k, v in sums.items()}, axis_name)
    metrics.update(
        kl_weight=kl_weight,
        prior_kl_weight=prior_weight,
        grad_norm=optax.tree.norm(grads),
    )
    return new_state, metrics


def make_step(s: Setup):
    """``step(state, arrays, loop, step) -> (state, metrics)`` over the devices."""
    t, par = s.run.train, s.ctx.par
    kl = schedules.linear(0.0, float(t.full_kl_steps))
    prior = kl if t.prior_kl_schedule == "annealed" else schedules.constant(1.0)
    fn = functools.partial(
        train_step,
        method=s.run.method,
        kl_schedule=kl,
        prior_schedule=prior,
        axis_name=par.axis_name,
    )
    if par.mode == "jit":
        step_fn = jax.jit(fn, donate_argnums=0)
    else:
        step_fn = par.pmap_step(fn, num_args=3)
    return lambda state, arrays, loop, step: step_fn(state, arrays, s.rng)


def summarize(host: list, loop: LoopState) -> dict:
    """The ``train/*`` scalars of the steps in ``host``."""
    keys = ("rec_sum", "kl_sum", "prior_kl_sum", "bow_sum", "tokens", "count")
    totals = {k: sum(float(m[k]) for m in host) for k in keys}
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


# -- evaluation and the patience rule ------------------------------------------


def eval_batches(s: Setup, n: int):
    """Row indices of ``n`` rows in batches of ``data.eval_batch_size``.

    The size is rounded up to a multiple of the devices; returns it too.
    """
    size = s.ctx.par.padded(s.run.data.eval_batch_size)
    return size, [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


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
def _mapped(model: DialogCVAE, par: parallel.Parallel, num_samples=0, max_len=0):
    """One compiled per-row pass per (model, devices, sizes): terms or responses."""
    if num_samples:
        fn = functools.partial(
            _row_responses,
            model,
            num_samples=num_samples,
            max_len=max_len,
            axis_name=par.axis_name,
        )
    else:
        fn = functools.partial(_row_terms, model, axis_name=par.axis_name)
    return par.map_rows(fn, len(BATCH_KEYS))


def evaluate_split(s: Setup, state, split_name: str) -> dict:
    """ELBO terms with z ~ q; PPL is exp(Σ rec / Σ target tokens)."""
    split = s.data.splits[split_name]
    key = jax.random.fold_in(s.eval_key, SPLIT_IDS[split_name])
    terms_fn = _mapped(s.model, s.ctx.par)
    size, batches = eval_batches(s, len(split))
    totals, count = np.zeros(5), 0.0
    for i, rows in enumerate(batches):
        batch = split.batch(rows, size)
        terms = terms_fn(
            steps.variables(state),
            jax.random.fold_in(key, i),
            *(batch[k] for k in BATCH_KEYS),
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


def evaluate(s: Setup, state) -> tuple[dict, float]:
    """Validation terms and the selection loss (the ELBO)."""
    val = evaluate_split(s, state, "valid")
    return val, val["elbo"]


def rule(s: Setup, state, loop: LoopState, val: dict, improved: bool):
    """Zhao et al.'s patience rule after validation; logs the epoch."""
    rules.patience(loop, val["elbo"], improved, loop.epoch + 1, s.run.train)
    logging.info(
        f"epoch {loop.epoch}: valid elbo {val['elbo']:.3f} ppl {val['ppl']:.2f} "
        f"kl {val['kl']:.3f}"
    )
    return state, {"patience": loop.patience}


# -- final evaluation ----------------------------------------------------------


def sample_responses(s: Setup, state, split: data_lib.DialogSplit, rows) -> list:
    """``eval.num_samples`` greedy responses from z ~ p(z|c) for ``rows``.

    Randomness is fixed by ``eval.seed`` and the batch index.
    """
    cfg = s.run.eval
    generate = _mapped(s.model, s.ctx.par, cfg.num_samples, cfg.max_decode_len)
    key = jax.random.fold_in(s.eval_key, 0x5A)
    size, batches = eval_batches(s, len(rows))
    outputs = []
    for i, chunk in enumerate(batches):
        batch = split.batch(rows[chunk], size)
        (ids,) = generate(
            steps.variables(state),
            jax.random.fold_in(key, i),
            *(batch[k] for k in BATCH_KEYS),
        )
        outputs.extend(ids[: len(chunk)])
    return outputs


def scored_contexts(s: Setup) -> tuple[data_lib.DialogSplit, np.ndarray, list]:
    """The contexts whose sampled responses are scored, and their references.

    The test split's eligible contexts with their one reference each, or,
    with ``eval.multi_ref_file``, that file's eligible contexts with all
    their references (utterances padded as the test split's).
    """
    cfg, vocab = s.run.eval, s.data.vocab
    test = s.data.splits["test"]
    if not cfg.multi_ref_file:
        rows = eligible_contexts(test, cfg)
        refs = [reference_words(vocab, test.utterances[test.response[r]]) for r in rows]
        return test, rows, [[ref] for ref in refs]
    items = data_lib.read_multi_ref(cfg.multi_ref_file, s.run.data.max_utt_len)
    split, refs = data_lib.multi_ref_split(
        items,
        vocab,
        s.data.topics,
        context_size=s.run.data.context_size,
        utt_len=test.utterances.shape[1],
    )
    rows = eligible_contexts(split, cfg)
    return split, rows, [refs[r] for r in rows]


def final(s: Setup, state, loop: LoopState) -> dict:
    """Valid/test ELBO terms and test response scores of the selected state.

    Process 0 writes ``samples.txt`` and ``human_rating.csv``.
    """
    results = {name: evaluate_split(s, state, name) for name in ("valid", "test")}
    split, rows, refs = scored_contexts(s)
    outputs = sample_responses(s, state, split, rows)
    results["test"].update(score_responses(s, refs, outputs))
    results["test"]["references"] = (
        "multi_ref_file" if s.run.eval.multi_ref_file else "test_split"
    )
    if jax.process_index() == 0:
        write_samples(s, split, rows, outputs)
    results.update(
        early_stopped=loop.done,
        num_samples=s.run.eval.num_samples,
        data={
            name: {"dialogs": len(s.data.dialogs[name]), "examples": len(sp)}
            for name, sp in s.data.splits.items()
        },
        vocab_size=len(s.data.vocab),
    )
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains (or resumes) a dialog CVAE in ``workdir``; writes ``results.json``.

    A finished run reruns as a no-op returning its saved results.
    """
    return fit(*setup(config, workdir))


def fit(s: Setup, state) -> dict:
    """Resumes ``s``'s workdir (or starts from ``state``) and trains it out."""
    restored = loop_lib.restore(s.ctx, state, LoopState)
    state, loop = restored or (state, LoopState(patience=float(s.run.train.patience)))
    fns = loop_lib.task_fns(sys.modules[__name__], s)
    return loop_lib.train(
        s.ctx, state, loop, method=s.run.method_name, config=s.config, **fns
    )


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


def score_responses(s: Setup, refs: list, outputs: list) -> dict:
    """BLEU and A-bow/E-bow of the sampled ``outputs`` against ``refs`` per context."""
    hyps = [[hypothesis_words(s.data.vocab, h) for h in sample] for sample in outputs]
    glove = None
    if s.run.eval.glove_file:
        words = {w for rs in refs for r in rs for w in r}
        words |= {w for hs in hyps for h in hs for w in h}
        glove = metrics_lib.load_glove(s.run.eval.glove_file, words)
    return metrics_lib.score_contexts(refs, hyps, glove)


def _context_lines(vocab, split, row: int) -> list[tuple[str, str]]:
    lines = []
    for j in range(int(split.context_lens[row])):
        utt = split.utterances[split.context[row, j]]
        who = "responder" if split.floors[row, j] else "other"
        lines.append((who, " ".join(reference_words(vocab, utt))))
    return lines


RATING_COLUMNS = (
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
)


def write_samples(s: Setup, split: data_lib.DialogSplit, rows, outputs) -> None:
    """``samples.txt`` (every context) and ``human_rating.csv`` (a seeded subset)."""
    vocab, cfg = s.data.vocab, s.run.eval

    def reference(row):
        return " ".join(reference_words(vocab, split.utterances[split.response[row]]))

    def response(ids):
        return " ".join(hypothesis_words(vocab, ids))

    text = io.StringIO()
    for n, (row, sample) in enumerate(zip(rows, outputs)):
        topic = split.topics[int(split.topic[row])]
        text.write(
            f"=== context {n} (dialog {int(split.dialog[row])}, topic {topic})\n"
        )
        for who, words in _context_lines(vocab, split, row):
            text.write(f"  {who:>9}: {words}\n")
        text.write(f"  {'target':>9}: {reference(row)}\n")
        for i, ids in enumerate(sample, start=1):
            text.write(f"  {'sample ' + str(i):>9}: {response(ids)}\n")
        text.write("\n")
    fileio.write_text_atomic(s.ctx.workdir / "samples.txt", text.getvalue())
    picked = np.random.default_rng([cfg.seed, 0xC5]).permutation(len(rows))
    table = io.StringIO()
    out = csv.writer(table)
    out.writerow(RATING_COLUMNS)
    for n in np.sort(picked[: cfg.rating_contexts]):
        row = rows[n]
        context = " | ".join(w for _, w in _context_lines(vocab, split, row)[-3:])
        topic = split.topics[int(split.topic[row])]
        for i, ids in enumerate(outputs[n][: cfg.rating_samples], start=1):
            out.writerow(
                [int(n), topic, context, reference(row), s.run.method_name, i]
                + [response(ids), "", "", ""]
            )
    fileio.write_text_atomic(s.ctx.workdir / "human_rating.csv", table.getvalue())


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
    """The Table-4 columns of ``results`` (BLEU and bow scores × 100).

    The command line writes it to ``results.txt``.
    """
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
