"""The default config, its validation, and the typed frozen objects built from it.

A base module (it imports no other layer of the package): the library never reads a
``ConfigDict`` past ``resolve``, which validates one once and turns it into
``RunConfig`` (frozen dataclasses); every error a user can make in a config is raised
here as one ``ConfigError`` line. Loaded as a config file (``--config`` unset), this
module's ``get_config`` is the default run.
"""

# No ``from __future__ import annotations``: dataclasses with string annotations
# need their module in sys.modules, which a config file loaded by path is not.
import dataclasses
import difflib
from collections.abc import Iterable, Mapping

import ml_collections

from bnvae_jax import methods as methods_lib
from bnvae_jax.errors import ConfigError


def default_config() -> ml_collections.ConfigDict:
    """Every knob of a run, with the reference's values unless noted."""
    c = ml_collections.ConfigDict()
    c.method = "bn_vae"  # a row of bnvae_jax.methods.METHODS
    c.seed = 783435  # the reference's default seed
    # Pretrained-encoder recipe (Li et al.): a finished run's directory whose best
    # encoder initialises this run; the decoder and the head start afresh.
    c.init_from = ""
    # Persistent XLA cache: 'user' (~/.cache/bnvae_jax/xla), a directory, '' off.
    c.compilation_cache = "user"

    c.data = d = ml_collections.ConfigDict()
    d.source = "synthetic"  # 'synthetic' (embedded generator), 'files' or 'tfds'
    # data.source='tfds': a builder of bnvae_jax.data.tfds_builders, prepared into
    # tfds_data_dir from the files in tfds_manual_dir on first use (no TensorFlow).
    d.tfds_name = ""  # ptb, yahoo, yelp, short_yelp or snli
    d.tfds_manual_dir = ""  # the corpus files the builder reads
    d.tfds_data_dir = ""  # where the prepared array_record files live
    d.train_file = ""  # plain-text corpus: one sentence a line, whitespace tokens
    d.valid_file = ""  # validation corpus, same format
    d.test_file = ""  # test corpus, same format
    d.labelled = False  # lines are LABEL<TAB>TEXT (labels are ignored by the VAE)
    d.max_tokens = 1000  # longer lines are dropped and counted
    d.batch_size = 32  # sentences per training batch (global, over all devices)
    d.eval_batch_size = 32  # sentences per evaluation batch
    d.bucket_width = 8  # time axis padded to a multiple of this: few compiled shapes
    d.batching = "same_length"  # 'same_length' (reference) or 'mixed'
    d.synthetic = s = ml_collections.ConfigDict()
    s.num_train = 4000  # sentences generated for each split
    s.num_valid = 500  # validation sentences
    s.num_test = 500  # test sentences
    s.vocab_size = 200  # words of the generating language model
    s.length = 10  # tokens per sentence
    s.latent_dim = 2  # latent of the generator (mixture of Gaussians)
    s.num_components = 4  # Gaussian components of the latent mixture
    s.emb_dim = 32  # word embedding size of the generating LSTM
    s.hidden_dim = 32  # hidden size of the generating LSTM
    s.temperature = 1.0  # softmax temperature of the word distribution
    s.seed = 0  # seeds the generator's weights, mixture means and samples

    c.model = m = ml_collections.ConfigDict()
    # Sizes of the default demo; the dataset configs set the paper's.
    m.emb_dim = 64  # word embedding size (E)
    m.enc_hidden = 128  # encoder LSTM size
    m.dec_hidden = 128  # decoder LSTM size
    m.latent_dim = 8  # n
    m.gamma = 0.6  # fixed BN scale of the bn_gaussian head
    m.learn_gamma = False  # beyond the paper: learnt per-dim scale >= gamma_min
    m.gamma_min = 0.3  # floor of the learnt scale (KL >= n gamma_min^2 / 2)
    m.du_gamma = 0.5  # du_vae: RMS of the learnt BN scale of the mean
    m.du_dropout = 0.2  # du_vae: dropout rate on the posterior variance (train)
    m.du_alpha = 1.0  # du_vae: variance floor alpha/(2 pi e) (entropy >= 0 at 1)
    m.delta = 0.15  # delta_vae: KL >= delta in every dimension
    m.kappa = 13.0  # vmf_vae: fixed concentration
    m.vmf_kl = "guu"  # 'guu' (Guu et al., the paper's) or 'uniform' (exact)
    m.svi_steps = 20  # sa_vae: SVI steps refining q (train and evaluation)
    m.svi_lr = 1.0  # sa_vae: learning rate of the SVI steps
    m.svi_momentum = 0.5  # sa_vae: momentum of the SVI steps
    m.svi_clip = 5.0  # L2 clip of each example's mean / logvar gradient
    m.bn_momentum = 0.1  # PyTorch convention: new = (1 - m) old + m batch
    m.bn_eps = 1e-5  # added to the batch variance of BN
    # Beyond the paper: keep the KL bound when the pre-BN variance of μ is tiny
    # ('none' = the paper's v + eps; 'relative_eps'; 'weight_norm'; see
    # BN_REMEDIES).
    m.bn_remedy = "none"
    m.dec_dropout_in = 0.5  # dropout on decoder word embeddings (not on z)
    m.dec_dropout_out = 0.5  # dropout on decoder LSTM outputs
    m.enc_init = "torch_default"  # 'torch_default' ([BN]) or 'uniform' ([HE]/[LI])
    m.dec_init = "uniform"  # 'uniform' (reference) or 'torch_default'
    # Float32 matmul precision: 'highest' (true float32 everywhere, as the
    # reference; GPUs would otherwise use TF32), 'high' or 'default'.
    m.matmul_precision = "highest"

    c.train = t = ml_collections.ConfigDict()
    t.epochs = 8  # upper bound on epochs (dataset configs: 100)
    t.max_steps = 0  # stop after this many training steps (0: no limit)
    t.learning_rate = 1.0  # plain SGD, momentum 0 (README of [BN]: 0.5)
    t.clip_norm = 5.0  # global L2 norm over all parameters
    t.kl_start = 0.0  # KL weight before the first step
    t.kl_warmup_epochs = 2.0  # ramp to 1 over this many epochs (0: constant; paper 10)
    t.beta = 1.0  # beta_vae: the constant KL weight
    t.target_kl = 4.0  # free_bits / free_bits_dim: lambda (total over dims)
    t.cycles = 4  # cyclic: M cycles over train.epochs
    t.cycle_ratio = 0.5  # cyclic: ramp fraction R of each cycle
    t.cycle_epochs = 10  # cyclic_epoch_reset: epochs per cycle C
    t.agg_inner_steps = 100  # agg_vae: at most this many encoder steps - 1
    t.agg_check_every = 15  # agg_vae: inner-loss check period
    t.decay_epoch = 5  # plateau length (validation epochs) before an LR decay
    t.lr_decay = 0.5  # factor applied to the learning rate at each decay
    t.max_decay = 5  # stop training at this many decays
    t.load_best_epoch = 15  # no decay before this epoch
    t.min_batch = 2  # skip batches with fewer real sentences (BN needs 2)
    t.checkpoint_every_steps = 500  # latest checkpoint cadence (plus every epoch end)
    t.log_every_steps = 50  # training metrics logged every this many steps
    t.test_every_epochs = 5  # test-set ELBO pass for the log (0: never)
    # Train steps with bfloat16 matmul operands (float32 accumulation, gates,
    # softmax, BN statistics, KL); evaluation stays float32.
    t.mixed_precision = False

    c.eval = e = ml_collections.ConfigDict()
    e.iw_samples = 500  # importance samples per sentence
    e.iw_chunk = 100  # samples decoded together
    e.iw_batch = 0  # sentences decoded together (0: from the devices; 4 on CPU)
    # Memory bound per device: the chunk shrinks to keep logits below this
    # (0: from the device's memory; 2^26 on CPU).
    e.iw_max_logits = 0
    e.iw_max_sentences = 0  # evaluate IW-NLL on the first N sentences (0: all)
    e.iw_splits = "valid,test"  # final IW-NLL on these splits (others: ELBO only)
    e.au_threshold = 0.01  # active unit: Var_x E_q[z_j] >= this
    e.num_reconstructions = 20  # sentences written per decoding strategy
    e.num_prior_samples = 20  # sentences decoded from z ~ N(0, I) per strategy
    e.beam_size = 5  # beam width of beam-search decoding
    e.max_decode_len = 100  # most tokens a decoded sentence gets
    e.seed = 0  # evaluation randomness (IW samples, MI, decoding)
    # The run's seed is folded into eval.seed, so runs of different seeds draw
    # different evaluation noise and their spread includes the estimators' noise.
    # False: every run shares eval.seed's draws (the behaviour before).
    e.fold_run_seed = True

    # Data parallelism (README "Scaling out"): data.batch_size is the global batch,
    # split over every device used; results do not depend on the device count.
    c.parallel = parallel_section()
    return c


def get_config() -> ml_collections.ConfigDict:
    """The default run (this file is the config file of ``--config`` unset)."""
    return default_config()


def parallel_section() -> ml_collections.ConfigDict:
    """The ``parallel`` section of every task's config (``ParallelConfig``'s fields)."""
    p = ml_collections.ConfigDict()
    p.mode = "jit"  # 'jit' (device mesh + NamedSharding) or 'pmap'
    p.num_devices = 0  # devices used on each host (0: parallel.auto_devices picks)
    p.distributed = False  # multi-host: call jax.distributed.initialize
    p.coordinator_address = ""  # 'host:port' of process 0 ('': from the environment)
    p.num_processes = 0  # hosts (0: from the environment)
    p.process_id = -1  # this host (-1: from the environment)
    p.heartbeat_timeout_s = 60  # a host silent this long is dead: all others stop
    p.shutdown_timeout_s = 300  # a finished host waits this long for the others
    return p


def corpus_config(
    *, emb_dim: int, hidden: int, labelled: bool = False
) -> ml_collections.ConfigDict:
    """The paper's protocol on a real corpus of plain files.

    Batch 32, latent 32, decoder dropout 0.5/0.5, KL weight 0 -> 1 over the first
    10 epochs, up to 100 epochs, test ELBO logged every 5 epochs, IW-NLL with 500
    samples. Only the sizes and whether lines carry labels differ by corpus.
    """
    c = default_config()
    c.data.source = "files"
    c.data.labelled = labelled
    c.data.batch_size = 32
    c.model.emb_dim = emb_dim
    c.model.enc_hidden = hidden
    c.model.dec_hidden = hidden
    c.model.latent_dim = 32
    c.model.dec_dropout_in = 0.5
    c.model.dec_dropout_out = 0.5
    c.train.epochs = 100
    c.train.kl_start = 0.0
    c.train.kl_warmup_epochs = 10.0
    c.train.test_every_epochs = 5
    c.eval.iw_samples = 500
    return c


# Keys that define the parameter shapes and the data a checkpoint belongs to: a
# workdir whose run differs in any of these is refused, never overwritten.
ARCHITECTURE_KEYS = (
    "method",
    "model.emb_dim",
    "model.enc_hidden",
    "model.dec_hidden",
    "model.latent_dim",
    "model.learn_gamma",
)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The ``data.synthetic`` section: the embedded generator's settings.

    ``data.datasets`` turns it into the generator's ``SyntheticSpec``.
    """

    num_train: int
    num_valid: int
    num_test: int
    vocab_size: int
    length: int
    latent_dim: int
    num_components: int
    emb_dim: int
    hidden_dim: int
    temperature: float
    seed: int


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the text VAE's sentences come from and how they are batched."""

    source: str
    train_file: str
    valid_file: str
    test_file: str
    labelled: bool
    max_tokens: int
    batch_size: int
    eval_batch_size: int
    bucket_width: int
    batching: str
    synthetic: SyntheticConfig
    tfds_name: str = ""
    tfds_manual_dir: str = ""
    tfds_data_dir: str = ""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes and choices of the text VAE (hashable: bound statically into jit)."""

    vocab_size: int
    emb_dim: int
    enc_hidden: int
    dec_hidden: int
    latent_dim: int
    head: str
    gamma: float
    bn_momentum: float
    bn_eps: float
    dec_dropout_in: float
    dec_dropout_out: float
    enc_init: str
    dec_init: str
    learn_gamma: bool = False
    gamma_min: float = 0.3
    delta: float = 0.15
    du_gamma: float = 0.5
    du_dropout: float = 0.2
    du_alpha: float = 1.0
    kappa: float = 13.0
    vmf_kl: str = "guu"
    skip: bool = False  # z feeds the output layer (Skip-VAE)
    svi_steps: int = 0  # > 0: SA-VAE posterior refinement
    svi_lr: float = 1.0
    svi_momentum: float = 0.5
    svi_clip: float = 5.0
    svi_scale: float = 1.0  # the SVI loss is the per-example loss times this
    bn_remedy: str = "none"  # BN_REMEDIES
    matmul_precision: str = "highest"  # lax.Precision of float32 products
    mixed_precision: bool = False  # bfloat16 operands, float32 accumulation


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and schedule settings of the train loop."""

    epochs: int
    max_steps: int
    learning_rate: float
    clip_norm: float
    kl_start: float
    kl_warmup_epochs: float
    beta: float
    target_kl: float
    cycles: int
    cycle_ratio: float
    cycle_epochs: int
    agg_inner_steps: int
    agg_check_every: int
    decay_epoch: int
    lr_decay: float
    max_decay: int
    load_best_epoch: int
    min_batch: int
    checkpoint_every_steps: int
    log_every_steps: int
    test_every_epochs: int
    mixed_precision: bool = False


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Settings of the evaluation package."""

    iw_samples: int
    iw_chunk: int
    iw_batch: int
    iw_max_sentences: int
    iw_max_logits: int
    au_threshold: float
    num_reconstructions: int
    num_prior_samples: int
    beam_size: int
    max_decode_len: int
    seed: int
    iw_splits: str = "valid,test"
    # default_config sets True; a saved config without the key (a run from
    # before the key existed) keeps the shared draws it was evaluated with.
    fold_run_seed: bool = False


@dataclasses.dataclass(frozen=True)
class ParallelConfig:
    """The ``parallel`` section of a config (``bnvae_jax.parallel`` reads it).

    Attributes:
      mode: 'jit' (mesh + NamedSharding) or 'pmap'.
      num_devices: devices used on each host; 0 lets ``parallel.auto_devices``
        decide.
      distributed: call ``jax.distributed.initialize`` (multi-host runs).
      coordinator_address: 'host:port' of process 0; '' lets JAX read it from
        the environment (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI).
      num_processes: hosts in the run; 0 lets JAX detect it.
      process_id: this host's index; -1 lets JAX detect it.
      heartbeat_timeout_s: a host not heard from for this long counts as dead
        and every other host stops with an error (JAX's default is 100 s).
      shutdown_timeout_s: how long a finished host waits for the others.
    """

    mode: str = "jit"
    num_devices: int = 0
    distributed: bool = False
    coordinator_address: str = ""
    num_processes: int = 0
    process_id: int = -1
    heartbeat_timeout_s: int = 60
    shutdown_timeout_s: int = 300


# The values of the config's string choices (the models implement them).
INIT_SCHEMES = ("torch_default", "uniform")  # models.layers.INIT_SCHEMES
VMF_KL_FORMULAS = ("guu", "uniform")  # models.vmf.VMF_KL
DATA_SOURCES = ("synthetic", "files", "tfds")
MATMUL_PRECISIONS = ("highest", "high", "default")
# model.bn_remedy: how the bn_gaussian head divides out the spread of μ
# (models.posteriors.FixedScaleBatchNorm implements them).
BN_REMEDIES = ("none", "relative_eps", "weight_norm")
PARALLEL_MODES = ("jit", "pmap")


def flat_keys(config: Mapping, prefix: str = "") -> list[str]:
    """Dotted names of every leaf of a (nested) config."""
    keys = []
    for name, value in config.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping | ml_collections.ConfigDict):
            keys.extend(flat_keys(value, dotted + "."))
        else:
            keys.append(dotted)
    return keys


def check_override_keys(config: ml_collections.ConfigDict, keys: Iterable[str]):
    """Raises ConfigError naming the nearest valid key for a mistyped override."""
    known = flat_keys(config)
    known_set = set(known) | {k.rsplit(".", 1)[0] for k in known if "." in k}
    for key in keys:
        if key in known_set:
            continue
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
        hint = f"; did you mean --config.{near[0]}?" if near else ""
        raise ConfigError(f"unknown config key --config.{key}{hint}")


def get_path(config: ml_collections.ConfigDict, dotted: str):
    value = config
    for part in dotted.split("."):
        value = value[part]
    return value


def typed(cls, section: Mapping | ml_collections.ConfigDict, **extra):
    """``cls`` (a frozen dataclass) from the keys of ``section`` it has, and ``extra``.

    Keys the dataclass lacks are ignored; fields the section lacks keep their
    defaults (configs saved before a key existed).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in section.items() if k in names}
    values.update(extra)
    return cls(**values)


def require(condition: bool, message: str) -> None:
    """Raises ``ConfigError(message)`` unless ``condition``."""
    if not condition:
        raise ConfigError(message)


def parallel_config(config: ml_collections.ConfigDict) -> ParallelConfig:
    """The typed ``parallel`` section (defaults for configs saved before it existed)."""
    return typed(ParallelConfig, config.get("parallel") or {})


def check_parallel(cfg: ParallelConfig) -> None:
    """One-line ``ConfigError`` for parallel values that are wrong on any machine."""
    require(
        cfg.mode in PARALLEL_MODES,
        f"parallel.mode={cfg.mode!r} is not one of {', '.join(PARALLEL_MODES)}",
    )
    require(
        cfg.num_devices >= 0,
        f"parallel.num_devices must be >= 0 (0: all local devices), "
        f"got {cfg.num_devices}",
    )
    require(
        cfg.num_processes >= 0 and cfg.process_id >= -1,
        "parallel.num_processes must be >= 0 and parallel.process_id >= -1 "
        "(0 / -1: detected from the environment)",
    )
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


# The loop's settings every task's ``train`` section holds, and their least values.
SETTINGS_MIN = (
    ("epochs", 1),
    ("max_steps", 0),  # 0: no limit
    ("min_batch", 1),
    ("checkpoint_every_steps", 1),
    ("log_every_steps", 1),
)


def check_settings(settings, section: str = "train") -> None:
    """Raises a one-line ``ConfigError`` for a loop setting no run can use.

    ``settings`` is a config section or any object with the settings as
    attributes; ``section`` names it in the message.
    """
    for name, least in SETTINGS_MIN:
        value = getattr(settings, name)
        require(value >= least, f"{section}.{name} must be >= {least}, got {value}")


def validate(config: ml_collections.ConfigDict) -> methods_lib.Method:
    """Checks every value a user can get wrong; returns the method's row."""
    method = methods_lib.get_method(config.method)
    m, t, d, e = config.model, config.train, config.data, config.eval
    for name in ("emb_dim", "enc_hidden", "dec_hidden", "latent_dim"):
        require(m[name] > 0, f"model.{name} must be positive, got {m[name]}")
    for name in ("dec_dropout_in", "dec_dropout_out"):
        require(0.0 <= m[name] < 1.0, f"model.{name} must be in [0, 1), got {m[name]}")
    if method.head == "bn_gaussian" and m.learn_gamma:
        require(
            0 <= m.gamma_min < m.gamma,
            f"model.learn_gamma needs 0 <= model.gamma_min < model.gamma, got "
            f"gamma_min={m.gamma_min}, gamma={m.gamma}",
        )
    if method.head == "du_gaussian":
        require(m.du_gamma > 0, f"model.du_gamma must be positive, got {m.du_gamma}")
        require(0 <= m.du_dropout < 1, "model.du_dropout must be in [0, 1)")
        require(
            m.du_alpha > 0 or (m.du_alpha == 0 and m.du_dropout == 0),
            f"model.du_alpha must be positive (0 only with du_dropout=0), "
            f"got {m.du_alpha}",
        )
        require(m.bn_remedy == "none", "du_vae takes no model.bn_remedy")
    if method.head == "delta_gaussian":
        require(m.delta > 0, f"model.delta must be positive, got {m.delta}")
    if method.head == "vmf":
        require(m.kappa > 0, f"model.kappa must be positive, got {m.kappa}")
        require(m.latent_dim >= 2, "vmf_vae needs model.latent_dim >= 2")
        require(
            m.vmf_kl in VMF_KL_FORMULAS,
            f"model.vmf_kl={m.vmf_kl!r} is not one of {', '.join(VMF_KL_FORMULAS)}",
        )
    if method.procedure in ("svi", "aggressive"):
        require(
            method.head in ("gaussian", "bn_gaussian"),
            f"procedure {method.procedure!r} needs a Gaussian head",
        )
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
            m.gamma > 0,
            f"method {config.method} needs model.gamma > 0 (the KL bound is "
            f"n*gamma^2/2), got {m.gamma}",
        )
    if method.head in ("bn_gaussian", "du_gaussian"):
        require(
            d.batch_size >= 2,
            "data.batch_size must be at least 2 with batch normalisation, "
            f"got {d.batch_size}",
        )
        require(0 < m.bn_momentum <= 1, "model.bn_momentum must be in (0, 1]")
        require(m.bn_eps > 0, "model.bn_eps must be positive")
        require(
            m.bn_remedy in BN_REMEDIES,
            f"model.bn_remedy={m.bn_remedy!r} is not one of {', '.join(BN_REMEDIES)}",
        )
    for name in ("enc_init", "dec_init"):
        require(
            m[name] in INIT_SCHEMES,
            f"model.{name}={m[name]!r} is not one of {', '.join(INIT_SCHEMES)}",
        )
    require(d.batch_size >= 1, f"data.batch_size must be >= 1, got {d.batch_size}")
    require(d.eval_batch_size >= 1, "data.eval_batch_size must be >= 1")
    require(d.bucket_width >= 1, "data.bucket_width must be >= 1")
    require(d.max_tokens >= 1, "data.max_tokens must be >= 1")
    require(
        d.source in DATA_SOURCES,
        f"data.source={d.source!r} is not one of {', '.join(DATA_SOURCES)}",
    )
    if d.source == "tfds":
        require(
            bool(d.tfds_name) and bool(d.tfds_data_dir),
            "data.source='tfds' needs data.tfds_name and data.tfds_data_dir",
        )
        require(
            not (d.train_file or d.valid_file or d.test_file),
            "data.source='tfds' reads no files: leave data.*_file empty",
        )
    require(t.learning_rate > 0, "train.learning_rate must be positive")
    require(t.clip_norm > 0, "train.clip_norm must be positive")
    check_settings(t)
    require(0.0 <= t.kl_start <= 1.0, "train.kl_start must be in [0, 1]")
    require(t.kl_warmup_epochs >= 0, "train.kl_warmup_epochs must be >= 0")
    require(0 < t.lr_decay < 1, "train.lr_decay must be in (0, 1)")
    require(t.decay_epoch >= 1 and t.max_decay >= 1, "train decay counts must be >= 1")
    require(e.iw_samples >= 1, "eval.iw_samples must be >= 1")
    require(e.iw_chunk >= 1, "eval.iw_chunk must be >= 1")
    require(e.iw_batch >= 0, "eval.iw_batch must be >= 0 (0: from the devices)")
    require(e.iw_max_logits >= 0, "eval.iw_max_logits must be >= 0 (0: auto)")
    require(
        m.get("matmul_precision", "highest") in MATMUL_PRECISIONS,
        f"model.matmul_precision={m.get('matmul_precision')!r} is not one of "
        f"{', '.join(MATMUL_PRECISIONS)}",
    )
    bad = set(e.iw_splits.split(",")) - {"valid", "test", ""}
    require(
        not bad, f"eval.iw_splits={e.iw_splits!r}: only 'valid' and 'test' are splits"
    )
    require(e.beam_size >= 1 and e.max_decode_len >= 1, "eval decoding sizes >= 1")
    check_parallel(parallel_config(config))
    return method


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything the library needs, typed; built once by ``resolve``.

    Attributes:
      architecture: ``(key, value)`` of each ``ARCHITECTURE_KEYS`` entry as the
        config gives it: what a workdir's checkpoints belong to.
    """

    method_name: str
    method: methods_lib.Method
    seed: int
    init_from: str
    compilation_cache: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    parallel: ParallelConfig
    architecture: tuple[tuple[str, object], ...]

    def with_vocab(self, vocab_size: int) -> "RunConfig":
        """The run with its vocabulary size (known once the data is read)."""
        model = dataclasses.replace(self.model, vocab_size=int(vocab_size))
        return dataclasses.replace(self, model=model)


def data_config(config: ml_collections.ConfigDict) -> DataConfig:
    """The typed ``data`` section of a text-VAE config."""
    d = config.data
    return typed(DataConfig, d, synthetic=typed(SyntheticConfig, d.synthetic))


def resolve(config: ml_collections.ConfigDict, vocab_size: int = 0) -> RunConfig:
    """Validates ``config`` (once per run) and returns its typed view.

    ``vocab_size`` is derived data: a run passes 0 before it has read its
    corpus, then sets it with ``RunConfig.with_vocab``.
    """
    method = validate(config)
    model = typed(
        ModelConfig,
        config.model,
        vocab_size=int(vocab_size),
        head=method.head,
        # The language model has no latent at all.
        latent_dim=0 if method.head == "none" else config.model.latent_dim,
        skip=method.decoder == "lstm_skip",
        svi_steps=config.model.svi_steps if method.procedure == "svi" else 0,
        svi_scale=1.0 / config.data.batch_size,
    )
    t = config.train
    method = methods_lib.with_selection_for(
        method, kl_start=t.kl_start, warmup_epochs=t.kl_warmup_epochs, beta=t.beta
    )
    return RunConfig(
        method_name=config.method,
        method=method,
        seed=int(config.seed),
        init_from=config.get("init_from", ""),
        compilation_cache=config.get("compilation_cache", "user"),
        data=data_config(config),
        model=model,
        train=typed(TrainConfig, config.train),
        eval=typed(EvalConfig, config.eval),
        parallel=parallel_config(config),
        architecture=architecture(config, ARCHITECTURE_KEYS),
    )


def architecture(
    config: ml_collections.ConfigDict, keys: Iterable[str]
) -> tuple[tuple[str, object], ...]:
    """``(key, value)`` of each dotted key (``RunConfig.architecture``)."""
    return tuple((key, get_path(config, key)) for key in keys)
