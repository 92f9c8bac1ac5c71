import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.models import posteriors
from bnvae_jax.models.posteriors import Posterior


def test_gaussian_kl_matches_monte_carlo():
    key = jax.random.key(0)
    mu = jnp.array([[0.3, -1.2, 2.0]])
    logvar = jnp.array([[-0.5, 0.4, -2.0]])
    post = Posterior(mu, logvar)
    z = posteriors.gaussian_sample(post, key, num=200_000)  # [1, K, n]
    log_q = posteriors.gaussian_log_prob(Posterior(mu[:, None], logvar[:, None]), z)
    log_p = posteriors.standard_normal_log_prob(z)
    mc = float(jnp.mean(log_q - log_p))
    exact = float(jnp.sum(posteriors.gaussian_kl(mu, logvar)))
    assert mc == pytest.approx(exact, abs=0.02)


def test_log_prob_is_normalised_density():
    # Integrate a 1-D density numerically.
    post = Posterior(jnp.array([[0.7]]), jnp.array([[np.log(0.3**2)]]))
    grid = jnp.linspace(-5, 5, 20001)[:, None]
    dens = jnp.exp(posteriors.gaussian_log_prob(post, grid))
    assert float(jnp.trapezoid(dens, grid[:, 0])) == pytest.approx(1.0, abs=1e-4)


def _bn_apply(bn, x, mask, variables=None, train=True):
    if variables is None:
        variables = bn.init(jax.random.key(0), x, mask, train=False)
    return bn.apply(variables, x, mask, train=train, mutable=["batch_stats"])


def test_bn_head_train_mode_has_mean_beta_std_gamma_on_real_examples():
    gamma, n = 0.6, 5
    bn = posteriors.FixedScaleBatchNorm(gamma)
    x = jax.random.normal(jax.random.key(1), (10, n)) * 3.0 + 7.0
    mask = jnp.array([1.0] * 7 + [0.0] * 3)
    x = x.at[7:].set(1e6)  # padded rows must not influence anything
    variables = bn.init(jax.random.key(0), x, mask, train=False)
    beta = jnp.linspace(-0.5, 0.5, n)
    variables = {"params": {"beta": beta}, "batch_stats": variables["batch_stats"]}
    y, _ = bn.apply(variables, x, mask, train=True, mutable=["batch_stats"])
    real = np.asarray(y[:7])
    np.testing.assert_allclose(real.mean(0), beta, atol=1e-5)
    np.testing.assert_allclose(real.std(0), gamma, rtol=1e-4)
    # Batch KL with unit-variance posteriors >= n (gamma^2 + mean(beta^2)) / 2.
    kl = posteriors.gaussian_kl(jnp.asarray(real), jnp.zeros_like(real)).sum(-1)
    bound = n * gamma**2 / 2 + float(jnp.sum(beta**2)) / 2
    assert float(kl.mean()) >= bound - 1e-4


def test_bn_running_stats_match_pytorch_update_by_hand():
    bn = posteriors.FixedScaleBatchNorm(0.5, momentum=0.1, eps=1e-5)
    rng = np.random.default_rng(0)
    batches = [rng.normal(2.0, 3.0, size=(6, 3)).astype(np.float32) for _ in range(3)]
    mask = jnp.array([1, 1, 1, 1, 0, 0], jnp.float32)
    variables = bn.init(jax.random.key(0), batches[0], mask, train=False)
    run_mean, run_var = np.zeros(3), np.ones(3)
    for xb in batches:
        _, upd = bn.apply(variables, xb, mask, train=True, mutable=["batch_stats"])
        variables = {"params": variables["params"], **upd}
        real = xb[:4].astype(np.float64)
        run_mean = 0.9 * run_mean + 0.1 * real.mean(0)
        run_var = 0.9 * run_var + 0.1 * real.var(0, ddof=1)  # PyTorch: unbiased
    np.testing.assert_allclose(variables["batch_stats"]["mean"], run_mean, rtol=1e-5)
    np.testing.assert_allclose(variables["batch_stats"]["var"], run_var, rtol=1e-5)
    # Eval mode uses exactly these statistics.
    x = batches[0]
    y = bn.apply(variables, x, mask, train=False)
    expected = 0.5 * (x - run_mean) / np.sqrt(run_var + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_init_does_not_move_running_stats():
    bn = posteriors.FixedScaleBatchNorm(1.0)
    x = jnp.ones((4, 2)) * 5
    variables = bn.init(jax.random.key(0), x, jnp.ones(4), train=True)
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)
    np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)


def test_gamma_is_not_a_parameter():
    head = posteriors.make_head("bn_gaussian", gamma=0.7, momentum=0.1, eps=1e-5)
    mu = jnp.ones((3, 2))
    variables = head.init(jax.random.key(0), mu, mu, jnp.ones(3), train=False)
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    assert [jax.tree_util.keystr(p) for p, _ in leaves] == ["['bn']['beta']"]


def test_gaussian_head_is_identity():
    head = posteriors.make_head("gaussian", gamma=0.0, momentum=0.1, eps=1e-5)
    mu, logvar = jnp.ones((3, 2)), jnp.zeros((3, 2))
    out = head.apply({}, mu, logvar, jnp.ones(3), train=True)
    np.testing.assert_array_equal(out.mu, mu)
    np.testing.assert_array_equal(out.logvar, logvar)


# -- DU-VAE's head ---------------------------------------------------------------

DU_FLOOR = 1.0 / (2 * np.pi * np.e)  # δ² at α = 1


def _du_variables(head, x, w, beta):
    """The head's variables with the scale parameter w and shift β set by hand."""
    variables = head.init(jax.random.key(0), x, x, jnp.ones(len(x)), train=False)
    params = {"bn": {"scale": jnp.asarray(w), "beta": jnp.asarray(beta)}}
    return {"params": params, "batch_stats": variables["batch_stats"]}


def test_du_head_mean_is_bn_with_a_scale_held_at_rms_gamma():
    gamma, n = 0.5, 4
    head = posteriors.make_head(
        "du_gaussian", gamma=0.6, momentum=0.1, eps=1e-5, du_gamma=gamma
    )
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(9, n)).astype(np.float32)
    mask = np.array([1.0] * 6 + [0.0] * 3, np.float32)
    w = np.array([0.2, 1.0, 3.0, -0.5], np.float32)
    beta = np.array([0.1, -0.2, 0.0, 0.3], np.float32)
    variables = _du_variables(head, x, w, beta)
    leaves = jax.tree_util.tree_leaves_with_path(variables["params"])
    assert sorted(jax.tree_util.keystr(p) for p, _ in leaves) == [
        "['bn']['beta']",
        "['bn']['scale']",
    ]
    g = gamma * w / np.sqrt(np.mean(w.astype(np.float64) ** 2))
    assert np.sqrt(np.mean(g**2)) == pytest.approx(gamma)
    post, upd = head.apply(
        variables,
        x,
        x,
        jnp.asarray(mask),
        train=True,
        rngs={"dropout": jax.random.key(1)},
        mutable=["batch_stats"],
    )
    real = x[:6].astype(np.float64)
    m, v = real.mean(0), real.var(0)  # biased batch variance
    np.testing.assert_allclose(
        post.mu, g * (x - m) / np.sqrt(v + 1e-5) + beta, rtol=1e-4, atol=1e-5
    )
    # Eval mode: the running statistics of that one step, PyTorch's update.
    run_m, run_v = 0.1 * m, 0.9 + 0.1 * real.var(0, ddof=1)
    np.testing.assert_allclose(upd["batch_stats"]["bn"]["mean"], run_m, rtol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["bn"]["var"], run_v, rtol=1e-5)
    evaluated = head.apply(
        {"params": variables["params"], **upd}, x, x, jnp.asarray(mask), train=False
    )
    np.testing.assert_allclose(
        evaluated.mu,
        g * (x - run_m) / np.sqrt(run_v + 1e-5) + beta,
        rtol=1e-4,
        atol=1e-5,
    )


def test_du_head_scale_gradient_is_orthogonal_to_the_scale():
    # The rescaling is differentiated through: no step can change RMS(γ).
    head = posteriors.make_head(
        "du_gaussian", gamma=0.0, momentum=0.1, eps=1e-5, du_dropout=0.0
    )
    x = jax.random.normal(jax.random.key(2), (16, 3)) + jnp.array([0.0, 5.0, -1.0])
    variables = _du_variables(head, x, np.array([0.4, 0.5, 0.9]), np.zeros(3))

    def loss(params):
        post = head.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            x,
            jnp.ones(16),
            train=True,
            mutable=["batch_stats"],
        )[0]
        return jnp.sum(post.mu[:, 0] ** 3 + post.mu[:, 1])

    grad = jax.grad(loss)(variables["params"])["bn"]["scale"]
    w = variables["params"]["bn"]["scale"]
    assert float(jnp.max(jnp.abs(grad))) > 1e-2
    assert float(jnp.dot(grad, w)) == pytest.approx(0.0, abs=1e-5)


def test_du_head_variance_floor_dropout_and_kl_by_hand():
    p, n, batch = 0.3, 8, 4000
    head = posteriors.make_head(
        "du_gaussian", gamma=0.6, momentum=0.1, eps=1e-5, du_dropout=p, du_alpha=1.0
    )
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(batch, n)).astype(np.float32)
    logvar = rng.normal(-1.0, 2.0, size=(batch, n)).astype(np.float32)
    mask = jnp.ones(batch)
    variables = head.init(jax.random.key(0), mu, logvar, mask, train=False)
    var = np.exp(logvar.astype(np.float64))

    # Eval mode: the floor is added, nothing is dropped (no RNG needed).
    post = head.apply(variables, mu, logvar, mask, train=False)
    np.testing.assert_allclose(
        post.logvar, np.log(var + DU_FLOOR), rtol=1e-5, atol=1e-6
    )

    # Train mode: a dropped dimension has exactly the floor, a kept one
    # exp(l)/(1 - p) + floor (torch.dropout's keep-scaling on the variance).
    post, _ = head.apply(
        variables,
        mu,
        logvar,
        mask,
        train=True,
        rngs={"dropout": jax.random.key(4)},
        mutable=["batch_stats"],
    )
    out = np.asarray(post.logvar, np.float64)
    kept_value = np.log(var / (1 - p) + DU_FLOOR)
    dropped = np.isclose(out, np.log(DU_FLOOR), rtol=0, atol=1e-6)
    kept = np.isclose(out, kept_value, rtol=1e-5, atol=1e-6)
    assert np.all(dropped ^ kept)
    se = np.sqrt(p * (1 - p) / out.size)
    assert abs(dropped.mean() - p) < 4 * se

    # Train mode without a 'dropout' stream (a classifier tuning μ): no dropout.
    post_no_rng, _ = head.apply(
        variables, mu, logvar, mask, train=True, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(post_no_rng.mu, post.mu)
    np.testing.assert_allclose(
        post_no_rng.logvar, np.log(var + DU_FLOOR), rtol=1e-5, atol=1e-6
    )

    # The KL of the output is the closed-form Gaussian KL of (μ, σ²): for a
    # dropped dimension ½(μ² + δ² + ln 2π) at α = 1.
    mu_out = np.asarray(post.mu, np.float64)
    var_out = np.where(dropped, DU_FLOOR, var / (1 - p) + DU_FLOOR)
    expected = 0.5 * (mu_out**2 + var_out - np.log(var_out) - 1)
    np.testing.assert_allclose(
        posteriors.gaussian_kl(*post), expected, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        expected[dropped],
        0.5 * (mu_out[dropped] ** 2 + DU_FLOOR + np.log(2 * np.pi)),
        rtol=1e-9,
    )
    # BN-VAE's bound with γ = du_gamma (β = 0 at init) holds for the batch.
    assert expected.sum(-1).mean() >= n * 0.5**2 / 2 - 1e-3


def test_du_head_floor_scales_with_alpha_and_zero_alpha_is_no_floor():
    mu = jnp.ones((3, 2)) * jnp.arange(3.0)[:, None]
    logvar = jnp.array([[-30.0, 0.0], [2.0, -1.0], [60.0, -5.0]])
    for alpha, log_floor in ((0.0, -np.inf), (2.5, np.log(2.5 * DU_FLOOR))):
        head = posteriors.make_head(
            "du_gaussian", gamma=0, momentum=0.1, eps=1e-5, du_dropout=0, du_alpha=alpha
        )
        variables = head.init(jax.random.key(0), mu, logvar, jnp.ones(3), train=False)
        post = head.apply(variables, mu, logvar, jnp.ones(3), train=False)
        expected = np.logaddexp(np.asarray(logvar), log_floor)
        np.testing.assert_allclose(post.logvar, expected, rtol=1e-6)
        assert np.all(np.isfinite(post.logvar))  # exp(60) does not overflow
