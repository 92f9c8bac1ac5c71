"""Dialog train loop: tiny end-to-end runs, exact resume after an interruption."""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import latest_step, python_module, run_child

from bnvae_jax.errors import DataError
from bnvae_jax.tasks.dialog import config as config_lib
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import model as model_lib
from bnvae_jax.tasks.dialog import train
from bnvae_jax.training import checkpoints, steps
from bnvae_jax.training import loop as loop_lib

WORDS = "yeah i think so uh-huh you know that's right well okay".split()
ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_dialogs(path, count, seed):
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(count):
        utts = [
            ["AB"[i % 2], " ".join(rng.choice(WORDS, rng.integers(1, 6))), ["x", []]]
            for i in range(6)
        ]
        meta = {"age": 30 + n, "education": "2", "sex": '"MALE"'}
        lines.append(
            json.dumps({"topic": f"T{n % 2}", "A": meta, "B": meta, "utts": utts})
        )
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module", autouse=True)
def fast_compiles():
    """Cheap XLA compiles for this module's many small programs; restored after."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("swda")
    return {
        "train": write_dialogs(d / "train.jsonl", 6, 0),
        "valid": write_dialogs(d / "valid.jsonl", 2, 1),
        "test": write_dialogs(d / "test.jsonl", 2, 2),
        "glove": _glove(d / "glove.txt"),
    }


def _glove(path):
    rng = np.random.default_rng(3)
    path.write_text(
        "".join(f"{w} {' '.join(map(str, rng.normal(size=4)))}\n" for w in WORDS)
    )
    return str(path)


def tiny_config(files, method="bn_cvae", **train_overrides):
    c = config_lib.default_config()
    c.method = method
    c.data.train_file, c.data.valid_file = files["train"], files["valid"]
    c.data.test_file = files["test"]
    c.data.batch_size, c.data.eval_batch_size = 8, 16
    c.data.max_utt_len, c.data.context_size = 8, 4
    m = c.model
    m.emb_dim, m.utt_hidden, m.ctx_hidden, m.dec_hidden = 8, 8, 8, 8
    m.latent_dim, m.topic_dim, m.prior_hidden, m.bow_hidden = 4, 2, 8, 8
    c.train.full_kl_steps = 4
    c.train.steps_per_epoch = 3
    c.train.epochs = 2
    c.train.checkpoint_every_steps = 4
    c.train.log_every_steps = 1
    c.eval.glove_file = files["glove"]
    c.eval.num_samples = 3
    c.eval.max_decode_len = 6
    c.eval.rating_contexts = 2
    c.eval.rating_samples = 2
    for key, value in train_overrides.items():
        c.train[key] = value
    return c


def _latest(workdir, state):
    with checkpoints.Checkpointer(workdir) as ckpt:
        return ckpt.restore_latest(loop_lib.state_tree(state))


class _InterruptAt:
    """A metric writer that raises KeyboardInterrupt (Ctrl-C) after logging ``step``."""

    def __init__(self, writer, step):
        self.writer, self.step = writer, step

    def __getattr__(self, name):
        return getattr(self.writer, name)

    def write_scalars(self, step, scalars):
        self.writer.write_scalars(step, scalars)
        if step == self.step:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_parameters(files, tmp_path):
    config = tiny_config(files)
    # Uninterrupted: 2 epochs of 3 batches (36 examples, 8 a batch).
    s, template = train.setup(config, str(tmp_path / "template"))
    s.ctx.writer.close()
    s.ctx.ckpt.close()
    train.train_and_evaluate(config, str(tmp_path / "straight"))
    straight, _ = _latest(tmp_path / "straight", template)
    assert int(straight["step"]) == 6
    # Interrupted at step 3 (Ctrl-C), then resumed by train_and_evaluate.
    workdir = tmp_path / "resumed"
    s, state = train.setup(config, str(workdir))
    ctx = dataclasses.replace(s.ctx, writer=_InterruptAt(s.ctx.writer, 3))
    with pytest.raises(KeyboardInterrupt):
        train.fit(dataclasses.replace(s, ctx=ctx), state)
    assert latest_step(checkpoints.Checkpointer(workdir)) == 3
    results = train.train_and_evaluate(config, str(workdir))
    tree, meta = _latest(workdir, template)
    assert int(tree["step"]) == 6 and meta["epoch"] == 2
    for a, b in zip(
        jax.tree_util.tree_leaves(tree["params"]),
        jax.tree_util.tree_leaves(straight["params"]),
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for key in ("kl", "ppl", "bleu4_recall", "abow_precision", "ebow_recall"):
        assert np.isfinite(results["test"][key])
    assert results["test"]["kl"] > 0
    assert results["test"]["references"] == "test_split"
    assert (workdir / "samples.txt").read_text().count("sample 3:") > 0
    rating = (workdir / "human_rating.csv").read_text().splitlines()
    assert rating[0].startswith("context_id,topic,context,reference")
    assert len(rating) == 1 + 2 * 2
    # A finished run reruns as a no-op with the saved results.
    assert train.train_and_evaluate(config, str(workdir)) == json.loads(
        (workdir / "results.json").read_text()
    )


def test_adam_with_an_injected_rate_is_plain_adam():
    """The shared optimizer factory gives the dialog's clipped Adam, bit for bit."""
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    ours = steps.make_optimizer(1e-3, 1.0, kind="adam")
    plain = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    a, b = ours.init(params), plain.init(params)
    for scale in (10.0, 0.1, 3.0):  # the first and last steps are clipped
        grads = {"w": jnp.asarray(scale * rng.normal(size=(3, 4)), jnp.float32)}
        ua, a = ours.update(grads, a, params)
        ub, b = plain.update(grads, b, params)
        np.testing.assert_array_equal(np.asarray(ua["w"]), np.asarray(ub["w"]))
        assert np.any(np.asarray(ua["w"]) != 0)


@pytest.mark.parametrize("method", ["cvae", "cvae_bow"])
def test_baselines_train_and_report(files, tmp_path, method):
    config = tiny_config(files, method, max_steps=2, epochs=1)
    config.eval.glove_file = ""
    results = train.train_and_evaluate(config, str(tmp_path / method))
    assert results["method"] == method and results["steps"] == 2
    assert "abow_precision" not in results["test"]
    assert 0 <= results["test"]["bleu1_precision"] <= results["test"]["bleu1_recall"]


def test_bn_head_normalises_the_recognition_mean(files):
    config = tiny_config(files)
    config.model.bn_eps = 1e-12  # tiny initial means: eps would shrink their std
    run = config_lib.resolve(config)
    data = data_lib.load_dialog_data(run.data)
    run = run.with_sizes(len(data.vocab), len(data.topics))
    model = model_lib.DialogCVAE(run.model)
    batch = data.splits["train"].batch(np.arange(8), 8)
    keys = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    variables = jax.jit(lambda b: model.init(keys, b, train=False))(batch)
    out, _ = jax.jit(
        lambda v, b: model.apply(
            v, b, train=True, rngs={"sample": keys["sample"]}, mutable=["batch_stats"]
        )
    )(variables, batch)
    mu = np.asarray(out.posterior.mu)
    np.testing.assert_allclose(mu.mean(0), 0.0, atol=1e-5)  # beta starts at 0
    np.testing.assert_allclose(mu.std(0), config.model.gamma, rtol=1e-3)


def test_malformed_training_file_is_a_one_line_cli_error(files, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"utts": "nope"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1"):
        config = tiny_config({**files, "train": str(bad)})
        data_lib.load_dialog_data(config_lib.resolve(config).data)
    code, out = run_child(
        python_module(
            "bnvae_jax.main",
            "--config=configs/switchboard.py",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.train_file={bad}",
            f"--config.data.valid_file={files['valid']}",
            f"--config.data.test_file={files['test']}",
        ),
        120,
        cwd=ROOT,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert code == 2
    assert out.strip().splitlines()[-1].startswith("error: ")
    assert "bad.jsonl:1" in out


def test_glove_file_initialises_the_word_embeddings(files, tmp_path):
    config = tiny_config(files)
    config.model.emb_dim = 4  # the test GloVe file's width
    config.model.embedding_file = files["glove"]
    s, state = train.setup(config, str(tmp_path))
    table = np.asarray(state.params["embed"]["embedding"])
    vectors = {
        line.split()[0]: np.array(line.split()[1:], np.float32)
        for line in pathlib.Path(files["glove"]).read_text().splitlines()
    }
    vocab = s.data.vocab
    found = [w for w in vocab.words if w in vectors]
    assert len(found) >= 8
    for word in found:
        np.testing.assert_array_equal(table[vocab.words.index(word)], vectors[word])
    np.testing.assert_array_equal(table[0], 0.0)  # <pad>
    # Words without a vector keep the U(+-init_scale) initialisation.
    others = [i for i, w in enumerate(vocab.words) if w not in vectors and i > 0]
    assert others and np.all(np.abs(table[others]) <= config.model.init_scale)
    assert np.any(table[others] != 0.0)


def _multi_ref_file(path, items):
    rng = np.random.default_rng(7)

    def turn():
        return " ".join(rng.choice(WORDS, rng.integers(1, 5)))

    records = []
    for n in range(items):
        turns = ["<s> <d> </s>"] + [f"{'AB'[i % 2]}: {turn()}" for i in range(n % 3)]
        records.append(
            {
                "context": turns,
                "responses": [turn() for _ in range(1 + n % 3)],
                "resp_dialog_acts": ["sd"],
                "speaker": "AB"[n % 2],
            }
        )
    path.write_text(json.dumps(records))
    return str(path), records


def test_multi_ref_file_scores_its_contexts_against_every_reference(files, tmp_path):
    path, records = _multi_ref_file(tmp_path / "test_multi_ref.json", 9)
    config = tiny_config(files, max_steps=2, epochs=1)
    config.eval.multi_ref_file = path
    results = train.train_and_evaluate(config, str(tmp_path / "run"))
    test = results["test"]
    assert test["references"] == "multi_ref_file"
    # Contexts holding only the dialog start are skipped, as for the test split.
    eligible = sum(len(r["context"]) >= config.eval.min_context_utts for r in records)
    assert 0 < eligible < len(records)
    assert test["num_contexts"] == eligible
    samples = (tmp_path / "run" / "samples.txt").read_text()
    assert samples.count("=== context") == eligible


def test_broken_multi_ref_file_fails_before_training(files, tmp_path):
    bad = tmp_path / "multi.json"
    bad.write_text('[{"context": ["A: hi"], "speaker": "A"}]')
    config = tiny_config(files)
    config.eval.multi_ref_file = str(bad)
    with pytest.raises(DataError, match="multi.json.*responses"):
        train.setup(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()
