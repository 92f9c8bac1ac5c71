"""Every training method as one row: a named combination of components.

The four axes are the posterior head (``models.posteriors.HEADS``), the KL transform
(``objectives.KL_TRANSFORMS``), the KL-weight schedule (``schedules.SCHEDULES``) and
the update procedure (``train.PROCEDURES``). Adding a method is adding a row here.
"""

from __future__ import annotations

import dataclasses

from bnvae_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Method:
    """A method: which component to use on each axis.

    Attributes:
      head: posterior head, a key of ``models.posteriors.HEADS``.
      kl_transform: how the KL enters the loss, a key of ``objectives.KL_TRANSFORMS``.
      schedule: KL weight over steps, a key of ``schedules.SCHEDULES``.
      procedure: which parameters each step moves, a key of ``train.PROCEDURES``.
      selection: validation loss for model selection: 'elbo' (rec + KL).
    """

    head: str
    kl_transform: str = "none"
    schedule: str = "linear"
    procedure: str = "joint"
    selection: str = "elbo"
    description: str = ""


METHODS: dict[str, Method] = {
    "vae": Method(
        head="gaussian",
        description="LSTM VAE with linear KL annealing (Bowman et al.)",
    ),
    "bn_vae": Method(
        head="bn_gaussian",
        description="BN-VAE: batch norm with fixed scale gamma on the posterior mean",
    ),
}


def get_method(name: str) -> Method:
    """Returns the row for ``name``; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise ConfigError(f"unknown method {name!r}; known methods: {known}") from None
