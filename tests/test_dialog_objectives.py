"""Dialog objectives: Gaussian KLs, the BN-CVAE bound (paper Eq. 11-12), BOW loss."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from bnvae_jax.models.posteriors import Posterior, gaussian_kl
from bnvae_jax.tasks.dialog import objectives
from bnvae_jax.tasks.dialog.model import bow_loss, gaussian_kl_between


def test_kl_between_diagonal_gaussians_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu_q, mu_p = rng.normal(size=3), rng.normal(size=3)
    lv_q, lv_p = rng.normal(scale=0.5, size=3), rng.normal(scale=0.5, size=3)
    closed = gaussian_kl_between(
        Posterior(jnp.asarray(mu_q), jnp.asarray(lv_q)),
        Posterior(jnp.asarray(mu_p), jnp.asarray(lv_p)),
    )
    z = mu_q + np.exp(0.5 * lv_q) * rng.normal(size=(400_000, 3))

    def log_density(z, mu, lv):
        return -0.5 * ((z - mu) ** 2 / np.exp(lv) + lv + np.log(2 * np.pi))

    mc = np.mean(log_density(z, mu_q, lv_q) - log_density(z, mu_p, lv_p), axis=0)
    np.testing.assert_allclose(np.asarray(closed), mc, atol=0.02)
    assert np.all(np.asarray(closed) > 0)


def test_kl_between_equal_gaussians_is_zero_and_prior_case_matches():
    mu = jnp.array([0.3, -1.0])
    lv = jnp.array([0.2, -0.4])
    post = Posterior(mu, lv)
    np.testing.assert_allclose(gaussian_kl_between(post, post), 0.0, atol=1e-7)
    standard = Posterior(jnp.zeros(2), jnp.zeros(2))
    np.testing.assert_allclose(
        gaussian_kl_between(post, standard), gaussian_kl(mu, lv), rtol=1e-6
    )


MASK = jnp.array([1.0, 1.0, 1.0, 0.0])


def _terms():
    rng = np.random.default_rng(1)
    return types.SimpleNamespace(
        rec=jnp.asarray(rng.uniform(10, 20, 4), jnp.float32),
        kl=jnp.asarray(rng.uniform(0, 3, 4), jnp.float32),
        prior_kl=jnp.asarray(rng.uniform(0, 2, 4), jnp.float32),
        bow=jnp.asarray(rng.uniform(30, 40, 4), jnp.float32),
    )


def test_bn_cvae_objective_is_the_cvae_elbo_minus_the_prior_kl():
    terms = _terms()
    bn = objectives.DIALOG_METHODS["bn_cvae"]
    loss = objectives.method_loss(bn, terms, MASK, 1.0, 1.0)
    # -L' = -L + KL(p || N(0, I)), over the three real examples only.
    elbo = np.mean((np.asarray(terms.rec) + np.asarray(terms.kl))[:3])
    expected = elbo + np.mean(np.asarray(terms.prior_kl)[:3])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    cvae = objectives.method_loss(
        objectives.DIALOG_METHODS["cvae"], terms, MASK, 1.0, 1.0
    )
    np.testing.assert_allclose(cvae, elbo, rtol=1e-6)


def test_annealing_weights_scale_their_terms():
    terms = _terms()
    real = slice(0, 3)
    rec, kl, pkl, bow = (
        np.asarray(x)[real] for x in (terms.rec, terms.kl, terms.prior_kl, terms.bow)
    )
    methods = objectives.DIALOG_METHODS
    got = objectives.method_loss(methods["bn_cvae"], terms, MASK, 0.25, 0.5)
    np.testing.assert_allclose(got, np.mean(rec + 0.25 * kl + 0.5 * pkl), rtol=1e-6)
    got = objectives.method_loss(methods["cvae_bow"], terms, MASK, 0.25, 0.5)
    np.testing.assert_allclose(got, np.mean(rec + 0.25 * kl + bow), rtol=1e-6)


def test_eq12_with_constant_minus_two_is_the_sum_of_both_kls():
    # bn_cvae's two KL terms at w = w_p = 1, against paper Eq. 12 written out:
    # ½ Σ_j [(σ_q² + (μ_q − μ_p)²)/σ_p² + σ_p² + μ_p² − log σ_q² − 2].
    rng = np.random.default_rng(2)
    mu_q, mu_p, lv_q, lv_p = (
        rng.normal(size=(5, 6)).astype(np.float32) for _ in range(4)
    )
    q, p = Posterior(mu_q, lv_q), Posterior(mu_p, lv_p)
    total = jnp.sum(gaussian_kl_between(q, p) + gaussian_kl(mu_p, lv_p), -1)
    eq12 = 0.5 * np.sum(
        (np.exp(lv_q) + (mu_q - mu_p) ** 2) * np.exp(-lv_p)
        + np.exp(lv_p)
        + mu_p**2
        - lv_q
        - 2.0,
        axis=-1,
    )
    np.testing.assert_allclose(eq12, total, rtol=1e-5)
    # The paper's printed "-1" would overstate the sum by n/2 = 3 nats.
    printed = eq12 + 0.5 * mu_q.shape[-1]
    assert np.all(np.abs(np.asarray(printed - total) - 3.0) < 1e-4)


def test_bow_loss_by_hand():
    logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    targets = jnp.array([[0, 1, 1], [2, 2, 0]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    want = [
        -(np.log(0.5) + np.log(0.25)),
        -(2 * np.log(0.7) + np.log(0.1)),
    ]
    np.testing.assert_allclose(bow_loss(logits, targets, mask), want, rtol=1e-6)


def test_unknown_method_is_a_one_line_config_error():
    from bnvae_jax.errors import ConfigError

    with pytest.raises(ConfigError, match="cvae_bow"):
        objectives.get_method("bn_vae")
