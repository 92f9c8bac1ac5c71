"""KL-weight schedules: pure ``step -> weight`` functions (the 'schedule' axis).

``step`` counts the training batches taken so far (skipped batches do not count);
the weight returned for ``step`` is the one used by that batch's loss.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def constant(kl_start: float, warmup_steps: float = 0.0) -> Schedule:
    """β(step) = kl_start for every step (β-VAE; 0 is an autoencoder)."""
    del warmup_steps

    def schedule(step):
        return jnp.full(jnp.shape(step), kl_start, jnp.float32)

    return schedule


def linear(kl_start: float, warmup_steps: float) -> Schedule:
    """Linear annealing from ``kl_start`` to 1 (SPEC §3.2).

    The reference adds the increment before each batch's loss, so batch ``step``
    (0-based) uses ``min(1, kl_start + (step + 1) * (1 - kl_start) / warmup_steps)``.
    ``warmup_steps <= 0`` keeps the weight at ``kl_start``.
    """
    rate = 0.0 if warmup_steps <= 0 else (1.0 - kl_start) / warmup_steps

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        return jnp.minimum(1.0, kl_start + (step + 1.0) * rate)

    return schedule


def warmup_steps(warmup_epochs: float, num_train: int, batch_size: int) -> float:
    """The reference's ramp length: ``warm_up * N_train / batch_size`` (a float)."""
    return warmup_epochs * num_train / batch_size


# Every factory takes (kl_start, warmup_steps) and returns ``step -> weight``.
SCHEDULES = {"constant": constant, "linear": linear}
