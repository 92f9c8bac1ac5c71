"""The dialog config (Zhao et al.'s settings), its validation and typed views.

As for the text VAE (``bnvae_jax.config``), each key is a field of a frozen
dataclass with its default and ``# doc``; ``configs/switchboard.py`` returns
``default_config()``, and ``resolve`` turns a config back into the dataclasses
once, raising every mistake a user can make as one ``ConfigError`` line.
"""

# No ``from __future__ import annotations`` (see ``bnvae_jax.config``).
import dataclasses

import ml_collections

from bnvae_jax import config as config_lib
from bnvae_jax.config import derived, require, require_choice, typed
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import objectives

TASK = "dialog"


@dataclasses.dataclass(frozen=True)
class DialogDataConfig:
    """Where the dialogs come from and how they are cut and batched."""

    train_file: str = ""  # dialogs: Zhao et al.'s JSONL or "a ||| b ||| reply" lines
    valid_file: str = ""  # validation dialogs, same format
    test_file: str = ""  # test dialogs, same format
    # 'jsonl' (Switchboard), 'text' (a ||| b ||| response), 'auto'
    format: str = "auto"
    max_vocab: int = 10000  # most frequent training tokens kept
    max_utt_len: int = 40  # tokens per utterance incl. <s> and </s>
    context_size: int = 10  # Zhao's backward_size: up to 9 context turns
    batch_size: int = 30  # examples per training batch (global, over all devices)
    eval_batch_size: int = 60  # examples per evaluation batch


@dataclasses.dataclass(frozen=True)
class DialogModelConfig:
    """Sizes and choices of the dialog CVAE (hashable: bound statically into jit)."""

    vocab_size: int = derived(0)  # from the data
    num_topics: int = derived(0)  # from the data
    head: str = derived("gaussian")  # the method's recognition head
    emb_dim: int = 200  # word embedding size
    utt_hidden: int = 300  # bidirectional: 600-d utterance vectors
    ctx_hidden: int = 600  # context GRU size
    dec_hidden: int = 400  # response decoder GRU size
    latent_dim: int = 200  # z
    topic_dim: int = 30  # topic embedding size
    prior_hidden: int = 400  # Zhao: max(2 * latent_dim, 100)
    bow_hidden: int = 400  # hidden layer of the bag-of-words head (cvae_bow, bn_cvae)
    init_scale: float = 0.08  # U(±x) for embeddings, GRUs and the output layer
    gamma: float = 0.5  # bn_cvae: fixed BN scale (not given in the paper)
    bn_momentum: float = 0.1  # bn_cvae: PyTorch convention, new = (1 - m) old + m batch
    bn_eps: float = 1e-5  # bn_cvae: added to the batch variance
    embedding_file: str = ""  # GloVe text file initialising the word embeddings


@dataclasses.dataclass(frozen=True)
class DialogTrainConfig:
    """Optimisation, KL schedule and stopping of the dialog train loop."""

    learning_rate: float = 1e-3  # Adam
    clip_norm: float = 5.0  # global L2 norm of the gradients
    full_kl_steps: int = 10000  # KL weight min(1, (t + 1) / full_kl_steps)
    prior_kl_schedule: str = "annealed"  # bn_cvae's KL(p||N(0,I)) weight: see README
    steps_per_epoch: int = 3000  # Zhao's update_limit: an epoch is at most this
    epochs: int = 60  # upper bound on epochs
    max_steps: int = 0  # stop after this many steps (0: no limit)
    early_stop: bool = True  # Zhao's patience rule on the validation ELBO
    patience: int = 10  # epochs, raised to epoch * patience_increase on improvement
    improve_threshold: float = 0.996  # an epoch improves when loss < best * this
    patience_increase: float = 2.0  # see train.patience
    min_batch: int = 2  # skip batches with fewer real examples (BN needs 2)
    # latest checkpoint cadence (plus every epoch end)
    checkpoint_every_steps: int = 500
    log_every_steps: int = 50  # train rows in metrics.jsonl / TensorBoard


@dataclasses.dataclass(frozen=True)
class DialogEvalConfig:
    """Settings of the test-set response metrics and the human-rating sheet."""

    glove_file: str = ""  # GloVe text file for A-bow / E-bow (empty: BLEU only)
    # Zhao et al.'s multi-reference test file (test_multi_ref.json). When set,
    # the test response metrics (BLEU, A-bow, E-bow) are computed on this file's
    # contexts against all their references, instead of the test split's single
    # reference.
    multi_ref_file: str = ""
    num_samples: int = 10  # sampled responses per test context
    max_decode_len: int = 40  # tokens per sampled response at most
    min_context_utts: int = 2  # skip contexts holding only the dialog-start turn
    max_contexts: int = 0  # score the first N eligible contexts (0: all)
    rating_contexts: int = 200  # contexts in the human-rating CSV
    rating_samples: int = 3  # responses per context in the CSV
    seed: int = 0  # evaluation randomness (z samples, responses)


@dataclasses.dataclass(frozen=True)
class DialogRunConfig:
    """The dialog run, typed (``RunConfig``'s counterpart).

    Attributes:
      method: the row of ``objectives.DIALOG_METHODS`` that ``method_name`` (the
        key ``method``) names.
      architecture: ``(key, value)`` of each ``ARCHITECTURE_KEYS`` entry.
    """

    task: str = TASK  # main.py dispatches on this
    method: objectives.DialogMethod = derived()
    # cvae | cvae_bow | bn_cvae
    method_name: str = dataclasses.field(default="bn_cvae", metadata={"key": "method"})
    seed: int = 0  # initial parameters and training noise
    # JAX's persistent cache ('user', a path, or '')
    compilation_cache: str = "user"
    data: DialogDataConfig = DialogDataConfig()
    model: DialogModelConfig = DialogModelConfig()
    train: DialogTrainConfig = DialogTrainConfig()
    eval: DialogEvalConfig = DialogEvalConfig()
    # Data parallelism, as for the text VAEs (README "Scaling out"):
    # data.batch_size is the global batch; BN statistics are global.
    parallel: config_lib.ParallelConfig = config_lib.ParallelConfig()
    architecture: tuple[tuple[str, object], ...] = derived(())

    def with_sizes(self, vocab_size: int, num_topics: int) -> "DialogRunConfig":
        """The run with the sizes that come from its data."""
        model = dataclasses.replace(
            self.model, vocab_size=int(vocab_size), num_topics=int(num_topics)
        )
        return dataclasses.replace(self, model=model)


def default_config() -> ml_collections.ConfigDict:
    """Every knob of a dialog run; sizes and optimiser of Zhao et al.."""
    return config_lib.to_config(DialogRunConfig())


def validate(config: ml_collections.ConfigDict) -> objectives.DialogMethod:
    """Checks every user-settable value; returns the method's row."""
    run = typed(DialogRunConfig, config)
    method = objectives.get_method(run.method_name)
    d, m, t, e = run.data, run.model, run.train, run.eval
    for split in ("train", "valid", "test"):
        require(
            bool(getattr(d, f"{split}_file")),
            f"data.{split}_file is not set (a dialog run reads three files)",
        )
    require_choice("data.format", d.format, data_lib.FORMATS)
    require(d.max_vocab >= 1, "data.max_vocab must be >= 1")
    require(d.max_utt_len >= 3, "data.max_utt_len must be >= 3 (<s> word </s>)")
    require(d.context_size >= 2, "data.context_size must be >= 2")
    require(d.batch_size >= 1 and d.eval_batch_size >= 1, "batch sizes must be >= 1")
    for key in MODEL_SIZES:
        value = getattr(m, key)
        require(value >= 1, f"model.{key} must be positive, got {value}")
    require(m.init_scale > 0, "model.init_scale must be positive")
    if method.head == "bn_gaussian":
        require(m.gamma > 0, f"{run.method_name} needs model.gamma > 0, got {m.gamma}")
        require(0 < m.bn_momentum <= 1, "model.bn_momentum must be in (0, 1]")
        require(m.bn_eps > 0, "model.bn_eps must be positive")
        require(d.batch_size >= 2, "batch normalisation needs data.batch_size >= 2")
    require(t.learning_rate > 0 and t.clip_norm > 0, "train lr/clip must be > 0")
    require(t.full_kl_steps >= 0, "train.full_kl_steps must be >= 0")
    require_choice(
        "train.prior_kl_schedule", t.prior_kl_schedule, objectives.PRIOR_KL_SCHEDULES
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
    config_lib.check_parallel(run.parallel)
    return method


def resolve(
    config: ml_collections.ConfigDict, vocab_size: int = 0, num_topics: int = 0
) -> DialogRunConfig:
    """Validates ``config`` (once per run) and returns its typed view.

    The sizes are derived data: a run passes 0 before it has read its dialogs,
    then sets them with ``DialogRunConfig.with_sizes``.
    """
    method = validate(config)
    run = typed(DialogRunConfig, config)
    model = dataclasses.replace(run.model, head=method.head)
    run = dataclasses.replace(
        run,
        method=method,
        model=model,
        architecture=config_lib.architecture(config, ARCHITECTURE_KEYS),
    )
    return run.with_sizes(vocab_size, num_topics)


# Keys that fix parameter shapes or the objective: a workdir holding a run that
# differs in any of them is refused. The model's are sizes, all positive.
MODEL_SIZES = tuple(
    "emb_dim utt_hidden ctx_hidden dec_hidden latent_dim topic_dim prior_hidden "
    "bow_hidden".split()
)
ARCHITECTURE_KEYS = (
    "method",
    *(f"data.{key}" for key in ("max_vocab", "max_utt_len", "context_size")),
    *(f"model.{key}" for key in MODEL_SIZES),
)
