"""The public Python API of dialog models (``bnvae_jax.load`` of a dialog run).

Text models: tests/test_api.py (a file of its own, so that the two share out
over the test workers).
"""

import pytest
from test_api import ROOT, command, fast_compiles  # noqa: F401 (an autouse fixture)
from test_dialog_train import write_dialogs

import bnvae_jax


@pytest.fixture(scope="module")
def dialog_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dialog")
    files = {
        s: write_dialogs(d / f"{s}.jsonl", n, i)
        for i, (s, n) in enumerate([("train", 6), ("valid", 2), ("test", 2)])
    }
    sizes = {
        "data.batch_size": 8, "data.eval_batch_size": 16, "data.max_utt_len": 8,
        "data.context_size": 4, "model.emb_dim": 8, "model.utt_hidden": 8,
        "model.ctx_hidden": 8, "model.dec_hidden": 8, "model.latent_dim": 4,
        "model.topic_dim": 2, "model.prior_hidden": 8, "model.bow_hidden": 8,
        "train.full_kl_steps": 4, "train.steps_per_epoch": 3, "train.epochs": 2,
        "eval.num_samples": 2, "eval.max_decode_len": 6, "eval.rating_contexts": 2,
    }  # fmt: skip
    command(
        "bnvae_jax.main",
        f"--config={ROOT / 'configs' / 'switchboard.py'}",
        f"--workdir={d / 'run'}",
        *(f"--config.data.{s}_file={p}" for s, p in files.items()),
        *(f"--config.{k}={v}" for k, v in sizes.items()),
    )
    return d / "run"


def test_dialog_respond(dialog_run, tmp_path):
    model = bnvae_jax.load(dialog_run)
    assert isinstance(model, bnvae_jax.DialogModel)
    assert model.topics[0] == "<unk>" and set(model.topics[1:]) == {"T0", "T1"}
    context = ["Yeah I think so", "you know that's right"]
    replies = model.respond(context, n=3)
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    assert all(len(r.split()) <= 6 for r in replies)
    assert all(set(r.split()) <= set(model.vocab.words) for r in replies)
    assert model.respond(context, n=3, seed=1) == model.respond(context, n=3, seed=1)
    sampled = model.respond(context, n=8, seed=2, strategy="sample", temperature=5.0)
    assert len(sampled) == 8
    assert model.respond(["okay"], n=2, topic="T1")  # one turn, a known topic
    with pytest.warns(UserWarning, match="'zebra'"):
        model.respond(["zebra yeah"], n=1)
    # The export answers as the workdir does.
    exported = bnvae_jax.load(model.save(tmp_path / "dialog_export"))
    assert exported.respond(context, n=3, seed=4) == model.respond(context, n=3, seed=4)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(context_turns="yeah"), TypeError, "list of utterances"),
        (dict(context_turns=[]), ValueError, "turn"),
        (dict(context_turns=["ok", 5]), ValueError, "string"),
        (dict(context_turns=["ok"], temperature=0.0), ValueError, "temperature"),
        (dict(context_turns=["ok"], strategy="beam"), ValueError, "strategy"),
        (dict(context_turns=["ok"], n=0), ValueError, "n must be >= 1"),
    ],
)
def test_dialog_bad_input(dialog_run, kwargs, error, match):
    model = bnvae_jax.load(dialog_run)
    with pytest.raises(error, match=match):
        model.respond(**kwargs)
