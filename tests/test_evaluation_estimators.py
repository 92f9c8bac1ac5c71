import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.evaluation import estimators


def test_mi_is_zero_when_posterior_ignores_x():
    # The estimator is one-sample Monte Carlo: its standard error here is
    # sqrt(n / 2) / sqrt(N) = 0.019, so allow 3 of them.
    n, num = 3, 4000
    mu = jnp.tile(jnp.array([[0.5, -1.0, 2.0]]), (num, 1))
    logvar = jnp.full((num, n), -0.3)
    mi = estimators.mutual_information_dataset(mu, logvar, jax.random.key(0))
    assert abs(mi) < 0.06
    mi_b = estimators.mutual_information_per_batch(
        mu, logvar, np.arange(num) // 32, jax.random.key(1)
    )
    assert abs(mi_b) < 0.06


def test_mi_of_well_separated_posteriors_is_log_n():
    # N distinct, tiny-variance posteriors: q(z) is a mixture whose components
    # never overlap, so I(x; z) = H(x) = log N (up to the Monte Carlo error of
    # one sample per example, standard error sqrt(1/2)/sqrt(N) = 0.016).
    num = 2000
    mu = jnp.arange(num, dtype=jnp.float32)[:, None] * 10.0
    logvar = jnp.full((num, 1), np.log(1e-4))
    mi = estimators.mutual_information_dataset(mu, logvar, jax.random.key(0))
    assert mi == pytest.approx(np.log(num), abs=0.05)


def test_mi_per_batch_is_weighted_mean_of_batches():
    num = 3000
    mu = jnp.arange(num, dtype=jnp.float32)[:, None] * 10.0
    logvar = jnp.full((num, 1), np.log(1e-4))
    ids = np.array([0] * 1000 + [1] * 2000)
    mi = estimators.mutual_information_per_batch(mu, logvar, ids, jax.random.key(0))
    expected = (1000 * np.log(1000) + 2000 * np.log(2000)) / 3000
    assert mi == pytest.approx(expected, abs=0.05)


def test_active_units_counts_by_variance_threshold():
    rng = np.random.default_rng(0)
    num = 1000
    mu = np.stack(
        [
            rng.normal(0, 1.0, num),  # active
            rng.normal(0, 0.05, num),  # variance 0.0025: inactive
            np.full(num, 3.0),  # constant: inactive
            rng.normal(0, 0.2, num),  # variance 0.04: active
        ],
        axis=1,
    )
    au, var = estimators.active_units(mu, 0.01)
    assert au == 2
    np.testing.assert_allclose(var, mu.var(0, ddof=1))


def test_active_units_threshold_is_inclusive():
    mu = np.array([[0.0], [0.2]])  # unbiased variance = 0.02
    assert estimators.active_units(mu, 0.02)[0] == 1


def test_log_mean_exp_with_invalid_entries():
    log_w = jnp.array([[0.0, np.log(3.0), 100.0]])
    valid = jnp.array([[True, True, False]])
    got = estimators.log_mean_exp(log_w, valid=valid)
    assert float(got[0]) == pytest.approx(np.log(2.0), abs=1e-6)
