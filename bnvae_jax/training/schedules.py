"""KL-weight schedules: pure ``step -> weight`` functions (the 'schedule' axis).

``step`` counts the training batches taken so far (skipped batches do not count);
the weight returned for ``step`` is the one used by that batch's loss. Every
registered schedule is built from one ``ScheduleSpec`` by ``build``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
    """Everything any schedule may need, derived once from the run's config.

    Attributes:
      kl_start: weight before the first step (the ramp's start).
      warmup_steps: ramp length in steps, the reference's ``warm_up · N_train /
        batch_size`` (a float: a fractional number of batches per epoch).
      beta: the constant weight of ``constant`` (β-VAE).
      steps_per_epoch: training batches per epoch (skipped batches excluded).
      total_steps: planned training steps (Fu et al.'s cycles split these).
      num_cycles: M, cycles of ``cyclic``.
      cycle_ratio: R, fraction of each cycle spent ramping.
      cycle_epochs: C, epochs per cycle of ``cyclic_epoch_reset``.
    """

    kl_start: float = 0.0
    warmup_steps: float = 0.0
    beta: float = 1.0
    steps_per_epoch: int = 1
    total_steps: int = 1
    num_cycles: int = 4
    cycle_ratio: float = 0.5
    cycle_epochs: int = 10


def constant(value: float) -> Schedule:
    """β(step) = value for every step (β-VAE; 0 is an autoencoder)."""
    return lambda step: jnp.full(jnp.shape(step), value, jnp.float32)


def linear(kl_start: float, warmup_steps: float) -> Schedule:
    """Linear annealing from ``kl_start`` to 1.

    The reference adds the increment before each batch's loss, so batch ``step``
    (0-based) uses ``min(1, kl_start + (step + 1) * (1 - kl_start) / warmup_steps)``.
    ``warmup_steps <= 0`` keeps the weight at ``kl_start``.
    """
    rate = 0.0 if warmup_steps <= 0 else (1.0 - kl_start) / warmup_steps

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return jnp.minimum(1.0, kl_start + (step + 1.0) * rate)

    return schedule


def cyclic(kl_start: float, total_steps: int, cycles: int, ratio: float) -> Schedule:
    """Fu et al.'s cyclical annealing: ``cycles`` (M) cycles over the whole run.

    Within each cycle of ``total_steps / cycles`` steps the weight rises
    linearly from ``kl_start`` to 1 over the first ``ratio`` of the cycle, then
    stays at 1. Step 0 has weight ``kl_start``.
    """
    period = max(total_steps / cycles, 1.0)
    ramp = max(period * ratio, 1e-9)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        position = step - jnp.floor(step / period) * period
        return jnp.minimum(1.0, kl_start + (1.0 - kl_start) * position / ramp)

    return schedule


def cyclic_epoch_reset(
    kl_start: float, warmup_steps: float, steps_per_epoch: int, cycle_epochs: int
) -> Schedule:
    """The reference's ``--cycle C`` schedule after its bug fix.

    The linear ramp of ``linear``, restarted at ``kl_start`` at the start of every
    epoch ``e >= 1`` with ``(e - 1) % C == 0`` (so the first cycle is one epoch).
    Before the fix the weight stayed at ``kl_start`` for the whole reset epoch;
    that bug is not reproduced.
    """
    ramp, spe = linear(kl_start, warmup_steps), max(int(steps_per_epoch), 1)

    def schedule(step):
        step = jnp.asarray(step, jnp.int32)
        epoch = step // spe
        # The last reset epoch at or before ``epoch`` (none during epoch 0).
        last_reset = 1 + ((epoch - 1) // cycle_epochs) * cycle_epochs
        start = jnp.where(epoch >= 1, last_reset * spe, 0)
        return ramp((step - start).astype(jnp.float32))

    return schedule


# Every entry builds ``step -> weight`` from a ScheduleSpec.
SCHEDULES: dict[str, Callable[[ScheduleSpec], Schedule]] = {
    "linear": lambda s: linear(s.kl_start, s.warmup_steps),
    "constant": lambda s: constant(s.beta),
    "zero": lambda s: constant(0.0),
    "cyclic": lambda s: cyclic(s.kl_start, s.total_steps, s.num_cycles, s.cycle_ratio),
    "cyclic_epoch_reset": lambda s: cyclic_epoch_reset(
        s.kl_start, s.warmup_steps, s.steps_per_epoch, s.cycle_epochs
    ),
}
