"""``benchmarks/pytorch_reference.py`` computes what bnvae_jax computes.

At a tiny size the project's initialised parameters are copied into the PyTorch
model, both see the same tokens and the same ε (dropout off), and the losses,
one clipped SGD step and the IW-NLL must agree. Skipped where torch is absent
(CI installs no torch; ``pip install -e ".[bench]"`` brings it).
"""

import functools
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from conftest import make_model_config  # noqa: E402

from bnvae_jax.evaluation import estimators, passes  # noqa: E402
from bnvae_jax.models import posteriors  # noqa: E402
from bnvae_jax.models.vae import TextVAE  # noqa: E402
from bnvae_jax.training import objectives, schedules, steps  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import pytorch_reference as ref  # noqa: E402

VOCAB, EMB, HIDDEN, LATENT, GAMMA = 20, 8, 8, 4, 0.6
LENGTHS = [7, 5, 6, 4]  # <s> w.. </s>: true lengths in rows of width 7
LR = 0.5
TOL = dict(rtol=1e-5, atol=1e-5)


def _batch() -> dict:
    rng = np.random.default_rng(0)
    width = max(LENGTHS)
    tokens = np.zeros((len(LENGTHS), width), np.int32)
    for i, length in enumerate(LENGTHS):
        tokens[i, 0], tokens[i, length - 1] = 1, 2
        tokens[i, 1 : length - 1] = rng.integers(4, VOCAB, length - 2)
    # Garbage after each row's end: neither side may read it.
    for i, length in enumerate(LENGTHS):
        tokens[i, length:] = rng.integers(4, VOCAB, width - length)
    return {
        "tokens": tokens,
        "lengths": np.asarray(LENGTHS, np.int32),
        "mask": np.ones(len(LENGTHS), np.float32),
    }


def _torch_batch(batch):
    return (
        torch.from_numpy(batch["tokens"].astype(np.int64)),
        torch.from_numpy(batch["lengths"].astype(np.int64)),
    )


def _eps(shape, seed=5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture
def fixed_eps(monkeypatch):
    """The project's posterior draws z = μ + σ·ε with this ε [B, n]; counts draws."""
    eps = _eps((len(LENGTHS), LATENT))
    draws = []

    def sample(post, key, num=None):
        del key
        assert num is None
        draws.append(1)
        return post.mu + jnp.exp(0.5 * post.logvar) * eps

    monkeypatch.setattr(posteriors, "gaussian_sample", sample)
    return eps, draws


def _models(clip_norm: float = 5.0):
    """The project's train state (β, running stats made non-trivial) and its copy."""
    cfg = make_model_config(
        vocab_size=VOCAB,
        emb_dim=EMB,
        enc_hidden=HIDDEN,
        dec_hidden=HIDDEN,
        latent_dim=LATENT,
        head="bn_gaussian",
        gamma=GAMMA,
        dec_dropout_in=0.0,
        dec_dropout_out=0.0,
        # Both sides at PyTorch's default scale: the decoder's U(±0.01) would
        # leave its mistakes (a swapped gate, say) below the tolerances.
        enc_init="torch_default",
        dec_init="torch_default",
    )
    model = TextVAE(cfg)
    batch = _batch()
    state = steps.create_train_state(
        model, jax.random.key(0), batch, steps.make_optimizer(LR, clip_norm)
    )
    rng = np.random.default_rng(1)
    params = jax.tree.map(np.asarray, state.params)
    params["head"]["bn"]["beta"] = rng.normal(0, 0.3, LATENT).astype(np.float32)
    stats = {
        "head": {
            "bn": {
                "mean": rng.normal(0, 0.5, LATENT).astype(np.float32),
                "var": rng.uniform(0.5, 2.0, LATENT).astype(np.float32),
            }
        }
    }
    state = state.replace(
        params=jax.tree.map(jnp.asarray, params),
        batch_stats=jax.tree.map(jnp.asarray, stats),
    )
    torch_model = ref.TextVAE(
        ref.RefConfig(
            VOCAB, EMB, HIDDEN, LATENT, gamma=GAMMA, dropout_in=0.0, dropout_out=0.0
        )
    )
    ref.load_flax_variables(
        torch_model, {"params": state.params, "batch_stats": state.batch_stats}
    )
    return model, state, torch_model, batch


def _assert_trees_close(actual, expected, **tol):
    flat_a = jax.tree_util.tree_flatten_with_path(actual)[0]
    flat_e = jax.tree_util.tree_flatten_with_path(expected)[0]
    assert [p for p, _ in flat_a] == [p for p, _ in flat_e]
    for (path, a), (_, e) in zip(flat_a, flat_e):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(e), err_msg=jax.tree_util.keystr(path), **tol
        )


def test_every_tensor_maps_and_round_trips():
    _, state, torch_model, _ = _models()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    # Exactly the project's tensors, no more (γ is a constant on both sides).
    _assert_trees_close(ref.flax_variables(torch_model), variables, rtol=0, atol=0)
    assert not torch_model.encoder.bn.weight.requires_grad
    np.testing.assert_array_equal(
        torch_model.encoder.bn.weight.numpy(), np.float32(GAMMA)
    )


@pytest.mark.parametrize("train", [True, False], ids=["train_bn", "eval_bn"])
def test_losses_agree(fixed_eps, train):
    eps, draws = fixed_eps
    model, state, torch_model, batch = _models()
    kl_weight = 0.37
    out, _ = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        batch["tokens"],
        batch["lengths"],
        batch["mask"],
        train=train,
        rngs={"sample": jax.random.key(2), "dropout": jax.random.key(3)},
        mutable=["batch_stats"],
    )
    assert draws, "the project no longer samples through posteriors.gaussian_sample"
    loss = objectives.vae_loss(out.rec, out.kl, jnp.asarray(batch["mask"]), kl_weight)

    torch_model.train(train)
    tokens, lengths = _torch_batch(batch)
    with torch.no_grad():
        t_out = torch_model(tokens, lengths, torch.from_numpy(eps))
    t_loss = (t_out.rec + kl_weight * t_out.kl.sum(-1)).mean()

    np.testing.assert_allclose(t_out.mu.numpy(), out.posterior.mu, **TOL)
    np.testing.assert_allclose(t_out.logvar.numpy(), out.posterior.logvar, **TOL)
    np.testing.assert_allclose(t_out.z.numpy(), out.z, **TOL)
    np.testing.assert_allclose(t_out.rec.numpy(), out.rec, **TOL)
    np.testing.assert_allclose(t_out.kl.numpy(), out.kl, **TOL)
    np.testing.assert_allclose(float(t_loss), float(loss), **TOL)
    assert np.all(np.asarray(out.rec) > 1.0)  # real losses, not zeros


@pytest.mark.parametrize("clip_norm", [5.0, 0.05])
def test_one_clipped_sgd_step_agrees(fixed_eps, clip_norm):
    eps, _ = fixed_eps
    model, state, torch_model, batch = _models(clip_norm)
    fns = steps.StepFns(
        kl_schedule=schedules.linear(0.3, 10.0),
        kl_transform=objectives.kl_identity,
        clip_norm=clip_norm,
    )
    before = jax.tree.map(np.asarray, state.params)
    step = functools.partial(steps.train_step, fns=fns)
    new_state, metrics = step(
        state, jax.tree.map(jnp.asarray, batch), jax.random.key(1)
    )
    kl_weight = float(metrics["kl_weight"])
    assert kl_weight == pytest.approx(0.37)

    trainer = ref.Trainer(torch_model, lr=LR, clip_norm=clip_norm)
    result = trainer.step(*_torch_batch(batch), kl_weight, torch.from_numpy(eps))

    count = float(metrics["count"])
    np.testing.assert_allclose(result.loss, float(metrics["loss_sum"]) / count, **TOL)
    np.testing.assert_allclose(result.grad_norm, float(metrics["grad_norm"]), rtol=1e-5)
    if clip_norm < 1.0:
        assert result.grad_norm > 2 * clip_norm  # the clip is active
    expected = {"params": new_state.params, "batch_stats": new_state.batch_stats}
    _assert_trees_close(ref.flax_variables(torch_model), expected, **TOL)
    # The step moved the parameters (β included), so the agreement means something.
    moved = jax.tree.map(
        lambda a, b: float(np.max(np.abs(a - b))), before, new_state.params
    )
    assert min(jax.tree.leaves(moved)) > 0
    assert max(jax.tree.leaves(moved)) > 1e-3


def _project_iw(model, variables, batch, eps):
    """The project's IW formula on given ε [N, K, n]: log-mean-exp of the weights."""
    post = model.apply(
        variables,
        batch["tokens"],
        batch["lengths"],
        batch["mask"],
        train=False,
        method="encode",
    )
    out = []
    for i in range(len(batch["tokens"])):
        k = eps.shape[1]
        mu, logvar = post.mu[i], post.logvar[i]
        z = mu + jnp.exp(0.5 * logvar) * eps[i]
        rec = model.apply(
            variables,
            jnp.broadcast_to(batch["tokens"][i], (k, batch["tokens"].shape[1])),
            jnp.full(k, batch["lengths"][i]),
            z,
            train=False,
            method="reconstruction",
        )
        log_w = (
            -rec
            + posteriors.standard_normal_log_prob(z)
            - posteriors.gaussian_log_prob(posteriors.Posterior(mu, logvar), z)
        )
        out.append(float(estimators.log_mean_exp(log_w)))
    return np.asarray(out)


def test_iw_nll_with_fixed_eps_matches_the_project_formula():
    model, state, torch_model, batch = _models()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    samples, chunk = 12, 5  # chunks of 5, 5 and 2
    eps = _eps((len(LENGTHS), samples, LATENT), seed=7)
    expected = _project_iw(model, variables, batch, jnp.asarray(eps))
    got = ref.iw_log_likelihood(
        torch_model, *_torch_batch(batch), samples, chunk, torch.from_numpy(eps)
    )
    np.testing.assert_allclose(got, expected, **TOL)
    assert np.all(expected < -5.0)


def test_iw_nll_matches_the_projects_pass_on_its_own_draws():
    """``passes.iw_log_likelihood`` draws sample k of sentence i from
    ``fold_in(fold_in(key, i), k)``: fed those ε, the reference agrees."""
    model, state, torch_model, batch = _models()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    samples, chunk = 10, 4
    key = jax.random.key(11)
    index = np.arange(len(LENGTHS), dtype=np.int32)
    _, log_px, _ = passes.iw_log_likelihood(
        model,
        variables,
        [{**batch, "index": index}],
        key,
        num_samples=samples,
        chunk=chunk,
        progress=False,
    )
    eps = np.stack(
        [
            np.stack(
                [
                    jax.random.normal(
                        jax.random.fold_in(jax.random.fold_in(key, i), k), (LATENT,)
                    )
                    for k in range(samples)
                ]
            )
            for i in index
        ]
    )
    got = ref.iw_log_likelihood(
        torch_model, *_torch_batch(batch), samples, chunk, torch.from_numpy(eps)
    )
    np.testing.assert_allclose(got, log_px, **TOL)


def test_benchmark_compare_pytorch_runs_at_tiny_size(tmp_path):
    """End to end at toy sizes (Yahoo size skipped: its step is the PTB code at
    other sizes, and its compilation would double the test's time)."""
    out = tmp_path / "compare.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--tiny",
            "--compare=pytorch",
            "--rounds=1",
            "--repeats=2",
            "--iw-repeats=1",
            "--iw-sentences=1",
            "--iw-chunk=100",
            "--skip-yahoo",
            f"--out={out}",
        ],
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    side = report["pytorch"]
    assert side["threads"] >= 1 and side["torch_version"] == torch.__version__
    assert side["gemm_n"] == report["gemm_n"] and side["gemm_gflops"] > 0
    row = side["ptb"]
    assert 0 < row["step_ms_min"] <= row["step_ms"] <= row["step_ms_max"]
    assert "yahoo" not in side and "yahoo" not in report
    assert side["iw"]["sentences_per_second"] > 0
    assert side["iw"]["chunk"] == report["iw"]["chunk"] == 100
    ratios = side["jax_speed_over_pytorch"]
    assert set(ratios) == {"ptb", "iw", "gemm"}
    assert ratios["ptb"] == pytest.approx(
        side["ptb"]["step_ms"] / report["ptb"]["step_ms"]
    )
    assert set(side["cpu"]["flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}
    assert "JAX/PyTorch speed" in proc.stdout and "CPU:" in proc.stdout
