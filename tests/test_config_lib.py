import dataclasses
import pathlib

import ml_collections
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
        config_lib.resolve(c)


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("model.gamma", 0.0, "gamma > 0"),
        ("model.gamma", -0.5, "gamma > 0"),
        ("model.latent_dim", -4, "latent_dim must be >= 1, got -4"),
        ("model.enc_hidden", 0, "enc_hidden must be >= 1, got 0"),
        ("data.batch_size", 1, "batch normalisation needs data.batch_size >= 2"),
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
        config_lib.resolve(c)
    assert "\n" not in str(info.value)


def test_vae_allows_gamma_zero_and_batch_one():
    c = config_lib.default_config()
    c.method = "vae"
    c.model.gamma = 0.0
    c.data.batch_size = 1
    config_lib.resolve(c)


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


def test_default_config_is_the_typed_defaults_without_derived_fields():
    config = config_lib.default_config()
    model_keys = set(config.model)
    assert {"vocab_size", "head", "skip", "svi_scale", "mixed_precision"}.isdisjoint(
        model_keys
    )
    assert "method_name" not in config and config.method == "bn_vae"
    assert config.model.gamma == config_lib.ModelConfig().gamma == 0.6
    assert config.eval.fold_run_seed is True
    # typed() is to_config()'s inverse on every key.
    run = config_lib.typed(config_lib.RunConfig, config)
    assert config_lib.to_config(run).to_dict() == config.to_dict()


def test_saved_config_lacking_keys_takes_the_defaults():
    saved = config_lib.default_config().to_dict()
    del saved["model"]["matmul_precision"], saved["data"]["synthetic"]["seed"]
    del saved["eval"]["fold_run_seed"], saved["parallel"], saved["init_from"]
    saved["model"]["gamma"] = 0.9
    saved["model"]["gone_key"] = 1  # a key from a later or older version
    run = config_lib.resolve(ml_collections.ConfigDict(saved), 10)
    assert run.model.gamma == 0.9 and run.model.matmul_precision == "highest"
    assert run.data.synthetic.seed == 0 and run.init_from == ""
    assert run.parallel == config_lib.ParallelConfig()
    assert run.eval.fold_run_seed is False  # its value before the key existed


def test_dialog_config_keys_and_docs_come_from_its_dataclasses():
    from bnvae_jax.tasks.dialog import config as dialog_config

    config = dialog_config.default_config()
    assert config.task == "dialog" and config.method == "bn_cvae"
    assert config.model.embedding_file == "" and "vocab_size" not in config.model
    docs = cli.config_docs("dialog")
    assert [k for k in config_lib.flatten(config) if not docs.get(k)] == []
    assert docs["method"] == "cvae | cvae_bow | bn_cvae"
    for split in ("train", "valid", "test"):
        config.data[f"{split}_file"] = "x"
    run = dialog_config.resolve(config, 50, 4)
    assert (run.model.vocab_size, run.model.num_topics) == (50, 4)
    assert run.model.head == "bn_gaussian" and run.method_name == "bn_cvae"
    assert run.architecture == (
        ("method", "bn_cvae"),
        ("data.max_vocab", 10000),
        ("data.max_utt_len", 40),
        ("data.context_size", 10),
        *((f"model.{k}", getattr(run.model, k)) for k in DIALOG_SIZES),
    )
    config.model.topic_dim = 0
    with pytest.raises(ConfigError, match="model.topic_dim must be >= 1, got 0"):
        dialog_config.resolve(config)


DIALOG_SIZES = (
    "emb_dim utt_hidden ctx_hidden dec_hidden latent_dim topic_dim prior_hidden "
    "bow_hidden"
).split()


def test_text_architecture_is_the_keys_checkpoints_depend_on():
    c = config_lib.default_config()
    c.model.latent_dim = 16
    run = config_lib.resolve(c, 100)
    assert run.architecture == (
        ("method", "bn_vae"),
        ("model.emb_dim", 64),
        ("model.enc_hidden", 128),
        ("model.dec_hidden", 128),
        ("model.latent_dim", 16),
        ("model.learn_gamma", False),
    )


@pytest.mark.parametrize(
    "path,value,message",
    [
        ("data.max_utt_len", 2, "data.max_utt_len must be >= 3, got 2"),
        ("data.eval_batch_size", 0, "data.eval_batch_size must be >= 1"),
        ("data.format", "csv", "data.format='csv' is not one of auto, jsonl, text"),
        ("data.batch_size", 1, "batch normalisation needs data.batch_size >= 2"),
        ("model.gamma", 0.0, "bn_cvae needs model.gamma > 0"),
        ("train.learning_rate", 0.0, "train.learning_rate must be positive"),
        ("train.patience_increase", 0.0, "train.patience_increase must be > 0"),
        ("train.log_every_steps", 0, "train.log_every_steps must be >= 1"),
        ("eval.max_contexts", -1, "eval.max_contexts must be >= 0, got -1"),
        ("parallel.mode", "spmd", "parallel.mode='spmd' is not one of jit, pmap"),
        ("data.test_file", "", "data.test_file is not set"),
    ],
)
def test_dialog_values_are_checked_as_the_text_ones(path, value, message):
    from bnvae_jax.tasks.dialog import config as dialog_config

    c = dialog_config.default_config()
    for split in ("train", "valid", "test"):
        c.data[f"{split}_file"] = "x"
    section, key = path.split(".")
    c[section][key] = value
    with pytest.raises(ConfigError, match=message) as info:
        dialog_config.resolve(c)
    assert "\n" not in str(info.value)


@dataclasses.dataclass(frozen=True)
class _Inner:
    x: int = 3  # inner = x
    y: int = 0


@dataclasses.dataclass(frozen=True)
class _Example:
    hidden: int = config_lib.derived(7)  # not a key
    a: int = 1  # trailing
    # above,
    # two lines
    b: str = "b"

    # not attached: a blank line follows

    s: _Inner = _Inner()
    renamed: str = config_lib.key("", name="name")


def test_key_docs_read_trailing_and_above_comments():
    assert config_lib.key_docs(_Example, "top.") == {
        "top.a": "trailing",
        "top.b": "above, two lines",
        "top.s": "",
        "top.s.x": "inner = x",
        "top.s.y": "",
        "top.name": "",
    }
    assert config_lib.to_config(_Example()).to_dict() == {
        "a": 1,
        "b": "b",
        "s": {"x": 3, "y": 0},
        "name": "",
    }
