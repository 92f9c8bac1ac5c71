"""End-to-end runs of the train loop on the tiny config."""

import dataclasses
import json
import os
import pathlib
import signal
import time

import jax
import numpy as np
import pytest
from conftest import (
    NO_DECODING,
    NO_DECODING_FLAGS,
    python_module,
    start_child,
    tail,
    tiny_config,
    wait_child,
)

from bnvae_jax.tasks import text_vae as train
from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import rules, steps, writers

ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULT_KEYS = {"iw_nll", "iw_ppl", "elbo_nll", "rec", "kl", "mi", "au"}
TIMING_KEYS = {"train_seconds", "train_tokens_per_second"}


def _comparable(results):
    return {k: v for k, v in results.items() if k not in TIMING_KEYS}


def test_train_and_evaluate_writes_everything(tmp_path):
    results = train.train_and_evaluate(tiny_config(), str(tmp_path))
    for split in ("valid", "test"):
        assert RESULT_KEYS <= set(results[split])
    assert results["epochs_run"] == 2
    assert results["test"]["au"] == 4  # BN-VAE: every unit active
    assert results["test"]["iw_nll"] <= results["test"]["elbo_nll"] + 0.05
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["test"]["iw_nll"] == pytest.approx(results["test"]["iw_nll"])
    assert {"train_seconds", "train_tokens_per_second", "epochs_run", "config"} <= set(
        on_disk
    )
    assert on_disk["data"]["train"]["kept"] == 256
    assert (tmp_path / "config.json").exists()
    assert (tmp_path / "vocab.txt").exists()
    assert (tmp_path / "checkpoints").is_dir()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents*"))
    records = writers.read_metrics(str(tmp_path))
    assert any("valid/elbo_nll" in r.get("values", {}) for r in records)
    assert (tmp_path / "samples" / "reconstructions.txt").exists()


def test_same_seed_same_results_and_rerun_is_a_no_op(tmp_path):
    a = train.train_and_evaluate(
        tiny_config(**{"train.epochs": 1}, **NO_DECODING), str(tmp_path / "a")
    )
    b = train.train_and_evaluate(
        tiny_config(**{"train.epochs": 1}, **NO_DECODING), str(tmp_path / "b")
    )
    assert _comparable(a) == _comparable(b)
    again = train.train_and_evaluate(
        tiny_config(**{"train.epochs": 1}, **NO_DECODING), str(tmp_path / "a")
    )
    assert again["steps"] == a["steps"]
    assert again["test"] == a["test"]


def test_compilations_bounded_by_number_of_shapes(tmp_path):
    trainer, state = train.setup(tiny_config(**{"data.bucket_width": 2}), str(tmp_path))
    loop = train.LoopState(learning_rate=1.0)
    loop.done = False
    step_fn = steps.jit_train_step(train.step_fns(trainer))
    for i in range(len(trainer.plan)):
        batch = trainer.plan.make_batch(i)
        if batch.num_real >= 2:
            state, _ = step_fn(state, train.eval_run.batch_arrays(batch), trainer.rng)
    assert step_fn._cache_size() <= len(trainer.plan.shapes())


def _run_main(workdir, *extra):
    return start_child(
        python_module(
            "bnvae_jax.main",
            f"--config={ROOT / 'configs' / 'tiny.py'}",
            f"--workdir={workdir}",
            "--config.train.epochs=3",
            "--config.train.checkpoint_every_steps=3",
            *NO_DECODING_FLAGS,
            *extra,
        ),
        f"{workdir}.log",
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_results(tmp_path):
    reference = _run_main(tmp_path / "ref")
    assert wait_child(reference, 600, "reference run") == 0, tail(reference.log)
    killed_dir = tmp_path / "killed"
    proc = _run_main(killed_dir)
    # Kill once a mid-run checkpoint exists (after step 3, before the end).
    deadline = time.time() + 300
    ckpt = killed_dir / "checkpoints"
    while time.time() < deadline:
        steps = [p for p in ckpt.glob("*") if p.name.isdigit()] if ckpt.exists() else []
        if any(int(p.name) >= 6 for p in steps):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "results.json").exists()
    resumed = _run_main(killed_dir)
    assert wait_child(resumed, 600, "resumed run") == 0, tail(resumed.log)
    ref = json.loads((tmp_path / "ref" / "results.json").read_text())
    got = json.loads((killed_dir / "results.json").read_text())
    ref["config"] = got["config"] = None
    assert _comparable(got) == _comparable(ref)


class _Cfg:
    decay_epoch, load_best_epoch, lr_decay = 2, 3, 0.5


def test_plateau_rule_follows_the_reference():
    loop = train.LoopState(learning_rate=1.0)
    losses = [10.0, 9.0, 9.5, 9.6, 9.7, 9.8, 9.4, 9.9, 10.0]
    decays = [rules.plateau(loop, v, e, _Cfg) for e, v in enumerate(losses)]
    # Worse twice at epochs 2-3 (epoch 3 >= load_best_epoch): decay at epoch 3;
    # ref_loss becomes 9.6; 9.7, 9.8 worse -> decay at 5; 9.4 resets; 9.9, 10 -> 8.
    assert decays == [False, False, False, True, False, True, False, False, True]
    assert loop.learning_rate == pytest.approx(0.125)
    assert loop.decay_count == 3


def test_interrupt_at_an_epoch_end_does_not_count_the_epoch_twice(
    tmp_path, monkeypatch
):
    config = tiny_config(
        **{
            "train.epochs": 3,
            "train.decay_epoch": 2,
            "train.load_best_epoch": 0,
            "train.max_decay": 5,
            "train.checkpoint_every_steps": 4,
        }
    )
    real_validate = train.validate

    def validate(self, state, split="valid"):
        # Every epoch worse than the one before: 5, 6, 7 at epochs 0-2.
        metrics = real_validate(self, state, split)
        metrics["elbo_nll"] = 4.0 + int(state.step) // len(self.plan)
        return metrics

    monkeypatch.setattr(train, "validate", validate)

    def finish(workdir, writer_wrapper=None):
        trainer, state = train.setup(config, str(workdir))
        state, loop = train.start(trainer, state)
        ctx = trainer.ctx
        if writer_wrapper:
            ctx = dataclasses.replace(ctx, writer=writer_wrapper(ctx.writer))
        try:
            loop_lib.train_epochs(ctx, state, loop, **loop_lib.task_fns(train, trainer))
        finally:
            trainer.ctx.ckpt.close()
        return loop

    straight = finish(tmp_path / "straight")
    # Worse at 1 and 2: a decay after epoch 2 (counting epoch 1 twice would decay
    # after epoch 1 and count epoch 2 as worse than the new reference).
    assert (straight.decay_count, straight.not_improved) == (1, 0)

    class InterruptEpochOne:
        def __init__(self, writer):
            self.writer = writer

        def __getattr__(self, name):
            return getattr(self.writer, name)

        def write_scalars(self, step, scalars):
            self.writer.write_scalars(step, scalars)
            if scalars.get("epoch") == 1:  # after epoch 1's rule has counted it
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finish(tmp_path / "resumed", InterruptEpochOne)
    resumed = finish(tmp_path / "resumed")
    for field in (
        "epoch",
        "decay_count",
        "not_improved",
        "learning_rate",
        "best_epoch",
    ):
        assert getattr(resumed, field) == getattr(straight, field), field


def test_decay_reloads_best_params_and_stats_and_stops(tmp_path, monkeypatch):
    config = tiny_config(
        **{
            "train.epochs": 10,
            "train.decay_epoch": 1,
            "train.load_best_epoch": 0,
            "train.max_decay": 2,
        }
    )
    trainer, state = train.setup(config, str(tmp_path))
    scripted = iter([5.0, 6.0, 7.0, 8.0, 9.0])
    snapshots = {}
    real_validate = train.validate

    def validate(self, state, split="valid"):
        metrics = real_validate(self, state, split)
        metrics["elbo_nll"] = next(scripted)
        snapshots[len(snapshots)] = jax.device_get(
            {"params": state.params, "batch_stats": state.batch_stats}
        )
        return metrics

    monkeypatch.setattr(train, "validate", validate)
    loop = train.LoopState(learning_rate=config.train.learning_rate)
    final = loop_lib.train_epochs(
        trainer.ctx, state, loop, **loop_lib.task_fns(train, trainer)
    )
    # Epoch 0 is best; epochs 1 and 2 are worse -> two decays -> stop.
    assert loop.decay_count == 2 and loop.done and loop.epoch == 3
    assert loop.learning_rate == pytest.approx(0.25)
    best = snapshots[0]
    for a, b in zip(
        jax.tree.leaves(best),
        jax.tree.leaves({"params": final.params, "batch_stats": final.batch_stats}),
    ):
        np.testing.assert_array_equal(a, b)
    assert final.opt_state.hyperparams["learning_rate"] == pytest.approx(0.25)
