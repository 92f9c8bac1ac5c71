"""The tasks' rules after each validation: learning-rate decay and stopping.

Each rule reads and updates its fields of the task's ``LoopState`` (saved with
every checkpoint, so a resumed run continues the rule where it was).
"""

from __future__ import annotations

from bnvae_jax.training import loop as loop_lib
from bnvae_jax.training import steps


def plateau(loop, val_loss: float, epoch: int, cfg) -> bool:
    """The text VAE reference's LR-decay rule; True when the rate decays.

    ``loop.ref_loss`` is the last validation loss that did not get worse; after
    ``cfg.decay_epoch`` worse epochs (and not before ``cfg.load_best_epoch``)
    ``loop.learning_rate`` is multiplied by ``cfg.lr_decay`` and
    ``loop.decay_count`` grows; the caller reloads the best checkpoint.
    """
    worse = val_loss > loop.ref_loss
    loop.not_improved = loop.not_improved + 1 if worse else 0
    decay = worse and loop.not_improved >= cfg.decay_epoch
    decay = decay and epoch >= cfg.load_best_epoch
    if decay or not worse:  # a new reference loss, counted from 0 again
        loop.ref_loss, loop.not_improved = val_loss, 0
    if decay:
        loop.learning_rate *= cfg.lr_decay
        loop.decay_count += 1
    return decay


def plateau_since_best(loop, improved: bool, cfg) -> str:
    """The classifier reference's rule: decay after epochs without a new best.

    After ``cfg.decay_epoch`` epochs without improvement ``loop.learning_rate``
    is multiplied by ``cfg.lr_decay``; the ``cfg.max_decay``-th decay stops.

    Returns:
      'best', 'keep', 'decay' (reload the best, go on at the lower rate) or
      'stop'.
    """
    if improved:
        loop.bad_epochs = 0
        return "best"
    loop.bad_epochs += 1
    if loop.bad_epochs < cfg.decay_epoch:
        return "keep"
    loop.bad_epochs = 0
    loop.learning_rate *= cfg.lr_decay
    loop.decays += 1
    return "stop" if loop.decays >= cfg.max_decay else "decay"


def patience(loop, val_loss: float, improved: bool, done_epochs: int, cfg) -> None:
    """Zhao et al.'s early stopping, after an epoch whose loss is ``val_loss``.

    A new best that beats ``loop.threshold`` by the factor
    ``cfg.improve_threshold`` extends ``loop.patience`` to ``done_epochs *
    cfg.patience_increase`` epochs; training stops (``loop.done``) once
    ``patience <= done_epochs`` when ``cfg.early_stop``.
    """
    if improved and val_loss <= loop.threshold * cfg.improve_threshold:
        loop.patience = max(loop.patience, done_epochs * cfg.patience_increase)
        loop.threshold = val_loss
    if cfg.early_stop and loop.patience <= done_epochs:
        loop.done = True


def reload_best(ctx: loop_lib.Context, state, learning_rate: float):
    """The best checkpoint's parameters with a fresh optimizer at ``learning_rate``.

    The step count carries on (the reference keeps its KL-annealing counter).
    """
    best, _ = ctx.ckpt.restore_best(loop_lib.state_tree(state))
    state = state.replace(params=best["params"], batch_stats=best["batch_stats"])
    return ctx.par.replicate(steps.reset_optimizer(state, learning_rate))
