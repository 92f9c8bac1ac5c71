"""Bad input gets one clear line on stderr (exit 2), never a traceback."""

import inspect
import os
import pathlib
import shlex

import pytest
from conftest import NO_DECODING, latest_step, python_module, run_child

from bnvae_jax import cli
from bnvae_jax import config as config_lib
from bnvae_jax.errors import UserError, WorkdirError
from bnvae_jax.tasks import text_vae as train
from bnvae_jax.training import steps

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")


def run_main(*args, module="bnvae_jax.main", timeout=300):
    """``(exit status, stdout and stderr)`` of ``python -m module args``."""
    return run_child(
        python_module(module, *args),
        timeout,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


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
        ("--config.model.latent_dim=-3", "latent_dim must be >= 1, got -3"),
        (
            "--config.data.batch_size=1",
            "batch normalisation needs data.batch_size >= 2",
        ),
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
    assert_one_line_error(code, err, "not a run's workdir or an exported model")


def tiny(**overrides):
    config = cli.load_config_file(TINY)
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        config[section][key] = value
    return config


def test_incompatible_workdir_is_refused_and_kept(tmp_path):
    first = tiny(**{"train.max_steps": 3, **NO_DECODING})
    train.train_and_evaluate(first, str(tmp_path))
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

    def poisoned(fns, update="all"):
        step = real(fns, update=update)

        def run(state, batch, rng):
            new, metrics = step(state, batch, rng)
            if int(new.step) >= 8:
                metrics = {**metrics, "loss_sum": metrics["loss_sum"] * float("nan")}
            return new, metrics

        return run

    monkeypatch.setattr(steps, "jit_train_step", poisoned)
    with pytest.raises(UserError, match="non-finite at step 8"):
        train.train_and_evaluate(tiny(), str(tmp_path))
    trainer, state = train.setup(tiny(), str(tmp_path))
    assert latest_step(trainer.ctx.ckpt) == 5
    restored, loop = train.start(trainer, state)
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


# -- every command: a named file or directory it cannot use is one error line ----


@pytest.fixture
def bad_paths(tmp_path):
    """A config that does not parse, a plain file, and a path below that file."""
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x\n")
    return {
        "broken": str(broken),
        "file": str(a_file),
        "below_file": str(a_file / "run"),
        "dir": str(tmp_path),
    }


COMMANDS = {
    "main_config_syntax": (
        "bnvae_jax.main",
        ["--config={broken}", "--workdir={dir}/run"],
        ["broken.py", "does not parse"],
    ),
    "main_workdir_is_file": (
        "bnvae_jax.main",
        [f"--config={TINY}", "--workdir={file}"],
        ["--workdir", "a_file is a file"],
    ),
    "main_workdir_below_file": (
        "bnvae_jax.main",
        [f"--config={TINY}", "--workdir={below_file}"],
        ["--workdir", "cannot be created"],
    ),
    "evaluate_workdir_is_file": (
        "bnvae_jax.evaluate",
        ["--workdir={file}"],
        ["--workdir", "is a file"],
    ),
    "evaluate_workdir_missing": (
        "bnvae_jax.evaluate",
        ["--workdir={dir}/nope"],
        ["nope does not exist"],
    ),
    "classify_workdir_is_file": (
        "bnvae_jax.classify",
        ["--workdir={file}", "--train_file={file}", "--test_file={file}"],
        ["--workdir", "is a file"],
    ),
    "classify_train_file_is_dir": (
        "bnvae_jax.classify",
        ["--workdir={dir}", "--train_file={dir}", "--test_file={file}"],
        ["--train_file", "is a directory"],
    ),
    "lagging_config_syntax": (
        "bnvae_jax.lagging",
        ["--config={broken}", "--workdir={dir}/lag"],
        ["does not parse"],
    ),
    "lagging_workdir_is_file": (
        "bnvae_jax.lagging",
        [f"--config={ROOT / 'configs' / 'lagging.py'}", "--workdir={file}"],
        ["--workdir", "is a file"],
    ),
    "dynamics_workdir_is_file": (
        "bnvae_jax.dynamics",
        ["--workdir={file}"],
        ["--workdir", "is a file"],
    ),
    "dynamics_output_below_file": (
        "bnvae_jax.dynamics",
        ["--workdir={dir}", "--output={below_file}/fig.png"],
        ["--output", "cannot be created"],
    ),
    "report_results_is_dir": (
        "bnvae_jax.report",
        ["{dir}/results.json"],
        ["results.json", "not found"],
    ),
    "sweep_out_is_file": (
        "bnvae_jax.sweep",
        [f"--config={TINY}", "--grid={grid}", "--out={file}"],
        ["--out", "is a file"],
    ),
}


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_unusable_paths_are_one_error_line(case, bad_paths, tmp_path):
    module, args, fragments = COMMANDS[case]
    grid = tmp_path / "grid.py"
    grid.write_text("def sweep(add):\n    add('vae', method='vae')\n")
    args = [a.format(grid=grid, **bad_paths) for a in args]
    code, out = run_main(*args, module=module, timeout=120)
    assert_one_line_error(code, out, *fragments)


@pytest.mark.parametrize(
    "module",
    [
        "bnvae_jax.main",
        "bnvae_jax.evaluate",
        "bnvae_jax.classify",
        "bnvae_jax.lagging",
        "bnvae_jax.dynamics",
        "bnvae_jax.report",
        "bnvae_jax.sweep",
    ],
)
def test_every_command_has_help(module):
    code, out = run_main("--help", module=module, timeout=120)
    assert code == 0, out[-2000:]
    assert "--" in out and "not found" not in out and "Traceback" not in out


def test_sweep_dry_run_into_a_closed_pipe(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    grid = tmp_path / "grid.py"
    grid.write_text(
        "def sweep(add):\n    for i in range(1000):\n"
        "        add(f'g{i}', **{'model.gamma': 0.001 * (i + 1)})\n"
    )
    dry = shlex.join(
        python_module("bnvae_jax.sweep", f"--config={TINY}", f"--grid={grid}")
        + [f"--out={tmp_path}/o", "--dry_run"]
    )
    code, out = run_child(
        ["bash", "-c", f"set -o pipefail; {dry} | head -n 2"], 120, cwd=ROOT, env=env
    )
    assert code == 0, out
    assert len(out.splitlines()) == 2 and "Traceback" not in out


def printed(output: str) -> dict[str, str]:
    """``{dotted key: its whole line}`` of ``--print_config`` output."""
    return {line.split()[0]: line for line in output.splitlines() if line[:1].isalpha()}


def test_print_config_shows_overrides_and_docs_without_training(tmp_path):
    workdir = tmp_path / "run"
    code, out = run_main(
        "--print_config",
        f"--config={TINY}",
        "--config.model.gamma=0.7",
        f"--workdir={workdir}",
    )
    assert code == 0, out[-3000:]
    assert not workdir.exists()
    lines = printed(out)
    doc = "fixed BN scale of the bn_gaussian head"
    assert f"gamma: float = 0.6  # {doc}" in inspect.getsource(config_lib.ModelConfig)
    assert lines["model.gamma"].split()[1] == "0.7"
    assert lines["model.gamma"].endswith(f"# {doc}")
    assert lines["data.batch_size"].split()[1] == "16"  # tiny.py's value
    assert "global, over all devices" in lines["data.batch_size"]
    assert "'': from the environment" in lines["parallel.coordinator_address"]
    assert set(lines) == set(config_lib.flatten(cli.load_config_file(TINY)))
    sections = [line.split()[0] for line in out.splitlines() if line.startswith("[")]
    assert sections == [
        "[data]",
        "[data.synthetic]",
        "[model]",
        "[train]",
        "[eval]",
        "[parallel]",
    ]
    assert out.splitlines()[0].startswith("method ")  # top-level keys first


def test_print_config_of_the_dialog_task(tmp_path):
    code, out = run_main(
        "--print_config",
        f"--config={ROOT / 'configs' / 'switchboard.py'}",
        "--config.model.latent_dim=16",
        f"--workdir={tmp_path / 'run'}",
    )
    assert code == 0, out[-3000:]
    assert not (tmp_path / "run").exists()
    lines = printed(out)
    assert lines["task"].split()[1] == "'dialog'"
    assert lines["model.latent_dim"].split()[1] == "16"
    assert lines["model.utt_hidden"].endswith(
        "# bidirectional: 600-d utterance vectors"
    )
    assert lines["model.gamma"].endswith(
        "# bn_cvae: fixed BN scale (not given in the paper)"
    )
    assert lines["data.train_file"].endswith(
        '# dialogs: Zhao et al.\'s JSONL or "a ||| b ||| reply" lines'
    )
    assert "parallel.heartbeat_timeout_s" in lines


def test_print_config_keeps_bad_input_errors(tmp_path):
    code, out = run_main(
        "--print_config",
        f"--config={TINY}",
        "--config.model.gama=0.7",
        f"--workdir={tmp_path / 'run'}",
    )
    assert_one_line_error(code, out, "--config.model.gama", "--config.model.gamma")
    assert "model.gamma " not in out and not (tmp_path / "run").exists()


def test_every_default_key_has_a_doc():
    docs = cli.config_docs()
    keys = list(config_lib.flatten(config_lib.default_config()))
    assert "parallel.mode" in keys
    assert [key for key in keys if not docs.get(key)] == []
