"""Every training method as one row: a named combination of components.

The four axes are the posterior head (``models.posteriors.HEADS``), the KL transform
(``objectives.KL_TRANSFORMS``), the KL-weight schedule (``schedules.SCHEDULES``) and
the update procedure (``Method.procedure``). Adding a method is adding a row here: the
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
      procedure: how parameters are updated: 'joint' (one SGD step on every
        parameter per batch), 'aggressive' (He et al.'s encoder-only inner loop
        before each decoder step) or 'svi' (Kim et al.'s semi-amortised
        refinement of the posterior, SA-VAE).
      selection: the validation loss that picks the best checkpoint: 'elbo'
        (rec + KL), 'beta' (β-VAE's rec + β KL) or 'rec' (AE: the
        reconstruction alone).
      decoder: 'lstm', or 'lstm_skip' (z also feeds the output layer).
    """

    head: str = "gaussian"
    kl_transform: str = "none"
    schedule: str = "linear"
    procedure: str = "joint"
    selection: str = "elbo"
    decoder: str = "lstm"


METHODS: dict[str, Method] = {
    # LSTM VAE with linear KL annealing (Bowman et al.)
    "vae": Method(),
    # BN-VAE: batch norm with fixed scale gamma on the posterior mean
    # (model.learn_gamma: a learnt per-dimension scale >= model.gamma_min)
    "bn_vae": Method(head="bn_gaussian"),
    # DU-VAE: BN on the mean with a learnt scale of RMS model.du_gamma, dropout
    # model.du_dropout on the variance, variance floor model.du_alpha/(2 pi e)
    # (Shen et al.)
    "du_vae": Method(head="du_gaussian"),
    # beta-VAE: constant KL weight train.beta, no annealing
    "beta_vae": Method(schedule="constant", selection="beta"),
    # autoencoder: KL weight 0 (z still sampled), selection on rec
    "ae": Method(schedule="zero", selection="rec"),
    # cyclical annealing of Fu et al. (train.cycles, train.cycle_ratio over the
    # whole run)
    "cyclic": Method(schedule="cyclic"),
    # the reference's --cycle schedule (bug fixed): the linear ramp restarts
    # every train.cycle_epochs epochs
    "cyclic_epoch_reset": Method(schedule="cyclic_epoch_reset"),
    # free bits on the whole KL (target train.target_kl)
    "free_bits": Method(kl_transform="free_bits"),
    # free bits per dimension, target_kl / n each (Li et al.)
    "free_bits_dim": Method(kl_transform="free_bits_dim"),
    # delta-VAE: sigma confined so every dimension has KL >= model.delta
    "delta_vae": Method(head="delta_gaussian"),
    # von Mises-Fisher posterior with fixed model.kappa and a uniform prior on
    # the sphere
    "vmf_vae": Method(head="vmf"),
    # lagging-inference VAE: aggressive encoder inner loop until validation MI
    # stops rising (He et al.)
    "agg_vae": Method(procedure="aggressive"),
    # semi-amortised VAE: model.svi_steps of SVI refine q, trained through the
    # unrolled loop (Kim et al.)
    "sa_vae": Method(procedure="svi"),
    # Skip-VAE: z also feeds the output layer at every step
    "skip_vae": Method(decoder="lstm_skip"),
    # LSTM language model: the decoder without z (exact NLL)
    "lstm_lm": Method(head="none", schedule="zero"),
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
