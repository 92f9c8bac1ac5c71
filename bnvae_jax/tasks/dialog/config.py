"""The dialog config (Zhao et al.'s settings), its validation and typed views.

``configs/switchboard.py`` returns ``default_config()``; ``resolve`` turns it into
frozen dataclasses once, raising every mistake a user can make as one
``ConfigError`` line.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from bnvae_jax import config as config_lib
from bnvae_jax.config import require, typed
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import objectives
from bnvae_jax.tasks.dialog.model import DialogModelConfig

TASK = "dialog"


def default_config() -> ml_collections.ConfigDict:
    """Every knob of a dialog run; sizes and optimiser of Zhao et al.."""
    c = ml_collections.ConfigDict()
    c.task = TASK  # main.py dispatches on this
    c.method = "bn_cvae"  # cvae | cvae_bow | bn_cvae
    c.seed = 0  # initial parameters and training noise
    c.compilation_cache = "user"  # JAX's persistent cache ('user', a path, or '')

    c.data = d = ml_collections.ConfigDict()
    d.train_file = ""  # dialogs: Zhao et al.'s JSONL or "a ||| b ||| reply" lines
    d.valid_file = ""  # validation dialogs, same format
    d.test_file = ""  # test dialogs, same format
    d.format = "auto"  # 'jsonl' (Switchboard), 'text' (a ||| b ||| response), 'auto'
    d.max_vocab = 10000  # most frequent training tokens kept
    d.max_utt_len = 40  # tokens per utterance incl. <s> and </s>
    d.context_size = 10  # Zhao's backward_size: up to 9 context turns
    d.batch_size = 30  # examples per training batch (global, over all devices)
    d.eval_batch_size = 60  # examples per evaluation batch

    c.model = m = ml_collections.ConfigDict()
    m.emb_dim = 200  # word embedding size
    m.utt_hidden = 300  # bidirectional: 600-d utterance vectors
    m.ctx_hidden = 600  # context GRU size
    m.dec_hidden = 400  # response decoder GRU size
    m.latent_dim = 200  # z
    m.topic_dim = 30  # topic embedding size
    m.prior_hidden = 400  # Zhao: max(2 * latent_dim, 100)
    m.bow_hidden = 400  # hidden layer of the bag-of-words head (cvae_bow, bn_cvae)
    m.init_scale = 0.08  # U(±x) for embeddings, GRUs and the output layer
    m.gamma = 0.5  # bn_cvae: fixed BN scale (not given in the paper)
    m.bn_momentum = 0.1  # bn_cvae: PyTorch convention, new = (1 - m) old + m batch
    m.bn_eps = 1e-5  # bn_cvae: added to the batch variance
    m.embedding_file = ""  # GloVe text file initialising the word embeddings

    c.train = t = ml_collections.ConfigDict()
    t.learning_rate = 1e-3  # Adam
    t.clip_norm = 5.0  # global L2 norm of the gradients
    t.full_kl_steps = 10000  # KL weight min(1, (t + 1) / full_kl_steps)
    t.prior_kl_schedule = "annealed"  # bn_cvae's KL(p||N(0,I)) weight: see README
    t.steps_per_epoch = 3000  # Zhao's update_limit: an epoch is at most this
    t.epochs = 60  # upper bound on epochs
    t.max_steps = 0  # stop after this many steps (0: no limit)
    t.early_stop = True  # Zhao's patience rule on the validation ELBO
    t.patience = 10  # epochs, raised to epoch * patience_increase on improvement
    t.improve_threshold = 0.996  # an epoch improves when loss < best * this
    t.patience_increase = 2.0  # see train.patience
    t.min_batch = 2  # skip batches with fewer real examples (BN needs 2)
    t.checkpoint_every_steps = 500  # latest checkpoint cadence (plus every epoch end)
    t.log_every_steps = 50  # train rows in metrics.jsonl / TensorBoard

    c.eval = e = ml_collections.ConfigDict()
    e.glove_file = ""  # GloVe text file for A-bow / E-bow (empty: BLEU only)
    # Zhao et al.'s multi-reference test file (test_multi_ref.json). When set,
    # the test response metrics (BLEU, A-bow, E-bow) are computed on this file's
    # contexts against all their references, instead of the test split's single
    # reference.
    e.multi_ref_file = ""
    e.num_samples = 10  # sampled responses per test context
    e.max_decode_len = 40  # tokens per sampled response at most
    e.min_context_utts = 2  # skip contexts holding only the dialog-start turn
    e.max_contexts = 0  # score the first N eligible contexts (0: all)
    e.rating_contexts = 200  # contexts in the human-rating CSV
    e.rating_samples = 3  # responses per context in the CSV
    e.seed = 0  # evaluation randomness (z samples, responses)

    # Data parallelism, as for the text VAEs (README "Scaling out"):
    # data.batch_size is the global batch; BN statistics are global.
    c.parallel = config_lib.parallel_section()
    return c


@dataclasses.dataclass(frozen=True)
class DialogDataConfig:
    train_file: str
    valid_file: str
    test_file: str
    format: str
    max_vocab: int
    max_utt_len: int
    context_size: int
    batch_size: int
    eval_batch_size: int


@dataclasses.dataclass(frozen=True)
class DialogTrainConfig:
    learning_rate: float
    clip_norm: float
    full_kl_steps: int
    prior_kl_schedule: str
    steps_per_epoch: int
    epochs: int
    max_steps: int
    early_stop: bool
    patience: int
    improve_threshold: float
    patience_increase: float
    min_batch: int
    checkpoint_every_steps: int
    log_every_steps: int


@dataclasses.dataclass(frozen=True)
class DialogEvalConfig:
    glove_file: str
    multi_ref_file: str
    num_samples: int
    max_decode_len: int
    min_context_utts: int
    max_contexts: int
    rating_contexts: int
    rating_samples: int
    seed: int


@dataclasses.dataclass(frozen=True)
class DialogRunConfig:
    """The dialog run, typed (``RunConfig``'s counterpart).

    Attributes:
      embedding_file: ``model.embedding_file``, the GloVe file initialising the
        word embeddings ('' none).
      architecture: ``(key, value)`` of each ``ARCHITECTURE_KEYS`` entry.
    """

    method_name: str
    method: objectives.DialogMethod
    seed: int
    compilation_cache: str
    embedding_file: str
    data: DialogDataConfig
    model: DialogModelConfig
    train: DialogTrainConfig
    eval: DialogEvalConfig
    parallel: config_lib.ParallelConfig
    architecture: tuple[tuple[str, object], ...]

    def with_sizes(self, vocab_size: int, num_topics: int) -> DialogRunConfig:
        """The run with the sizes that come from its data."""
        model = dataclasses.replace(
            self.model, vocab_size=int(vocab_size), num_topics=int(num_topics)
        )
        return dataclasses.replace(self, model=model)


def validate(config: ml_collections.ConfigDict) -> objectives.DialogMethod:
    """Checks every user-settable value; returns the method's row."""
    method = objectives.get_method(config.method)
    d, m, t, e = config.data, config.model, config.train, config.eval
    for split in ("train", "valid", "test"):
        require(
            bool(d[f"{split}_file"]),
            f"data.{split}_file is not set (a dialog run reads three files)",
        )
    require(
        d.format in data_lib.FORMATS,
        f"data.format={d.format!r} is not one of {', '.join(data_lib.FORMATS)}",
    )
    require(d.max_vocab >= 1, "data.max_vocab must be >= 1")
    require(d.max_utt_len >= 3, "data.max_utt_len must be >= 3 (<s> word </s>)")
    require(d.context_size >= 2, "data.context_size must be >= 2")
    require(d.batch_size >= 1 and d.eval_batch_size >= 1, "batch sizes must be >= 1")
    for name in (
        "emb_dim",
        "utt_hidden",
        "ctx_hidden",
        "dec_hidden",
        "latent_dim",
        "topic_dim",
        "prior_hidden",
        "bow_hidden",
    ):
        require(m[name] >= 1, f"model.{name} must be positive, got {m[name]}")
    require(m.init_scale > 0, "model.init_scale must be positive")
    if method.head == "bn_gaussian":
        require(m.gamma > 0, f"{config.method} needs model.gamma > 0, got {m.gamma}")
        require(0 < m.bn_momentum <= 1, "model.bn_momentum must be in (0, 1]")
        require(m.bn_eps > 0, "model.bn_eps must be positive")
        require(d.batch_size >= 2, "batch normalisation needs data.batch_size >= 2")
    require(t.learning_rate > 0 and t.clip_norm > 0, "train lr/clip must be > 0")
    require(t.full_kl_steps >= 0, "train.full_kl_steps must be >= 0")
    require(
        t.prior_kl_schedule in objectives.PRIOR_KL_SCHEDULES,
        f"train.prior_kl_schedule={t.prior_kl_schedule!r} is not one of "
        f"{', '.join(objectives.PRIOR_KL_SCHEDULES)}",
    )
    require(t.steps_per_epoch >= 1, "train.steps_per_epoch must be >= 1")
    config_lib.check_settings(t)
    require(t.patience >= 1 and t.patience_increase > 0, "train patience > 0")
    require(e.num_samples >= 1, "eval.num_samples must be >= 1")
    require(e.max_decode_len >= 1, "eval.max_decode_len must be >= 1")
    require(e.min_context_utts >= 1, "eval.min_context_utts must be >= 1")
    require(e.max_contexts >= 0, "eval.max_contexts must be >= 0 (0: all)")
    require(
        e.rating_contexts >= 0 and e.rating_samples >= 0,
        "eval.rating_contexts/rating_samples must be >= 0",
    )
    config_lib.check_parallel(config_lib.parallel_config(config))
    return method


def resolve(
    config: ml_collections.ConfigDict, vocab_size: int = 0, num_topics: int = 0
) -> DialogRunConfig:
    """Validates ``config`` (once per run) and returns its typed view.

    The sizes are derived data: a run passes 0 before it has read its dialogs,
    then sets them with ``DialogRunConfig.with_sizes``.
    """
    method = validate(config)
    return DialogRunConfig(
        method_name=config.method,
        method=method,
        seed=int(config.seed),
        compilation_cache=config.get("compilation_cache", "user"),
        embedding_file=config.model.get("embedding_file", ""),
        data=typed(DialogDataConfig, config.data),
        model=typed(
            DialogModelConfig,
            config.model,
            vocab_size=int(vocab_size),
            num_topics=int(num_topics),
            head=method.head,
        ),
        train=typed(DialogTrainConfig, config.train),
        eval=typed(DialogEvalConfig, config.eval),
        parallel=config_lib.parallel_config(config),
        architecture=config_lib.architecture(config, ARCHITECTURE_KEYS),
    )


# Keys that fix parameter shapes or the objective: a workdir holding a run that
# differs in any of them is refused.
ARCHITECTURE_KEYS = (
    "method",
    "data.max_vocab",
    "data.max_utt_len",
    "data.context_size",
    "model.emb_dim",
    "model.utt_hidden",
    "model.ctx_hidden",
    "model.dec_hidden",
    "model.latent_dim",
    "model.topic_dim",
    "model.prior_hidden",
    "model.bow_hidden",
)
