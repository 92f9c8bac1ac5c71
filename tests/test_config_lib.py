import pathlib

import pytest

from bnvae_jax import cli, methods
from bnvae_jax import config as config_lib
from bnvae_jax.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_default_config_resolves_to_typed_frozen_objects():
    run = config_lib.resolve(config_lib.default_config(), vocab_size=100)
    assert run.method == methods.METHODS["bn_vae"]
    assert run.model.head == "bn_gaussian"
    assert run.model.vocab_size == 100
    with pytest.raises(AttributeError):
        run.model.gamma = 1.0  # frozen
    hash(run.model)  # static argument of jit: must be hashable


def test_unknown_method_lists_known_ones():
    c = config_lib.default_config()
    c.method = "bn_vea"
    with pytest.raises(ConfigError, match="known methods: .*bn_vae, .*vae"):
        config_lib.validate(c)


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("model.gamma", 0.0, "gamma > 0"),
        ("model.gamma", -0.5, "gamma > 0"),
        ("model.latent_dim", -4, "latent_dim must be positive"),
        ("model.enc_hidden", 0, "enc_hidden must be positive"),
        ("data.batch_size", 1, "at least 2 with batch normalisation"),
        ("data.batch_size", -3, "batch_size"),
        ("model.dec_dropout_in", 1.0, "dec_dropout_in"),
        ("model.enc_init", "xavier", "torch_default, uniform"),
        ("train.learning_rate", 0.0, "learning_rate"),
        ("train.kl_start", 2.0, "kl_start"),
        ("eval.iw_samples", 0, "iw_samples"),
        ("data.source", "web", "synthetic, files"),
    ],
)
def test_invalid_values_are_one_line_errors(path, value, message):
    c = config_lib.default_config()
    section, key = path.split(".")
    c[section][key] = value
    with pytest.raises(ConfigError, match=message) as info:
        config_lib.validate(c)
    assert "\n" not in str(info.value)


def test_vae_allows_gamma_zero_and_batch_one():
    c = config_lib.default_config()
    c.method = "vae"
    c.model.gamma = 0.0
    c.data.batch_size = 1
    config_lib.validate(c)


def test_mistyped_key_names_nearest():
    c = config_lib.default_config()
    with pytest.raises(ConfigError, match="did you mean --config.model.latent_dim"):
        config_lib.check_override_keys(c, ["model.latent_dims"])
    with pytest.raises(
        ConfigError, match="did you mean --config.train.kl_warmup_epochs"
    ):
        config_lib.check_override_keys(c, ["train.kl_warmup_epoch"])
    config_lib.check_override_keys(c, ["model.gamma", "data", "train.epochs"])


@pytest.mark.parametrize("name", ["ptb", "yahoo", "yelp", "short_yelp", "snli"])
def test_every_corpus_config_names_its_tfds_builder(name):
    from bnvae_jax.data import tfds_builders

    config = cli.load_config_file(str(ROOT / "configs" / f"{name}.py"))
    assert config.data.tfds_name == name
    assert tfds_builders.builder_class(config.data.tfds_name).__name__
