"""The typed config: frozen dataclasses whose fields are the config's keys.

A base module (it imports no other layer of the package). Each key is declared
once, as a field with its default and its ``# doc`` (and, through ``key``, its
least value or choices and whether checkpoints depend on it); ``default_config``
is the ``ConfigDict`` of those defaults, and ``resolve`` validates a
``ConfigDict`` once and turns it back into the frozen objects (``RunConfig``),
so the library never reads a ``ConfigDict`` past it. Fields marked ``derived``
are set by ``resolve`` (from the method or the data), never by a user. Every
error a user can make in a config is raised here as one ``ConfigError`` line.
Loaded as a config file (``--config`` unset), this module's ``get_config`` is
the default run.
"""

# No ``from __future__ import annotations``: dataclasses with string annotations
# need their module in sys.modules, which a config file loaded by path is not.
import ast
import dataclasses
import difflib
import inspect
import textwrap
from collections.abc import Iterable, Mapping

import ml_collections

from bnvae_jax import methods as methods_lib
from bnvae_jax.errors import ConfigError


def derived(default=None):
    """A field ``resolve`` sets (from the method, other keys or the data): no key."""
    return dataclasses.field(default=default, metadata={"derived": True})


def key(default, *, arch: bool = False, **metadata):
    """A key's field: ``default`` and what ``resolve`` knows of the key.

    ``arch``: a workdir's checkpoints depend on the key (its shapes or data),
    so a workdir holding a run that differs in it is refused, never
    overwritten. ``metadata``: ``least``, the least value a run can use;
    ``choices``, the values it can take; ``name``, the key where it is not the
    field's name; ``absent``, the value of a config saved before the key
    existed (else the default).
    """
    return dataclasses.field(default=default, metadata={"arch": arch, **metadata})


def size(default: int):
    """A positive size that fixes parameter shapes (a ``key`` with ``arch``)."""
    return key(default, arch=True, least=1)


# The values of the config's string choices (the models implement them).
INIT_SCHEMES = ("torch_default", "uniform")  # models.layers.INIT_SCHEMES
VMF_KL_FORMULAS = ("guu", "uniform")  # models.vmf.VMF_KL
# model.bn_remedy: how the bn_gaussian head divides out the spread of μ
# (models.posteriors.FixedScaleBatchNorm implements them).
BN_REMEDIES = ("none", "relative_eps", "weight_norm")
# python -m bnvae_jax.classify: a fine-tuned or a frozen encoder, and how the
# labelled subsets are drawn (tasks.classify.ClassifierConfig).
CLF_MODES = ("frozen", "finetune")
CLF_SUBSETS = ("balanced", "random")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The ``data.synthetic`` section: the embedded generator's settings.

    ``data.datasets`` turns it into the generator's ``SyntheticSpec``.
    """

    num_train: int = 4000  # sentences generated for each split
    num_valid: int = 500  # validation sentences
    num_test: int = 500  # test sentences
    vocab_size: int = 200  # words of the generating language model
    length: int = 10  # tokens per sentence
    latent_dim: int = 2  # latent of the generator (mixture of Gaussians)
    num_components: int = 4  # Gaussian components of the latent mixture
    emb_dim: int = 32  # word embedding size of the generating LSTM
    hidden_dim: int = 32  # hidden size of the generating LSTM
    temperature: float = 1.0  # softmax temperature of the word distribution
    seed: int = 0  # seeds the generator's weights, mixture means and samples


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the text VAE's sentences come from and how they are batched."""

    # 'synthetic' (embedded generator), 'files' or 'tfds'
    source: str = key("synthetic", choices=("synthetic", "files", "tfds"))
    # data.source='tfds': a builder of bnvae_jax.data.tfds_builders, prepared into
    # tfds_data_dir from the files in tfds_manual_dir on first use (no TensorFlow).
    tfds_name: str = ""  # ptb, yahoo, yelp, short_yelp or snli
    tfds_manual_dir: str = ""  # the corpus files the builder reads
    tfds_data_dir: str = ""  # where the prepared array_record files live
    train_file: str = ""  # plain-text corpus: one sentence a line, whitespace tokens
    valid_file: str = ""  # validation corpus, same format
    test_file: str = ""  # test corpus, same format
    labelled: bool = False  # lines are LABEL<TAB>TEXT (labels are ignored by the VAE)
    max_tokens: int = key(1000, least=1)  # longer lines are dropped and counted
    # sentences per training batch (global, over all devices)
    batch_size: int = key(32, least=1)
    eval_batch_size: int = key(32, least=1)  # sentences per evaluation batch
    # time axis padded to a multiple of this: few compiled shapes
    bucket_width: int = key(8, least=1)
    batching: str = "same_length"  # 'same_length' (reference) or 'mixed'
    synthetic: SyntheticConfig = SyntheticConfig()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and choices of the text VAE (hashable: bound statically into jit).

    The defaults are the default demo's sizes; the dataset configs set the paper's.
    """

    vocab_size: int = derived(0)  # from the data
    head: str = derived("gaussian")  # the method's posterior head
    skip: bool = derived(False)  # z feeds the output layer (Skip-VAE)
    svi_scale: float = derived(1.0)  # the SVI loss is the per-example loss times this
    mixed_precision: bool = derived(False)  # train.mixed_precision, in training
    emb_dim: int = size(64)  # word embedding size (E)
    enc_hidden: int = size(128)  # encoder LSTM size
    dec_hidden: int = size(128)  # decoder LSTM size
    latent_dim: int = size(8)  # n
    gamma: float = 0.6  # fixed BN scale of the bn_gaussian head
    # beyond the paper: learnt per-dim scale >= gamma_min
    learn_gamma: bool = key(False, arch=True)
    gamma_min: float = 0.3  # floor of the learnt scale (KL >= n gamma_min^2 / 2)
    du_gamma: float = 0.5  # du_vae: RMS of the learnt BN scale of the mean
    du_dropout: float = 0.2  # du_vae: dropout rate on the posterior variance (train)
    du_alpha: float = 1.0  # du_vae: variance floor alpha/(2 pi e) (entropy >= 0 at 1)
    delta: float = 0.15  # delta_vae: KL >= delta in every dimension
    kappa: float = 13.0  # vmf_vae: fixed concentration
    # 'guu' (Guu et al., the paper's) or 'uniform' (exact)
    vmf_kl: str = key("guu", choices=VMF_KL_FORMULAS)
    svi_steps: int = 20  # sa_vae: SVI steps refining q (train and evaluation)
    svi_lr: float = 1.0  # sa_vae: learning rate of the SVI steps
    svi_momentum: float = 0.5  # sa_vae: momentum of the SVI steps
    svi_clip: float = 5.0  # L2 clip of each example's mean / logvar gradient
    bn_momentum: float = 0.1  # PyTorch convention: new = (1 - m) old + m batch
    bn_eps: float = 1e-5  # added to the batch variance of BN
    # Beyond the paper: keep the KL bound when the pre-BN variance of μ is tiny
    # ('none' = the paper's v + eps; 'relative_eps'; 'weight_norm'; see
    # BN_REMEDIES).
    bn_remedy: str = key("none", choices=BN_REMEDIES)
    dec_dropout_in: float = 0.5  # dropout on decoder word embeddings (not on z)
    dec_dropout_out: float = 0.5  # dropout on decoder LSTM outputs
    # 'torch_default' ([BN]) or 'uniform' ([HE]/[LI])
    enc_init: str = key("torch_default", choices=INIT_SCHEMES)
    # 'uniform' (reference) or 'torch_default'
    dec_init: str = key("uniform", choices=INIT_SCHEMES)
    # Float32 matmul precision: 'highest' (true float32 everywhere, as the
    # reference; GPUs would otherwise use TF32), 'high' or 'default'.
    matmul_precision: str = key("highest", choices=("highest", "high", "default"))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and schedule settings of the train loop."""

    epochs: int = 8  # upper bound on epochs (dataset configs: 100)
    max_steps: int = 0  # stop after this many training steps (0: no limit)
    learning_rate: float = 1.0  # plain SGD, momentum 0 (README of [BN]: 0.5)
    clip_norm: float = 5.0  # global L2 norm over all parameters
    kl_start: float = 0.0  # KL weight before the first step
    # ramp to 1 over this many epochs (0: constant; paper 10)
    kl_warmup_epochs: float = key(2.0, least=0)
    beta: float = 1.0  # beta_vae: the constant KL weight
    target_kl: float = 4.0  # free_bits / free_bits_dim: lambda (total over dims)
    cycles: int = 4  # cyclic: M cycles over train.epochs
    cycle_ratio: float = 0.5  # cyclic: ramp fraction R of each cycle
    cycle_epochs: int = 10  # cyclic_epoch_reset: epochs per cycle C
    agg_inner_steps: int = 100  # agg_vae: at most this many encoder steps - 1
    agg_check_every: int = 15  # agg_vae: inner-loss check period
    # plateau length (validation epochs) before an LR decay
    decay_epoch: int = key(5, least=1)
    lr_decay: float = 0.5  # factor applied to the learning rate at each decay
    max_decay: int = key(5, least=1)  # stop training at this many decays
    load_best_epoch: int = 15  # no decay before this epoch
    min_batch: int = 2  # skip batches with fewer real sentences (BN needs 2)
    # latest checkpoint cadence (plus every epoch end)
    checkpoint_every_steps: int = 500
    log_every_steps: int = 50  # training metrics logged every this many steps
    test_every_epochs: int = 5  # test-set ELBO pass for the log (0: never)
    # Train steps with bfloat16 matmul operands (float32 accumulation, gates,
    # softmax, BN statistics, KL); evaluation stays float32.
    mixed_precision: bool = False


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of the evaluation package."""

    iw_samples: int = key(500, least=1)  # importance samples per sentence
    iw_chunk: int = key(100, least=1)  # samples decoded together
    # sentences decoded together (0: from the devices; 4 on CPU)
    iw_batch: int = key(0, least=0)
    # Memory bound per device: the chunk shrinks to keep logits below this
    # (0: from the device's memory; 2^26 on CPU).
    iw_max_logits: int = key(0, least=0)
    iw_max_sentences: int = 0  # evaluate IW-NLL on the first N sentences (0: all)
    iw_splits: str = "valid,test"  # final IW-NLL on these splits (others: ELBO only)
    au_threshold: float = 0.01  # active unit: Var_x E_q[z_j] >= this
    num_reconstructions: int = 20  # sentences written per decoding strategy
    num_prior_samples: int = 20  # sentences decoded from z ~ N(0, I) per strategy
    beam_size: int = key(5, least=1)  # beam width of beam-search decoding
    max_decode_len: int = key(100, least=1)  # most tokens a decoded sentence gets
    seed: int = 0  # evaluation randomness (IW samples, MI, decoding)
    # The run's seed is folded into eval.seed, so runs of different seeds draw
    # different evaluation noise and their spread includes the estimators' noise.
    # False: every run shares eval.seed's draws (the behaviour before, and that of
    # a saved config from before the key existed).
    fold_run_seed: bool = key(True, absent=False)


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """The ``parallel`` section of every task's config (``bnvae_jax.parallel``).

    Unset multi-host values are read by JAX from the environment
    (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI).
    """

    # 'jit' (device mesh + NamedSharding) or 'pmap'
    mode: str = key("jit", choices=("jit", "pmap"))
    # devices used on each host (0: parallel.auto_devices picks)
    num_devices: int = key(0, least=0)
    distributed: bool = False  # multi-host: call jax.distributed.initialize
    coordinator_address: str = ""  # 'host:port' of process 0 ('': from the environment)
    num_processes: int = key(0, least=0)  # hosts (0: from the environment)
    process_id: int = key(-1, least=-1)  # this host (-1: from the environment)
    heartbeat_timeout_s: int = 60  # a host silent this long is dead: all others stop
    shutdown_timeout_s: int = 300  # a finished host waits this long for the others


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything the library needs, typed; ``resolve`` builds it once.

    Attributes:
      method: the row of ``methods.METHODS`` that ``method_name`` (the key
        ``method``) names, its selection as ``resolve`` adapts it.
      architecture: ``(key, value)`` of each key marked ``arch`` as the config
        gives it: what a workdir's checkpoints belong to.
    """

    method: methods_lib.Method = derived()
    # a row of bnvae_jax.methods.METHODS
    method_name: str = key("bn_vae", arch=True, name="method")
    seed: int = 783435  # the reference's default seed
    # Pretrained-encoder recipe (Li et al.): a finished run's directory whose best
    # encoder initialises this run; the decoder and the head start afresh.
    init_from: str = ""
    # Persistent XLA cache: 'user' (~/.cache/bnvae_jax/xla), a directory, '' off.
    compilation_cache: str = "user"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    # Data parallelism (README "Scaling out"): data.batch_size is the global batch,
    # split over every device used; results do not depend on the device count.
    parallel: ParallelConfig = ParallelConfig()
    architecture: tuple[tuple[str, object], ...] = derived(())

    def with_vocab(self, vocab_size: int) -> "RunConfig":
        """The run with its vocabulary size (known once the data is read)."""
        model = dataclasses.replace(self.model, vocab_size=int(vocab_size))
        return dataclasses.replace(self, model=model)


def config_fields(cls) -> list[tuple[dataclasses.Field, str]]:
    """``(field, key)`` of each field of a typed config that is a config key."""
    return [
        (f, f.metadata.get("name", f.name))
        for f in dataclasses.fields(cls)
        if not f.metadata.get("derived")
    ]


def to_config(typed_config) -> ml_collections.ConfigDict:
    """The config keys of a typed config and their values (``typed``'s inverse)."""
    c = ml_collections.ConfigDict()
    for f, key in config_fields(typed_config):
        value = getattr(typed_config, f.name)
        c[key] = to_config(value) if dataclasses.is_dataclass(value) else value
    return c


def typed(cls, section: Mapping | ml_collections.ConfigDict):
    """``cls`` (a typed config) from the keys of a config ``section``.

    Sections within are typed alike. Keys ``cls`` lacks are ignored; derived
    fields keep their defaults; a field whose key the section lacks (a config
    saved before the key existed) takes its ``absent`` value where it has one,
    else its default.
    """
    values = {}
    for f, key in config_fields(cls):
        if key in section:
            value = section[key]
            if dataclasses.is_dataclass(f.default):
                value = typed(type(f.default), value)
            values[f.name] = value
        elif "absent" in f.metadata:
            values[f.name] = f.metadata["absent"]
    return cls(**values)


def key_docs(cls, prefix: str = "") -> dict[str, str]:
    """``{dotted key: its doc}`` of a typed config, in the order of its fields.

    A key's doc is the trailing ``  # ...`` of its field (as ``ruff format``
    writes it), else the comment lines directly above the field; a section's
    keys follow the section's own.
    """
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    keyed = {f.name: (f, key) for f, key in config_fields(cls)}
    docs = {}
    for node in ast.parse(source).body[0].body:
        if not isinstance(node, ast.AnnAssign) or node.target.id not in keyed:
            continue
        f, key = keyed[node.target.id]
        above, row = [], node.lineno - 1
        while lines[row - 1].lstrip().startswith("#"):
            above.insert(0, lines[row - 1].strip().lstrip("#").strip())
            row -= 1
        trailing = lines[node.end_lineno - 1].partition("  # ")[2].strip()
        docs[prefix + key] = trailing or " ".join(above)
        if dataclasses.is_dataclass(f.default):
            docs |= key_docs(type(f.default), prefix + key + ".")
    return docs


def default_config() -> ml_collections.ConfigDict:
    """Every knob of a run, with the reference's values unless noted."""
    return to_config(RunConfig())


def get_config() -> ml_collections.ConfigDict:
    """The default run (this file is the config file of ``--config`` unset)."""
    return default_config()


def corpus_config(
    *, emb_dim: int, hidden: int, labelled: bool = False
) -> ml_collections.ConfigDict:
    """The paper's protocol on a real corpus of plain files.

    Latent 32, KL weight 0 -> 1 over the first 10 epochs, up to 100 epochs, test
    ELBO logged every 5 epochs; batch 32, decoder dropout 0.5/0.5 and IW-NLL with
    500 samples are the defaults. Only the sizes and whether lines carry labels
    differ by corpus.
    """
    c = default_config()
    c.data.source = "files"
    c.data.labelled = labelled
    c.model.emb_dim = emb_dim
    c.model.enc_hidden = hidden
    c.model.dec_hidden = hidden
    c.model.latent_dim = 32
    c.train.epochs = 100
    c.train.kl_warmup_epochs = 10.0
    c.train.test_every_epochs = 5
    return c


def flatten(config: Mapping, prefix: str = "") -> dict[str, object]:
    """``{dotted key: value}`` of every leaf of a (nested) config."""
    flat = {}
    for name, value in config.items():
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            flat |= flatten(value, f"{prefix}{name}.")
        else:
            flat[prefix + name] = value
    return flat


def check_override_keys(config: ml_collections.ConfigDict, keys: Iterable[str]):
    """Raises ConfigError naming the nearest valid key for a mistyped override."""
    known = list(flatten(config))
    known_set = set(known) | {k.rsplit(".", 1)[0] for k in known if "." in k}
    for key in keys:
        if key in known_set:
            continue
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"; did you mean --config.{near[0]}?" if near else ""
        raise ConfigError(f"unknown config key --config.{key}{hint}")


def require(condition: bool, message: str) -> None:
    """Raises ``ConfigError(message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def require_choice(key: str, value: str, choices: Iterable[str]) -> None:
    """Raises a one-line ``ConfigError`` unless ``value`` is one of ``choices``."""
    require(value in choices, f"{key}={value!r} is not one of {', '.join(choices)}")


def parallel_config(config: ml_collections.ConfigDict) -> ParallelConfig:
    """The typed ``parallel`` section (defaults for configs saved before it existed)."""
    return typed(ParallelConfig, config.get("parallel") or {})


def check_parallel(cfg: ParallelConfig) -> None:
    """One-line ``ConfigError`` for parallel values that are wrong on any machine."""
    check_keys(cfg, "parallel.")
    require(
        not cfg.num_processes or cfg.process_id < cfg.num_processes,
        f"parallel.process_id={cfg.process_id} must be below "
        f"parallel.num_processes={cfg.num_processes}",
    )
    require(
        min(cfg.heartbeat_timeout_s, cfg.shutdown_timeout_s) >= 1,
        "parallel.heartbeat_timeout_s and parallel.shutdown_timeout_s must "
        "be >= 1 (seconds)",
    )


# The loop's settings every task's ``train`` section holds, and their least values
# (max_steps 0: no limit).
SETTINGS_MIN = dict(
    epochs=1, max_steps=0, min_batch=1, checkpoint_every_steps=1, log_every_steps=1
)


def check_settings(settings, section: str = "train") -> None:
    """Raises a one-line ``ConfigError`` for a loop setting no run can use.

    ``settings`` is a config section or any object with the settings as
    attributes; ``section`` names it in the message.
    """
    for name, least in SETTINGS_MIN.items():
        value = getattr(settings, name)
        require(value >= least, f"{section}.{name} must be >= {least}, got {value}")


def leaves(typed_config, prefix: str = ""):
    """``(dotted key, field, value)`` of each key of a typed config, sections within."""
    for f, name in config_fields(type(typed_config)):
        value = getattr(typed_config, f.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value, f"{prefix}{name}.")
        else:
            yield prefix + name, f, value


def check_keys(typed_config, prefix: str = "") -> None:
    """Raises a one-line ``ConfigError`` for a key off its ``least`` or ``choices``."""
    for name, f, value in leaves(typed_config, prefix):
        if (least := f.metadata.get("least")) is not None:
            require(value >= least, f"{name} must be >= {least}, got {value}")
        if choices := f.metadata.get("choices"):
            require_choice(name, value, choices)


def checked(cls, config: ml_collections.ConfigDict, get_method, check):
    """Every task's validation: ``config`` as ``cls`` once all its checks pass.

    ``get_method`` gives the row the key ``method`` names. The keys' ``least``
    values and ``choices`` are checked first, then ``check(run, method)``
    raises for the task's own mistakes, then come the checks each task shares:
    the loop settings, the optimiser, batch normalisation (for a head that
    uses it) and the ``parallel`` section. The run returned holds its
    ``method`` row, its model's ``head`` and its ``architecture``.
    """
    run = typed(cls, config)
    method, m = get_method(run.method_name), run.model
    check_keys(run)
    check(run, method)
    check_settings(run.train)
    for name in ("learning_rate", "clip_norm"):
        value = getattr(run.train, name)
        require(value > 0, f"train.{name} must be positive, got {value}")
    if method.head in ("bn_gaussian", "du_gaussian"):
        batch = run.data.batch_size
        require(batch >= 2, "batch normalisation needs data.batch_size >= 2")
        require(0 < m.bn_momentum <= 1, "model.bn_momentum must be in (0, 1]")
        require(m.bn_eps > 0, "model.bn_eps must be positive")
    if method.head == "bn_gaussian":  # the KL bound is n gamma^2 / 2
        require(m.gamma > 0, f"{run.method_name} needs model.gamma > 0, got {m.gamma}")
    check_parallel(run.parallel)
    arch = tuple((name, v) for name, f, v in leaves(run) if f.metadata.get("arch"))
    model = dataclasses.replace(m, head=method.head)
    return dataclasses.replace(run, method=method, model=model, architecture=arch)


def check(run: RunConfig, method: methods_lib.Method) -> None:
    """The text VAE's own checks (``checked`` adds those of every task)."""
    m, t, d, e = run.model, run.train, run.data, run.eval
    for name in ("dec_dropout_in", "dec_dropout_out"):
        value = getattr(m, name)
        require(0.0 <= value < 1.0, f"model.{name} must be in [0, 1), got {value}")
    if method.head == "du_gaussian":
        require(m.du_gamma > 0, f"model.du_gamma must be positive, got {m.du_gamma}")
        require(0 <= m.du_dropout < 1, "model.du_dropout must be in [0, 1)")
        alpha_ok = m.du_alpha > 0 or m.du_alpha == m.du_dropout == 0
        require(alpha_ok, "model.du_alpha must be > 0 (0 only with du_dropout=0)")
        require(m.bn_remedy == "none", "du_vae takes no model.bn_remedy")
    if method.head == "delta_gaussian":
        require(m.delta > 0, f"model.delta must be positive, got {m.delta}")
    if method.head == "vmf":
        require(m.kappa > 0, f"model.kappa must be positive, got {m.kappa}")
        require(m.latent_dim >= 2, "vmf_vae needs model.latent_dim >= 2")
    if method.procedure in ("svi", "aggressive"):
        gaussian = method.head in ("gaussian", "bn_gaussian")
        require(gaussian, f"procedure {method.procedure!r} needs a Gaussian head")
    if method.procedure == "svi":
        require(m.svi_steps >= 1, "sa_vae needs model.svi_steps >= 1")
        require(m.svi_lr > 0 and m.svi_clip > 0, "model.svi_lr/svi_clip must be > 0")
        require(0 <= m.svi_momentum < 1, "model.svi_momentum must be in [0, 1)")
    if method.procedure == "aggressive":
        require(
            t.agg_inner_steps >= 2 and t.agg_check_every >= 1,
            "agg_vae needs train.agg_inner_steps >= 2 and train.agg_check_every >= 1",
        )
    if method.schedule == "constant":
        require(t.beta >= 0, f"train.beta must be >= 0, got {t.beta}")
    if method.schedule == "cyclic":
        require(t.cycles >= 1, "train.cycles must be >= 1")
        require(0 < t.cycle_ratio <= 1, "train.cycle_ratio must be in (0, 1]")
    if method.schedule == "cyclic_epoch_reset":
        require(t.cycle_epochs >= 1, "train.cycle_epochs must be >= 1")
    if method.kl_transform != "none":
        require(t.target_kl >= 0, f"train.target_kl must be >= 0, got {t.target_kl}")
    if method.head == "bn_gaussian":
        require(
            not m.learn_gamma or 0 <= m.gamma_min < m.gamma,
            f"model.learn_gamma needs 0 <= model.gamma_min < model.gamma, got "
            f"gamma_min={m.gamma_min}, gamma={m.gamma}",
        )
    if d.source == "tfds":
        named = bool(d.tfds_name and d.tfds_data_dir)
        require(named, "data.source='tfds' needs data.tfds_name and data.tfds_data_dir")
        files = d.train_file or d.valid_file or d.test_file
        require(not files, "data.source='tfds' reads no files: leave data.*_file empty")
    require(0.0 <= t.kl_start <= 1.0, "train.kl_start must be in [0, 1]")
    require(0 < t.lr_decay < 1, "train.lr_decay must be in (0, 1)")
    bad = set(e.iw_splits.split(",")) - {"valid", "test", ""}
    require(not bad, f"eval.iw_splits={e.iw_splits!r}: only valid and test are splits")


def resolve(config: ml_collections.ConfigDict, vocab_size: int = 0) -> RunConfig:
    """Validates ``config`` (once per run) and returns its typed view.

    ``vocab_size`` is derived data: a run passes 0 before it has read its
    corpus, then sets it with ``RunConfig.with_vocab``.
    """
    run = checked(RunConfig, config, methods_lib.get_method, check)
    method = run.method
    if methods_lib.kl_weight_always_zero(method, run.train):
        # The reference's AE runs (KL weight 0 throughout) pick the best
        # checkpoint by the reconstruction loss alone.
        method = dataclasses.replace(method, selection="rec")
    model = dataclasses.replace(
        run.model,
        vocab_size=int(vocab_size),
        # The language model has no latent at all.
        latent_dim=0 if method.head == "none" else run.model.latent_dim,
        skip=method.decoder == "lstm_skip",
        svi_steps=run.model.svi_steps if method.procedure == "svi" else 0,
        svi_scale=1.0 / run.data.batch_size,
    )
    return dataclasses.replace(run, method=method, model=model)
