"""Bad input gets one clear line on stderr (exit 2), never a traceback."""

import os
import pathlib
import subprocess
import sys

import pytest

from bnvae_jax import cli, steps, train
from bnvae_jax.errors import UserError, WorkdirError

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")


def run_main(*args, module="bnvae_jax.main"):
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    return proc.returncode, proc.stderr


def assert_one_line_error(code, stderr, *fragments):
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def files_args(train, valid=None, test=None):
    return [
        f"--config.data.train_file={train}",
        f"--config.data.valid_file={valid or train}",
        f"--config.data.test_file={test or train}",
    ]


@pytest.fixture
def good_file(tmp_path):
    return write(tmp_path / "good.txt", b"a b c\nd e f g\nh i\n" * 20)


def test_missing_data_file(tmp_path, good_file):
    code, err = run_main(
        f"--config={TINY}",
        f"--workdir={tmp_path / 'run'}",
        *files_args(tmp_path / "nope.txt", good_file, good_file),
    )
    assert_one_line_error(code, err, "nope.txt", "not found")


def test_empty_data_file(tmp_path, good_file):
    empty = write(tmp_path / "empty.txt", b"\n\n")
    code, err = run_main(
        f"--config={TINY}",
        f"--workdir={tmp_path / 'run'}",
        *files_args(empty, good_file, good_file),
    )
    assert_one_line_error(code, err, "empty.txt")


def test_non_utf8_names_the_line(tmp_path, good_file):
    bad = write(tmp_path / "bad.txt", b"a b\nc d\ne \xff f\n")
    code, err = run_main(
        f"--config={TINY}",
        f"--workdir={tmp_path / 'run'}",
        *files_args(bad, good_file, good_file),
    )
    assert_one_line_error(code, err, "bad.txt", "line 3", "UTF-8")


def test_labelled_without_tab(tmp_path):
    plain = write(tmp_path / "plain.txt", b"1\tgood food\nno tab here\n")
    code, err = run_main(
        f"--config={TINY}",
        f"--workdir={tmp_path / 'run'}",
        "--config.data.labelled=True",
        *files_args(plain),
    )
    assert_one_line_error(code, err, "plain.txt", "line 2", "LABEL<TAB>TEXT")


def test_only_some_files_given(tmp_path, good_file):
    code, err = run_main(
        f"--config={TINY}",
        f"--workdir={tmp_path / 'run'}",
        f"--config.data.train_file={good_file}",
    )
    assert_one_line_error(code, err, "data.valid_file")


def test_unknown_method_lists_known(tmp_path):
    code, err = run_main(
        f"--config={TINY}", f"--workdir={tmp_path}", "--config.method=bnvae"
    )
    assert_one_line_error(code, err, "unknown method 'bnvae'", "bn_vae", "vae")


def test_mistyped_key_names_nearest(tmp_path):
    code, err = run_main(
        f"--config={TINY}", f"--workdir={tmp_path}", "--config.model.gama=0.5"
    )
    assert_one_line_error(code, err, "--config.model.gama", "--config.model.gamma")


def test_bad_value_type(tmp_path):
    code, err = run_main(
        f"--config={TINY}", f"--workdir={tmp_path}", "--config.model.gamma=high"
    )
    assert_one_line_error(code, err, "gamma")


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("--config.model.gamma=0", "gamma > 0"),
        ("--config.model.latent_dim=-3", "latent_dim must be positive"),
        ("--config.data.batch_size=1", "at least 2 with batch normalisation"),
    ],
)
def test_invalid_values(tmp_path, override, fragment):
    code, err = run_main(f"--config={TINY}", f"--workdir={tmp_path}", override)
    assert_one_line_error(code, err, fragment)


def test_missing_config_file(tmp_path):
    code, err = run_main(f"--config={tmp_path / 'nope.py'}", f"--workdir={tmp_path}")
    assert_one_line_error(code, err, "config file not found")


def test_evaluate_on_empty_workdir(tmp_path):
    code, err = run_main(f"--workdir={tmp_path}", module="bnvae_jax.evaluate")
    assert_one_line_error(code, err, "no run")


def tiny(**overrides):
    config = cli.load_config_file(TINY)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


def test_incompatible_workdir_is_refused_and_kept(tmp_path):
    train.train_and_evaluate(tiny(**{"train.max_steps": 3}), str(tmp_path))
    before = {p: p.read_bytes() for p in tmp_path.glob("*.json")}
    with pytest.raises(WorkdirError, match="model.latent_dim=4, this config has 8"):
        train.train_and_evaluate(
            tiny(**{"train.max_steps": 3, "model.latent_dim": 8}), str(tmp_path)
        )
    with pytest.raises(WorkdirError, match="vocab"):
        train.train_and_evaluate(_other_vocab(), str(tmp_path))
    after = {p: p.read_bytes() for p in tmp_path.glob("*.json")}
    assert before == after


def _other_vocab():
    config = tiny(**{"train.max_steps": 3})
    config.data.synthetic.vocab_size = 40
    return config


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = steps.jit_train_step

    def poisoned(fns):
        step = real(fns)

        def run(state, batch, rng):
            new, metrics = step(state, batch, rng)
            if int(new.step) >= 8:
                metrics = {**metrics, "rec_sum": metrics["rec_sum"] * float("nan")}
            return new, metrics

        return run

    monkeypatch.setattr(steps, "jit_train_step", poisoned)
    with pytest.raises(UserError, match="non-finite at step 8"):
        train.train_and_evaluate(tiny(), str(tmp_path))
    trainer, state = train.setup(tiny(), str(tmp_path))
    assert trainer.ckpt.latest_step() == 5
    restored, loop = train.restore_or_start(trainer, state)
    assert int(restored.step) == 5
    assert not (tmp_path / "results.json").exists()


def test_results_table_lists_headline_metrics():
    results = {
        "valid": {"iw_nll": 1.0, "elbo_nll": 2.0, "kl": 0.5, "au": 3},
        "test": {"iw_nll": 1.5, "elbo_nll": 2.5, "kl": 0.25, "au": 3},
    }
    table = cli.format_table(results)
    assert table.splitlines()[0].split() == ["split", "iw_nll", "elbo_nll", "kl", "au"]
    assert "1.500" in table
