"""Each method's defining property, and every method through the one loop."""

import json
import math
import pathlib
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import NO_DECODING, make_model_config

import bnvae_jax
from bnvae_jax import cli, methods
from bnvae_jax import config as config_lib
from bnvae_jax.config import ModelConfig
from bnvae_jax.errors import ConfigError, WorkdirError
from bnvae_jax.evaluation import bn_stats
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.models import latents, posteriors, svi
from bnvae_jax.models.posteriors import Posterior
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.tasks import text_vae as train
from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import steps

ROOT = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(method, **overrides):
    config = cli.load_config_file(str(ROOT / "configs" / "tiny.py"))
    config.method = method
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        node = config
        for s in sections:
            node = node[s]
        node[key] = value
    return config


# -- β-VAE / AE -----------------------------------------------------------------


def test_beta_vae_weight_is_constant_and_ae_is_zero(tmp_path):
    trainer, _ = train.setup(tiny_config("beta_vae", **{"train.beta": 0.4}), tmp_path)
    sched = train.step_fns(trainer).kl_schedule
    assert [float(sched(s)) for s in (0, 1, 7, 500, 10**6)] == pytest.approx([0.4] * 5)
    assert train.selection_loss(trainer.run, {"rec": 10.0, "kl": 2.0}) == pytest.approx(
        10.8
    )
    trainer, _ = train.setup(tiny_config("ae"), tmp_path / "ae")
    sched = train.step_fns(trainer).kl_schedule
    assert {float(sched(s)) for s in (0, 9, 10**6)} == {0.0}
    assert (
        train.selection_loss(trainer.run, {"rec": 10.0, "kl": 2.0, "elbo_nll": 12.0})
        == 10.0
    )


@pytest.mark.parametrize(
    "method, overrides, selection",
    [
        ("vae", {}, "elbo"),
        # No ramp from 0: the KL weight is 0 throughout, a pure autoencoder.
        ("vae", {"train.kl_warmup_epochs": 0.0, "train.kl_start": 0.0}, "rec"),
        ("vae", {"train.kl_warmup_epochs": 0.0, "train.kl_start": 1.0}, "elbo"),
        ("bn_vae", {"train.kl_warmup_epochs": 0.0}, "rec"),
        ("beta_vae", {"train.beta": 0.0}, "rec"),
        ("beta_vae", {"train.beta": 0.4}, "beta"),
        ("ae", {}, "rec"),
        ("cyclic", {"train.kl_warmup_epochs": 0.0}, "elbo"),  # rises to 1
        ("cyclic_epoch_reset", {"train.kl_warmup_epochs": 0.0}, "rec"),
    ],
)
def test_selection_on_rec_when_the_kl_weight_is_always_zero(
    method, overrides, selection
):
    run = config_lib.resolve(tiny_config(method, **overrides), 50)
    assert run.method.selection == selection
    assert run.method_name == method
    row = methods.METHODS[method]
    always_zero = methods.kl_weight_always_zero(row, run.train)
    assert always_zero == (selection == "rec")


def test_always_zero_kl_selects_the_reconstruction_in_the_loop(tmp_path):
    config = tiny_config("vae", **{"train.kl_warmup_epochs": 0.0})
    trainer, _ = train.setup(config, tmp_path)
    assert {float(train.step_fns(trainer).kl_schedule(s)) for s in (0, 9, 999)} == {0.0}
    val = {"rec": 10.0, "kl": 2.0, "elbo_nll": 12.0}
    assert train.selection_loss(trainer.run, val) == 10.0


def test_cyclic_methods_build_their_schedules_from_the_run(tmp_path):
    config = tiny_config("cyclic", **{"train.cycles": 2, "train.cycle_ratio": 0.5})
    trainer, _ = train.setup(config, tmp_path)
    spec = train.schedule_spec(trainer)
    sched = train.step_fns(trainer).kl_schedule
    period = spec.total_steps / 2
    assert spec.total_steps == spec.steps_per_epoch * config.train.epochs
    assert float(sched(0)) == 0.0
    assert float(sched(int(period * 0.5))) == pytest.approx(1.0)
    assert float(sched(int(math.ceil(period)))) < 0.5  # the second cycle restarts


# -- δ-VAE -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delta, lo, hi",
    [
        (0.1, 0.7023, 1.3313),
        (0.15, 0.6412, 1.4093),
        (0.2, 0.5915, 1.4761),
        (0.25, 0.5493, 1.5355),
    ],
)
def test_delta_sigma_bounds_match_the_reference(delta, lo, hi):
    v_l, v_u = posteriors.delta_variance_bounds(delta)
    assert math.sqrt(v_l) == pytest.approx(lo, abs=1e-4)
    assert math.sqrt(v_u) == pytest.approx(hi, abs=1e-4)
    for v in (v_l, v_u):
        assert math.log(v) - v + 2 * delta + 1 == pytest.approx(0.0, abs=1e-9)


def test_delta_vae_kl_is_at_least_n_delta_for_any_encoder_output():
    delta, n = 0.15, 6
    head = posteriors.DeltaGaussianHead(delta)
    raw = (
        jax.random.normal(jax.random.key(0), (2, 500, n))
        * jnp.array([30.0, 1.0])[:, None, None]
    )
    mu, logvar = raw[0], raw[1]
    post = head.apply({}, mu, logvar, jnp.ones(500), train=True)
    kl_dim = posteriors.gaussian_kl(*post)
    assert bool(jnp.all(kl_dim >= delta - 1e-5))
    assert float(jnp.min(jnp.sum(kl_dim, -1))) >= n * delta - 1e-4
    # The reference's identity: KL_j = δ + max(0, m)/2 + 5e-7.
    expected = delta + 0.5 * jax.nn.relu(mu) + 5e-7
    np.testing.assert_allclose(kl_dim, expected, rtol=1e-3, atol=1e-4)


# -- vMF: the importance weights use matching densities ----------------------------


def test_vmf_prior_over_posterior_ratio_has_mean_one():
    pytest.importorskip("bnvae_jax.models.vmf")
    family = latents.vmf_family(kappa=5.0, dim=4, kl_formula="guu")
    direction = jnp.array([[0.0, 0.6, 0.0, 0.8]])
    post = latents.DirectionPosterior(jnp.repeat(direction, 20000, 0))
    keys = jax.random.split(jax.random.key(1), 20000)
    z = family.sample_rows(post, keys)
    np.testing.assert_allclose(jnp.linalg.norm(z, axis=-1), 1.0, atol=1e-5)
    ratio = np.exp(np.asarray(family.prior_log_prob(z) - family.log_prob(post, z)))
    se = ratio.std() / math.sqrt(len(ratio))
    assert abs(ratio.mean() - 1.0) < 4 * se + 1e-3


# -- Agg-VAE: one side moves, the other stays bitwise -------------------------------


def _state_and_batch(method, tmp_path, **overrides):
    trainer, state = train.setup(tiny_config(method, **overrides), tmp_path)
    batch = eval_run.batch_arrays(trainer.plan.make_batch(0))
    return trainer, state, batch


def _copy(tree):
    return jax.tree_util.tree_map(lambda x: np.array(x), tree)


@pytest.mark.parametrize(
    "update, frozen", [("encoder", "decoder"), ("decoder", "encoder")]
)
def test_partial_step_leaves_the_other_side_bitwise_unchanged(tmp_path, update, frozen):
    trainer, state, batch = _state_and_batch("agg_vae", tmp_path)
    before = _copy(state.params)
    step = steps.jit_train_step(train.step_fns(trainer), update=update)
    new, _ = step(state, batch, trainer.rng, sub=np.int32(3))
    after = _copy(new.params)
    for a, b in zip(
        jax.tree_util.tree_leaves(before[frozen]),
        jax.tree_util.tree_leaves(after[frozen]),
    ):
        assert a.tobytes() == b.tobytes()
    moved = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(before[update]),
            jax.tree_util.tree_leaves(after[update]),
        )
    ]
    assert all(moved)
    # Encoder-only steps do not advance the annealing counter.
    assert int(new.step) == (0 if update == "encoder" else 1)


def test_agg_vae_controller_resumes_exactly(tmp_path):
    overrides = {"train.agg_inner_steps": 6, "train.agg_check_every": 2, **NO_DECODING}
    straight = train.train_and_evaluate(
        tiny_config("agg_vae", **overrides), str(tmp_path / "a")
    )
    first = dict(overrides, **{"train.epochs": 1})
    half = train.train_and_evaluate(
        tiny_config("agg_vae", **first), str(tmp_path / "b")
    )
    resumed = train.train_and_evaluate(
        tiny_config("agg_vae", **overrides), str(tmp_path / "b")
    )
    assert half["epochs_run"] == 1 and resumed["epochs_run"] == 2
    assert resumed["aggressive_inner_steps"] == straight["aggressive_inner_steps"] > 0
    assert resumed["test"] == straight["test"]
    on_disk = json.loads((tmp_path / "b" / "results.json").read_text())
    assert on_disk["aggressive_inner_steps"] == straight["aggressive_inner_steps"]


# -- SA-VAE ------------------------------------------------------------------------


def test_svi_steps_lower_every_examples_loss_on_a_known_objective():
    # rec(z) = ||z - t||^2: the expected loss under q is closed form.
    target = jnp.array([[2.0, -1.0], [0.5, 0.5], [-3.0, 0.0]])

    def expected_loss(post):
        mean_sq = jnp.sum(jnp.square(post.mu - target) + jnp.exp(post.logvar), -1)
        return mean_sq + jnp.sum(posteriors.gaussian_kl(*post), -1)

    start = Posterior(jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    keys = jax.random.split(jax.random.key(0), 3)
    refined = svi.refine(
        start,
        lambda z, k: jnp.sum(jnp.square(z - target), -1),
        keys,
        kl_weight=1.0,
        cfg=ModelConfig(svi_steps=60, svi_lr=0.05, svi_momentum=0.5, svi_clip=5.0),
    )
    before, after = expected_loss(start), expected_loss(refined)
    assert bool(jnp.all(after < before - 0.5))
    # Near the optimum of the expected loss, mu = 2t/3 and sigma^2 = 1/3 (the
    # single-sample gradients leave noise of a few tenths).
    np.testing.assert_allclose(refined.mu, 2 * target / 3, atol=0.5)
    np.testing.assert_allclose(jnp.exp(refined.logvar), 1 / 3, atol=0.25)


def test_svi_is_differentiable_through_the_unrolled_steps():
    target = jnp.array([[1.0, 2.0]])

    def final_loss(mu0):
        post = svi.refine(
            Posterior(mu0, jnp.zeros_like(mu0)),
            lambda z, k: jnp.sum(jnp.square(z - target), -1),
            jax.random.split(jax.random.key(0), 1),
            kl_weight=1.0,
            cfg=ModelConfig(svi_steps=3, svi_lr=0.1, svi_momentum=0.5, svi_clip=100.0),
        )
        return jnp.sum(jnp.square(post.mu - target))

    mu0 = jnp.array([[0.3, -0.2]])
    grad = jax.grad(final_loss)(mu0)
    eps = 1e-3
    numeric = [
        (final_loss(mu0.at[0, j].add(eps)) - final_loss(mu0.at[0, j].add(-eps)))
        / (2 * eps)
        for j in range(2)
    ]
    np.testing.assert_allclose(grad[0], numeric, rtol=1e-2)


def test_sa_vae_refinement_lowers_the_per_example_loss_of_a_model(tmp_path):
    trainer, state, batch = _state_and_batch(
        "sa_vae", tmp_path, **{"model.svi_steps": 15}
    )
    model, variables = trainer.model, train.steps.variables(state)
    tokens, lengths, mask = batch["tokens"], batch["lengths"], batch["mask"]
    keys = jax.random.split(jax.random.key(3), len(mask))
    post0 = model.apply(variables, tokens, lengths, mask, train=False, method="encode")
    post_k = svi.eval_posterior(model, variables, tokens, lengths, mask, keys)

    def mc_loss(post):  # 64-sample estimate of rec + KL per example
        def one(k):
            z = posteriors.gaussian_sample(post, k)
            return model.apply(
                variables, tokens, lengths, z, train=False, method="reconstruction"
            )

        rec = jnp.mean(jax.vmap(one)(jax.random.split(jax.random.key(9), 64)), 0)
        return rec + jnp.sum(posteriors.gaussian_kl(*post), -1)

    real = np.asarray(mask) > 0
    before, after = np.asarray(mc_loss(post0))[real], np.asarray(mc_loss(post_k))[real]
    assert after.mean() < before.mean()
    assert (after < before).mean() >= 0.8


# -- Pretrained encoder + decoder reset ---------------------------------------------


def test_init_from_keeps_the_encoder_and_reinitialises_the_decoder(tmp_path):
    ae_dir = tmp_path / "ae"
    train.train_and_evaluate(
        tiny_config("ae", **{"train.epochs": 1}, **NO_DECODING), str(ae_dir)
    )
    ae_trainer, ae_state = train.setup(tiny_config("ae"), ae_dir, write=False)
    ae_best, _ = ae_trainer.ctx.ckpt.restore_best(loop_lib.state_tree(ae_state))

    config = tiny_config("bn_vae", init_from=str(ae_dir), seed=5)
    trainer, fresh = train.setup(config, tmp_path / "bn")
    fresh_params = _copy(fresh.params)
    state, loop = train.start(trainer, fresh)
    assert loop.epoch == 0
    # Same tree structure and values (a zip over leaves would miss a part).
    chex.assert_trees_all_equal(ae_best["params"]["encoder"], state.params["encoder"])
    # The decoder and the BN head are this run's fresh initialisation.
    for part in ("decoder", "head"):
        chex.assert_trees_all_equal(fresh_params[part], state.params[part])
    differs = [
        not np.array_equal(a, b)
        for a, b in zip(
            jax.tree_util.tree_leaves(ae_best["params"]["decoder"]),
            jax.tree_util.tree_leaves(state.params["decoder"]),
        )
    ]
    assert all(differs)


def test_init_from_a_bad_directory_is_one_clear_error(tmp_path):
    config = tiny_config("free_bits_dim", init_from=str(tmp_path / "nowhere"))
    trainer, state = train.setup(config, tmp_path / "run")
    with pytest.raises(WorkdirError, match="not a run directory"):
        train.start(trainer, state)


# -- Learnable γ (beyond the paper) -------------------------------------------------


def test_learnable_gamma_never_goes_below_its_floor():
    bn = posteriors.FixedScaleBatchNorm(0.6, learn_gamma=True, gamma_min=0.3)
    x = jax.random.normal(jax.random.key(0), (64, 5))
    mask = jnp.ones(64)
    variables = bn.init(jax.random.key(1), x, mask, train=True)
    params = variables["params"]
    gamma0 = 0.3 + jax.nn.softplus(params["gamma_raw"])
    np.testing.assert_allclose(gamma0, 0.6, rtol=1e-6)

    def loss(p):  # pushes the scale down as hard as it can
        out, _ = bn.apply(
            {"params": p, "batch_stats": variables["batch_stats"]},
            x,
            mask,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum(jnp.square(out))

    grad_fn = jax.jit(jax.grad(loss))
    for _ in range(300):
        g = grad_fn(params)
        # Only the scale moves (a large step straight into the floor).
        params = dict(params, gamma_raw=params["gamma_raw"] - 5.0 * g["gamma_raw"])
        gamma = 0.3 + jax.nn.softplus(params["gamma_raw"])
        assert float(jnp.min(gamma)) >= 0.3
    assert float(jnp.max(gamma)) < 0.35  # it went down to the floor
    # The batch std of the output is gamma: the KL bound n*gamma_min^2/2 holds.
    out, _ = bn.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        x,
        mask,
        train=True,
        mutable=["batch_stats"],
    )
    assert float(jnp.min(jnp.std(out, 0))) >= 0.3 - 1e-3


def test_learnable_gamma_needs_a_floor_below_gamma():
    config = tiny_config(
        "bn_vae", **{"model.learn_gamma": True, "model.gamma_min": 0.7}
    )
    with pytest.raises(ConfigError, match="gamma_min"):
        config_lib.resolve(config)


# -- Skip-VAE and the language model -------------------------------------------------


def test_skip_decoder_feeds_z_to_the_output_layer_consistently():
    cfg = make_model_config(
        head="gaussian", skip=True, dec_dropout_in=0.0, dec_dropout_out=0.0
    )
    model = TextVAE(cfg)
    tokens = jnp.array([[1, 4, 5, 6, 2], [1, 7, 8, 2, 0]], jnp.int32)
    lengths = jnp.array([5, 4], jnp.int32)
    variables = model.init(
        {"params": jax.random.key(0), "sample": jax.random.key(1)},
        tokens,
        lengths,
        jnp.ones(2),
        train=False,
    )
    kernel = variables["params"]["decoder"]["out"]["kernel"]
    assert kernel.shape[0] == cfg.dec_hidden + cfg.latent_dim
    z = jax.random.normal(jax.random.key(2), (2, cfg.latent_dim))
    full = model.apply(
        variables,
        tokens[:, :-1],
        z,
        train=False,
        method=lambda m, x, z, train: m.decoder(x, z, train=train),
    )
    state = model.apply(variables, z, method="decode_init")
    for t in range(tokens.shape[1] - 1):
        state, logits = model.apply(
            variables, state, tokens[:, t], z, method="decode_step"
        )
        np.testing.assert_allclose(logits, full[:, t], atol=1e-5)


def test_lstm_lm_has_no_latent_and_an_exact_likelihood(tmp_path):
    config = tiny_config("lstm_lm", **{"train.epochs": 1})
    results = train.train_and_evaluate(config, str(tmp_path))
    test = results["test"]
    assert test["kl"] == 0.0 and test["au"] == 0 and test["iw_samples"] == 1
    assert test["iw_nll"] == pytest.approx(test["elbo_nll"], rel=1e-6)
    trainer, state = train.setup(config, tmp_path, write=False)
    assert "encoder" not in state.params


# -- Every method through the same loop ----------------------------------------------


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_trains_evaluates_and_reports(tmp_path, name):
    if name == "vmf_vae":
        pytest.importorskip("bnvae_jax.models.vmf")
    overrides = {
        "train.max_steps": 4,
        "train.agg_inner_steps": 4,
        "model.svi_steps": 2,
        "eval.iw_samples": 4,
        "eval.iw_chunk": 4,
    }
    # Decoding differs between methods only for these (the others decode a
    # Gaussian posterior's mean through the same decoder).
    if name not in ("vmf_vae", "sa_vae", "skip_vae", "lstm_lm"):
        overrides |= NO_DECODING
    results = train.train_and_evaluate(tiny_config(name, **overrides), str(tmp_path))
    test = results["test"]
    assert results["method"] == name and results["steps"] == 4
    for key in ("iw_nll", "elbo_nll", "rec", "kl", "au"):
        assert np.isfinite(test[key]), key
    assert test["kl"] >= 0.0
    if "eval.num_prior_samples" not in overrides:  # decoded, and written
        for f in ("reconstructions.txt", "prior_samples.txt"):
            assert (tmp_path / "samples" / f).read_text().count("\n") >= 3, f
    if name == "delta_vae":
        assert test["kl"] >= 4 * 0.15 - 1e-4
    if name == "vmf_vae":
        assert test["mi"] is None
    if name == "du_vae":
        assert test["kl"] > 0.0
        _check_du_run_loads(tmp_path)


def _check_du_run_loads(workdir):
    """``bnvae_jax.load`` gives a DU-VAE run back, with its BN head's own γ."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a 4-step run's running statistics lag
        model = bnvae_jax.load(workdir)
    assert isinstance(model, bnvae_jax.TextModel)
    assert model.module.cfg.head == "du_gaussian"
    assert bn_stats.has_bn_head(model.variables)
    w = np.asarray(model.variables["params"]["head"]["bn"]["scale"], np.float64)
    assert not np.allclose(w, 0.5)  # the scale is learnt ...
    gamma, _ = bn_stats.head_scale_and_shift(model.module, model.variables)
    # ... and precise BN / the lag report see it at RMS model.du_gamma.
    np.testing.assert_allclose(gamma, 0.5 * w / np.sqrt(np.mean(w**2)), rtol=1e-5)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"model.du_dropout": 1.0}, "du_dropout"),
        ({"model.du_alpha": 0.0}, "du_alpha"),
        ({"model.du_gamma": 0.0}, "du_gamma"),
        ({"model.bn_remedy": "relative_eps"}, "bn_remedy"),
        ({"data.batch_size": 1}, "batch_size"),
    ],
)
def test_du_vae_settings_are_checked(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config_lib.resolve(tiny_config("du_vae", **overrides))


def test_du_vae_may_go_without_a_floor_when_nothing_is_dropped():
    config_lib.resolve(
        tiny_config("du_vae", **{"model.du_alpha": 0.0, "model.du_dropout": 0.0})
    )


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known methods: .*sa_vae"):
        methods.get_method("savae")
