"""The lagging study: grid posterior, study config, staged snapshots, figures."""

import json
import math
import pathlib

import jax
import numpy as np
import pytest
from conftest import python_module, run_child

from bnvae_jax import cli
from bnvae_jax import config as config_lib
from bnvae_jax.analysis import curves, plots
from bnvae_jax.analysis import grid as grid_lib
from bnvae_jax.errors import ConfigError, WorkdirError
from bnvae_jax.evaluation import decoding
from bnvae_jax.models.vae import TextVAE
from bnvae_jax.tasks import lagging

ROOT = pathlib.Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def gaussian_log_lik(x, a, s, grid):
    """log N(x_i; a z_k, s²): [N, K]."""
    diff = x[:, None] - a * grid[None, :]
    return -0.5 * (np.square(diff) / s**2 + math.log(2 * math.pi * s**2))


@pytest.mark.parametrize("a, s", [(1.0, 1.0), (2.0, 0.5), (-0.7, 0.3), (0.2, 2.0)])
def test_grid_posterior_matches_the_gaussian_closed_form(a, s):
    # Prior N(0, 1), likelihood N(x; a z, s²): p(z|x) = N(a x / (a² + s²),
    # s² / (a² + s²)) and p(x) = N(x; 0, a² + s²).
    x = np.array([-3.0, -0.4, 0.0, 1.3, 2.5])
    grid = grid_lib.Grid().points()
    post = grid_lib.grid_posterior(gaussian_log_lik(x, a, s, grid), grid)
    denom = a**2 + s**2
    np.testing.assert_allclose(post.mean, a * x / denom, atol=1e-6)
    np.testing.assert_allclose(
        post.std, np.full_like(x, s / math.sqrt(denom)), atol=1e-5
    )
    expected_log_px = -0.5 * (x**2 / denom + math.log(2 * math.pi * denom))
    np.testing.assert_allclose(post.log_px, expected_log_px, atol=1e-5)


def test_grid_posterior_is_stable_for_huge_log_likelihoods():
    # Sentence log-likelihoods are hundreds of nats: log-sum-exp must hold.
    grid = grid_lib.Grid().points()
    log_lik = gaussian_log_lik(np.array([1.0]), 1.0, 0.1, grid) - 5000.0
    post = grid_lib.grid_posterior(log_lik, grid)
    assert np.isfinite(post.mean).all()
    np.testing.assert_allclose(post.mean, [1.0 / 1.01], atol=1e-6)


def test_grid_posterior_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="K = len"):
        grid_lib.grid_posterior(np.zeros((3, 5)), np.zeros(4))


def test_reference_grid_has_400_points():
    points = grid_lib.Grid(-20.0, 20.0, 0.1).points()
    assert points.shape == (400,)
    assert points[0] == -20.0 and points[-1] == pytest.approx(19.9)
    with pytest.raises(ConfigError, match="step > 0"):
        grid_lib.Grid(1.0, -1.0, 0.1)


def _tiny_vae(tiny_model_config):
    # PyTorch's default init: a decoder whose output clearly depends on z.
    cfg = tiny_model_config(latent_dim=1, head="gaussian", dec_init="torch_default")
    model = TextVAE(cfg)
    tokens = np.array([[1, 4, 5, 6, 2], [1, 7, 2, 0, 0]], np.int32)
    lengths = np.array([5, 3], np.int32)
    keys = {n: jax.random.key(i) for i, n in enumerate(("params", "sample", "dropout"))}
    variables = model.init(keys, tokens, lengths, np.ones(2, np.float32), train=False)
    rows = [
        np.array([1, 4, 5, 6, 2], np.int32),
        np.array([1, 7, 2], np.int32),
        np.array([1, 8, 9, 10, 11, 2], np.int32),
    ]
    return model, variables, rows


def test_log_likelihood_grid_equals_the_decoder_at_each_point(tiny_model_config):
    model, variables, rows = _tiny_vae(tiny_model_config)
    grid = np.array([-2.0, -0.5, 0.0, 0.3, 1.7])
    # Chunks that divide neither the sentences nor the grid.
    got = grid_lib.log_likelihood_grid(
        model, variables, rows, grid, sentence_chunk=2, grid_chunk=3
    )
    assert got.shape == (3, 5)
    tokens, lengths = decoding.pad_rows(rows)
    rec = jax.jit(
        lambda z: model.apply(
            variables, tokens, lengths, z, train=False, method="reconstruction"
        )
    )
    for k, z in enumerate(grid):
        direct = rec(np.full((len(rows), 1), z, np.float32))
        np.testing.assert_allclose(got[:, k], -np.asarray(direct), rtol=1e-5)
    assert np.ptp(got, axis=1).min() > 0.01  # the random decoder does read z


def test_grid_posterior_of_a_decoder_that_ignores_z_is_the_prior(tiny_model_config):
    # With the two paths of z into the decoder zeroed, p(x|z) is constant in z,
    # so the model posterior is the N(0, 1) prior on the grid.
    model, variables, rows = _tiny_vae(tiny_model_config)
    params = jax.tree_util.tree_map(np.array, variables["params"])
    params["decoder"]["init_state"]["kernel"][:] = 0.0
    params["decoder"]["lstm"]["w_ih"][-1:] = 0.0  # the row of z in [emb; z]
    variables = {**variables, "params": params}
    grid = grid_lib.Grid(-8.0, 8.0, 0.05).points()
    log_lik = grid_lib.log_likelihood_grid(model, variables, rows, grid, grid_chunk=64)
    post = grid_lib.grid_posterior(log_lik, grid)
    np.testing.assert_allclose(post.mean, 0.0, atol=1e-6)
    np.testing.assert_allclose(post.std, 1.0, atol=1e-4)


def test_log_likelihood_grid_needs_a_scalar_latent(tiny_model_config):
    model = TextVAE(tiny_model_config(latent_dim=2, head="gaussian"))
    with pytest.raises(ConfigError, match="latent_dim=1"):
        grid_lib.log_likelihood_grid(model, {}, [np.array([1, 2])], np.zeros(3))


def _study_config(**study):
    config = cli.load_config_file(str(ROOT / "configs" / "lagging.py"))
    tiny = cli.load_config_file(str(ROOT / "configs" / "tiny.py"))
    config.base.data.synthetic = tiny.data.synthetic
    config.base.model.emb_dim = 8
    config.base.model.enc_hidden = config.base.model.dec_hidden = 16
    config.base.train.log_every_steps = 5
    s = config.study
    s.models, s.batch_sizes, s.fig1_models, s.fig1_batch_size = (
        ("bn_vae:1.0",),
        (16,),
        ("bn_vae:1.0",),
        16,
    )
    s.snapshot_steps = (0, 6)
    s.num_points, s.grid_start, s.grid_stop, s.grid_step = 24, -4.0, 4.0, 0.5
    s.sentence_chunk, s.grid_chunk = 16, 8
    for key, value in study.items():
        s[key] = value
    return config


def test_the_paper_config_resolves_to_nine_settings():
    config = cli.load_config_file(str(ROOT / "configs" / "lagging.py"))
    study = lagging.resolve_study(config.study)
    names = [s.name for s in study.settings]
    assert len(names) == 9 and "bn_vae_g0.5_b16" in names and "vae_b64" in names
    assert study.grid.points().shape == (400,) and study.num_points == 500
    assert config.base.model.latent_dim == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ({"models": ("bn_vae:x",)}, "not a number"),
        ({"models": ("nope",)}, "nope"),
        ({"snapshot_steps": (0, 10, 5)}, "increasing"),
        ({"fig1_batch_size": 64}, "fig1"),
        ({"num_points": 1}, "num_points"),
    ],
)
def test_bad_study_settings_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        lagging.resolve_study(_study_config(**override).study)


def test_bn_vae_with_gamma_zero_is_refused_by_validation():
    config = _study_config()
    setting = lagging.Setting("bn_vae", 0.0, 16)
    with pytest.raises(ConfigError, match="gamma > 0"):
        config_lib.resolve(lagging.setting_config(config.base, setting))


def test_setting_config_needs_a_scalar_latent():
    config = _study_config()
    config.base.model.latent_dim = 2
    with pytest.raises(ConfigError, match="scalar latent"):
        lagging.setting_config(config.base, lagging.Setting("vae", None, 16))


def test_points_are_fixed_distinct_and_sorted():
    a = lagging.choose_points(1000, 500, seed=3)
    assert np.array_equal(a, lagging.choose_points(1000, 500, seed=3))
    assert len(np.unique(a)) == 500 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, lagging.choose_points(1000, 500, seed=4))
    with pytest.raises(ConfigError, match="exceeds"):
        lagging.choose_points(10, 11, seed=0)


def test_study_snapshots_resume_and_replot(tmp_path):
    config = _study_config()
    summary = lagging.run_study(config, str(tmp_path))
    snaps = summary["bn_vae_g1_b16"]
    assert [s["step"] for s in snaps] == [0, 6]
    with np.load(tmp_path / lagging.POINTS_FILE) as points:
        assert points["bn_vae_g1_b16/mu_theta"].shape == (2, 24)
        assert points["bn_vae_g1_b16/mu_phi"].shape == (2, 24)
        # Training moved both means between the snapshots.
        mu_phi = points["bn_vae_g1_b16/mu_phi"]
        assert np.abs(mu_phi[1] - mu_phi[0]).max() > 1e-3
    for name in (lagging.FIG1_FILE, lagging.FIG2_FILE):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((tmp_path / lagging.SUMMARY_FILE).read_text())
    assert saved["bn_vae_g1_b16"][1]["requested"] == 6

    # A rerun reuses every snapshot (same numbers, no new training).
    snapshot = tmp_path / "bn_vae_g1_b16" / lagging.SNAPSHOT_DIR / "step_6.npz"
    before = snapshot.stat().st_mtime_ns
    again = lagging.run_study(config, str(tmp_path))
    assert again == summary and snapshot.stat().st_mtime_ns == before
    assert lagging.run_study(config, str(tmp_path), plot_only=True) == summary

    with pytest.raises(WorkdirError, match="missing"):
        lagging.run_study(config, str(tmp_path / "empty"), plot_only=True)


def _metrics_file(workdir: pathlib.Path):
    workdir.mkdir(parents=True, exist_ok=True)
    records = [
        {"step": 5, "kind": "scalars", "values": {"train/kl": 9.0}},
        {"step": 8, "kind": "scalars", "values": {"valid/kl": 7.0}},  # no epoch
        {
            "step": 10,
            "kind": "scalars",
            "values": {"epoch": 0, "valid/kl": 3.0, "valid/mi": 1.0},
        },
        {"step": 20, "kind": "scalars", "values": {"epoch": 1, "valid/kl": 2.5}},
        {
            "step": 30,
            "kind": "scalars",
            "values": {"epoch": 2, "valid/kl": 4.0, "valid/mi": 2.5},
        },
    ]
    text = "".join(json.dumps({**r, "time": 0.0}) + "\n" for r in records)
    (workdir / "metrics.jsonl").write_text(text)


def test_dynamics_series_is_kl_minus_mi(tmp_path):
    _metrics_file(tmp_path)
    series = curves.read_curves(tmp_path)
    assert series.step.tolist() == [10, 20, 30]  # end-of-epoch rows only
    assert series.epoch.tolist() == [0, 1, 2]
    np.testing.assert_allclose(series.kl_aggregate, [2.0, np.nan, 1.5])  # no MI
    with pytest.raises(WorkdirError, match="no end-of-epoch valid/kl"):
        curves.read_curves(tmp_path / "nothing")


def test_figures_are_pngs_and_reject_ragged_rows(tmp_path):
    x = np.linspace(-2, 2, 10)
    path = plots.lagging_figure(
        [("a", [(0, x, x), (5, x, -x)]), ("b", [(0, x, 0 * x), (5, 5 * x, x)])],
        tmp_path / "f.png",
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="same snapshot count"):
        plots.lagging_figure([("a", [(0, x, x)]), ("b", [])], tmp_path / "g.png")
    _metrics_file(tmp_path / "run")
    series = curves.read_curves(tmp_path / "run")
    out = plots.dynamics_figure([("run", series)], tmp_path / "d.png")
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_dynamics_command_line(tmp_path):
    _metrics_file(tmp_path / "run")
    out = tmp_path / "fig.png"
    code, output = run_child(
        python_module(
            "bnvae_jax.dynamics", f"--workdir={tmp_path / 'run'}", f"--output={out}"
        ),
        120,
        cwd=ROOT,
        env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert code == 0, output[-500:]
    assert out.read_bytes()[:8] == PNG_MAGIC
