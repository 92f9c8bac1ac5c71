"""Tests of the orbax checkpoint wrapper and run_info.json."""

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import ROOT, latest_step, python_module, run_child
from tensorboardX.proto import event_pb2
from test_writers import _read_events

from bnvae_jax.errors import WorkdirError
from bnvae_jax.training import checkpoints


def _state(scale=1.0):
    scale = float(scale)
    params = {
        "encoder": {"kernel": jnp.full((3, 4), scale), "bias": jnp.zeros(4)},
        "decoder": {"embed": jnp.arange(6, dtype=jnp.float32).reshape(2, 3) * scale},
    }
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.5, momentum=0.9)
    opt_state = tx.init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(0.25 * scale)
    return {
        "step": jnp.asarray(int(10 * scale), jnp.int32),
        "params": params,
        "batch_stats": {"bn": {"mean": np.full(4, scale, np.float32)}},
        "opt_state": opt_state,
    }


def _assert_same(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_roundtrip_latest(tmp_path):
    saved = _state(2.0)
    meta = {
        "epoch": np.int64(3),
        "lr": np.float32(0.25),
        "best_loss": math.inf,
        "rng": jax.random.key_data(jax.random.key(0)),
        "plateau": (1, 2),
    }
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        assert ckpt.restore_latest(_state()) is None
        assert latest_step(ckpt) is None
        ckpt.save_latest(20, saved, meta)
        assert latest_step(ckpt) == 20
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        state, got = ckpt.restore_latest(_state())
    _assert_same(state, saved)
    assert isinstance(state["opt_state"], type(saved["opt_state"]))
    assert isinstance(state["batch_stats"]["bn"]["mean"], np.ndarray)
    assert got["epoch"] == 3 and got["lr"] == 0.25 and got["best_loss"] == math.inf
    assert got["rng"] == [0, 0] and got["plateau"] == [1, 2]


def test_latest_keeps_max_to_keep(tmp_path):
    with checkpoints.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in (1, 2, 3):
            ckpt.save_latest(step, _state(step), {"step": step})
        assert sorted(p.name for p in ckpt.directory.iterdir() if p.name.isdigit()) == [
            "2",
            "3",
        ]
        state, meta = ckpt.restore_latest(_state())
        assert meta == {"step": 3}
        _assert_same(state, _state(3))
        # A resumed run saving again at a step it saved before replaces it.
        ckpt.save_latest(3, _state(4), {"step": "again"})
        assert ckpt.restore_latest(_state())[1] == {"step": "again"}
        assert latest_step(ckpt) == 3


def _numbered(folder):
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def test_best_overwrites(tmp_path):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(WorkdirError, match="no best checkpoint"):
            ckpt.restore_best(_state())
        ckpt.save_best(5, _state(1.0), {"valid": np.float32(3.5)})
        ckpt.save_best(9, _state(2.0), {"valid": 2.5})
        ckpt.save_best(7, _state(3.0), {"valid": 1.5})  # replayed after a resume
        assert _numbered(ckpt.best_directory) == [2]
        # "best" is no step of the latest checkpoints.
        assert latest_step(ckpt) is None
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        state, meta = ckpt.restore_best(_state())
        params = ckpt.restore_best(None)[0]["params"]
    _assert_same(state, _state(3.0))
    _assert_same(params, _state(3.0)["params"])
    assert meta == {"valid": 1.5}
    # The training step, as bnvae_jax.load reads it.
    info = tmp_path / "checkpoints" / "best" / "2" / "info" / "metadata"
    assert json.loads(info.read_text()) == {"step": 7}


def test_half_written_checkpoint_is_ignored(tmp_path):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        ckpt.save_latest(4, _state(1.0), {"step": 4})
    root = tmp_path / "checkpoints"
    # What a kill mid-save leaves: orbax's temporary directory ...
    tmp = root / "8.orbax-checkpoint-tmp-1712345678"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "_METADATA").write_text("{trunc")
    # ... or, on a commit-file filesystem, a final directory without the marker.
    (root / "9" / "state").mkdir(parents=True)
    (root / "9" / "state" / "_METADATA").write_text("{trunc")
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        assert latest_step(ckpt) == 4
        state, meta = ckpt.restore_latest(_state())
        assert meta == {"step": 4}
        _assert_same(state, _state(1.0))
        ckpt.save_latest(5, _state(2.0), {"step": 5})
        assert ckpt.restore_latest(_state())[1] == {"step": 5}
    assert not tmp.exists()
    assert not (root / "9").exists()


@pytest.mark.parametrize(
    "template",
    [
        {"w": jnp.zeros((2, 3)), "extra": jnp.zeros(2)},
        {"w": jnp.zeros((2, 4))},
    ],
    ids=["extra-leaf", "other-shape"],
)
def test_another_model_is_a_workdir_error_not_damage(tmp_path, template, caplog):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        ckpt.save_latest(1, {"w": jnp.zeros((2, 3))}, {})
        ckpt.save_latest(2, {"w": jnp.ones((2, 3))}, {})
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(WorkdirError, match="2 does not fit this model") as e:
            ckpt.restore_latest(template)
    assert "\n" not in str(e.value) and "another model" in str(e.value)
    # Nothing is moved aside and no other step is tried.
    assert _numbered(tmp_path / "checkpoints") == [1, 2]
    assert not (tmp_path / checkpoints.CORRUPT_DIR).exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def _truncate(folder, pattern):
    """Cuts the largest file of ``folder`` matching ``pattern`` to half its size.

    Returns the file's path in ``folder`` and its new size.
    """
    path = max(folder.glob(pattern), key=lambda p: p.stat().st_size)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.relative_to(folder), len(data) // 2


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _logged(caplog, call, *args):
    """``call(*args)`` and the warnings it logged."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        result = call(*args)
    return result, _warnings(caplog)


@pytest.mark.parametrize(
    "damaged", ["state/_METADATA", "state/manifest.ocdbt", "state/d/*", "meta/metadata"]
)
def test_unreadable_newest_checkpoint_is_moved_aside(tmp_path, damaged, caplog):
    root = tmp_path / "checkpoints"
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        for step in (1, 2):
            ckpt.save_latest(step, _state(step), {"step": step})
    cut, size = _truncate(root / "2", damaged)
    corrupt = tmp_path / checkpoints.CORRUPT_DIR
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        (state, meta), (warning,) = _logged(caplog, ckpt.restore_latest, _state())
        assert meta == {"step": 1}
        _assert_same(state, _state(1))
        assert "checkpoint 2 is unreadable (" in warning
        assert f"moved to {corrupt / '2'}, restored 1" in warning
        # Moved as found (never deleted), out of orbax's listing.
        assert (corrupt / "2" / cut).stat().st_size == size
        assert _numbered(root) == [1] and latest_step(ckpt) == 1
        # The resumed run saves step 2 again, with no warning.
        _, logged = _logged(caplog, ckpt.save_latest, 2, _state(5), {"step": 5})
        assert not logged
        assert ckpt.restore_latest(_state())[1] == {"step": 5}
    # Damaged again: the first copy moved aside is kept beside the second.
    _truncate(root / "2", damaged)
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        assert ckpt.restore_latest(_state())[1] == {"step": 1}
    assert sorted(p.name for p in corrupt.iterdir()) == ["2", "2.1"]


def test_no_readable_checkpoint_is_an_error_and_moves_nothing(tmp_path):
    root = tmp_path / "checkpoints"
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        for step in (1, 2):
            ckpt.save_latest(step, _state(step), {"step": step})
    _truncate(root / "1", "state/d/*")
    _truncate(root / "2", "state/_METADATA")
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(WorkdirError) as e:
            ckpt.restore_latest(_state())
    message = str(e.value)
    assert "\n" not in message
    assert f"no checkpoint in {root} can be read (2: JSONDecodeError" in message
    assert "; 1: ValueError" in message and message.endswith("use a new --workdir")
    # Every rerun says the same: nothing is moved, nothing started afresh.
    assert _numbered(root) == [1, 2]
    assert not (tmp_path / checkpoints.CORRUPT_DIR).exists()


def test_unreadable_best_falls_back_to_an_older_best(tmp_path, caplog):
    best = tmp_path / "checkpoints" / "best"
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        ckpt.save_best(5, _state(1.0), {"valid": 2.0})
        shutil.copytree(best / "0", tmp_path / "old_best")
        ckpt.save_best(9, _state(2.0), {"valid": 1.0})
    # What a kill between the new best's commit and the old one's deletion leaves.
    shutil.copytree(tmp_path / "old_best", best / "0")
    _truncate(best / "1", "state/d/*")
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        (state, meta), (warning,) = _logged(caplog, ckpt.restore_best, _state())
    assert meta == {"valid": 2.0}
    _assert_same(state, _state(1.0))
    assert "checkpoint best/1 is unreadable (ValueError" in warning
    assert "restored best/0" in warning
    assert (tmp_path / checkpoints.CORRUPT_DIR / "best" / "1").is_dir()
    assert _numbered(best) == [0]
    # With no readable best left, the final evaluation stops with one line.
    _truncate(best / "0", "meta/metadata")
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(WorkdirError, match=f"no checkpoint in {best} can be read"):
            ckpt.restore_best(_state())
        with pytest.raises(WorkdirError, match="0: JSONDecodeError"):
            ckpt.restore_best(None)


def test_saving_a_step_again_is_silent(tmp_path, caplog):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        # A periodic save, then the epoch's end at the same step.
        _, logged = _logged(caplog, ckpt.save_latest, 4, _state(1), {"at": "step"})
        assert not logged
        _, logged = _logged(caplog, ckpt.save_latest, 4, _state(2), {"at": "end"})
        assert not logged
        state, meta = ckpt.restore_latest(_state())
        assert meta == {"at": "end"}
        _assert_same(state, _state(2))
        # A save before a newer checkpoint deletes that one, with a warning.
        _, (warning,) = _logged(caplog, ckpt.save_latest, 3, _state(3), {})
        assert f"deleting checkpoint {ckpt.directory}/4" in warning
        assert latest_step(ckpt) == 3


# ``python -m bnvae_jax.main`` printing the step of every "latest" save.
_MAIN_SHOWING_SAVES = textwrap.dedent(
    """
    from absl import app
    from bnvae_jax import cli, main
    from bnvae_jax.training import checkpoints
    save_latest = checkpoints.Checkpointer.save_latest
    def show(self, step, state, meta):
        print("saving step", int(step), flush=True)
        save_latest(self, step, state, meta)
    checkpoints.Checkpointer.save_latest = show
    app.run(main.main, flags_parser=cli.make_flags_parser())
    """
)


def test_a_run_saves_each_step_once_and_resumes_past_a_damaged_checkpoint(
    tmp_path,
):
    flags = [
        f"--config={ROOT / 'configs' / 'tiny.py'}",
        f"--workdir={tmp_path}",
        "--config.train.epochs=1",  # 16 batches
        "--config.train.checkpoint_every_steps=8",
        "--config.eval.num_reconstructions=0",
        "--config.eval.num_prior_samples=0",
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    code, output = run_child(
        [sys.executable, "-c", _MAIN_SHOWING_SAVES, *flags], 300, cwd=ROOT, env=env
    )
    assert code == 0, output[-3000:]
    # Step 16 ends the epoch: saved there once, not by the periodic save too.
    assert re.findall(r"saving step (\d+)", output) == ["8", "16"]
    assert not [line for line in output.splitlines() if "checkpoint" in line]
    first = json.loads((tmp_path / "results.json").read_text())

    _truncate(tmp_path / "checkpoints" / "16", "state/d/*")
    code, output = run_child(
        python_module("bnvae_jax.main", *flags), 300, cwd=ROOT, env=env
    )
    assert code == 0, output[-3000:]
    (warning,) = [line for line in output.splitlines() if "checkpoint" in line]
    assert warning.startswith("warning: checkpoint 16 is unreadable (ValueError")
    assert "Traceback" not in output and "resuming from step 8" in output
    assert (tmp_path / checkpoints.CORRUPT_DIR / "16").is_dir()
    # TensorBoard hides the first run's events after step 8, the checkpoint
    # restored, not after the damaged step 16.
    purges = [
        e.step
        for e in _read_events(tmp_path / "tensorboard")[1]
        if e.HasField("session_log")
        and e.session_log.status == event_pb2.SessionLog.START
    ]
    assert purges == [9]
    # Steps 9-16 again from step 8: the uninterrupted run's model.
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["steps"] == 16
    assert again["test"] == pytest.approx(first["test"], rel=1e-5)


def test_meta_must_be_jsonable(tmp_path):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(TypeError, match="PRNG key"):
            ckpt.save_latest(1, {"w": jnp.zeros(2)}, {"rng": jax.random.key(0)})


def test_run_info(tmp_path):
    info = {
        "model.latent_dim": 32,
        "model.head": "bn_gaussian",
        "vocab_fingerprint": "abc",
        "model.sizes": (1, 2),
    }
    keys = list(info)
    assert checkpoints.check_run_info(tmp_path, info, keys) is False
    checkpoints.write_run_info(tmp_path, info)
    assert checkpoints.read_run_info(tmp_path)["model.sizes"] == [1, 2]
    assert checkpoints.check_run_info(tmp_path, dict(info), keys) is True
    # Keys not listed may differ.
    assert checkpoints.check_run_info(tmp_path, {**info, "note": 1}, keys) is True

    with pytest.raises(WorkdirError) as e:
        checkpoints.check_run_info(tmp_path, {**info, "model.latent_dim": 16}, keys)
    message = str(e.value)
    assert "\n" not in message
    assert "model.latent_dim=32, this config has 16; use a new --workdir" in message
    assert str(tmp_path) in message
    with pytest.raises(WorkdirError, match="vocab_fingerprint=abc, this config has x"):
        checkpoints.check_run_info(tmp_path, {**info, "vocab_fingerprint": "x"}, keys)
    missing = {k: v for k, v in info.items() if k != "model.head"}
    with pytest.raises(WorkdirError, match="has <unset>"):
        checkpoints.check_run_info(tmp_path, missing, keys)
    # The stored file is untouched by failed checks.
    assert checkpoints.read_run_info(tmp_path)["model.latent_dim"] == 32


def test_run_info_nested_keys(tmp_path):
    checkpoints.write_run_info(tmp_path, {"model": {"latent_dim": 32}})
    with pytest.raises(WorkdirError, match="model.latent_dim=32, this config has 8"):
        checkpoints.check_run_info(
            tmp_path, {"model": {"latent_dim": 8}}, ["model.latent_dim"]
        )


def test_corrupt_run_info(tmp_path):
    (tmp_path / checkpoints.RUN_INFO_FILE).write_text("{not json")
    with pytest.raises(WorkdirError, match="not valid JSON"):
        checkpoints.check_run_info(tmp_path, {}, [])


_KILL_CHILD = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from bnvae_jax.training import checkpoints
    ckpt = checkpoints.Checkpointer(sys.argv[1])
    big = np.zeros((8, 1 << 20), np.float32)
    step = 0
    while True:
        step += 1
        ckpt.save_latest(step, {"big": big + step}, {"step": step})
        if step == 2:
            open(os.path.join(sys.argv[1], "ready"), "w").close()
    """
)


@pytest.mark.slow
def test_sigkill_mid_save_leaves_a_restorable_checkpoint(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(tmp_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = 60
        start = time.monotonic()
        while not (tmp_path / "ready").exists():
            assert child.poll() is None, "the saving process died"
            assert time.monotonic() - start < deadline
            time.sleep(0.05)
        time.sleep(0.3)  # somewhere inside a later save
    finally:
        child.kill()
        child.wait()
    template = {"big": np.zeros((8, 1 << 20), np.float32)}
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        state, meta = ckpt.restore_latest(template)
    assert meta["step"] >= 2
    np.testing.assert_array_equal(state["big"][:, :4], meta["step"])
