import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

from bnvae_jax.models import latents, vmf

# One compiled sampler per shape, shared by the tests.
_sample = jax.jit(vmf.sample_vmf, static_argnames=("num_proposals", "max_rounds"))

N = 20_000  # Monte Carlo sample size


def _direction(dim: int, seed: int = 0) -> jnp.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.normal(size=dim)
    return jnp.asarray(m / np.linalg.norm(m), jnp.float32)


def _draw(dim, kappa, seed=0, num_proposals=8):
    mu = _direction(dim, seed)
    mus = jnp.broadcast_to(mu, (N, dim))
    # Static arguments always passed explicitly: one jit cache entry per shape.
    z = _sample(jax.random.key(seed), mus, kappa, num_proposals=num_proposals)
    return np.asarray(mu, np.float64), np.asarray(z, np.float64)


# -- Constants ------------------------------------------------------------------------


GUU_D32 = {13: 2.084, 16: 2.933, 20: 4.129, 23: 5.040, 25: 5.644, 30: 7.121}


@pytest.mark.parametrize("kappa, expected", sorted(GUU_D32.items()))
def test_guu_kl_matches_the_paper_values(kappa, expected):
    assert vmf.vmf_kl_guu(kappa, 32) == pytest.approx(expected, abs=6e-4)
    # The exact KL is close to it (within 5%) and both are in the registry.
    exact = vmf.VMF_KL["uniform"](kappa, 32)
    assert abs(exact - expected) < 0.05 * exact
    assert vmf.VMF_KL["guu"](kappa, 32) == vmf.vmf_kl_guu(kappa, 32)


def test_exact_kl_values_and_limits():
    assert vmf.vmf_kl_uniform(13.0, 32) == pytest.approx(2.173, abs=6e-4)
    assert vmf.vmf_kl_uniform(0.0, 32) == 0.0
    # Small κ: KL ≈ κ² / (2d) (the variance of μ̂ᵀz under the uniform is 1/d).
    assert vmf.vmf_kl_uniform(1e-2, 5) == pytest.approx(1e-4 / 10, rel=1e-3)
    # Large order, small argument: ive underflows and the series takes over.
    assert vmf.vmf_kl_uniform(1.0, 1000) == pytest.approx(1 / 2000, rel=1e-2)
    # KL grows with κ.
    values = [vmf.vmf_kl_uniform(k, 32) for k in (1, 5, 13, 50, 200)]
    assert np.all(np.diff(values) > 0)


def test_log_bessel_matches_scipy_and_the_series():
    for nu, x in [(0.0, 0.3), (15.0, 13.0), (16.0, 600.0), (1.5, 40.0)]:
        assert vmf.log_bessel_iv(nu, x) == pytest.approx(
            math.log(scipy.special.iv(nu, x)), rel=1e-10
        )
    # ν = 400, x = 2: I_ν(x) = Σ_k 1 / (k! Γ(k+ν+1)) (x/2 = 1), far below 1e-300.
    nu = 400.0
    terms = [
        1.0 / (math.factorial(k) * math.prod(range(401, 401 + k))) for k in range(6)
    ]
    series = -math.lgamma(nu + 1) + math.log(sum(terms))
    assert vmf.log_bessel_iv(nu, 2.0) == pytest.approx(series, rel=1e-14)


def test_uniform_sphere_log_prob_is_minus_log_area():
    z = vmf.prior_sample(jax.random.key(0), (4, 5), 3)
    lp = vmf.uniform_sphere_log_prob(z)
    assert lp.shape == (4, 5)
    np.testing.assert_allclose(lp, -math.log(4 * math.pi), rtol=1e-6)
    # Also the formula log Γ(d/2) − log 2 − (d/2) log π for d = 32.
    lp32 = vmf.uniform_sphere_log_prob(jnp.zeros((1, 32)))
    ref = math.lgamma(16) - math.log(2) - 16 * math.log(math.pi)
    np.testing.assert_allclose(lp32, ref, rtol=1e-6)


@pytest.mark.parametrize("kappa", [0.0, 0.7, 5.0, 60.0])
def test_density_integrates_to_one_on_the_circle(kappa):
    theta = jnp.linspace(-math.pi, math.pi, 20_001)
    z = jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
    mu = jnp.array([0.6, -0.8])
    dens = np.exp(np.asarray(vmf.vmf_log_prob(z, mu, kappa), np.float64))
    assert scipy.integrate.trapezoid(dens, np.asarray(theta)) == pytest.approx(
        1.0, abs=1e-5
    )


@pytest.mark.parametrize("kappa", [0.5, 4.0, 40.0])
def test_density_integrates_to_one_on_the_sphere(kappa):
    theta = np.linspace(0.0, math.pi, 1201)
    phi = np.linspace(0.0, 2 * math.pi, 1201)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    z = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1)
    mu = _direction(3, seed=3)
    logq = np.asarray(vmf.vmf_log_prob(jnp.asarray(z, jnp.float32), mu, kappa))
    integrand = np.exp(logq.astype(np.float64)) * np.sin(t)
    total = scipy.integrate.trapezoid(
        scipy.integrate.trapezoid(integrand, phi, axis=1), theta
    )
    assert total == pytest.approx(1.0, abs=2e-4)


# -- Sampler --------------------------------------------------------------------------


def _angle_cdf(dim, kappa):
    """CDF of θ = arccos(μ̂ᵀz), density ∝ exp(κ cos θ) sin^{d−2} θ, on a grid."""
    grid = np.linspace(0.0, math.pi, 200_001)
    log_dens = kappa * (np.cos(grid) - 1.0) + (dim - 2) * np.log(
        np.maximum(np.sin(grid), 1e-300)
    )
    cdf = scipy.integrate.cumulative_trapezoid(np.exp(log_dens), grid, initial=0.0)
    return grid, cdf / cdf[-1]


@pytest.mark.parametrize(
    "dim, kappa, pool",
    [
        (2, 3.0, 8),
        (3, 0.5, 8),
        (3, 20.0, 8),
        (32, 13.0, 8),
        (32, 100.0, 8),
        (32, 1000.0, 8),
        # One proposal per round: about a third of the rows need the fallback loop.
        (5, 10.0, 1),
    ],
)
def test_samples_are_exact_vmf(dim, kappa, pool):
    mu, z = _draw(dim, kappa, seed=dim, num_proposals=pool)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=2e-6)
    cos = z @ mu
    # E[μ̂ᵀz] = A_d(κ) = I_{d/2}(κ) / I_{d/2−1}(κ) and E[z] = A_d(κ) μ̂.
    a_d = vmf.vmf_mean_cosine(kappa, dim)
    assert abs(cos.mean() - a_d) < 5 * cos.std() / math.sqrt(N) + 1e-6
    se_vec = z.std(0) / math.sqrt(N)
    assert np.all(np.abs(z.mean(0) - a_d * mu) < 5 * se_vec + 1e-6)
    # Kolmogorov–Smirnov on the angle θ to μ̂ (moderate κ: float32 θ is exact enough).
    if kappa <= 100:
        sin = np.linalg.norm(z - cos[:, None] * mu, axis=-1)
        theta = np.sort(np.arctan2(sin, cos))
        grid, cdf = _angle_cdf(dim, kappa)
        model = np.interp(theta, grid, cdf)
        upper = np.arange(1, N + 1) / N
        ks = max(np.max(upper - model), np.max(model - (upper - 1.0 / N)))
        assert ks < 1.95 / math.sqrt(N)  # α = 0.001


def test_exact_kl_matches_monte_carlo():
    dim, kappa = 32, 13.0
    mu, z = _draw(dim, kappa, seed=7)
    z32 = jnp.asarray(z, jnp.float32)
    diff = np.asarray(
        vmf.vmf_log_prob(z32, jnp.asarray(mu, jnp.float32), kappa)
        - vmf.uniform_sphere_log_prob(z32),
        np.float64,
    )
    se = diff.std() / math.sqrt(N)
    assert abs(diff.mean() - vmf.vmf_kl_uniform(kappa, dim)) < 5 * se + 1e-4


def test_uniform_over_vmf_importance_ratio_has_mean_one():
    dim, kappa = 3, 4.0
    mu, z = _draw(dim, kappa, seed=8)
    z32 = jnp.asarray(z, jnp.float32)
    log_q = vmf.vmf_log_prob(z32, jnp.asarray(mu, jnp.float32), kappa)
    ratio = np.exp(np.asarray(vmf.uniform_sphere_log_prob(z32) - log_q, np.float64))
    assert abs(ratio.mean() - 1.0) < 5 * ratio.std() / math.sqrt(N)


def test_sampler_compiles_once_and_has_no_per_example_loop():
    traces = []

    def fn(key, mu):
        traces.append(mu.shape)
        return vmf.sample_vmf(key, mu, 13.0)

    jitted = jax.jit(fn)
    mu = jnp.broadcast_to(_direction(32), (1000, 32))
    z1 = jitted(jax.random.key(0), mu)
    z2 = jitted(jax.random.key(1), mu)
    assert traces == [(1000, 32)]
    assert z1.shape == (1000, 32) and not np.allclose(z1, z2)
    # The program does not grow with the batch: no Python loop over examples.
    sizes = [
        len(jax.make_jaxpr(fn)(jax.random.key(0), jnp.ones((b, 32)) / 32**0.5).eqns)
        for b in (10, 1000)
    ]
    assert sizes[0] == sizes[1]


def test_sampler_under_vmap_with_per_row_keys_and_kappas():
    # How the IW-NLL code uses it: one key (and here one κ) per row, vmapped.
    dim = 3
    mu = jnp.broadcast_to(_direction(dim, 5), (N, dim))
    kappa = jnp.where(jnp.arange(N) < N // 2, 20.0, 2.0)
    keys = jax.random.split(jax.random.key(2), N)
    rows = jax.jit(jax.vmap(lambda k, m, c: vmf.sample_vmf(k, m[None], c)[0]))
    z = np.asarray(rows(keys, mu, kappa), np.float64)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, atol=2e-6)
    # Each row depends on its own key only: permuting the rows permutes the samples.
    perm = np.random.default_rng(0).permutation(N)
    z_perm = np.asarray(rows(keys[perm], mu[perm], kappa[perm]), np.float64)
    np.testing.assert_allclose(z_perm, z[perm], atol=1e-6)
    cos = z @ np.asarray(mu[0], np.float64)
    for part, k in ((cos[: N // 2], 20.0), (cos[N // 2 :], 2.0)):
        se = part.std() / math.sqrt(part.size)
        assert abs(part.mean() - vmf.vmf_mean_cosine(k, dim)) < 5 * se


def test_gradient_flows_through_the_direction_only():
    key = jax.random.key(4)
    m = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)), jnp.float32)
    c = jnp.linspace(-1.0, 1.0, 6)

    def loss(m, kappa):
        z = vmf.sample_vmf(key, vmf.normalize_direction(m), kappa)
        return jnp.sum(z * c)

    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    _, (g, g_kappa) = value_and_grad(m, 13.0)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 1e-3
    # w (a function of κ only) carries no gradient.
    assert float(g_kappa) == 0.0
    # With the key fixed, z is a smooth function of μ̂: match central differences.
    direction = jnp.asarray(np.random.default_rng(1).normal(size=(3, 6)), jnp.float32)
    h = 1e-2
    plus, _ = value_and_grad(m + h * direction, 13.0)
    minus, _ = value_and_grad(m - h * direction, 13.0)
    fd = (float(plus) - float(minus)) / (2 * h)
    assert float(jnp.sum(g * direction)) == pytest.approx(fd, rel=2e-2, abs=1e-3)


def test_normalize_direction_is_safe_at_zero():
    m = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    out = vmf.normalize_direction(m)
    np.testing.assert_allclose(out, [[0.6, 0.8], [1.0, 0.0]], atol=1e-7)
    g = jax.grad(lambda m: jnp.sum(vmf.normalize_direction(m)[:, 1]))(m)
    assert bool(jnp.all(jnp.isfinite(g)))
    np.testing.assert_array_equal(g[1], 0.0)


def test_prior_sample_is_uniform_on_the_sphere():
    z = vmf.prior_sample(jax.random.key(5), (N,), 4)
    assert z.shape == (N, 4)
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    # Uniform on S^3: E[z] = 0 and E[z zᵀ] = I / 4.
    zn = np.asarray(z, np.float64)
    assert np.all(np.abs(zn.mean(0)) < 5 * 0.5 / math.sqrt(N))
    np.testing.assert_allclose(zn.T @ zn / N, np.eye(4) / 4, atol=0.01)


# -- Head and family -----------------------------------------------------------------


def test_direction_head_has_no_parameters_and_normalises_the_mean_half():
    head = latents.DirectionHead()
    mu = jax.random.normal(jax.random.key(0), (4, 5))
    variables = head.init(jax.random.key(1), mu, -mu, jnp.ones(4), train=True)
    assert jax.tree_util.tree_leaves(variables) == []
    post = head.apply(variables, mu, -mu, jnp.ones(4), train=True)
    expected = mu / jnp.linalg.norm(mu, axis=-1, keepdims=True)
    np.testing.assert_allclose(post.mu_dir, expected, atol=1e-6)


def test_vmf_family_passes_through_jit():
    family = latents.vmf_family(20.0, 4, "uniform")
    mu = jax.random.normal(jax.random.key(0), (3, 4))
    post = latents.DirectionPosterior(vmf.normalize_direction(mu))

    @jax.jit
    def run(post, key):
        z = family.sample(post, key)
        rows = family.sample_rows(post, jax.random.split(key, 3))
        return z, rows, family.log_prob(post, z), family.kl(post)

    z, rows, log_q, kl = run(post, jax.random.key(2))
    assert z.shape == rows.shape == (3, 4) and log_q.shape == (3,)
    np.testing.assert_allclose(jnp.linalg.norm(rows, axis=-1), 1.0, atol=1e-5)
    expected = vmf.vmf_log_prob(z, post.mu_dir, 20.0)
    np.testing.assert_allclose(log_q, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(kl, vmf.vmf_kl_uniform(20.0, 4), rtol=1e-6)
    assert kl.shape == (3, 1)

    # The KL is a constant: no gradient reaches the encoder through it.
    grad = jax.grad(lambda m: jnp.sum(family.kl(latents.DirectionPosterior(m))))(mu)
    np.testing.assert_array_equal(grad, 0.0)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="dim >= 2"):
        vmf.vmf_kl_uniform(1.0, 1)
    with pytest.raises(ValueError, match="dim >= 2"):
        vmf.sample_vmf(jax.random.key(0), jnp.ones((3, 1)), 1.0)
    with pytest.raises(ValueError, match="kappa > 0"):
        vmf.vmf_kl_guu(0.0, 8)
