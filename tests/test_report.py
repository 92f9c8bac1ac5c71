import json

import pytest

from bnvae_jax.errors import UserError
from bnvae_jax.tools import report


def test_markdown_table_rows_and_missing_values(tmp_path):
    a = {
        "method": "bn_vae",
        "config": {"model": {"gamma": 0.6}},
        "test": {"iw_nll": 101.234, "kl": 9.5, "au": 32},
        "train_seconds": 12.0,
        "train_tokens_per_second": 1000.0,
        "epochs_run": 6,
    }
    (tmp_path / "results.json").write_text(json.dumps(a))
    table = report.markdown_table([report.load(tmp_path)])
    lines = table.splitlines()
    assert lines[0].startswith("| run | method | NLL (IW)")
    assert lines[2].startswith(f"| {tmp_path} | bn_vae (γ=0.6) | 101.23 |")
    assert "| 32 |" in lines[2] and "–" in lines[2]


def test_missing_results_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        report.load(tmp_path)
    assert report.main([str(tmp_path)]) == 2


def test_rows_are_named_by_their_run(tmp_path):
    same = {"method": "bn_vae", "config": {"model": {"gamma": 0.6}}, "test": {}}
    for name in ("seed1", "seed2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(same))
    table = report.markdown_table(
        [report.load(tmp_path / n) for n in ("seed1", "seed2")]
    )
    rows = table.splitlines()[2:]
    assert rows[0] != rows[1]
    assert rows[0].startswith(f"| {tmp_path / 'seed1'} | bn_vae (γ=0.6) |")


def test_help_and_bad_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        report.main(["--help"])
    assert exit_.value.code == 0
    assert "RUN" in capsys.readouterr().out
    (tmp_path / "results.json").write_text("[1, 2]")
    assert report.main([str(tmp_path)]) == 2
    assert "not a results file" in capsys.readouterr().err
    (tmp_path / "results.json").write_bytes(b"\xff\xfe")
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
