"""Tables of runs and of sweeps (bnvae_jax/report.py): rows, statistics, the command."""

import json
import os
import pathlib

import pytest
from conftest import python_module, run_child

from bnvae_jax import report
from bnvae_jax.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _result(workdir, seed=1, train_seconds=60.0, method=None, **test):
    workdir.mkdir(parents=True)
    data = {
        "method": method or workdir.parent.name,
        "test": test,
        "valid": {k: v + 1 for k, v in test.items() if isinstance(v, float)},
        "train_seconds": train_seconds,
        "train_tokens_per_second": 1000.0,
        "epochs_run": 2,
        "num_devices": 1,
        "config": {"seed": seed, "model": {"gamma": 0.6}},
    }
    (workdir / "results.json").write_text(json.dumps(data))


def _rows(text: str, title: str) -> dict[str, str]:
    """``{row name: its Markdown line}`` of the table headed ``title``."""
    table = text[text.index(title) :].split("\n\n")[1]
    return {line.split(" | ")[0][2:]: line for line in table.splitlines()[2:]}


def report_cli(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return run_child(python_module("bnvae_jax.report", *args), 120, cwd=ROOT, env=env)


def test_runs_given_themselves_are_rows_named_by_their_path(tmp_path):
    for name in ("seed1", "seed2"):  # two runs of one method stay apart
        _result(tmp_path / name, method="bn_vae", iw_nll=101.234, kl=9.5, au=32)
    _result(tmp_path / "nan", method="?", iw_nll="NaN", kl=None)
    paths = [str(tmp_path / "seed1"), str(tmp_path / "seed2" / "results.json")]
    text, data = report.tables([*paths, str(tmp_path / "nan")], ["test"])
    rows = _rows(text, "## Table 1/8 (test")
    assert list(rows) == [str(tmp_path / n) for n in ("seed1", "seed2", "nan")]
    assert rows[paths[0]] == (
        f"| {paths[0]} | 1 | bn_vae (γ=0.6) | 101.23 | – | – | – | 9.50 | – | 32.0 |"
    )
    assert rows[str(tmp_path / "nan")].startswith(f"| {tmp_path / 'nan'} | 1 | ? | – |")
    assert "(valid" not in text and data["baseline"] == paths[0]
    times = _rows(text, "## Table 2")
    assert times[paths[0]].startswith(
        f"| {paths[0]} | 1 | 0:01:00 | 2.0 | 0:00:30 | 1.00 |"
    )


def test_unreadable_results_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="results.json: file not found"):
        report.load(tmp_path / "results.json")
    with pytest.raises(UserError, match="no results.json below it"):
        report.find_runs(str(tmp_path))
    (tmp_path / "results.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="not a results file"):
        report.load(tmp_path)
    (tmp_path / "results.json").write_text("{1: 2}")
    with pytest.raises(UserError, match="not valid JSON"):
        report.find_runs(str(tmp_path))
    (tmp_path / "results.json").write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="line 1: not valid UTF-8"):
        report.find_runs(str(tmp_path))


def test_sweep_tables_mean_std_missing_order_and_time_ratio(tmp_path):
    out = tmp_path / "sweep"
    _result(out / "vae/seed_1", 1, 3600.0, iw_nll=100.0, kl=1.0, mi=0.5, au=2)
    _result(out / "vae/seed_2", 2, 4000.0, iw_nll=102.0, kl=3.0, mi=0.7, au=4)
    for seed, nll, secs in ((1, 98.0, 7200.0), (2, 99.0, 7600.0), (3, 103.0, 8000.0)):
        _result(out / f"bn_vae/seed_{seed}", seed, secs, iw_nll=nll, kl=6.0, mi="nan")
    _result(out / "lstm_lm/seed_1", iw_nll=101.0, kl=None, mi=None, au=None)
    manifest = {
        "entries": [{"name": n} for n in ("lstm_lm", "vae", "bn_vae", "ae")],
        "runs": [{"name": "vae/seed_3", "status": "failed"}]
        + [{"name": "vae/seed_1", "status": "done"}],
    }
    (out / "sweep.json").write_text(json.dumps(manifest))
    text, data = report.tables([str(out)], ["test"])
    rows = _rows(text, "## Table 1/8 (test")
    assert list(rows) == ["lstm_lm", "vae", "bn_vae", "ae"]  # the grid's order
    # vae: mean(100, 102) = 101, sample std sqrt(2) = 1.41
    assert rows["vae"].startswith(
        "| vae | 2 | vae | 101.00 ± 1.41 | – | – | – | 2.00 ± 1.41 |"
    )
    assert rows["vae"].endswith("| 0.60 ± 0.14 | 3.0 ± 1.4 |")
    # bn_vae: mean(98, 99, 103) = 100, std sqrt((4 + 1 + 9) / 2) = sqrt(7)
    assert rows["bn_vae"].startswith("| bn_vae | 3 | bn_vae (γ=0.6) | 100.00 ± 2.65 |")
    assert rows["bn_vae"].endswith("| 6.00 ± 0.00 | – | – |")
    assert (
        rows["lstm_lm"] == "| lstm_lm | 1 | lstm_lm | 101.00 | – | – | – | – | – | – |"
    )
    assert rows["ae"] == "| ae | 0 | – | – | – | – | – | – | – | – |"
    assert text.rstrip().endswith("Not finished: vae/seed_3 (failed)")
    times = _rows(text, "## Table 2 (training; ratios to vae)")
    assert times["vae"].startswith("| vae | 2 | 1:03:20 | 2.0 ± 0.0 | 0:31:40 | 1.00 |")
    assert times["bn_vae"].startswith(
        "| bn_vae | 3 | 2:06:40 | 2.0 ± 0.0 | 1:03:20 | 2.00 |"
    )
    bn = next(r for r in data["rows"] if r["row"] == "bn_vae")
    assert bn["seeds"] == [1, 2, 3] and bn["stats"]["test/mi"] is None
    assert bn["stats"]["test/iw_nll"] == pytest.approx(
        {"mean": 100.0, "std": 7**0.5, "n": 3}
    )
    text, _ = report.tables([str(out)], ["test"], baseline="bn_vae")
    assert "| 0.50 |" in _rows(text, "## Table 2")["vae"]
    with pytest.raises(UserError, match="--baseline=nope: no such row"):
        report.tables([str(out)], ["test"], baseline="nope")


def test_sweep_directories_merge(tmp_path):
    _result(tmp_path / "s1/vae/seed_1", 1, iw_nll=100.0)
    _result(tmp_path / "s2/vae/seed_2", 2, iw_nll=102.0)
    text, data = report.tables([str(tmp_path / "s1"), str(tmp_path / "s2")], ["test"])
    assert _rows(text, "## Table 1/8")["vae"].startswith(
        "| vae | 2 | vae | 101.00 ± 1.41 |"
    )
    assert data["rows"][0]["seeds"] == [1, 2]


def test_stats_and_durations():
    assert report.summarize([]) is None
    assert report.summarize([2.0, None]) == {"mean": 2.0, "std": None, "n": 1}
    assert report.summarize([1.0, float("nan"), 3.0])["n"] == 2
    assert report.format_duration({"mean": 7500.4}) == "2:05:00"
    assert report.format_duration(None) == "–"
    stat = {"mean": 1.0, "std": 0.5, "n": 2}
    assert report.format_stat(stat, 1, n=3) == "1.0 ± 0.5 (2)"


def test_the_command_prints_and_writes_the_tables_of_one_sweep(tmp_path):
    code, out = report_cli("--help")
    assert code == 0 and "--baseline" in out, out[-2000:]
    _result(tmp_path / "sweep/vae/seed_1", iw_nll=100.0)
    code, out = report_cli(str(tmp_path / "sweep"), "--split=valid")
    assert code == 0, out[-2000:]
    written = (tmp_path / "sweep" / "tables.md").read_text()
    assert written in out and "| vae | 1 | vae | 101.00 |" in written
    assert "Table 1/8 (test" not in written
    data = json.loads((tmp_path / "sweep" / "tables.json").read_text())
    assert data["rows"][0]["stats"]["valid/iw_nll"]["mean"] == 101.0
    # Runs given themselves are printed; --out also writes the tables.
    code, out = report_cli(str(tmp_path / "sweep/vae/seed_1"), f"--out={tmp_path}")
    assert code == 0 and (tmp_path / "tables.md").is_file(), out[-2000:]
    assert "## Table 1/8 (valid" in out and "## Table 1/8 (test" in out
    for args, message in [
        ([], "give run or sweep directories"),
        ([str(tmp_path / "sweep"), "--baseline=nope"], "--baseline=nope"),
    ]:
        code, out = report_cli(*args)
        lines = [line for line in out.splitlines() if line.startswith("error: ")]
        assert code == 2 and len(lines) == 1 and message in lines[0], out[-2000:]
        assert "Traceback" not in out
