"""IW-NLL against log p(x) integrated numerically on a model with a scalar latent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_model_config

from bnvae_jax.evaluation import passes
from bnvae_jax.models import posteriors
from bnvae_jax.models import vae as vae_lib


@pytest.fixture(scope="module")
def setup():
    cfg = make_model_config(
        vocab_size=10,
        emb_dim=6,
        enc_hidden=6,
        dec_hidden=6,
        latent_dim=1,
        head="gaussian",
        dec_dropout_in=0.0,
        dec_dropout_out=0.0,
    )
    model = vae_lib.TextVAE(cfg)
    rng = np.random.default_rng(0)
    rows = 6
    tokens = np.zeros((rows, 8), np.int32)
    tokens[:, 0] = 1
    tokens[:, 1:5] = rng.integers(4, 10, (rows, 4))
    tokens[:, 5] = 2
    lengths = np.full(rows, 6, np.int32)
    mask = np.ones(rows, np.float32)
    k = jax.random.key(0)
    variables = model.init(
        {"params": k, "sample": k, "dropout": k}, tokens, lengths, mask, train=False
    )
    # Scale the tiny uniform init up so that p(x|z) depends strongly on z and the
    # posterior is far from exact: the IW bound then has something to correct.
    params = jax.tree.map(lambda p: p * 60.0, variables["params"])
    # A mean far off the true posterior's, a wide variance: a clear ELBO gap that
    # importance sampling closes quickly.
    kernel = params["encoder"]["to_latent"]["kernel"]
    params["encoder"]["to_latent"]["kernel"] = kernel.at[:, 0].mul(5.0).at[:, 1].set(0)
    variables = {"params": params, "batch_stats": {}}
    batch = {
        "tokens": jnp.asarray(tokens),
        "lengths": jnp.asarray(lengths),
        "mask": jnp.asarray(mask),
        "index": jnp.arange(rows, dtype=jnp.int32),
    }
    return model, variables, batch


def exact_log_px_and_elbo(model, variables, batch):
    grid = jnp.linspace(-12.0, 12.0, 4801)
    dz = float(grid[1] - grid[0])

    def log_joint(z):
        zs = jnp.full((batch["tokens"].shape[0], 1), z)
        rec = model.apply(
            variables,
            batch["tokens"],
            batch["lengths"],
            zs,
            train=False,
            method="reconstruction",
        )
        return -rec + posteriors.standard_normal_log_prob(zs), -rec

    joint, log_lik = jax.lax.map(log_joint, grid)  # [G, B]
    log_px = jax.nn.logsumexp(joint, axis=0) + np.log(dz)
    post = model.apply(
        variables,
        batch["tokens"],
        batch["lengths"],
        batch["mask"],
        train=False,
        method="encode",
    )
    log_q = posteriors.gaussian_log_prob(
        posteriors.Posterior(post.mu[None], post.logvar[None]), grid[:, None, None]
    )  # [G, B]
    q = jnp.exp(log_q) * dz
    elbo = jnp.sum(q * log_lik, 0) - jnp.sum(posteriors.gaussian_kl(*post), -1)
    return np.asarray(log_px), np.asarray(elbo)


def iw(model, variables, batch, k, seed=0, chunk=None, max_logits=1 << 26):
    _, log_px, _ = passes.iw_log_likelihood(
        model,
        variables,
        [batch],
        jax.random.key(seed),
        num_samples=k,
        chunk=chunk or k,
        progress=False,
        max_logits=max_logits,
    )
    return log_px


def test_iw_converges_to_exact_log_px_and_beats_elbo(setup):
    model, variables, batch = setup
    exact, elbo = exact_log_px_and_elbo(model, variables, batch)
    assert np.all(elbo < exact)  # the posterior is not exact
    assert np.mean(exact - elbo) > 0.3  # a gap large enough to see
    errs = {}
    for k in (1, 10, 3000):
        est = np.mean([iw(model, variables, batch, k, seed=s) for s in range(3)], 0)
        errs[k] = float(np.mean(np.abs(est - exact)))
    assert errs[3000] < 0.1
    assert errs[3000] < errs[10] < errs[1] + 1e-6
    # The IW bound with many samples is tighter than the ELBO: NLL_iw <= NLL_elbo.
    est = iw(model, variables, batch, 3000)
    assert np.all(-est <= -elbo)


def test_iw_chunking_does_not_change_the_estimate(setup):
    model, variables, batch = setup
    a = iw(model, variables, batch, 60, chunk=60)
    b = iw(model, variables, batch, 60, chunk=25)  # 3 chunks, the last one partial
    c = iw(model, variables, batch, 60, chunk=7)
    assert a.shape == (6,)
    # Sample k of sentence i comes from fold_in(key_i, k) whatever the chunking.
    np.testing.assert_allclose(a, b, rtol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5)


def test_iw_ignores_padded_examples_and_batching(setup):
    model, variables, batch = setup
    full = iw(model, variables, batch, 50)
    half = {k: v[:3] for k, v in batch.items()}
    padded = {
        "tokens": jnp.concatenate([half["tokens"], jnp.zeros_like(half["tokens"])]),
        "lengths": jnp.concatenate([half["lengths"], jnp.zeros(3, jnp.int32)]),
        "mask": jnp.concatenate([half["mask"], jnp.zeros(3)]),
        "index": jnp.concatenate([half["index"], -jnp.ones(3, jnp.int32)]),
    }
    got = iw(model, variables, padded, 50)
    assert got.shape == (3,)
    # Sentence i draws from fold_in(key, i): the same estimate in any batch.
    np.testing.assert_allclose(got, full[:3], rtol=1e-5)


def test_sample_chunk_divides_and_fits():
    assert passes.sample_chunk(500, 100, 10**9) == 100
    assert passes.sample_chunk(500, 100, 37) == 25
    assert passes.sample_chunk(500, 100, 0) == 1
    assert passes.sample_chunk(7, 100, 10**9) == 7


def test_memory_bound_shrinks_chunks_without_changing_results(setup):
    model, variables, batch = setup
    big = iw(model, variables, batch, 40)
    # 6 rows x 8 steps x 10 words = 480 logits per sample: room for 2 samples.
    small = iw(model, variables, batch, 40, max_logits=1000)
    np.testing.assert_allclose(big, small, rtol=1e-5)
