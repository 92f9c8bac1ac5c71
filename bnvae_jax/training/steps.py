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

from bnvae_jax import parallel
from bnvae_jax.models import posteriors, svi
from bnvae_jax.training import bn_health, objectives

Batch = Mapping[str, jax.Array]  # tokens <int32>[B, T], lengths <int32>[B], mask [B]


class TrainState(train_state.TrainState):
    """Parameters, BN running statistics and optimizer state (every task's).

    ``step`` counts batches.
    """

    batch_stats: Any


@functools.lru_cache(maxsize=16)
def make_optimizer(learning_rate: float, clip_norm: float, kind: str = "sgd"):
    """Global-norm clipping, then plain SGD (momentum 0) or Adam.

    The learning rate lives in the optimizer state (``inject_hyperparams``), so
    a plateau decay changes a value, not the compiled step. One object per
    setting: a jitted step compiled for it serves every state that uses it.
    """

    def factory(learning_rate):
        update = optax.adam if kind == "adam" else optax.sgd
        return optax.chain(optax.clip_by_global_norm(clip_norm), update(learning_rate))

    return optax.inject_hyperparams(factory)(learning_rate=learning_rate)


def variables(state: TrainState) -> dict:
    """The model variables of a train state."""
    return {"params": state.params, "batch_stats": state.batch_stats}


def create_train_state(
    model: nn.Module, key: jax.Array, batch: Batch, tx
) -> TrainState:
    """Initialises parameters and running statistics from one example batch."""
    rngs = dict(zip(("params", "sample", "dropout"), jax.random.split(key, 3)))
    args = batch["tokens"], batch["lengths"], batch["mask"]
    variables = model.init(rngs, *args, train=False)
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=tx,
    )
    # A strongly typed counter: a Python 0 would compile the step a second time.
    return state.replace(step=jnp.zeros((), jnp.int32))


def reset_optimizer(state: TrainState, lr: float) -> TrainState:
    """``state`` with a fresh optimizer at ``lr``; params and ``step`` are kept.

    The reference rebuilds its SGD optimisers when it reloads the best model on a
    plateau, while its KL-annealing counter carries on.
    """
    opt_state = state.tx.init(state.params)
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return state.replace(opt_state=opt_state)


@dataclasses.dataclass(frozen=True)
class StepFns:
    """Non-array collaborators of the train step, bound before jit.

    Attributes:
      kl_schedule: step -> KL weight.
      kl_transform: per-dimension KL -> the per-example KL term of the loss.
      clip_norm: global-norm clip (the partial updates of 'aggressive' clip
        before masking, over every gradient, as the reference does).
      svi: the ModelConfig when the procedure is 'svi' (SA-VAE), else None.
      axis_name: the pmap axis the batch is split over (None under jit, where
        the step sees the global batch): gradients and metric sums are summed
        over it and random draws are the device's rows of the global draw.
    """

    kl_schedule: Any
    kl_transform: Any
    clip_norm: float = 5.0
    svi: Any = None
    axis_name: str | None = None


# Which parameters a step moves: all of them, or one side of the VAE
# (He et al.'s aggressive training alternates encoder-only and decoder-only steps).
UPDATES = ("all", "encoder", "decoder")


def _mask_update(grads, keep: str, clip_norm: float):
    """Clips by the global norm of *all* gradients, then zeroes the other side.

    Clipping before masking reproduces the reference, whose encoder-only steps
    clip a norm that includes the (unused) decoder gradients.
    """
    norm = optax.tree.norm(grads)
    factor = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))

    def one(path, g):
        moves = (path[0].key == "decoder") == (keep == "decoder")
        return g * factor if moves else jnp.zeros_like(g)

    return jax.tree_util.tree_map_with_path(one, grads)


def global_mean(loss, mask, axis_name):
    """Turns a masked mean over this device's rows into its share of the global mean.

    Summed over devices (as the gradients are) it is the global batch's mean.
    """
    if axis_name is None:
        return loss
    count = jnp.sum(mask)
    total = jnp.maximum(parallel.psum(count, axis_name), 1.0)
    return loss * jnp.maximum(count, 1.0) / total


def _loss(params, state, batch, keys, kl_weight, fns):
    """The batch's loss (its share under pmap), with (rec, per-dim KL, updates).

    SA-VAE (``fns.svi``) takes the loss at λ_K, a differentiable function of the
    encoder: the SVI steps see the decoder through ``stop_gradient``, so the
    decoder's gradient is ∂loss/∂θ at λ_K and the encoder's flows through the
    trajectory.
    """
    tokens, lengths, mask = batch["tokens"], batch["lengths"], batch["mask"]
    sample_key, dropout_key = [
        parallel.row_offset_key(k, fns.axis_name, len(mask)) for k in keys
    ]
    model_vars = {"params": params, "batch_stats": state.batch_stats}
    apply = functools.partial(state.apply_fn, train=True)
    mutable = ["batch_stats", "intermediates"]
    if fns.svi is None:
        rngs = {"sample": sample_key, "dropout": dropout_key}
        out, updates = apply(
            model_vars, tokens, lengths, mask, rngs=rngs, mutable=mutable
        )
        rec, kl = out.rec, out.kl
    else:
        post, updates = apply(
            model_vars, tokens, lengths, mask, method="encode", mutable=mutable
        )
        fixed = {"params": jax.lax.stop_gradient(params), "batch_stats": {}}

        def rec_fn(z, k):
            rngs = {"dropout": jax.random.fold_in(dropout_key, k + 1)}
            return apply(fixed, tokens, lengths, z, method="reconstruction", rngs=rngs)

        example_keys = parallel.split_rows(
            jax.random.fold_in(keys[0], 1), fns.axis_name, len(mask)
        )
        post = svi.refine(post, rec_fn, example_keys, kl_weight=kl_weight, cfg=fns.svi)
        z = posteriors.gaussian_sample(post, sample_key)
        rngs = {"dropout": dropout_key}
        rec = apply(model_vars, tokens, lengths, z, method="reconstruction", rngs=rngs)
        kl = posteriors.gaussian_kl(*post)
    loss = objectives.vae_loss(rec, kl, mask, kl_weight, fns.kl_transform)
    return global_mean(loss, mask, fns.axis_name), (rec, kl, updates)


def train_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    sub: jax.Array | int = 0,
    *,
    fns: StepFns,
    update: str = "all",
):
    """One SGD step on the annealed ELBO (or SA-VAE's refined ELBO).

    Args:
      state: the current train state.
      batch: tokens <int32>[B, T], lengths <int32>[B], mask <float32>[B].
      rng: the run's root key; this step uses ``fold_in(rng, state.step)``
        (and ``fold_in`` of ``sub`` for the inner steps of 'aggressive').
      sub: inner-step index (0 for ordinary steps).
      fns: schedule, KL transform and procedure settings.
      update: 'all', or 'encoder' / 'decoder' only (the other side's
        parameters stay bitwise unchanged). An 'encoder' step does not advance
        ``state.step``: the KL schedule counts outer batches, as the reference.

    Returns:
      the new state and a dict of scalar metrics (sums over real examples and
      their count, so the host can aggregate over batches and devices).
    """
    key = jax.random.fold_in(rng, state.step)
    key = jax.lax.cond(
        jnp.asarray(sub) > 0, lambda: jax.random.fold_in(key, sub), lambda: key
    )
    keys = jax.random.split(key)
    kl_weight = fns.kl_schedule(state.step)
    mask = batch["mask"]
    grads, (rec, kl_dim, updates) = jax.grad(_loss, has_aux=True)(
        state.params, state, batch, keys, kl_weight, fns
    )
    grads = parallel.psum(grads, fns.axis_name)
    grad_norm = optax.tree.norm(grads)
    if update != "all":
        grads = _mask_update(grads, update, fns.clip_norm)
    new_state = state.apply_gradients(
        grads=grads, batch_stats=updates.get("batch_stats", state.batch_stats)
    )
    if update == "encoder":
        new_state = new_state.replace(step=state.step)
    kl = jnp.sum(kl_dim, axis=-1)
    sums = {
        "rec_sum": jnp.sum(rec * mask),
        "kl_sum": jnp.sum(kl * mask),
        "loss_sum": jnp.sum((rec + kl_weight * kl) * mask),
        "count": jnp.sum(mask),
        "tokens": jnp.sum((batch["lengths"] - 1) * (batch["lengths"] > 0)),
    }
    metrics = {
        **parallel.psum(sums, fns.axis_name),
        "kl_weight": kl_weight,
        "grad_norm": grad_norm,
        "param_norm": optax.tree.norm(new_state.params),
        "learning_rate": state.opt_state.hyperparams["learning_rate"],
        # BN head health (global-batch statistics: no psum needed).
        **bn_health.step_metrics(updates),
    }
    return new_state, metrics


def jit_train_step(fns: StepFns, update: str = "all"):
    """The train step, jitted once with the state donated."""
    return jax.jit(
        functools.partial(train_step, fns=fns, update=update), donate_argnums=0
    )
