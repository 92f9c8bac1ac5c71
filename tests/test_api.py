"""The public Python API (``bnvae_jax.load`` and the models it returns).

Tested through the public names and the commands only: this is the contract
that redesigns of the internals keep. The README's run is trained by its
command; the one-epoch vMF and SA-VAE runs train in this process (cheaper).
"""

import json
import logging
import os
import pathlib
import pydoc
import re
import shutil
import sys
import warnings

import jax
import numpy as np
import pytest
from conftest import NO_DECODING, python_module, run_child, tiny_config

import bnvae_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")
# Cheap XLA compiles for the many tiny programs here, in the children (the runs,
# evaluate, export) and in this process alike, so their numbers agree exactly.
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


def command(module, *args, cwd=ROOT, timeout=400, python=()):
    """Runs ``python [python] -m module args``; returns its console output."""
    args = [sys.executable, *python, *python_module(module, *args)[1:]]
    code, out = run_child(args, timeout, cwd=cwd, env=ENV)
    assert code == 0, out[-3000:]
    return out


def train(workdir, *overrides):
    # ResourceWarnings (an unclosed file at exit) are shown too.
    args = f"--config={TINY}", f"--workdir={workdir}", *overrides
    return command("bnvae_jax.main", *args, python=("-W", "always::ResourceWarning"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The README's tiny BN-VAE run, and one-epoch vMF and SA-VAE runs.

    ``console`` is what the README's run printed.
    """
    from bnvae_jax.tasks import text_vae

    d = tmp_path_factory.mktemp("api")
    quick = {"train.epochs": 1, "eval.iw_samples": 4, **NO_DECODING}
    workdirs = {"bn_vae": d / "runs" / "tiny", "vmf_vae": d / "vmf", "sa_vae": d / "sa"}
    console = train(workdirs["bn_vae"])
    for method, extra in (("vmf_vae", {}), ("sa_vae", {"model.svi_steps": 2})):
        config = tiny_config(**quick, **extra)
        config.method = method
        text_vae.train_and_evaluate(config, str(workdirs[method]))
    return {**workdirs, "console": console}


def load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny BN-VAE's lagging statistics
        return bnvae_jax.load(path, **kwargs)


def split_sentences(workdir):
    """The test split of a run on the embedded corpus, as written."""
    (path,) = pathlib.Path(workdir).glob("data/*/synthetic.test.txt")
    return path.read_text().splitlines()


def results(workdir, name="results.json"):
    return json.loads((pathlib.Path(workdir) / name).read_text())


# -- the package -----------------------------------------------------------------


def test_public_names_are_listed_and_documented():
    text = pydoc.render_doc(bnvae_jax)
    for name in bnvae_jax.__all__:
        assert name in text
        assert getattr(bnvae_jax, name).__doc__
    for cls in (bnvae_jax.TextModel, bnvae_jax.DialogModel):
        for name, member in vars(cls).items():
            if not name.startswith("_") and callable(member):
                assert member.__doc__, f"{cls.__name__}.{name}"
    with pytest.raises(AttributeError, match="no attribute 'lod'"):
        bnvae_jax.lod  # noqa: B018


# -- text models -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["bn_vae", "vmf_vae", "sa_vae"])
def test_score_repeats_the_runs_test_figures(runs, method):
    workdir = runs[method]
    model = load(workdir)
    assert isinstance(model, bnvae_jax.TextModel)
    test = results(workdir)["test"]
    scores = model.score(split_sentences(workdir), iw_samples=test["iw_samples"])
    assert scores.iw_nll.shape == (test["num_sentences"],)
    np.testing.assert_allclose(scores.iw_nll.mean(), test["iw_nll"], rtol=1e-6)
    np.testing.assert_allclose(scores.elbo_nll.mean(), test["elbo_nll"], rtol=1e-5)
    np.testing.assert_allclose(scores.kl.mean(), test["kl"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores.rec + scores.kl, scores.elbo_nll, rtol=1e-6)
    assert np.all(scores.oov == 0)
    # Another seed: other draws, the same quantity.
    other = model.score(split_sentences(workdir)[:8], iw_samples=4, seed=3)
    assert not np.allclose(other.iw_nll, scores.iw_nll[:8])
    assert abs(other.iw_nll.mean() - scores.iw_nll[:8].mean()) < 2.0


def test_encode(runs):
    model = load(runs["bn_vae"])
    texts = split_sentences(runs["bn_vae"])[:5]
    z = model.encode(texts)
    n = model.config.model.latent_dim
    assert z.shape == (5, n)
    # A text's code does not depend on the other texts or its position.
    np.testing.assert_allclose(model.encode(texts[::-1])[::-1], z, atol=1e-6)
    np.testing.assert_allclose(model.encode(texts[2]), z[2:3], atol=1e-6)
    # The arrays for one's own JAX code give the same means.
    post = model.module.apply(
        model.variables, **model.arrays(texts), train=False, method="encode"
    )
    np.testing.assert_allclose(post.mu, z, atol=1e-5)
    samples = model.encode(texts, sample=True, seed=1)
    np.testing.assert_array_equal(samples, model.encode(texts, sample=True, seed=1))
    assert not np.allclose(samples, model.encode(texts, sample=True, seed=2))
    assert not np.allclose(samples, z)


def test_vmf_codes_are_directions(runs):
    model = load(runs["vmf_vae"])
    texts = split_sentences(runs["vmf_vae"])[:4]
    for z in (model.encode(texts), model.encode(texts, sample=True)):
        np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
    assert len(model.sample(3)) == 3
    assert len(model.interpolate(texts[0], texts[1], steps=3)) == 3


def test_compiles_once_per_length_bucket(runs, caplog):
    model = load(runs["bn_vae"])
    texts = split_sentences(runs["bn_vae"])
    model.encode(texts[:3])
    model.decode(model.encode(texts[:3]), strategy="beam")
    model.score(texts[:3], iw_samples=4)
    caplog.set_level(logging.WARNING, logger="jax")
    with jax.log_compiles():
        model.encode(texts[3:9])  # other sentences, the same bucket
        model.decode(model.encode(texts[10:12]), strategy="beam")
        model.score(texts[20:24], iw_samples=4)
    compiles = [r for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiles, [r.getMessage()[:100] for r in compiles]


def test_decode_strategies(runs):
    model = load(runs["bn_vae"])
    z = model.encode(split_sentences(runs["bn_vae"])[:3])
    vocab = set(model.vocab.words)
    for strategy in ("greedy", "sample", "beam"):
        out = model.decode(z, strategy=strategy, seed=0)
        assert len(out) == 3 and all(isinstance(s, str) for s in out)
        assert all(set(s.split()) <= vocab for s in out)
    assert model.decode(z, strategy="sample", seed=4) == model.decode(
        z, strategy="sample", seed=4
    )
    assert all(len(s.split()) <= 2 for s in model.decode(z, max_len=2))
    # Length-normalised beam search never returns the empty sentence.
    assert all(model.sample(24, strategy="beam", seed=5))
    # More codes than one batch.
    assert len(model.decode(np.zeros((40, z.shape[1]), np.float32))) == 40


def test_reconstruct_sample_interpolate(runs):
    model = load(runs["bn_vae"])
    a, b = split_sentences(runs["bn_vae"])[:2]
    ends = model.reconstruct([a, b])
    path = model.interpolate(a, b, steps=4)
    assert len(path) == 4 and path[0] == ends[0] and path[-1] == ends[1]
    assert model.sample(5, seed=1) == model.sample(5, seed=1)
    assert model.sample(5, seed=1, strategy="sample") != model.sample(
        5, seed=2, strategy="sample"
    )


def test_out_of_vocabulary_words_are_reported(runs):
    model = load(runs["bn_vae"])
    known = split_sentences(runs["bn_vae"])[0]
    with pytest.warns(UserWarning, match=r"2 of \d+ words .* 'zzz', 'yyy'"):
        scores = model.score(["zzz yyy", known], iw_samples=2)
    assert list(scores.oov) == [2, 0]


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m, z: m.encode([]), ValueError, "at least one text"),
        (lambda m, z: m.encode(["ok", 3]), TypeError, "text 1 is a int"),
        (lambda m, z: m.encode([" "]), ValueError, "text 0 has no word"),
        (lambda m, z: m.score("<s> w1 </s>"), ValueError, "contains one of"),
        (lambda m, z: m.decode(z[0]), ValueError, r"shape \[num, 4\].*z\[None\]"),
        (lambda m, z: m.decode(z[:, :2]), ValueError, r"shape \[num, 4\]"),
        (lambda m, z: m.decode(z, temperature=0), ValueError, "temperature"),
        (lambda m, z: m.decode(z, temperature=-1.0), ValueError, "temperature"),
        (lambda m, z: m.decode(z, strategy="beam", beam_size=0), ValueError, "beam"),
        (lambda m, z: m.decode(z, strategy="top_k"), ValueError, "strategy"),
        (lambda m, z: m.decode(z * np.nan), ValueError, "NaN"),
        (lambda m, z: m.interpolate("w1", "w2", steps=1), ValueError, "steps"),
        (lambda m, z: m.sample(0), ValueError, "n must be >= 1"),
        (lambda m, z: m.score(["w1"], iw_samples=0), ValueError, "iw_samples"),
    ],
)
def test_bad_input_gets_one_clear_error(runs, call, error, match):
    model = load(runs["bn_vae"])
    with pytest.raises(error, match=match):
        call(model, np.zeros((2, 4), np.float32))


# -- loading and export ----------------------------------------------------------


def test_load_errors(runs, tmp_path):
    with pytest.raises(bnvae_jax.LoadError, match="no such file"):
        bnvae_jax.load(tmp_path / "missing")
    with pytest.raises(bnvae_jax.LoadError, match="is a file"):
        bnvae_jax.load(pathlib.Path(runs["bn_vae"]) / "config.json")
    with pytest.raises(bnvae_jax.LoadError, match="not a run"):
        bnvae_jax.load(tmp_path)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("config.json", "vocab.txt"):
        shutil.copy(pathlib.Path(runs["bn_vae"]) / name, fresh / name)
    with pytest.raises(bnvae_jax.LoadError, match="no best checkpoint yet"):
        bnvae_jax.load(fresh)
    with pytest.raises(bnvae_jax.LoadError, match="no checkpoint at step 7"):
        load(runs["bn_vae"], checkpoint=7)
    with pytest.raises(ValueError, match="'best', 'latest' or a step"):
        load(runs["bn_vae"], checkpoint="newest")


def test_checkpoints_best_latest_and_steps(runs):
    best, latest = load(runs["bn_vae"]), load(runs["bn_vae"], checkpoint="latest")
    assert best.info["step"] < latest.info["step"] == results(runs["bn_vae"])["steps"]
    by_step = load(runs["bn_vae"], checkpoint=latest.info["step"])
    texts = split_sentences(runs["bn_vae"])[:3]
    np.testing.assert_array_equal(by_step.encode(texts), latest.encode(texts))
    assert not np.allclose(best.encode(texts), latest.encode(texts))


def test_export_loads_and_scores_exactly_as_the_workdir(runs, tmp_path):
    workdir = runs["bn_vae"]
    model = load(workdir)
    out = model.save(tmp_path / "export")
    exported = load(out)
    texts = split_sentences(workdir)[:10]
    a, b = model.score(texts, iw_samples=8), exported.score(texts, iw_samples=8)
    np.testing.assert_array_equal(a.iw_nll, b.iw_nll)
    np.testing.assert_array_equal(a.kl, b.kl)
    assert exported.decode(model.encode(texts), strategy="beam") == model.decode(
        model.encode(texts), strategy="beam"
    )
    card = (out / "README.md").read_text()
    assert "bn_vae" in card and "gamma 0.6" in card
    test_nll = results(workdir)["test"]["iw_nll"]
    assert f"| iw_nll | {test_nll:.4g} |" in card
    with pytest.raises(FileExistsError):
        model.save(out)
    # A changed byte is found.
    data = bytearray((out / "variables.npz").read_bytes())
    data[-100] ^= 1
    (out / "variables.npz").write_bytes(bytes(data))
    with pytest.raises(bnvae_jax.LoadError, match="variables.npz: checksum"):
        bnvae_jax.load(out)


def test_export_and_evaluate_commands(runs, tmp_path):
    """``evaluate`` on an export and on a copied run repeats results.json."""
    workdir = runs["bn_vae"]
    out = tmp_path / "exported"
    printed = command("bnvae_jax.export", f"--workdir={workdir}", f"--output={out}")
    assert f"to {out}" in printed
    copy = tmp_path / "copy"
    shutil.copytree(workdir, copy)
    want = results(workdir)
    for folder in (out, copy):
        printed = command("bnvae_jax.evaluate", f"--workdir={folder}")
        assert "lag" in printed  # the tiny run's best checkpoint is epoch 0
        assert "iw_nll" in printed  # the results table
        got = results(folder, "evaluation.json")
        for split in ("valid", "test"):
            for key in ("iw_nll", "iw_ppl", "elbo_nll", "rec", "kl", "mi", "au"):
                assert got[split][key] == pytest.approx(want[split][key], rel=1e-6)
    assert load(out)  # the export's own files are untouched


def test_lagging_bn_statistics_are_reported_and_recomputed(runs):
    workdir = runs["bn_vae"]
    with pytest.warns(UserWarning, match="running statistics of this checkpoint lag"):
        model = bnvae_jax.load(workdir)
    (train_file,) = pathlib.Path(workdir).glob("data/*/synthetic.train.txt")
    precise = model.recompute_bn(train_file.read_text().splitlines())
    texts = split_sentences(workdir)
    before, after = model.score(texts, iw_samples=2), precise.score(texts, iw_samples=2)
    gamma, n = model.config.model.gamma, model.config.model.latent_dim
    bound = n * gamma**2 / 2  # the bound without the shifts β (a lower one)
    assert before.kl.mean() < 0.5 * bound < 0.9 * bound < after.kl.mean()
    # Through the command: --precise_bn gives the same test KL as the API.
    command("bnvae_jax.evaluate", f"--workdir={workdir}", "--precise_bn")
    got = results(workdir, "evaluation.json")["test"]
    assert got["kl"] == pytest.approx(precise.score(texts, iw_samples=20).kl.mean())


# -- the README's example ----------------------------------------------------------


def readme_example() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use a trained model", 1)[1].split("\n## ", 1)[0]
    (shell,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    (python,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return shell.strip(), python


def test_readme_example_runs_as_written(runs):
    shell, python = readme_example()
    # The fixture trained runs/tiny with this very command.
    assert shell == (
        "python -m bnvae_jax.main --config=configs/tiny.py --workdir=runs/tiny"
    )
    cwd = pathlib.Path(runs["bn_vae"]).parent.parent
    script = cwd / "example.py"
    script.write_text(python)
    code, out = run_child([sys.executable, str(script)], 300, cwd=cwd, env=ENV)
    assert code == 0, out[-3000:]
    assert "Traceback" not in out


# -- the console of the README's run ------------------------------------------------


def test_console_is_short_and_the_log_file_keeps_everything(runs, tmp_path):
    """Short, no third-party INFO, no warnings; the log file keeps everything."""
    out = runs["console"]
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
    log = (runs["bn_vae"] / "log.txt").read_text()
    assert "CheckpointManager" in log and "train/loss=" in log

    # --verbosity=0 brings third-party INFO records back to the console (the
    # finished run, copied, reruns as a no-op).
    shutil.copytree(runs["bn_vae"], tmp_path / "run")
    out = command(
        "bnvae_jax.main",
        f"--config={TINY}",
        f"--workdir={tmp_path / 'run'}",
        "--verbosity=0",
    )
    assert "CheckpointManager" in out
