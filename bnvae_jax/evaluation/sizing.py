"""Evaluation sizes from the devices: IW-NLL sentences per batch and logits bound.

A size set in the config is used as given; 0 means "from the devices". On CPU
the sizes are the ones every CPU figure of this project was measured with; on
accelerators they follow the device's memory. Results never depend on them:
every sentence and every importance sample draws from its own key.
"""

from __future__ import annotations

import dataclasses

from bnvae_jax import parallel

CPU_IW_BATCH = 4  # sentences per device and batch
CPU_MAX_LOGITS = 1 << 26  # float32 logits per device and sample chunk (256 MiB)
ACCELERATOR_IW_BATCH = 16  # sentences per device and batch
# A chunk's logits, their exponentials and the decoder's activations stay in
# a quarter of the device's memory: 1/16 of its bytes in float32 logits.
ACCELERATOR_LOGITS_SHARE = 16
FALLBACK_MEMORY = 16 << 30  # bytes, when a backend does not report its memory


@dataclasses.dataclass(frozen=True)
class IWSizes:
    """Sentences per IW-NLL batch (over all devices) and logits per device."""

    batch: int
    max_logits: int


def iw_sizes(iw_batch: int, iw_max_logits: int, par: parallel.Parallel) -> IWSizes:
    """The sizes an IW-NLL pass uses; configured values win over the backend's.

    Batches chosen here are a multiple of the device count, so that no device
    decodes padding only. An accelerator's memory is the limit its
    ``memory_stats`` report, else ``FALLBACK_MEMORY``.
    """
    device = par.local_devices[0]
    if device.platform == "cpu":
        batch, logits = max(CPU_IW_BATCH, par.num_devices), CPU_MAX_LOGITS
    else:
        try:
            stats = device.memory_stats() or {}
        except (NotImplementedError, RuntimeError):
            stats = {}
        memory = int(stats.get("bytes_limit") or FALLBACK_MEMORY)
        batch = ACCELERATOR_IW_BATCH * par.num_devices
        logits = memory // (4 * ACCELERATOR_LOGITS_SHARE)
    return IWSizes(iw_batch or par.padded(batch), iw_max_logits or logits)
