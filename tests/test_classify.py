"""Few-label classification: subsets, the linear classifier, features, the CLI."""

import dataclasses
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import latest_step, run_child

from bnvae_jax import classify as classify_cli
from bnvae_jax import config as config_lib
from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import ConfigError, DataError, WorkdirError
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.tasks import classify
from bnvae_jax.training import checkpoints, rules

POSITIVE = ("good", "great", "nice", "fine")
NEGATIVE = ("bad", "awful", "poor", "rude")
FILLER = ("the", "food", "was", "staff", "very")


def _sentences(num, seed):
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num):
        label = i % 2
        words = list(rng.choice(FILLER, size=rng.integers(2, 5)))
        words.insert(
            rng.integers(0, len(words) + 1), rng.choice((NEGATIVE, POSITIVE)[label])
        )
        lines.append(f"{label}\t{' '.join(words)}")
    return lines


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as bnvae_jax.main leaves it, with a freshly initialised
    BN-VAE saved as the best checkpoint (set running statistics)."""
    root = tmp_path_factory.mktemp("classify")
    files = {
        split: _write(root / f"{split}.txt", _sentences(n, seed))
        for split, n, seed in (("train", 200, 0), ("valid", 60, 1), ("test", 80, 2))
    }
    corpus = corpus_lib.read_corpus(files["train"], labelled=True)
    vocab = Vocab.from_sentences(corpus.sentences)
    config = config_lib.default_config()
    config.method = "bn_vae"
    config.model.update(emb_dim=8, enc_hidden=8, dec_hidden=8, latent_dim=4, gamma=0.7)
    config.data.bucket_width = 4
    run = config_lib.resolve(config, len(vocab))
    model = TextVAE(run.model)
    tokens = jnp.asarray([[1, 4, 5, 2]], jnp.int32)
    variables = model.init(
        {"params": jax.random.key(0), "sample": jax.random.key(1)},
        tokens,
        jnp.asarray([4]),
        jnp.ones(1),
        train=False,
    )
    stats = {"head": {"bn": {"mean": jnp.full(4, 0.3), "var": jnp.full(4, 4.0)}}}
    tree = {"step": 0, "params": variables["params"], "batch_stats": stats}
    with checkpoints.Checkpointer(root / "run") as ckpt:
        ckpt.save_best(0, tree, {"epoch": 0})
    vocab.save(root / "run" / "vocab.txt")
    (root / "run" / "config.json").write_text(config.to_json())
    return root, files


def test_seed_list_starts_with_the_reference_seeds():
    assert classify.seed_list(3) == (783435, 101, 202)
    assert classify.seed_list(12)[-3:] == (909, 1010, 1111)
    with pytest.raises(ConfigError):
        classify.seed_list(0)


def test_sample_subset_balanced_and_random():
    labels = np.array([0] * 30 + [1] * 70 + [2] * 20)
    subset = classify.sample_subset(labels, 31, seed=5, balanced=True)
    assert sorted(np.bincount(labels[subset]).tolist()) == [10, 10, 11]
    assert len(set(subset.tolist())) == 31
    again = classify.sample_subset(labels, 31, seed=5, balanced=True)
    other = classify.sample_subset(labels, 31, seed=6, balanced=True)
    np.testing.assert_array_equal(subset, again)
    assert not np.array_equal(subset, other)
    rand = classify.sample_subset(labels, 50, seed=5, balanced=False)
    assert len(set(rand.tolist())) == 50 and rand.max() < len(labels)
    with pytest.raises(ConfigError, match="class 2 has only 20"):
        classify.sample_subset(labels, 90, seed=0, balanced=True)
    with pytest.raises(ConfigError, match="has 120"):
        classify.sample_subset(labels, 121, seed=0, balanced=False)


def test_plateau_since_best_decays_after_two_bad_epochs_and_stops():
    cfg = classify.ClassifierConfig(max_decay=2)
    loop = classify.FitLoop(learning_rate=1.0)
    best, actions = float("inf"), []
    for loss in (1.0, 0.9, 0.95, 0.91, 0.8, 0.85, 0.86):
        actions.append(rules.plateau_since_best(loop, loss < best, cfg))
        best = min(best, loss)
    assert actions == ["best", "best", "keep", "decay", "best", "keep", "stop"]
    assert loop.learning_rate == 0.25 and loop.decays == 2


def _separable(seed):
    """Three well separated classes of 3-d features (train 90, valid 60, test 300)."""
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 0, 0], [-2.0, 0, 0], [0, 2.0, 0]], np.float32)

    def draw(n):
        y = rng.integers(0, 3, n).astype(np.int32)
        x = centers[y] + 0.5 * rng.standard_normal((n, 3)).astype(np.float32)
        return x, classify.LabelledRows(tuple(np.zeros(3, np.int32) for _ in y), y)

    (x, train), (xv, valid), (xt, test) = draw(90), draw(60), draw(300)
    return classify.FitData(
        train=train,
        valid=valid,
        test=test,
        features={"train": x, "valid": xv, "test": xt},
    )


def _frozen_fit(epochs, **cfg):
    cfg = classify.ClassifierConfig(mode="frozen", epochs=epochs, **cfg)
    return classify.Fit(cfg=cfg, num_labels=90, seed=0, num_classes=3)


def test_plateau_rule_on_the_loop_reloads_the_best_and_stops(tmp_path, monkeypatch):
    data = _separable(0)
    s, state = classify.build_fit(_frozen_fit(20, max_decay=2), data, tmp_path / "fit")
    losses = (1.0, 0.9, 0.95, 0.91, 0.8, 0.85, 0.86)
    seen, after, real_rule = [], [], classify.rule

    def scripted_validation(s, state):
        seen.append(np.array(state.params["clf"]["w"]))
        loss = losses[len(seen) - 1]
        return {"loss": loss, "accuracy": 0.0}, loss

    def recorded_rule(s, state, loop, val, improved):
        state, scalars = real_rule(s, state, loop, val, improved)
        lr = float(state.opt_state.hyperparams["learning_rate"])
        after.append((np.array(state.params["clf"]["w"]), lr))
        return state, scalars

    # The fit's loop reads the module's functions when it starts.
    monkeypatch.setattr(classify, "evaluate", scripted_validation)
    monkeypatch.setattr(classify, "rule", recorded_rule)
    results = classify.train_fit(s, state)
    # Epochs 0..6: best, best, keep, decay (reload epoch 1), best, keep, stop.
    assert results["epochs_run"] == 7 and results["best_epoch"] == 4
    assert results["stopped"] and results["decays"] == 2
    assert results["learning_rate"] == 0.25
    np.testing.assert_array_equal(after[2][0], seen[2])  # keep: unchanged
    np.testing.assert_array_equal(after[3][0], seen[1])  # decay: the best, reloaded
    assert not np.array_equal(seen[3], seen[1])
    assert [lr for _, lr in after[:5]] == [1.0, 1.0, 1.0, 0.5, 0.5]
    # The scores are the best epoch's (4), not the last one's (6).
    tree, _ = checkpoints.Checkpointer(tmp_path / "fit").restore_best(None)
    best = tree["params"]["clf"]
    np.testing.assert_array_equal(best["w"], seen[4])
    assert not np.array_equal(seen[6], seen[4])
    xt, yt = data.features["test"], data.test.labels
    assert results["test"] == classify.scores(best, xt, yt)


def test_linear_classifier_learns_separable_features(tmp_path):
    data = _separable(0)
    untrained = classify.init_linear(jax.random.key(0), 3, 3)
    xt, yt = data.features["test"], data.test.labels
    assert classify.scores(untrained, xt, yt)["accuracy"] < 0.8
    for name, valid in (("valid", data.valid), ("none", None)):
        features = {k: v for k, v in data.features.items() if valid or k != "valid"}
        fit_data = dataclasses.replace(data, valid=valid, features=features)
        built = classify.build_fit(_frozen_fit(5), fit_data, tmp_path / name)
        results = classify.train_fit(*built)
        assert results["test"]["accuracy"] > 0.95
        assert results["steps"] == 5 * 6  # 90 examples in batches of 16
        # Without validation no epoch is selected: the last state is scored.
        assert (results["best_epoch"] == -1) == (valid is None)
        assert (results["valid"] == {}) == (valid is None)


def test_features_are_eval_mode_bn_means_independent_of_batching(run_dir):
    root, files = run_dir
    run = classify_cli.load_run(str(root / "run"))
    data, _ = classify.read_labelled(files["test"], run.vocab)
    rows = data.rows[:9]
    a = classify.posterior_means(run, run.variables, rows, batch_size=2)
    b = classify.posterior_means(run, run.variables, rows, batch_size=128)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Running statistics (mean 0.3, var 4) and beta = 0: gamma (mu - 0.3) / 2.
    row = rows[4]
    tokens = jnp.asarray(row[None])
    raw_mu, _ = run.model.apply(
        run.variables,
        tokens,
        jnp.asarray([len(row)]),
        method=lambda m, t, n: m.encoder(t, n),
    )
    expected = 0.7 * (np.asarray(raw_mu[0]) - 0.3) / np.sqrt(4.0 + 1e-5)
    np.testing.assert_allclose(a[4], expected, rtol=1e-4, atol=1e-5)


def _splits(run_dir):
    root, files = run_dir
    run = classify_cli.load_run(str(root / "run"))
    pool, classes = classify.read_labelled(files["train"], run.vocab)
    valid, _ = classify.read_labelled(files["valid"], run.vocab, classes)
    test, _ = classify.read_labelled(files["test"], run.vocab, classes)
    return run, pool, valid, test, classes


def _finetune_fit(pool, valid, test, epochs):
    subset = classify.sample_subset(pool.labels, 40, seed=0, balanced=True)
    train = classify.LabelledRows(
        tuple(pool.rows[i] for i in subset), pool.labels[subset]
    )
    cfg = classify.ClassifierConfig(mode="finetune", epochs=epochs)
    fit = classify.Fit(cfg=cfg, num_labels=40, seed=0, num_classes=2)
    return fit, classify.FitData(train=train, valid=valid, test=test)


def _experiment(splits, fits_dir, **cfg):
    """Frozen-encoder fits for 10 and 40 labels, seeds 1 and 2, 3 epochs."""
    run, pool, valid, test, _ = splits
    return classify.run_classification(
        run,
        classify.FitData(train=pool, valid=valid, test=test),
        num_classes=2,
        label_counts=[10, 40],
        seeds=(1, 2),
        cfg=classify.ClassifierConfig(mode="frozen", epochs=3, **cfg),
        fits_dir=fits_dir,
    )


def test_frozen_and_finetuned_runs(run_dir, tmp_path):
    splits = _splits(run_dir)
    run, pool, valid, test, classes = splits
    assert classes == ("0", "1")
    report = _experiment(splits, tmp_path / "frozen")
    assert [r["labels"] for r in report["results"]] == [10, 40]
    for row in report["results"]:
        accs = row["accuracies"]
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
        assert row["mean"] == pytest.approx(np.mean(accs))
        assert row["std"] == pytest.approx(np.std(accs))
    saved = json.loads((tmp_path / "frozen/labels40_seed2/results.json").read_text())
    assert saved["test"]["accuracy"] == report["results"][1]["accuracies"][1]
    assert saved["method"] == "classifier_frozen"
    table = classify.format_table("bn", report)
    assert table.splitlines()[0] == "| run | 10 labels | 40 labels |"

    fit, data = _finetune_fit(pool, valid, test, epochs=2)
    results = classify.train_fit(*classify.build_fit(fit, data, tmp_path / "ft", run))
    tree, _ = checkpoints.Checkpointer(tmp_path / "ft").restore_best(None)
    before, after = run.variables["params"], tree["params"]["encoder_and_head"]
    changed = jax.tree_util.tree_map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
        before["encoder"],
        after["encoder"],
    )
    assert all(jax.tree_util.tree_leaves(changed))
    assert set(after) == {"encoder", "head"}  # the decoder is not trained
    # Train mode while fine-tuning moves the running statistics off the set ones.
    assert not np.allclose(tree["batch_stats"]["head"]["bn"]["mean"], 0.3)
    # The run's own arrays survive the fit (the step donates only its state).
    np.testing.assert_allclose(run.variables["batch_stats"]["head"]["bn"]["mean"], 0.3)
    variables = {
        "params": {**before, **after},
        "batch_stats": tree["batch_stats"],
    }
    x = classify.posterior_means(run, variables, test.rows, 128)
    assert results["test"] == classify.scores(tree["params"]["clf"], x, test.labels)


def test_interrupted_fit_resumes_to_the_same_result(run_dir, tmp_path, monkeypatch):
    run, pool, valid, test, _ = _splits(run_dir)
    fit, data = _finetune_fit(pool, valid, test, epochs=3)
    settings = classify.FitSettings(epochs=3, log_every_steps=1)
    straight = classify.train_fit(
        *classify.build_fit(fit, data, tmp_path / "straight", run, settings)
    )
    per_epoch = straight["steps"] // 3
    assert per_epoch >= 3
    stop = per_epoch + 2  # inside the second epoch
    workdir = tmp_path / "resumed"
    s, state = classify.build_fit(fit, data, workdir, run, settings)
    write = s.ctx.writer.write_scalars

    def write_then_interrupt(step, scalars):
        write(step, scalars)
        if step == stop:  # Ctrl-C after the step's metrics are written
            raise KeyboardInterrupt

    monkeypatch.setattr(s.ctx.writer, "write_scalars", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        classify.train_fit(s, state)
    ckpt = checkpoints.Checkpointer(workdir)
    assert latest_step(ckpt) == stop
    ckpt.close()
    assert not (workdir / "results.json").exists()
    resumed = classify.train_fit(*classify.build_fit(fit, data, workdir, run, settings))
    for key in ("test", "valid", "steps", "best_epoch", "learning_rate"):
        assert resumed[key] == straight[key]
    trees = []
    for name in ("straight", "resumed"):
        with checkpoints.Checkpointer(tmp_path / name) as ckpt:
            trees.append(ckpt.restore_best(None)[0])
    for a, b in zip(*(jax.tree_util.tree_leaves(t) for t in trees), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_killed_experiment_resumes_and_a_finished_one_trains_nothing(
    run_dir, tmp_path, monkeypatch
):
    splits = _splits(run_dir)

    def experiment(name, **cfg):
        return _experiment(splits, tmp_path / name, **cfg)

    straight = experiment("straight")
    real_step, calls = classify._train_step, []

    def counted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 14:  # in the third fit (10 labels: 1 step an epoch)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(classify, "_train_step", counted)
    with pytest.raises(KeyboardInterrupt):
        experiment("killed")
    fits = sorted(p.name for p in (tmp_path / "killed").iterdir())
    assert fits == ["labels10_seed1", "labels10_seed2", "labels40_seed1"]
    assert not (tmp_path / "killed/labels40_seed1/results.json").exists()
    calls.clear()
    assert experiment("killed") == straight
    # 10 labels: 1 step an epoch, 40 labels: 3. The first two fits are finished;
    # the third resumes at its last epoch's end (step 6 of 9), then the fourth.
    assert len(calls) == 3 + 9
    saved = {p: p.stat().st_mtime_ns for p in tmp_path.glob("killed/*/results.json")}
    assert len(saved) == 4
    calls.clear()
    assert experiment("killed") == straight
    assert calls == []
    assert {p: p.stat().st_mtime_ns for p in saved} == saved
    # Other settings in the same directory are refused, not mixed in.
    with pytest.raises(WorkdirError, match="holds a run with classifier"):
        experiment("killed", learning_rate=0.5)


def test_bad_inputs_are_user_errors(run_dir, tmp_path):
    root, files = run_dir
    with pytest.raises(WorkdirError, match="no config.json"):
        classify_cli.load_run(str(tmp_path))
    run = classify_cli.load_run(str(root / "run"))
    bad = _write(tmp_path / "bad.txt", ["0\tgood food", "7\tbad food"])
    with pytest.raises(DataError, match="label.*7 not in"):
        classify.read_labelled(bad, run.vocab, ("0", "1"))
    # The reference fine-tunes the encoder unless told to freeze it.
    assert classify.ClassifierConfig().mode == "finetune"
    assert classify_cli.FLAGS["mode"].default == "finetune"
    with pytest.raises(ConfigError, match="mode='linear'"):
        classify.ClassifierConfig(mode="linear")
    with pytest.raises(ConfigError, match="log_every_steps"):
        classify.FitSettings(epochs=1, log_every_steps=0)


def test_cli_writes_the_table_and_reports_errors_in_one_line(run_dir):
    root, files = run_dir
    base = [sys.executable, "-m", "bnvae_jax.classify", f"--workdir={root / 'run'}"]
    args = [
        f"--train_file={files['train']}",
        f"--valid_file={files['valid']}",
        f"--test_file={files['test']}",
        "--labels=10,20",
        "--seeds=2",
        "--epochs=2",
        "--output=clf_test",
    ]
    code, out = run_child(base + args, 300)
    assert code == 0, out[-2000:]
    report = json.loads((root / "run" / "clf_test.json").read_text())
    assert [r["labels"] for r in report["results"]] == [10, 20]
    assert report["seeds"] == [783435, 101]
    fit = json.loads((root / "run/clf_test/labels20_seed101/results.json").read_text())
    assert fit["test"]["accuracy"] == report["results"][1]["accuracies"][1]
    assert (
        "| run | 10 labels | 20 labels |" in (root / "run" / "clf_test.md").read_text()
    )

    code, out = run_child(
        base + args[:1] + [f"--test_file={files['test']}", "--labels=10,x"], 120
    )
    assert code == 2
    assert out.strip().splitlines()[-1] == "error: --labels takes integers, got 10,x"
