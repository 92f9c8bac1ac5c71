"""Train state and the pure, jitted training step."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from bnvae_jax import objectives

Batch = Mapping[str, jax.Array]  # tokens <int32>[B, T], lengths <int32>[B], mask [B]


class TrainState(train_state.TrainState):
    """Parameters, BN running statistics and SGD state; ``step`` counts batches."""

    batch_stats: Any


def make_optimizer(learning_rate: float, clip_norm: float):
    """Plain SGD after global-norm clipping; the LR lives in the optimizer state.

    Keeping the learning rate in ``inject_hyperparams`` state means a plateau decay
    changes a value, not the compiled step.
    """

    def factory(learning_rate):
        return optax.chain(
            optax.clip_by_global_norm(clip_norm), optax.sgd(learning_rate)
        )

    return optax.inject_hyperparams(factory)(learning_rate=learning_rate)


def learning_rate(state: TrainState) -> float:
    return float(state.opt_state.hyperparams["learning_rate"])


def create_train_state(
    model: nn.Module, key: jax.Array, batch: Batch, tx
) -> TrainState:
    """Initialises parameters and running statistics from one example batch."""
    params_key, sample_key, dropout_key = jax.random.split(key, 3)
    variables = model.init(
        {"params": params_key, "sample": sample_key, "dropout": dropout_key},
        batch["tokens"],
        batch["lengths"],
        batch["mask"],
        train=False,
    )
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
    )
    # A strongly typed counter: a Python 0 would compile the step a second time.
    return state.replace(step=jnp.zeros((), jnp.int32))


def reset_optimizer(state: TrainState, params, batch_stats, lr: float) -> TrainState:
    """New params/statistics with a fresh optimizer at ``lr``; ``step`` is kept.

    The reference rebuilds its SGD optimisers when it reloads the best model on a
    plateau, while its KL-annealing counter carries on.
    """
    opt_state = state.tx.init(params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return state.replace(params=params, batch_stats=batch_stats, opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class StepFns:
    """Non-array collaborators of the train step, bound before jit."""

    kl_schedule: Any
    kl_transform: Any


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, fns: StepFns):
    """One SGD step on the annealed ELBO.

    Args:
      state: the current train state.
      batch: tokens <int32>[B, T], lengths <int32>[B], mask <float32>[B].
      rng: the run's root key; this step uses ``fold_in(rng, state.step)``.
      fns: schedule and KL transform.

    Returns:
      the new state and a dict of scalar metrics (sums over real examples and
      their count, so the host can aggregate over batches and devices).
    """
    key = jax.random.fold_in(rng, state.step)
    sample_key, dropout_key = jax.random.split(key)
    kl_weight = fns.kl_schedule(state.step)
    mask = batch["mask"]

    def loss_fn(params):
        out, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["tokens"],
            batch["lengths"],
            mask,
            train=True,
            rngs={"sample": sample_key, "dropout": dropout_key},
            mutable=["batch_stats"],
        )
        loss = objectives.vae_loss(out.rec, out.kl, mask, kl_weight, fns.kl_transform)
        return loss, (out, updates)

    grads, (out, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    new_state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    kl = jnp.sum(out.kl, axis=-1)
    metrics = {
        "rec_sum": jnp.sum(out.rec * mask),
        "kl_sum": jnp.sum(kl * mask),
        "count": jnp.sum(mask),
        "tokens": jnp.sum((batch["lengths"] - 1) * (batch["lengths"] > 0)),
        "kl_weight": kl_weight,
        "grad_norm": optax.tree.norm(grads),
        "param_norm": optax.tree.norm(new_state.params),
        "learning_rate": state.opt_state.hyperparams["learning_rate"],
    }
    return new_state, metrics


def jit_train_step(fns: StepFns):
    """The train step, jitted once with the state donated."""
    return jax.jit(functools.partial(train_step, fns=fns), donate_argnums=0)
