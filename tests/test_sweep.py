"""Sweeps and their tables: grid expansion, scheduling, skip/resume, reports.

Runs go through a fake command (a few lines of Python that write results.json)
except one real tiny training run that is killed and then resumed.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import run_child

from bnvae_jax.tools import sweep, sweep_report

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


def no_check(*args):
    """Stands in for the config-key check (a subprocess that imports the library)."""


def fake_argv(run):
    return [sys.executable, "-c", FAKE, run.workdir, *run.overrides]


def write_grid(path, entries, seeds=None):
    text = f"def get_grid():\n    return {entries!r}\n"
    if seeds is not None:
        text += f"\n\ndef get_seeds():\n    return {seeds!r}\n"
    path.write_text(text)
    return str(path)


def entries(*raw):
    return [sweep.parse_entry(r, "test") for r in raw]


def fake_execute(runs, slots=None, **env):
    return sweep.execute(
        runs,
        slots or (sweep.Slot(0),),
        fake_argv,
        base_env={**os.environ, **env},
        poll_seconds=0.02,
    )


# ------------------------------------------------------------------- grid


def test_grid_expands_to_named_runs_with_ordered_overrides(tmp_path):
    grid = sweep.load_grid(
        write_grid(
            tmp_path / "g.py",
            [
                {"name": "vae", "method": "vae"},
                {
                    "name": "bn_vae_0.6",
                    "method": "bn_vae",
                    "model.gamma": 0.6,
                    "model.learn_gamma": True,
                },
            ],
            seeds=[11, 22, 33],
        )
    )
    assert grid.seeds == (11, 22, 33)
    runs = sweep.expand(
        grid.entries, grid.seeds[:2], "out", common=[("train.epochs", "1")]
    )
    assert [r.name for r in runs] == [
        "vae/seed_11",
        "vae/seed_22",
        "bn_vae_0.6/seed_11",
        "bn_vae_0.6/seed_22",
    ]
    assert runs[2].workdir == str(pathlib.PurePath("out", "bn_vae_0.6", "seed_11"))
    assert runs[2].overrides == (
        "--config.method=bn_vae",
        "--config.model.gamma=0.6",
        "--config.model.learn_gamma=True",
        "--config.train.epochs=1",
        "--config.seed=11",
    )
    command = sweep.main_command(runs[0], "configs/tiny.py", python="py")
    assert command[:5] == [
        "py",
        "-m",
        "bnvae_jax.main",
        "--config=configs/tiny.py",
        f"--workdir={runs[0].workdir}",
    ]
    assert sweep.load_grid(write_grid(tmp_path / "h.py", [{"name": "a"}])).seeds == (
        sweep.PAPER_SEEDS
    )


def test_placeholders_resolve_per_seed_and_dependencies_run_first():
    grid = entries(
        {"name": "ae_fb", "method": "free_bits_dim", "init_from": "{run:ae}"},
        {"name": "vae", "method": "vae"},
        {"name": "ae", "method": "ae"},
    )
    assert [e.name for e in sweep.order_entries(grid)] == ["vae", "ae", "ae_fb"]
    runs = sweep.expand(grid, (1, 2), "out")
    by_name = {r.name: r for r in runs}
    fb = by_name["ae_fb/seed_2"]
    assert f"--config.init_from={by_name['ae/seed_2'].workdir}" in fb.overrides
    assert fb.needs == ("ae/seed_2",)
    names = [r.name for r in runs]
    assert names.index("ae/seed_2") < names.index("ae_fb/seed_2")
    assert [e.name for e in sweep.select(grid, ["ae_fb"])] == ["ae_fb", "ae"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"name": "a", "init_from": "{run:zz}"}, "names no entry"),
        ({"name": "a", "init_from": "{runs:b}"}, "bad placeholder"),
        ({"name": "a", "init_from": "{run:a}"}, "cycle"),
        ({"name": "a", "seed": 3}, "seeds come from --seeds"),
        ({"name": "a b"}, "'name'"),
        ({"name": "a", "model.gamma": [0.6]}, "values are"),
    ],
)
def test_bad_grid_entries_raise(raw, message):
    with pytest.raises(sweep.SweepError, match=message):
        grid = entries(raw, {"name": "b"})
        sweep.expand(grid, (1,), "out")


@pytest.mark.parametrize(
    "grid_text, extra, message",
    [
        (None, [], "grid file not found"),
        ("x = 1\n", [], "defines no get_grid"),
        ("def get_grid(:\n", [], "SyntaxError"),
        (
            "def get_grid():\n    return [{'name': 'a', 'model.gama': 1.0}]\n",
            [],
            "did you mean --config.model.gamma",
        ),
        (
            "def get_grid():\n    return [{'name': 'a', 'method': 'vea'}]\n",
            [],
            "unknown method 'vea'",
        ),
        (
            "def get_grid():\n    return [{'name': 'a', 'init_from': '{run:b}'}]\n",
            [],
            "names no entry",
        ),
        (
            "def get_grid():\n    return [{'name': 'a'}]\n",
            ["--config=nope.py"],
            "config file not found",
        ),
        (
            "def get_grid():\n    return [{'name': 'a'}]\n",
            ["--parallel=x"],
            "--parallel",
        ),
        (
            "def get_grid():\n    return [{'name': 'a'}]\n",
            ["--bogus"],
            "unknown argument",
        ),
    ],
    ids=[
        "no-grid",
        "no-get_grid",
        "syntax",
        "bad-key",
        "bad-method",
        "bad-placeholder",
        "no-config",
        "bad-parallel",
        "bad-flag",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, grid_text, extra, message):
    grid = tmp_path / "grid.py"
    if grid_text is not None:
        grid.write_text(grid_text)
    argv = [f"--config={TINY}", f"--grid={grid}", f"--out={tmp_path / 'o'}"]
    assert sweep.main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert message in err


def test_dry_run_prints_commands_and_marks_finished_runs(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.py", [{"name": "a"}, {"name": "b"}], seeds=[5])
    out = tmp_path / "o"
    (out / "a" / "seed_5").mkdir(parents=True)
    (out / "a" / "seed_5" / "results.json").write_text("{}")
    argv = [f"--config={TINY}", f"--grid={grid}", f"--out={out}", "--dry_run"]
    assert sweep.main(argv + ["--config.train.epochs=1"], check=no_check) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# 2 runs (2 entries x 1 seeds)")
    assert lines[1].startswith("# finished, skipped: ") and "a/seed_5" in lines[1]
    assert "--config.train.epochs=1 --config.seed=5" in lines[2]
    assert not (out / "b").exists() and not (out / sweep.MANIFEST_FILE).exists()


# -------------------------------------------------------------- execution


def test_finished_runs_are_skipped_and_the_rest_run(tmp_path):
    runs = sweep.expand(entries({"name": "a"}, {"name": "b"}), (1,), str(tmp_path))
    done = pathlib.Path(runs[0].workdir)
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    outcomes = fake_execute(runs)
    assert outcomes["a/seed_1"].status == "finished"
    assert not (done / "fake.json").exists()
    assert outcomes["b/seed_1"].status == "done"
    assert outcomes["b/seed_1"].wall_seconds > 0
    log = pathlib.Path(runs[1].workdir) / sweep.STDOUT_LOG
    assert log.read_text().startswith("\n==== sweep ")


def test_a_failure_is_reported_blocks_dependents_and_the_rest_go_on(tmp_path):
    grid = entries(
        {"name": "bad", "method": "boom"},
        {"name": "after", "init_from": "{run:bad}"},
        {"name": "ok"},
    )
    outcomes = fake_execute(sweep.expand(grid, (1,), str(tmp_path)))
    assert outcomes["bad/seed_1"].status == "failed"
    assert outcomes["bad/seed_1"].returncode == 3
    assert outcomes["bad/seed_1"].message == "error: boom"
    assert outcomes["after/seed_1"].status == "blocked"
    assert outcomes["ok/seed_1"].status == "done"


def test_main_exit_code_manifest_and_skip_on_relaunch(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.py", [{"name": "a"}], seeds=[1, 2])
    out = tmp_path / "o"
    for seed in (1, 2):
        (out / "a" / f"seed_{seed}").mkdir(parents=True)
        (out / "a" / f"seed_{seed}" / "results.json").write_text("{}")
    argv = [f"--config={TINY}", f"--grid={grid}", f"--out={out}", "--gpus=none"]
    assert sweep.main(argv, check=no_check) == 0
    manifest = json.loads((out / sweep.MANIFEST_FILE).read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "finished"]
    assert manifest["seeds"] == [1, 2] and manifest["entries"][0]["name"] == "a"
    assert "2 finished" in capsys.readouterr().out


def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.py", [{"name": "a"}], seeds=[1])
    argv = [f"--config={TINY}", f"--grid={grid}", f"--out={tmp_path}", "--gpus=none"]
    with sweep.sweep_lock(str(tmp_path)):
        assert sweep.main(argv, check=no_check) == 2
    assert "another sweep is running" in capsys.readouterr().err


# ----------------------------------------------------------------- devices


def test_gpu_detection_and_slots():
    smi = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    assert sweep.parse_nvidia_smi(smi) == ("0", "1")
    assert sweep.visible_gpus({}, lambda: smi) == ("0", "1")
    assert sweep.visible_gpus({}, lambda: None) == ()
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, lambda: smi) == (
        "2",
        "3",
    )
    assert sweep.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, lambda: smi) == ()
    assert sweep.make_slots((), None) == (sweep.Slot(0),)
    assert [s.gpus for s in sweep.make_slots(("0", "1", "2", "3"), None, 2)] == [
        "0,1",
        "2,3",
    ]
    shared = sweep.make_slots(("0", "1"), 3)
    assert [s.gpus for s in shared] == ["0", "1", "0"] and shared[0].shared
    env = sweep.slot_env(shared[2], {"CUDA_VISIBLE_DEVICES": "7"})
    assert env["CUDA_VISIBLE_DEVICES"] == "0"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert "CUDA_VISIBLE_DEVICES" not in sweep.slot_env(sweep.Slot(0), {})
    with pytest.raises(sweep.SweepError, match="gpus_per_run"):
        sweep.make_slots(("0",), None, 2)


def test_parallel_runs_get_one_gpu_each_and_wait_for_their_needs(tmp_path):
    grid = entries(
        {"name": "ae"},
        {"name": "ae_fb", "init_from": "{run:ae}"},
        {"name": "vae"},
    )
    runs = sweep.expand(grid, (1, 2), str(tmp_path))
    slots = sweep.make_slots(("0", "1"), None)
    start = time.monotonic()
    outcomes = fake_execute(runs, slots, FAKE_SLEEP="0.4")
    elapsed = time.monotonic() - start
    assert {o.status for o in outcomes.values()} == {"done"}
    records = {
        r.name: json.loads((pathlib.Path(r.workdir) / "fake.json").read_text())
        for r in runs
    }
    assert {rec["gpus"] for rec in records.values()} == {"0", "1"}
    assert all(rec["prealloc"] is None for rec in records.values())
    for a in records.values():  # runs that overlap in time hold different GPUs
        for b in records.values():
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["gpus"] != b["gpus"]
    for seed in (1, 2):
        assert (
            records[f"ae_fb/seed_{seed}"]["start"] >= records[f"ae/seed_{seed}"]["end"]
        )
    assert elapsed < 6 * 0.4 + 1.5  # two at a time, not one after another


# ------------------------------------------------------- real run, resumed


def _sweep_cli(grid, out, *extra):
    return [
        sys.executable,
        str(ROOT / "launch" / "sweep.py"),
        f"--config={TINY}",
        f"--grid={grid}",
        f"--out={out}",
        "--gpus=none",
        "--config.data.synthetic.num_train=256",
        "--config.data.synthetic.num_valid=16",
        "--config.data.synthetic.num_test=16",
        "--config.train.epochs=1",
        "--config.train.checkpoint_every_steps=2",
        "--config.eval.iw_samples=2",
        "--config.eval.iw_chunk=2",
        "--config.eval.num_reconstructions=1",
        "--config.eval.num_prior_samples=1",
        "--config.eval.max_decode_len=4",
        *extra,
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
    grid = write_grid(tmp_path / "g.py", [{"name": "bn", "method": "bn_vae"}], [3])
    out = tmp_path / "o"
    workdir = out / "bn" / "seed_3"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        # The resumed run reuses the killed run's compiled steps.
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    proc = subprocess.Popen(
        _sweep_cli(grid, out),
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

    code, output = run_child(_sweep_cli(grid, out), 300, cwd=ROOT, env=env)
    assert code == 0, output[-3000:]
    assert "done bn/seed_3" in output
    assert "resuming from step" in (workdir / sweep.STDERR_LOG).read_text()
    results = json.loads((workdir / "results.json").read_text())
    assert results["method"] == "bn_vae" and results["config"]["seed"] == 3
    manifest = json.loads((out / sweep.MANIFEST_FILE).read_text())
    assert manifest["runs"][0]["status"] == "done"


# ------------------------------------------------------------------ report


def _result(out, entry, seed, **values):
    workdir = out / entry / f"seed_{seed}"
    workdir.mkdir(parents=True)
    test = {k: v for k, v in values.items() if k != "train_seconds"}
    data = {
        "method": entry,
        "test": test,
        "valid": test,
        "train_seconds": values.get("train_seconds", 60.0),
        "epochs_run": 2,
        "num_devices": 1,
        "config": {"seed": seed},
    }
    (workdir / "results.json").write_text(json.dumps(data))


def test_report_tables_mean_std_missing_and_time_ratio(tmp_path, capsys):
    out = tmp_path / "sweep"
    _result(out, "vae", 1, iw_nll=100.0, kl=1.0, mi=0.5, au=2, train_seconds=3600.0)
    _result(out, "vae", 2, iw_nll=102.0, kl=3.0, mi=0.7, au=4, train_seconds=4000.0)
    for seed, nll, secs in ((1, 98.0, 7200.0), (2, 99.0, 7600.0), (3, 103.0, 8000.0)):
        _result(out, "bn_vae", seed, iw_nll=nll, kl=6.0, mi="nan", train_seconds=secs)
    _result(out, "lstm_lm", 1, iw_nll=101.0, kl=None, mi=None, au=None)
    (out / "sweep.json").write_text(
        json.dumps(
            {
                "entries": [{"name": n} for n in ("lstm_lm", "vae", "bn_vae")],
                "runs": [
                    {
                        "name": "vae/seed_3",
                        "entry": "vae",
                        "seed": 3,
                        "status": "failed",
                    }
                ],
            }
        )
    )
    assert sweep_report.main([str(out)]) == 0
    printed = capsys.readouterr().out
    text = (out / "tables.md").read_text()
    assert text in printed
    table1 = text[: text.index("## Table 2")]
    rows = {line.split(" | ")[0][2:]: line for line in table1.splitlines()}
    # vae: mean(100, 102) = 101, sample std sqrt(2) = 1.41
    assert rows["vae"].startswith("| vae | 2 | 101.00 ± 1.41 | 2.00 ± 1.41 | ")
    assert "| 3.0 ± 1.4 |" in rows["vae"]
    # bn_vae: mean(98, 99, 103) = 100, std sqrt((4 + 1 + 9) / 2) = sqrt(7)
    assert rows["bn_vae"].startswith("| bn_vae | 3 | 100.00 ± 2.65 | 6.00 ± 0.00 | – |")
    assert rows["lstm_lm"].startswith("| lstm_lm | 1 | 101.00 | – | – | – |")
    assert "Not finished: vae/seed_3 (failed)" in text
    table2 = text[text.index("## Table 2") :]
    rows2 = {line.split(" | ")[0][2:]: line for line in table2.splitlines()}
    assert "| 1h 03m |" in rows2["vae"] and "| 1.00 |" in rows2["vae"]
    assert "| 2h 06m |" in rows2["bn_vae"] and "| 2.00 |" in rows2["bn_vae"]
    data = json.loads((out / "tables.json").read_text())
    bn = next(r for r in data["table1"] if r["entry"] == "bn_vae")
    assert bn["seeds"] == [1, 2, 3]
    assert bn["metrics"]["iw_nll"]["mean"] == pytest.approx(100.0)
    assert bn["metrics"]["iw_nll"]["std"] == pytest.approx(7**0.5)
    assert bn["metrics"]["mi"] is None
    assert [r["entry"] for r in data["table1"]] == ["lstm_lm", "vae", "bn_vae"]
    assert sweep_report.main([str(out), "--baseline=bn_vae"]) == 0
    assert "| 0.50 |" in (out / "tables.md").read_text()


def test_report_merges_sweep_directories(tmp_path, capsys):
    _result(tmp_path / "s1", "vae", 1, iw_nll=100.0)
    _result(tmp_path / "s2", "vae", 2, iw_nll=102.0)
    dirs = [str(tmp_path / "s1"), str(tmp_path / "s2")]
    assert sweep_report.main(dirs) == 2
    assert "--out" in capsys.readouterr().err
    assert sweep_report.main(dirs + [f"--out={tmp_path}"]) == 0
    assert "| vae | 2 | 101.00 ± 1.41 |" in (tmp_path / "tables.md").read_text()


def test_report_bad_input_exit_2(tmp_path, capsys):
    assert sweep_report.main([str(tmp_path / "none")]) == 2
    assert sweep_report.main([str(tmp_path)]) == 2
    _result(tmp_path, "vae", 1, iw_nll=1.0)
    assert sweep_report.main([str(tmp_path), "--baseline=nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "no finished run" in err[1] and "--baseline=nope" in err[2]


def test_report_stats_and_durations():
    assert sweep_report.summarize([]) is None
    assert sweep_report.summarize([2.0]) == sweep_report.Stat(2.0, None, 1)
    assert sweep_report.summarize([1.0, float("nan"), 3.0]).n == 2
    assert sweep_report.format_duration(41) == "41s"
    assert sweep_report.format_duration(432) == "7m 12s"
    assert sweep_report.format_duration(7500) == "2h 05m"
    stat = sweep_report.Stat(1.0, 0.5, 2)
    assert sweep_report.format_stat(stat, 1, n=3) == "1.0 ± 0.5 (2)"
