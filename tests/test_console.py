"""The console of ``bnvae_jax.main``: short, no third-party INFO, no warnings."""

import os
import pathlib
import sys

import pytest
from conftest import run_child

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")


def _main(workdir, *extra):
    # ResourceWarnings (an unclosed file at exit) are shown too.
    return run_child(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "bnvae_jax.main"]
        + [f"--config={TINY}", f"--workdir={workdir}", *extra],
        300,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_console_is_short_and_the_log_file_keeps_everything(tmp_path):
    code, out = _main(tmp_path / "run", "--config.train.epochs=2")
    assert code == 0, out[-3000:]
    # What a terminal shows: a line ends at \n, a \r redraws it (progress bars).
    lines = [line.split("\r")[-1] for line in out.rstrip("\n").split("\n")]
    assert len(lines) <= 40, out
    assert "orbax" not in out and "checkpoint_manager" not in out, out
    # No Python warning and no warning of the run's own, except BN-VAE's bound
    # monitor (on this tiny model the bound can dip for a few steps at the
    # start) and the final evaluation's note that the best checkpoint's BN
    # statistics lag (it is epoch 0's): measured events the console is meant
    # to show.
    expected = ("BN-VAE's KL bound does not hold", "BN running statistics lag")
    own = [
        line
        for line in lines
        if "warning:" in line and not any(text in line for text in expected)
    ]
    assert "Warning" not in out and not own, out
    epochs = [x for x in lines if x.startswith("epoch ") and "valid nll" in x]
    assert len(epochs) == 2, out
    for key in (" kl ", " mi ", " au ", " lr ", " s training"):
        assert key in epochs[0], epochs[0]
    assert lines[-1].lstrip().startswith("test") and "iw_nll" in lines[-4], out
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "CheckpointManager" in log and "train/loss=" in log

    # --verbosity=0 brings third-party INFO records back to the console.
    code, out = _main(tmp_path / "run", "--config.train.epochs=2", "--verbosity=0")
    assert code == 0, out[-3000:]
    assert "CheckpointManager" in out
