"""Every training method as one row: a named combination of components.

The four axes are the posterior head (``models.posteriors.HEADS``), the KL transform
(``objectives.KL_TRANSFORMS``), the KL-weight schedule (``schedules.SCHEDULES``) and
the update procedure (``PROCEDURES``). Adding a method is adding a row here: the
components in which it differs from the plain VAE.
"""

from __future__ import annotations

import dataclasses

from bnvae_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Method:
    """A method: which component to use on each axis (by default the VAE's).

    Attributes:
      head: posterior head, a key of ``models.posteriors.HEADS``.
      kl_transform: how the KL enters the loss, a key of ``objectives.KL_TRANSFORMS``.
      schedule: KL weight over steps, a key of ``schedules.SCHEDULES``.
      procedure: how parameters are updated, one of ``PROCEDURES``.
      selection: validation loss for model selection, one of ``SELECTIONS``.
      decoder: 'lstm', or 'lstm_skip' (z also feeds the output layer).
      description: one line for the reader.
    """

    head: str = "gaussian"
    kl_transform: str = "none"
    schedule: str = "linear"
    procedure: str = "joint"
    selection: str = "elbo"
    decoder: str = "lstm"
    description: str = ""


# 'joint': one SGD step on every parameter per batch.
# 'aggressive': He et al.'s encoder-only inner loop before each decoder step.
# 'svi': Kim et al.'s semi-amortised refinement of the posterior (SA-VAE).
PROCEDURES = ("joint", "aggressive", "svi")
# Validation loss that picks the best checkpoint: the ELBO (rec + KL), the
# β-weighted loss of β-VAE (rec + β KL) or the reconstruction alone (AE).
SELECTIONS = ("elbo", "beta", "rec")
DECODERS = ("lstm", "lstm_skip")


METHODS: dict[str, Method] = {
    "vae": Method(description="LSTM VAE with linear KL annealing (Bowman et al.)"),
    "bn_vae": Method(
        head="bn_gaussian",
        description="BN-VAE: batch norm with fixed scale gamma on the posterior mean "
        "(model.learn_gamma: a learnt per-dimension scale >= model.gamma_min)",
    ),
    "du_vae": Method(
        head="du_gaussian",
        description="DU-VAE: BN on the mean with a learnt scale of RMS "
        "model.du_gamma, dropout model.du_dropout on the variance, variance "
        "floor model.du_alpha/(2 pi e) (Shen et al.)",
    ),
    "beta_vae": Method(
        schedule="constant",
        selection="beta",
        description="beta-VAE: constant KL weight train.beta, no annealing",
    ),
    "ae": Method(
        schedule="zero",
        selection="rec",
        description="autoencoder: KL weight 0 (z still sampled), selection on rec",
    ),
    "cyclic": Method(
        schedule="cyclic",
        description="cyclical annealing of Fu et al. (train.cycles, "
        "train.cycle_ratio over the whole run)",
    ),
    "cyclic_epoch_reset": Method(
        schedule="cyclic_epoch_reset",
        description="the reference's --cycle schedule (bug fixed): the linear ramp "
        "restarts every train.cycle_epochs epochs",
    ),
    "free_bits": Method(
        kl_transform="free_bits",
        description="free bits on the whole KL (target train.target_kl)",
    ),
    "free_bits_dim": Method(
        kl_transform="free_bits_dim",
        description="free bits per dimension, target_kl / n each (Li et al.)",
    ),
    "delta_vae": Method(
        head="delta_gaussian",
        description="delta-VAE: sigma confined so every dimension has KL >= "
        "model.delta",
    ),
    "vmf_vae": Method(
        head="vmf",
        description="von Mises-Fisher posterior with fixed model.kappa and a "
        "uniform prior on the sphere",
    ),
    "agg_vae": Method(
        procedure="aggressive",
        description="lagging-inference VAE: aggressive encoder inner loop until "
        "validation MI stops rising (He et al.)",
    ),
    "sa_vae": Method(
        procedure="svi",
        description="semi-amortised VAE: model.svi_steps of SVI refine q, trained "
        "through the unrolled loop (Kim et al.)",
    ),
    "skip_vae": Method(
        decoder="lstm_skip",
        description="Skip-VAE: z also feeds the output layer at every step",
    ),
    "lstm_lm": Method(
        head="none",
        schedule="zero",
        description="LSTM language model: the decoder without z (exact NLL)",
    ),
}


def kl_weight_always_zero(method: Method, train) -> bool:
    """Whether the method's schedule keeps the KL weight at 0 on every step.

    ``train`` is the run's ``config.TrainConfig`` (``kl_start``,
    ``kl_warmup_epochs``, ``beta``). 'zero' always; 'constant' when β = 0; the
    linear ramps when there is no ramp (warm-up 0) and they start at 0 (the
    reference's test: kl_start < 1e-6). Cyclical annealing always rises to 1.
    """
    if method.schedule in ("linear", "cyclic_epoch_reset"):
        return train.kl_warmup_epochs <= 0 and train.kl_start < 1e-6
    return method.schedule == "zero" or (
        method.schedule == "constant" and train.beta == 0
    )


def get_method(name: str) -> Method:
    """Returns the row for ``name``; an unknown name lists the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS))
        raise ConfigError(f"unknown method {name!r}; known methods: {known}") from None
