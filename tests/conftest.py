"""Test setup: CPU only, small compile times, shared tiny fixtures, child processes."""

import collections
import os
import pathlib
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The persistent compilation cache of the runs the tests start stays out of the
# user's home (one cache for the session, so later tests reuse compilations).
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="bnvae_cache_"))
# The tests' models are tiny: compiling is most of their cost, and LLVM's
# optimisations only speed up programs that run for milliseconds (level 0 took
# the CPU time of tests/test_evaluation_decoding.py from 60 to 39 s). XLA:CPU's
# newer fusion emitters generate a kernel per fusion (some 550 for SA-VAE's
# train step); the older loop emitters compile the same programs three times
# faster (that step: 6.0 -> 2.0 s; three methods of tests/test_methods.py:
# 68 -> 37 s). Children inherit the flags; those with fake devices get them
# from ``xla_flags``. Runs outside the tests keep XLA's defaults.
TEST_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
)
_flags = os.environ.get("XLA_FLAGS", "")
if TEST_XLA_FLAGS not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} {TEST_XLA_FLAGS}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_platforms", "cpu")
# The test processes share the children's cache: a program compiled in one test
# file (or worker) is loaded, not compiled again, by the next.
jax.config.update(
    "jax_compilation_cache_dir",
    os.path.join(os.environ["XDG_CACHE_HOME"], "bnvae_jax", "xla"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


ROOT = pathlib.Path(__file__).resolve().parents[1]

# The files that take longest (seconds on one worker of the 2-core CI machine),
# longest first. The workers take whole files (--dist loadfile) in collection
# order (--no-loadscope-reorder, setup.cfg), so these start first and the short
# files fill in after them: both workers then end together, rather than one
# running a long file alone at the end.
SLOW_FILES = (
    "test_methods.py",
    "test_parallel_hosts.py",
    "test_api.py",
    "test_parallel.py",
    "test_train.py",
    "test_notebook.py",
    "test_classify.py",
    "test_cli.py",
    "test_dialog_train.py",
    "test_checkpoints.py",
    "test_models_vmf.py",
    "test_dialog_parallel.py",
    "test_bn_health.py",
    "test_sweep.py",
    "test_dialog_respond.py",
    "test_precision_and_sizing.py",
    "test_api_dialog.py",
    "test_layers.py",
    "test_benchmarks.py",
    "test_evaluation_decoding.py",
    "test_collectives.py",
    "test_steps.py",
    "test_lagging.py",
)


def pytest_collection_modifyitems(items):
    """Puts the tests of ``SLOW_FILES`` first, in that order (then the others)."""
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def xla_flags(devices: int) -> str:
    """``XLA_FLAGS`` of a child with ``devices`` fake CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"


def tiny_config(**overrides):
    """``configs/tiny.py`` with ``{"section.key": value}`` overrides."""
    from bnvae_jax import cli

    config = cli.load_config_file(str(ROOT / "configs" / "tiny.py"))
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


# Text runs whose tests check neither reconstructions nor prior samples skip
# them: decoding them (greedy, sampled, beam) takes 5 of the 25 s of a tiny run
# on one core with a cold compilation cache. tests/test_train.py and
# tests/test_evaluation_decoding.py check the samples a run writes.
NO_DECODING = {"eval.num_reconstructions": 0, "eval.num_prior_samples": 0}
NO_DECODING_FLAGS = tuple(f"--config.{k}={v}" for k, v in NO_DECODING.items())

# The evaluation figures of a text run that the multi-device tests compare.
EVAL_KEYS = ("iw_nll", "elbo_nll", "rec", "kl", "mi", "au", "ppl", "iw_ppl")


def latest_step(ckpt) -> int | None:
    """The step of a ``Checkpointer``'s newest complete "latest" checkpoint, or None."""
    from bnvae_jax.training import checkpoints

    return next(iter(checkpoints.complete_steps(ckpt.directory)), None)


def run_results(workdir) -> dict:
    """A run's ``results.json`` without its timings and config."""
    import json

    results = json.loads((pathlib.Path(workdir) / "results.json").read_text())
    for key in ("train_seconds", "train_tokens_per_second", "config"):
        results.pop(key)
    return results


def make_model_config(**overrides):
    """A tiny ``ModelConfig``; tests override only what they exercise."""
    from bnvae_jax.config import ModelConfig

    values = dict(
        vocab_size=12,
        emb_dim=8,
        enc_hidden=8,
        dec_hidden=8,
        latent_dim=4,
        head="bn_gaussian",
        gamma=0.5,
        bn_momentum=0.1,
        bn_eps=1e-5,
        dec_dropout_in=0.5,
        dec_dropout_out=0.5,
        enc_init="uniform",
        dec_init="uniform",
        svi_steps=0,
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def tiny_model_config():
    return make_model_config


# -- child processes -------------------------------------------------------------
#
# A child writes stdout and stderr into one log file (never a pipe that could
# fill up and block it); a child that outlives its timeout is killed and the
# test fails with the last lines it wrote.

TAIL_LINES = 40


def tail(path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (carriage returns as new lines)."""
    text = read_output(path).replace("\r", "\n")
    return "\n".join(collections.deque(text.splitlines(), maxlen=lines))


def read_output(path) -> str:
    """A child's output as written: progress bars keep their carriage returns."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return f.read()


def start_child(args, log_path, **kwargs) -> subprocess.Popen:
    """Starts ``args`` with its output going to ``log_path`` (``proc.log``)."""
    log_path = pathlib.Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **kwargs,
        )
    proc.log = log_path
    proc.started = time.monotonic()
    return proc


def wait_child(proc: subprocess.Popen, timeout: float, what: str = "child") -> int:
    """Waits for ``proc``; kills it and fails with its last lines after ``timeout``."""
    try:
        return proc.wait(timeout=max(timeout - (time.monotonic() - proc.started), 1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"{what} still running after {timeout:.0f} s; killed. Its last lines "
            f"({proc.log}):\n{tail(proc.log)}",
            pytrace=False,
        )


def run_child(args, timeout: float, log_path=None, what=None, **kwargs):
    """Runs ``args`` to the end; returns ``(returncode, output)``."""
    if log_path is None:
        log_path = pathlib.Path(tempfile.mkdtemp(prefix="child_")) / "out.log"
    proc = start_child(args, log_path, **kwargs)
    code = wait_child(proc, timeout, what or " ".join(map(str, args[:4])))
    return code, read_output(log_path)


def python_module(module: str, *args) -> list:
    """The command line of ``python -m module args``."""
    return [sys.executable, "-m", module, *map(str, args)]
