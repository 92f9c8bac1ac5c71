"""Test setup: CPU only, small compile times, shared tiny fixtures."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_platforms", "cpu")


def make_model_config(**overrides):
    """A tiny ``ModelConfig``; tests override only what they exercise."""
    from bnvae_jax.config_lib import ModelConfig

    values = dict(
        vocab_size=12,
        emb_dim=8,
        enc_hidden=8,
        dec_hidden=8,
        latent_dim=4,
        head="bn_gaussian",
        gamma=0.5,
        bn_momentum=0.1,
        bn_eps=1e-5,
        dec_dropout_in=0.5,
        dec_dropout_out=0.5,
        enc_init="uniform",
        dec_init="uniform",
    )
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def tiny_model_config():
    return make_model_config
