"""Few-label classification: subsets, the linear classifier, features, the CLI."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import run_child

from bnvae_jax import classify as classify_cli
from bnvae_jax.data import corpus as corpus_lib
from bnvae_jax.data.vocab import Vocab
from bnvae_jax.errors import ConfigError, DataError, WorkdirError
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.tasks import classify
from bnvae_jax.training import checkpoints, config_lib

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


def test_plateau_step_decays_after_two_bad_epochs_and_stops():
    cfg = classify.ClassifierConfig(max_decay=2)
    state = classify.Plateau(learning_rate=1.0)
    actions = []
    for loss in (1.0, 0.9, 0.95, 0.91, 0.8, 0.85, 0.86):
        state, action = classify.plateau_step(state, loss, cfg)
        actions.append(action)
    assert actions == ["best", "best", "keep", "decay", "best", "keep", "stop"]
    assert state.learning_rate == 0.25 and state.best_loss == 0.8


def test_linear_classifier_learns_separable_features():
    rng = np.random.default_rng(0)
    centers = np.array([[2.0, 0, 0], [-2.0, 0, 0], [0, 2.0, 0]], np.float32)

    def draw(n):
        y = rng.integers(0, 3, n).astype(np.int32)
        return centers[y] + 0.5 * rng.standard_normal((n, 3)).astype(np.float32), y

    x, y = draw(90)
    xv, yv = draw(60)
    xt, yt = draw(300)
    cfg = classify.ClassifierConfig(epochs=30)
    key = jax.random.key(0)
    untrained = classify.init_linear(key, 3, 3)
    assert classify.accuracy(untrained, xt, yt) < 0.8
    for valid in ((xv, yv), None):
        clf = classify.train_linear(key, x, y, valid, 3, cfg, seed=0)
        assert classify.accuracy(clf, xt, yt) > 0.95


def test_features_are_eval_mode_bn_means_independent_of_batching(run_dir):
    root, files = run_dir
    run = classify.load_run(str(root / "run"))
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


def test_frozen_and_finetuned_runs(run_dir):
    root, files = run_dir
    run = classify.load_run(str(root / "run"))
    pool, classes = classify.read_labelled(files["train"], run.vocab)
    valid, _ = classify.read_labelled(files["valid"], run.vocab, classes)
    test, _ = classify.read_labelled(files["test"], run.vocab, classes)
    assert classes == ("0", "1")
    cfg = classify.ClassifierConfig(mode="frozen", epochs=3)
    report = classify.run_classification(
        run,
        pool,
        valid,
        test,
        num_classes=2,
        label_counts=[10, 40],
        seeds=(1, 2),
        cfg=cfg,
    )
    assert [r["labels"] for r in report["results"]] == [10, 40]
    for row in report["results"]:
        accs = row["accuracies"]
        assert len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
        assert row["mean"] == pytest.approx(np.mean(accs))
        assert row["std"] == pytest.approx(np.std(accs))
    table = classify.format_table("bn", report)
    assert table.splitlines()[0] == "| run | 10 labels | 40 labels |"

    subset = classify.sample_subset(pool.labels, 40, seed=0, balanced=True)
    train = classify.LabelledRows(
        tuple(pool.rows[i] for i in subset), pool.labels[subset]
    )
    ft_cfg = classify.ClassifierConfig(mode="finetune", epochs=2)
    variables, clf = classify.finetune(
        jax.random.key(0), run, train, valid, 2, ft_cfg, seed=0
    )
    before, after = run.variables["params"], variables["params"]
    changed = jax.tree_util.tree_map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
        before["encoder"],
        after["encoder"],
    )
    assert all(jax.tree_util.tree_leaves(changed))
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(np.array_equal, before["decoder"], after["decoder"])
    )
    # Train mode while fine-tuning moves the running statistics off the set ones.
    assert not np.allclose(variables["batch_stats"]["head"]["bn"]["mean"], 0.3)
    x = classify.posterior_means(run, variables, test.rows, 128)
    assert 0.0 <= classify.accuracy(clf, x, test.labels) <= 1.0


def test_bad_inputs_are_user_errors(run_dir, tmp_path):
    root, files = run_dir
    with pytest.raises(WorkdirError, match="no config.json"):
        classify.load_run(str(tmp_path))
    run = classify.load_run(str(root / "run"))
    bad = _write(tmp_path / "bad.txt", ["0\tgood food", "7\tbad food"])
    with pytest.raises(DataError, match="label.*7 not in"):
        classify.read_labelled(bad, run.vocab, ("0", "1"))
    # The reference fine-tunes the encoder unless told to freeze it.
    assert classify.ClassifierConfig().mode == "finetune"
    assert classify_cli.FLAGS["mode"].default == "finetune"
    with pytest.raises(ConfigError, match="mode='linear'"):
        classify.ClassifierConfig(mode="linear")


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
    assert (
        "| run | 10 labels | 20 labels |" in (root / "run" / "clf_test.md").read_text()
    )

    code, out = run_child(
        base + args[:1] + [f"--test_file={files['test']}", "--labels=10,x"], 120
    )
    assert code == 2
    assert out.strip().splitlines()[-1] == "error: --labels takes integers, got 10,x"
