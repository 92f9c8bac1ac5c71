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
from bnvae_jax.config import derived, key, require, size
from bnvae_jax.tasks.dialog import data as data_lib
from bnvae_jax.tasks.dialog import objectives


@dataclasses.dataclass(frozen=True)
class DialogDataConfig:
    """Where the dialogs come from and how they are cut and batched."""

    train_file: str = ""  # dialogs: Zhao et al.'s JSONL or "a ||| b ||| reply" lines
    valid_file: str = ""  # validation dialogs, same format
    test_file: str = ""  # test dialogs, same format
    # 'jsonl' (Switchboard), 'text' (a ||| b ||| response), 'auto'
    format: str = key("auto", choices=data_lib.FORMATS)
    # most frequent training tokens kept
    max_vocab: int = key(10000, arch=True, least=1)
    # tokens per utterance incl. <s> and </s>
    max_utt_len: int = key(40, arch=True, least=3)
    # Zhao's backward_size: up to 9 context turns
    context_size: int = key(10, arch=True, least=2)
    # examples per training batch (global, over all devices)
    batch_size: int = key(30, least=1)
    eval_batch_size: int = key(60, least=1)  # examples per evaluation batch


@dataclasses.dataclass(frozen=True)
class DialogModelConfig:
    """Sizes and choices of the dialog CVAE (hashable: bound statically into jit)."""

    vocab_size: int = derived(0)  # from the data
    num_topics: int = derived(0)  # from the data
    head: str = derived("gaussian")  # the method's recognition head
    emb_dim: int = size(200)  # word embedding size
    utt_hidden: int = size(300)  # bidirectional: 600-d utterance vectors
    ctx_hidden: int = size(600)  # context GRU size
    dec_hidden: int = size(400)  # response decoder GRU size
    latent_dim: int = size(200)  # z
    topic_dim: int = size(30)  # topic embedding size
    prior_hidden: int = size(400)  # Zhao: max(2 * latent_dim, 100)
    # hidden layer of the bag-of-words head (cvae_bow, bn_cvae)
    bow_hidden: int = size(400)
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
    # KL weight min(1, (t + 1) / full_kl_steps)
    full_kl_steps: int = key(10000, least=0)
    # bn_cvae's KL(p||N(0,I)) weight: see README
    prior_kl_schedule: str = key("annealed", choices=objectives.PRIOR_KL_SCHEDULES)
    # Zhao's update_limit: an epoch is at most this
    steps_per_epoch: int = key(3000, least=1)
    epochs: int = 60  # upper bound on epochs
    max_steps: int = 0  # stop after this many steps (0: no limit)
    early_stop: bool = True  # Zhao's patience rule on the validation ELBO
    # epochs, raised to epoch * patience_increase on improvement
    patience: int = key(10, least=1)
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
    num_samples: int = key(10, least=1)  # sampled responses per test context
    max_decode_len: int = key(40, least=1)  # tokens per sampled response at most
    # skip contexts holding only the dialog-start turn
    min_context_utts: int = key(2, least=1)
    max_contexts: int = key(0, least=0)  # score the first N eligible contexts (0: all)
    rating_contexts: int = key(200, least=0)  # contexts in the human-rating CSV
    rating_samples: int = key(3, least=0)  # responses per context in the CSV
    seed: int = 0  # evaluation randomness (z samples, responses)


@dataclasses.dataclass(frozen=True)
class DialogRunConfig:
    """The dialog run, typed (``RunConfig``'s counterpart).

    Attributes:
      method: the row of ``objectives.DIALOG_METHODS`` that ``method_name`` (the
        key ``method``) names.
      architecture: ``(key, value)`` of each key marked ``arch``.
    """

    task: str = "dialog"  # main.py dispatches on this
    method: objectives.DialogMethod = derived()
    # cvae | cvae_bow | bn_cvae
    method_name: str = key("bn_cvae", arch=True, name="method")
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


def check(run: DialogRunConfig, method: objectives.DialogMethod) -> None:
    """The dialog task's own checks (``config.checked`` adds every task's)."""
    for split in ("train", "valid", "test"):
        why = f"data.{split}_file is not set (a dialog run reads three files)"
        require(bool(getattr(run.data, f"{split}_file")), why)
    require(run.model.init_scale > 0, "model.init_scale must be positive")
    require(run.train.patience_increase > 0, "train.patience_increase must be > 0")


def resolve(
    config: ml_collections.ConfigDict, vocab_size: int = 0, num_topics: int = 0
) -> DialogRunConfig:
    """Validates ``config`` (once per run) and returns its typed view.

    The sizes are derived data: a run passes 0 before it has read its dialogs,
    then sets them with ``DialogRunConfig.with_sizes``.
    """
    run = config_lib.checked(DialogRunConfig, config, objectives.get_method, check)
    return run.with_sizes(vocab_size, num_topics)
