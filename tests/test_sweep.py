"""Sweeps: grid files, expansion, scheduling, skip and resume, the command line.

Runs go through a fake command (a few lines of Python that write results.json)
except one real tiny training run that is killed and then resumed.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import NO_DECODING_FLAGS, python_module, run_child

from bnvae_jax import sweep
from bnvae_jax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")

# Stands in for ``python -m bnvae_jax.main``: records its environment, checks
# that an init_from run has finished, fails for method=boom.
FAKE = textwrap.dedent(
    """
    import json, os, pathlib, sys, time
    workdir, args = pathlib.Path(sys.argv[1]), sys.argv[2:]
    start = time.time()
    for a in args:
        if a.startswith("--config.init_from="):
            if not (pathlib.Path(a.split("=", 1)[1]) / "results.json").is_file():
                sys.exit(5)
    if "--config.method=boom" in args:
        print("error: boom", file=sys.stderr)
        sys.exit(3)
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    record = dict(
        gpus=os.environ.get("CUDA_VISIBLE_DEVICES"),
        prealloc=os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        args=args, start=start, end=time.time(),
    )
    (workdir / "fake.json").write_text(json.dumps(record))
    (workdir / "results.json").write_text(json.dumps(dict(method="fake")))
    """
)


def write_grid(path, body, seeds=None):
    """A grid file whose ``sweep(add)`` runs ``body`` (Python lines)."""
    text = "def sweep(add):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    if seeds is not None:
        text += f"\n\nSEEDS = {seeds!r}\n"
    path.write_text(text)
    return str(path)


def fake_runs(tmp_path, body, seeds=(1,)):
    """The runs of a grid, each with the fake command in place of training."""
    entries, _ = sweep.load_grid(write_grid(tmp_path / "grid.py", body))
    runs = sweep.expand(entries, seeds, str(tmp_path / "out"), TINY)
    return [
        dataclasses.replace(
            r, command=(sys.executable, "-c", FAKE, r.workdir, *r.command[5:])
        )
        for r in runs
    ]


def fake_execute(runs, slots=(None,), **env):
    return sweep.execute(runs, list(slots), {**os.environ, **env}, poll_seconds=0.02)


# ------------------------------------------------------------------- grid


def test_grid_expands_to_named_runs_with_ordered_overrides(tmp_path):
    body = """
        add("vae", method="vae")
        for gamma in (0.6,):
            add(f"bn_vae_{gamma}", method="bn_vae", **{"model.gamma": gamma,
                "model.learn_gamma": True})
    """
    entries, seeds = sweep.load_grid(write_grid(tmp_path / "g.py", body, [11, 22, 33]))
    assert seeds == (11, 22, 33)
    runs = sweep.expand(
        entries, seeds[:2], "out", "configs/tiny.py", {"train.epochs": 1}
    )
    assert [r.name for r in runs] == [
        "vae/seed_11",
        "vae/seed_22",
        "bn_vae_0.6/seed_11",
        "bn_vae_0.6/seed_22",
    ]
    assert runs[2].workdir == str(pathlib.PurePath("out", "bn_vae_0.6", "seed_11"))
    assert runs[2].command == (
        sys.executable,
        "-m",
        "bnvae_jax.main",
        "--config=configs/tiny.py",
        f"--workdir={runs[2].workdir}",
        "--config.method=bn_vae",
        "--config.model.gamma=0.6",
        "--config.model.learn_gamma=True",
        "--config.train.epochs=1",
        "--config.seed=11",
    )
    # The command line's overrides replace the grid's.
    (run,) = sweep.expand(entries, (5,), "out", "c.py", {"method": "ae"})[:1]
    assert "--config.method=ae" in run.command
    assert "--config.method=vae" not in run.command
    default = sweep.load_grid(write_grid(tmp_path / "h.py", 'add("a")\n'))
    assert default == ({"a": {}}, sweep.PAPER_SEEDS)


def test_placeholders_resolve_per_seed_and_dependencies_are_kept(tmp_path):
    body = """
        add("ae_fb", method="free_bits_dim", init_from="{run:ae}")
        add("vae", method="vae")
        add("ae", method="ae")
    """
    entries, _ = sweep.load_grid(write_grid(tmp_path / "g.py", body))
    by_name = {r.name: r for r in sweep.expand(entries, (1, 2), "out", "c.py")}
    fb = by_name["ae_fb/seed_2"]
    assert f"--config.init_from={by_name['ae/seed_2'].workdir}" in fb.command
    assert fb.needs == ("ae/seed_2",) and by_name["vae/seed_1"].needs == ()
    assert list(sweep.select(entries, ["ae_fb"])) == ["ae_fb", "ae"]
    with pytest.raises(UserError, match="--only: no entry named nope"):
        sweep.select(entries, ["nope"])


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "grid file not found"),
        ("x = 1\n", "defines no sweep(add)"),
        ("def sweep(add:\n", "SyntaxError"),
        ("def sweep(add):\n    add('a', b=1 / 0)\n", "ZeroDivisionError"),
        ("def sweep(add):\n    pass\n", "adds no entry"),
        ("def sweep(add):\n    add('a')\nSEEDS = ['1']\n", "SEEDS are not ints"),
        ("def sweep(add):\n    add('a b')\n", "'a b': taken, or not letters"),
        ("def sweep(add):\n    add('a')\n    add('a')\n", "'a': taken"),
        ("def sweep(add):\n    add('a', seed=3)\n", "'seed' is no config key"),
        ("def sweep(add):\n    add('a', **{'x..y': 3})\n", "'x..y' is no config key"),
        ("def sweep(add):\n    add('a', x=[0.6])\n", "x=[0.6]: want str/int"),
        ("def sweep(add):\n    add('a', i='{runs:b}')\n", "bad placeholder {runs:b}"),
        ("def sweep(add):\n    add('a', i='{run:zz}')\n", "{run:zz} names no entry"),
        (
            "def sweep(add):\n    add('a', i='{run:b}')\n    add('b', i='{run:a}')\n",
            "in a cycle",
        ),
    ],
)
def test_a_bad_grid_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "grid.py"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UserError) as error:
        sweep.load_grid(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)


# -------------------------------------------------------------- execution


def test_finished_runs_are_skipped_and_the_rest_run(tmp_path):
    runs = fake_runs(tmp_path, 'add("a")\nadd("b")\n')
    done = pathlib.Path(runs[0].workdir)
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    records = fake_execute(runs)
    assert records["a/seed_1"]["status"] == "finished"
    assert not (done / "fake.json").exists()
    assert records["b/seed_1"]["status"] == "done"
    assert records["b/seed_1"]["wall_seconds"] >= 0
    log = pathlib.Path(runs[1].workdir) / sweep.STDOUT_LOG
    assert log.read_text().startswith("\n==== sweep ")


def test_a_failure_is_reported_blocks_dependents_and_the_rest_go_on(tmp_path):
    body = """
        add("bad", method="boom")
        add("after", init_from="{run:bad}")
        add("ok")
    """
    records = fake_execute(fake_runs(tmp_path, body))
    assert records["bad/seed_1"]["status"] == "failed"
    assert records["bad/seed_1"]["returncode"] == 3
    assert records["bad/seed_1"]["message"] == "error: boom"
    assert records["after/seed_1"] == {
        "status": "blocked",
        "message": "needs bad/seed_1",
    }
    assert records["ok/seed_1"]["status"] == "done"


def test_run_sweep_exit_code_manifest_and_skip_on_rerun(tmp_path, capsys):
    runs = fake_runs(tmp_path, 'add("a")\nadd("bad", method="boom")\n', seeds=(1, 2))
    out = tmp_path / "out"
    head = {"out": str(out), "entries": [{"name": "a"}, {"name": "bad"}]}
    assert sweep.run_sweep(head, runs, [None], os.environ, poll_seconds=0.02) == 1
    manifest = json.loads((out / sweep.MANIFEST_FILE).read_text())
    assert [r["status"] for r in manifest["runs"]] == [
        "done",
        "done",
        "failed",
        "failed",
    ]
    assert manifest["runs"][0]["command"][-1] == "--config.seed=1"
    printed = capsys.readouterr()
    assert "[1/4] done a/seed_1" in printed.out and "2 failed" in printed.out
    assert "not finished: bad/seed_1 bad/seed_2" in printed.err
    # A rerun skips what finished and tries the rest again.
    assert sweep.run_sweep(head, runs, [None], os.environ, poll_seconds=0.02) == 1
    manifest = json.loads((out / sweep.MANIFEST_FILE).read_text())
    assert [r["status"] for r in manifest["runs"]][:2] == ["finished", "finished"]
    logs = (out / "bad" / "seed_1" / sweep.STDERR_LOG).read_text()
    assert logs.count("==== sweep") == 2  # the logs keep both tries


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path):
    runs = fake_runs(tmp_path, 'add("a")\n')
    head = {"out": str(tmp_path / "out")}
    (tmp_path / "out").mkdir()
    hold = "import fcntl, time; f = open('out/.sweep.lock', 'w')"
    hold += (
        "; fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError, match="another sweep is running"):
            sweep.run_sweep(head, runs, [None], os.environ)
    finally:
        holder.kill()
        holder.wait()
    assert not pathlib.Path(runs[0].workdir).exists()


# ----------------------------------------------------------------- devices


def test_gpu_detection_and_workers(monkeypatch):
    smi = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    monkeypatch.setattr(
        sweep.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=smi),
    )
    assert sweep.visible_gpus({}) == ["0", "1"]
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    monkeypatch.setattr(sweep.subprocess, "run", _no_driver)
    assert sweep.visible_gpus({}) == []
    assert sweep.workers([], None) == [None]
    assert sweep.workers([], 3) == [None] * 3
    assert sweep.workers(["0", "1", "2", "3", "4"], None, 2) == ["0,1", "2,3"]
    assert sweep.workers(["0", "1"], 3) == ["0", "1", "0"]
    with pytest.raises(UserError, match="gpus_per_run"):
        sweep.workers(["0"], None, 2)


def _no_driver(*args, **kwargs):
    raise FileNotFoundError("nvidia-smi")


def test_parallel_runs_get_their_own_gpus_and_wait_for_their_needs(tmp_path):
    body = """
        add("ae")
        add("ae_fb", init_from="{run:ae}")
        add("vae")
    """
    runs = fake_runs(tmp_path, body, seeds=(1, 2))
    records = fake_execute(runs, ["0", "1"], FAKE_SLEEP="0.4")
    assert {r["status"] for r in records.values()} == {"done"}
    fakes = {
        r.name: json.loads((pathlib.Path(r.workdir) / "fake.json").read_text())
        for r in runs
    }
    assert {f["gpus"] for f in fakes.values()} == {"0", "1"}
    assert all(f["prealloc"] is None for f in fakes.values())
    for seed in (1, 2):
        assert fakes[f"ae_fb/seed_{seed}"]["start"] >= fakes[f"ae/seed_{seed}"]["end"]
    overlaps = [
        (a, b)
        for a in fakes.values()
        for b in fakes.values()
        if a is not b and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlaps  # two at a time, not one after another
    assert all(a["gpus"] != b["gpus"] for a, b in overlaps)
    # Three workers on two GPUs: they share, without preallocating memory.
    (tmp_path / "s").mkdir()
    shared = fake_runs(tmp_path / "s", 'add("a")\n')
    fake_execute(shared, ["0", "1", "0"])
    fake = json.loads((pathlib.Path(shared[0].workdir) / "fake.json").read_text())
    assert fake == fake | {"gpus": "0", "prealloc": "false"}


# ----------------------------------------------------------- command line


def sweep_cli(*args, timeout=120):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    command = python_module("bnvae_jax.sweep", f"--config={TINY}", *args)
    return run_child(command, timeout, cwd=ROOT, env=env)


@pytest.mark.parametrize(
    "grid_text, extra, message",
    [
        (
            "def sweep(add):\n    add('a', **{'model.gama': 1.0})\n",
            [],
            "did you mean --config.model.gamma",
        ),
        ("def sweep(add):\n    add('a', method='vea')\n", [], "unknown method 'vea'"),
        ("def sweep(add):\n    add('a', i='{run:b}')\n", [], "names no entry"),
        ("def sweep(add):\n    add('a')\n", ["--parallel=0"], "--parallel"),
        ("def sweep(add):\n    add('a')\n", ["--config.seed=3"], "--seeds"),
        ("def sweep(add):\n    add('a')\n", ["--bogus"], "bogus"),
    ],
    ids=["bad-key", "bad-method", "bad-placeholder", "parallel", "seed", "bad-flag"],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, grid_text, extra, message):
    grid = tmp_path / "grid.py"
    grid.write_text(grid_text)
    code, out = sweep_cli(f"--grid={grid}", f"--out={tmp_path / 'o'}", *extra)
    assert code == 2 and "Traceback" not in out, out[-3000:]
    (line,) = [line for line in out.splitlines() if line.startswith("error: ")]
    assert message in line
    assert not (tmp_path / "o").exists()


def test_dry_run_prints_commands_and_marks_finished_runs(tmp_path):
    grid = write_grid(tmp_path / "g.py", 'add("a")\nadd("b")\n', seeds=[5, 6])
    out = tmp_path / "o"
    (out / "a" / "seed_5").mkdir(parents=True)
    (out / "a" / "seed_5" / "results.json").write_text("{}")
    code, printed = sweep_cli(
        f"--grid={grid}",
        f"--out={out}",
        "--dry_run",
        "--seeds=1",
        "--config.train.epochs=1",
    )
    assert code == 0, printed[-3000:]
    lines = printed.splitlines()
    assert lines[0].startswith("# 2 runs (2 entries x 1 seeds)")
    assert lines[1].startswith("# finished, skipped: ") and "a/seed_5" in lines[1]
    assert lines[2].endswith("--config.train.epochs=1 --config.seed=5")
    assert len(lines) == 3
    assert not (out / "b").exists() and not (out / sweep.MANIFEST_FILE).exists()


def _sweep_cli_args(grid, out):
    return [
        f"--grid={grid}",
        f"--out={out}",
        "--config.data.synthetic.num_train=256",
        "--config.data.synthetic.num_valid=16",
        "--config.data.synthetic.num_test=16",
        "--config.train.epochs=1",
        "--config.train.checkpoint_every_steps=2",
        "--config.eval.iw_samples=2",
        "--config.eval.iw_chunk=2",
        *NO_DECODING_FLAGS,
    ]


def _wait_for_checkpoint(workdir: pathlib.Path, proc, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ckpts = workdir / "checkpoints"
        if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint in {workdir}")


@pytest.mark.slow
def test_real_run_killed_then_resumed_by_rerunning_the_sweep(tmp_path):
    grid = write_grid(tmp_path / "g.py", 'add("bn", method="bn_vae")\n', [3])
    out = tmp_path / "o"
    workdir = out / "bn" / "seed_3"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": str(ROOT),
        # The resumed run reuses the killed run's compiled steps.
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    command = python_module(
        "bnvae_jax.sweep", f"--config={TINY}", *_sweep_cli_args(grid, out)
    )
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own group: the kill reaches the run too
    )
    try:
        _wait_for_checkpoint(workdir, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (workdir / "results.json").exists()

    code, output = run_child(command, 300, cwd=ROOT, env=env)
    assert code == 0, output[-3000:]
    assert "done bn/seed_3" in output
    assert "resuming from step" in (workdir / sweep.STDERR_LOG).read_text()
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == "bn_vae" and results["config"]["seed"] == 3
    manifest = json.loads((out / sweep.MANIFEST_FILE).read_text())
    assert manifest["runs"][0]["status"] == "done"
