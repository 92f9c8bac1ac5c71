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
