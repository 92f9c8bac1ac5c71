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
from bnvae_jax.data.vocab import EOS, PAD
from bnvae_jax.tasks.dialog import config as config_lib
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import metrics as metrics_lib
from bnvae_jax.tasks.dialog import objectives
from bnvae_jax.tasks.dialog.model import DialogCVAE
from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import rules, schedules, steps

# The arrays of a batch, in the order the mapped evaluation functions take them.
BATCH_KEYS = tuple(
    "context context_utt_lens context_lens floors response response_lens topic "
    "my_meta other_meta mask".split()
)
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}  # evaluation key per split
TERMS = ("rec", "kl", "prior_kl", "bow")  # the per-example loss terms reported


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


def setup(
    config: ml_collections.ConfigDict, workdir: str, write: bool = True
) -> tuple[Setup, steps.TrainState]:
    """The dialog run and its fresh state, built as ``text_vae.setup`` builds its own.

    Parameters (GloVe rows with ``model.embedding_file``; initialised without
    the device axis) come from ``fold_in(key(run.seed), 0)``, the steps' noise
    from ``fold_in(.., 1)``; ``write`` records vocabulary, run info and config.
    """
    run = config_lib.resolve(config)
    par = loop_lib.setup_devices(run, config)

    def read() -> data_lib.DialogData:
        data = data_lib.load_dialog_data(run.data)
        if run.eval.multi_ref_file:  # a broken file fails now, not after training
            data_lib.read_multi_ref(run.eval.multi_ref_file, run.data.max_utt_len)
        return data

    data = parallel.first_host_then_others(read, "reading the data")
    run = run.with_sizes(len(data.vocab), len(data.topics))
    # What a workdir's checkpoints depend on (shapes, vocabulary, topics).
    info = dict(
        run.architecture,
        vocab_size=len(data.vocab),
        vocab_fingerprint=data.vocab.fingerprint(),
        topics=list(data.topics),
    )
    ctx = loop_lib.open_context(workdir, info, par, run.train, write)
    root = jax.random.key(run.seed)
    key = jax.random.fold_in(root, 0)
    train, size = data.splits["train"], run.data.batch_size
    example = train.batch(np.arange(min(len(train), size)), size)
    init = jax.jit(functools.partial(DialogCVAE(run.model).init, train=False))
    variables = init({"params": key, "sample": jax.random.fold_in(key, 1)}, example)
    params = variables["params"]
    if run.model.embedding_file:
        table = params["embed"]["embedding"]
        table = metrics_lib.glove_table(run.model.embedding_file, data.vocab, table)
        params = {**params, "embed": {"embedding": jnp.asarray(table, jnp.float32)}}
    model = DialogCVAE(run.model, axis_name=par.axis_name)
    state = steps.TrainState.create(
        apply_fn=model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=steps.make_optimizer(run.train.learning_rate, run.train.clip_norm, "adam"),
    )
    # A strongly typed counter: a Python 0 would compile the step a second time.
    state = state.replace(step=jnp.zeros((), jnp.int32))
    if write:
        loop_lib.record_run(ctx.workdir, data.vocab, info, config)
    rng = par.replicate(jax.random.fold_in(root, 1))
    s = Setup(config, run, data, model, ctx, rng, jax.random.key(run.eval.seed))
    return s, par.replicate(state)


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
    kl_weight, prior_weight = kl_schedule(state.step), prior_schedule(state.step)

    def loss_fn(params):
        out, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch,
            train=True,
            rngs={"sample": key},
            mutable=["batch_stats"],
        )
        loss = objectives.method_loss(method, out, mask, kl_weight, prior_weight)
        return steps.global_mean(loss, mask, axis_name), (out, updates)

    grads, (out, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    grads = parallel.psum(grads, axis_name)
    new_state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    sums = {f"{k}_sum": getattr(out, k) for k in TERMS}
    sums.update(loss_sum=out.rec + out.kl, tokens=out.tokens, count=1.0)
    metrics = parallel.psum({k: jnp.sum(v * mask) for k, v in sums.items()}, axis_name)
    norm = optax.tree.norm(grads)
    metrics.update(kl_weight=kl_weight, prior_kl_weight=prior_weight, grad_norm=norm)
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
    jit = par.mode == "jit"
    step_fn = jax.jit(fn, donate_argnums=0) if jit else par.pmap_step(fn, num_args=3)
    return lambda state, arrays, loop, step: step_fn(state, arrays, s.rng)


def summarize(host: list, loop: LoopState) -> dict:
    """The ``train/*`` scalars of the steps in ``host``."""

    def total(key: str) -> float:
        return sum(float(m[key]) for m in host)

    count = max(total("count"), 1.0)
    scalars = {f"train/{k}": total(f"{k}_sum") / count for k in TERMS}
    mean_nll = total("rec_sum") / max(total("tokens"), 1.0)
    scalars["train/ppl"] = math.exp(min(mean_nll, 50))
    last = {f"train/{k}": float(host[-1][k]) for k in ("kl_weight", "grad_norm")}
    return scalars | last


# -- evaluation and the patience rule ------------------------------------------


def _terms(model, variables, batch, rngs):
    """Per-example terms with z ~ q (BN running statistics): tuple of [B]."""
    out = model.apply(variables, batch, train=False, rngs=rngs)
    return out.rec, out.kl, out.prior_kl, out.bow, out.tokens


def _responses(model, variables, batch, rngs, **sizes):
    """Greedy responses from z ~ p(z|c): <int32>[B, num_samples, max_len]."""
    return (model.apply(variables, batch, rngs=rngs, method="generate", **sizes),)


@functools.lru_cache(maxsize=8)
def _mapped(fn, model: DialogCVAE, par: parallel.Parallel, **sizes):
    """``fn(model, variables, batch, rngs, **sizes)`` over the devices."""

    def rows_fn(variables, key, *rows):
        batch = dict(zip(BATCH_KEYS, rows, strict=True))
        key = parallel.row_offset_key(key, par.axis_name, batch["mask"].shape[0])
        return fn(model, variables, batch, {"sample": key}, **sizes)

    return par.map_rows(rows_fn, len(BATCH_KEYS))


def _passes(s: Setup, state, split, rows, key, fn, **sizes):
    """``(batch, fn's outputs)`` of ``split``'s ``rows``, batch by batch.

    Batches hold ``data.eval_batch_size`` rows rounded up to a multiple of the
    devices; batch i's key is ``fold_in(key, i)``.
    """
    mapped = _mapped(fn, s.model, s.ctx.par, **sizes)
    size = s.ctx.par.padded(s.run.data.eval_batch_size)
    for i, start in enumerate(range(0, len(rows), size)):
        batch = split.batch(rows[start : start + size], size)
        arrays = (batch[k] for k in BATCH_KEYS)
        yield batch, mapped(steps.variables(state), jax.random.fold_in(key, i), *arrays)


def evaluate_split(s: Setup, state, split_name: str) -> dict:
    """ELBO terms with z ~ q; PPL is exp(Σ rec / Σ target tokens)."""
    split = s.data.splits[split_name]
    key = jax.random.fold_in(s.eval_key, SPLIT_IDS[split_name])
    totals, count = np.zeros(5), 0.0
    for batch, terms in _passes(s, state, split, np.arange(len(split)), key, _terms):
        mask = batch["mask"].astype(np.float64)
        totals += [float(np.sum(np.asarray(t, np.float64) * mask)) for t in terms]
        count += float(mask.sum())
    rec_sum, kl_sum, _, _, tokens = totals
    n = max(count, 1.0)
    means = dict(zip(TERMS, totals[:4] / n, strict=True))
    return means | {
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

    Each response is its words without ``<pad>`` and ``</s>`` (Zhao et al.).
    Randomness is fixed by ``eval.seed`` and the batch index.
    """
    cfg, words = s.run.eval, s.data.vocab.words
    key = jax.random.fold_in(s.eval_key, 0x5A)
    sizes = {"num_samples": cfg.num_samples, "max_len": cfg.max_decode_len}
    hyps = []
    for batch, (ids,) in _passes(s, state, split, rows, key, _responses, **sizes):
        hyps += [
            [[words[i] for i in r.tolist() if i not in (PAD, EOS)] for r in sample]
            for sample in ids[: int(batch["mask"].sum())]
        ]
    return hyps


def scored_contexts(s: Setup) -> tuple[data_lib.DialogSplit, np.ndarray, list]:
    """The contexts whose sampled responses are scored, and their references.

    The test split's eligible contexts with their one reference each, or,
    with ``eval.multi_ref_file``, that file's eligible contexts with all
    their references (utterances padded as the test split's). References are
    words without ``<pad>``, ``<s>`` and ``</s>``.
    """
    cfg, vocab, test = s.run.eval, s.data.vocab, s.data.splits["test"]
    if cfg.multi_ref_file:
        items = data_lib.read_multi_ref(cfg.multi_ref_file, s.run.data.max_utt_len)
        split, refs = data_lib.multi_ref_split(
            items,
            vocab,
            s.data.topics,
            context_size=s.run.data.context_size,
            utt_len=test.utterances.shape[1],
        )
    else:
        split, refs = test, [[vocab.decode(test.utterances[r])] for r in test.response]
    rows = np.flatnonzero(split.context_lens >= cfg.min_context_utts)
    rows = rows[: cfg.max_contexts] if cfg.max_contexts else rows
    return split, rows, [refs[r] for r in rows]


def final(s: Setup, state, loop: LoopState) -> dict:
    """Valid/test ELBO terms and test response scores of the selected state.

    Sampled responses are scored by BLEU, and A-bow/E-bow with
    ``eval.glove_file``. Process 0 writes ``samples.txt`` and
    ``human_rating.csv``.
    """
    cfg = s.run.eval
    results = {name: evaluate_split(s, state, name) for name in ("valid", "test")}
    split, rows, refs = scored_contexts(s)
    hyps = sample_responses(s, state, split, rows)
    used = {w for group in refs + hyps for sentence in group for w in sentence}
    glove = metrics_lib.load_glove(cfg.glove_file, used) if cfg.glove_file else None
    scores = metrics_lib.score_contexts(refs, hyps, glove)
    source = "multi_ref_file" if cfg.multi_ref_file else "test_split"
    results["test"].update(scores, references=source)
    if jax.process_index() == 0:
        write_samples(s, split, rows, hyps)
    results.update(
        early_stopped=loop.done,
        num_samples=cfg.num_samples,
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


# -- outputs -------------------------------------------------------------------

RATING_COLUMNS = tuple(
    "context_id topic context reference method sample response fluency relevance "
    "informativeness".split()
)
SPEAKERS = ("other", "responder")  # of a context turn, by its floor


def write_samples(s: Setup, split: data_lib.DialogSplit, rows, hyps) -> None:
    """``samples.txt`` (every context) and ``human_rating.csv`` (a seeded subset).

    ``hyps``: per context, its sampled responses as words.
    """
    vocab, cfg = s.data.vocab, s.run.eval

    def words(utt: int) -> str:
        return " ".join(vocab.decode(split.utterances[utt]))

    def turns(row) -> list[tuple[str, str]]:  # (speaker, words), oldest first
        said = split.context[row, : split.context_lens[row]]
        return [(SPEAKERS[f], words(u)) for f, u in zip(split.floors[row], said)]

    def topic(row) -> str:
        return split.topics[int(split.topic[row])]

    text = io.StringIO()
    for n, (row, sample) in enumerate(zip(rows, hyps)):
        dialog = int(split.dialog[row])
        text.write(f"=== context {n} (dialog {dialog}, topic {topic(row)})\n")
        lines = [*turns(row), ("target", words(split.response[row]))]
        lines += [(f"sample {i}", " ".join(h)) for i, h in enumerate(sample, start=1)]
        text.writelines(f"  {who:>9}: {said}\n" for who, said in lines)
        text.write("\n")
    fileio.write_text_atomic(s.ctx.workdir / "samples.txt", text.getvalue())
    picked = np.random.default_rng([cfg.seed, 0xC5]).permutation(len(rows))
    table = io.StringIO()
    out = csv.writer(table)
    out.writerow(RATING_COLUMNS)
    for n in np.sort(picked[: cfg.rating_contexts]):
        row = rows[n]
        context = " | ".join(said for _, said in turns(row)[-3:])
        known = [int(n), topic(row), context, words(split.response[row])]
        out.writerows(
            [*known, s.run.method_name, i, " ".join(h), "", "", ""]
            for i, h in enumerate(hyps[n][: cfg.rating_samples], start=1)
        )
    fileio.write_text_atomic(s.ctx.workdir / "human_rating.csv", table.getvalue())


# (results key, column title, scale) of the Table-4 columns.
TABLE_KEYS = (("ppl", "PPL", 1.0), ("kl", "KL", 1.0)) + tuple(
    (f"{key}_{side}", f"{title} {side[0].upper()}", 100.0)
    for key, title in (("bleu4", "BLEU-4"), ("abow", "A-bow"), ("ebow", "E-bow"))
    for side in ("precision", "recall")
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
