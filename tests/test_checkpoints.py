"""Tests of the orbax checkpoint wrapper and run_info.json."""

import logging
import math
import os
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
        assert ckpt.latest_step() is None
        ckpt.save_latest(20, saved, meta)
        assert ckpt.latest_step() == 20
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
        assert ckpt.latest_step() == 3


def test_saving_a_step_again_is_silent(tmp_path, caplog):
    with checkpoints.Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING):
        # A periodic save, then the epoch's end at the same step.
        ckpt.save_latest(4, _state(1), {"at": "step"})
        ckpt.save_latest(4, _state(2), {"at": "end"})
        assert not caplog.records
        state, meta = ckpt.restore_latest(_state())
        assert meta == {"at": "end"}
        _assert_same(state, _state(2))
        # A save before a newer checkpoint deletes that one, with a warning.
        ckpt.save_latest(3, _state(3), {})
        (record,) = caplog.records
        assert f"deleting checkpoint {ckpt.directory}/4" in record.getMessage()
        assert ckpt.latest_step() == 3


def test_best_overwrites(tmp_path):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        with pytest.raises(WorkdirError, match="no best checkpoint"):
            ckpt.restore_best(_state())
        assert ckpt.best_step() is None
        ckpt.save_best(5, _state(1.0), {"valid": np.float32(3.5)})
        ckpt.save_best(9, _state(2.0), {"valid": 2.5})
        ckpt.save_best(7, _state(3.0), {"valid": 1.5})  # replayed after a resume
        assert len([p for p in ckpt.best_directory.iterdir() if p.name.isdigit()]) == 1
        assert ckpt.best_step() == 7
        # "best" is no step of the latest checkpoints.
        assert ckpt.latest_step() is None
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        state, meta = ckpt.restore_best(_state())
        assert ckpt.best_step() == 7
    _assert_same(state, _state(3.0))
    assert meta == {"valid": 1.5}


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
        assert ckpt.latest_step() == 4
        state, meta = ckpt.restore_latest(_state())
        assert meta == {"step": 4}
        _assert_same(state, _state(1.0))
        ckpt.save_latest(5, _state(2.0), {"step": 5})
        assert ckpt.restore_latest(_state())[1] == {"step": 5}
    assert not tmp.exists()
    assert not (root / "9").exists()


def test_mismatched_template_is_a_workdir_error(tmp_path):
    with checkpoints.Checkpointer(tmp_path) as ckpt:
        ckpt.save_latest(1, {"w": jnp.zeros((2, 3))}, {})
        with pytest.raises(WorkdirError, match="cannot restore checkpoint"):
            ckpt.restore_latest({"w": jnp.zeros((2, 3)), "extra": jnp.zeros(2)})


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
    checkpoints.run_info_path(tmp_path).write_text("{not json")
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
