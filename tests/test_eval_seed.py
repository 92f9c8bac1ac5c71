"""Evaluation noise depends on the training seed (unless asked not to)."""

import pathlib

import jax
import ml_collections
import numpy as np

from bnvae_jax import cli
from bnvae_jax import config as config_lib
from bnvae_jax.evaluation import run as eval_run
from bnvae_jax.tasks import text_vae as train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _eval_cfg(**overrides):
    config = config_lib.default_config()
    config.eval.update(overrides)
    return config_lib.resolve(config, 10).eval


def _data(key):
    return np.asarray(jax.random.key_data(key))


def test_run_seed_is_folded_into_the_evaluation_key_by_default():
    cfg = _eval_cfg()
    assert cfg.fold_run_seed
    a, b = eval_run.root_key(cfg, 783435), eval_run.root_key(cfg, 101)
    assert not np.array_equal(_data(a), _data(b))
    want = jax.random.fold_in(jax.random.key(cfg.seed), 101)
    np.testing.assert_array_equal(_data(b), _data(want))
    # Different draws downstream: the MI / IW samples of the two runs differ.
    assert not np.allclose(jax.random.normal(a, (4,)), jax.random.normal(b, (4,)))


def test_old_behaviour_shares_eval_seed_draws_across_runs():
    cfg = _eval_cfg(fold_run_seed=False)
    a, b = eval_run.root_key(cfg, 783435), eval_run.root_key(cfg, 101)
    np.testing.assert_array_equal(_data(a), _data(b))
    np.testing.assert_array_equal(_data(a), _data(jax.random.key(cfg.seed)))


def test_a_saved_config_without_the_key_keeps_its_shared_draws():
    saved = config_lib.default_config().to_dict()
    del saved["eval"]["fold_run_seed"]
    cfg = config_lib.resolve(ml_collections.ConfigDict(saved), 10).eval
    assert not cfg.fold_run_seed


def test_the_train_loop_evaluates_with_the_run_keyed_noise(tmp_path):
    config = cli.load_config_file(str(ROOT / "configs" / "tiny.py"))
    config.seed = 5
    trainer, _ = train.setup(config, str(tmp_path))
    want = eval_run.root_key(trainer.run.eval, 5)
    np.testing.assert_array_equal(_data(trainer.eval_key), _data(want))
