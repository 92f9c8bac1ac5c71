"""Data parallelism over devices and hosts: device mesh, shardings, the pmap path.

Two ways to run the one ``steps.train_step`` on a global batch split over devices:

- ``jit`` (the main path): ``jax.jit`` over a ``Mesh`` with one ``data`` axis;
  batches are sharded over it, parameters and optimizer state replicated, and
  the jitted step takes these shardings from its arguments. The step is
  written for the global batch, so its sums (the loss, the BN head's masked
  batch moments) are global sums and XLA adds the all-reduces.
- ``pmap``: ``jax.pmap`` of the same step with ``StepFns.axis_name``; the step
  ``psum``s gradients and metric sums and the BN head its moments, and draws
  its random numbers as the rows of one global draw (``row_offset_key``).

Either way a run's numbers do not depend on the device count. Multi-host runs
call ``initialize_distributed`` first; every host builds each global batch (the
data pipeline is deterministic) and feeds only its own rows to its devices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnvae_jax.config import ParallelConfig, check_parallel
from bnvae_jax.errors import ConfigError, HostError

AXIS = "data"  # the mesh / pmap axis the batch is split over


def initialize_distributed(cfg: ParallelConfig) -> None:
    """Joins the multi-host run described by ``cfg`` (a no-op unless distributed).

    Must run before anything touches a JAX backend. Unset values are left to
    JAX, which reads them from JAX_COORDINATOR_ADDRESS or a SLURM / Open MPI
    environment.
    """
    check_parallel(cfg)
    if not cfg.distributed or jax.distributed.is_initialized():
        return
    jax.distributed.initialize(
        coordinator_address=cfg.coordinator_address or None,
        num_processes=cfg.num_processes or None,
        process_id=cfg.process_id if cfg.process_id >= 0 else None,
        heartbeat_timeout_seconds=cfg.heartbeat_timeout_s,
        shutdown_timeout_seconds=cfg.shutdown_timeout_s,
    )


def first_host_then_others(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on process 0, then on the other hosts; returns its result.

    For work that writes into a directory the hosts share (the synthetic
    corpus): process 0 writes it, the others read what it wrote. After each
    turn the hosts compare notes, so when a host fails every host stops with
    an error (the failed one with its own) instead of waiting for it.
    """
    result = error = None
    for first in (True, False):
        if (jax.process_index() == 0) == first:
            try:
                result = fn()
            except Exception as e:  # every host must hear of it first
                error = e
        flags = multihost_utils.process_allgather(np.int32(error is not None))
        if error is not None:
            raise error
        if np.any(flags):
            failed = np.flatnonzero(np.asarray(flags)).tolist()
            raise HostError(f"process(es) {failed} failed while {what}; see their logs")
    return result


@dataclasses.dataclass(frozen=True)
class Parallel:
    """The devices a run uses and how its steps and passes are mapped onto them.

    Attributes:
      mode: 'jit' or 'pmap'.
      mesh: the devices, one ``data`` axis, ordered host by host so that host
        ``p`` holds rows ``[p B/H, (p+1) B/H)`` of every global batch.
    """

    mode: str
    mesh: Mesh

    @property
    def devices(self) -> tuple:
        return tuple(self.mesh.devices.flat)

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    @property
    def local_devices(self) -> tuple:
        return tuple(d for d in self.devices if d.process_index == jax.process_index())

    @property
    def num_hosts(self) -> int:
        return len({d.process_index for d in self.devices})

    @property
    def axis_name(self) -> str | None:
        """The named axis the step and the BN head reduce over (pmap only)."""
        return AXIS if self.mode == "pmap" else None

    def sharding(self, *spec) -> NamedSharding:
        """``PartitionSpec(*spec)`` on the mesh: ``()`` replicated, ``(AXIS,)`` rows."""
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def describe(self, batch_size: int) -> str:
        """One line: which devices, how the batch is split, and a hint if thin."""
        rows, platform = batch_size // self.num_devices, self.devices[0].platform
        line = (
            f"devices: {self.num_devices} {platform} ({self.num_hosts} host(s), "
            f"mode {self.mode}), {rows} rows of each batch of {batch_size} per device"
        )
        if platform != "cpu" and self.num_devices > 1 and rows < MIN_ROWS_PER_DEVICE:
            line += (
                f"; below {MIN_ROWS_PER_DEVICE} rows per device a step gains little "
                "from more devices (parallel.num_devices=0 picks fewer)"
            )
        return line

    def padded(self, size: int) -> int:
        """``size`` rounded up to a multiple of the device count."""
        return -(-size // self.num_devices) * self.num_devices

    # -- placing data ----------------------------------------------------------

    def replicate(self, tree):
        """Every leaf replicated over the mesh (a no-op for leaves already so).

        Every host passes the same values.
        """
        if self.num_devices == 1:
            return tree
        target = self.sharding()

        def one(x):
            if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(target, x.ndim):
                return x
            local = x if isinstance(x, jax.Array) else np.asarray(x)  # keys too
            return jax.make_array_from_process_local_data(target, local)

        return jax.tree.map(one, tree)

    def local_copy(self, tree):
        """The tree on this host's first device (for work every host repeats)."""

        def first_shard(x):
            return x.addressable_shards[0].data if isinstance(x, jax.Array) else x

        return jax.device_put(jax.tree.map(first_shard, tree), self.local_devices[0])

    def shard_batch(self, arrays: Mapping[str, np.ndarray]) -> dict:
        """A global batch (every host passes the same one) placed on the devices.

        jit: global arrays sharded over ``data`` (numpy on one device: measured
        on CPU, even a one-device sharding made the PTB-size step 4x slower);
        pmap: this host's rows as ``[local devices, rows per device, ...]``.
        """
        rows, n = self.sharding(AXIS), len(self.local_devices)

        def place(x):
            local = np.split(x, self.num_hosts)[jax.process_index()]
            if self.mode == "pmap":
                return local.reshape(n, len(local) // n, *local.shape[1:])
            if self.num_devices == 1:
                return local
            return jax.make_array_from_process_local_data(rows, local, x.shape)

        return {name: place(np.asarray(x)) for name, x in arrays.items()}

    # -- mapped functions ------------------------------------------------------

    def pmap_step(self, fn: Callable, num_args: int) -> Callable:
        """``fn(state, batch, *others) -> (state, metrics)`` under ``jax.pmap``.

        The batch (argument 1) comes from ``shard_batch``; the state and the
        ``num_args - 2`` other arguments go in, and state and metrics come out,
        replicated. ``fn`` must reduce over ``self.axis_name``
        (``steps.StepFns.axis_name``). The state is donated, as in the jitted
        step: its buffers are reused for the new state, so the caller must not
        touch the old one. The jit path needs no wrapper: a jitted step takes
        its shardings from its arguments.
        """
        return jax.pmap(
            fn,
            axis_name=AXIS,
            in_axes=(None, 0) + (None,) * (num_args - 2),
            out_axes=(None, None),
            devices=self.devices,
            donate_argnums=(0,),
        )

    def map_rows(self, fn: Callable, num_rows: int) -> Callable:
        """A per-row function over the devices, called from the host.

        Args:
          fn: ``fn(variables, key, *rows) -> tuple of [B, ...] arrays``, where
            ``rows`` are ``num_rows`` arrays with the batch as leading axis and
            ``key`` a PRNG key.
          num_rows: how many row arguments ``fn`` takes.

        Returns:
          ``run(variables, key, *rows)`` taking numpy rows of any batch size
          (padded up to a multiple of the device count) and returning numpy
          arrays of the original rows, the same on every host.
        """

        def with_key_data(variables, key_data, *rows):
            return fn(variables, jax.random.wrap_key_data(key_data), *rows)

        if self.mode == "pmap":
            axes = (None, None) + (0,) * num_rows
            mapped = jax.pmap(with_key_data, AXIS, in_axes=axes, devices=self.devices)
        elif self.num_devices == 1:
            mapped = jax.jit(with_key_data)
        else:
            both, rows = self.sharding(), self.sharding(AXIS)
            ins = (both, both) + (rows,) * num_rows
            mapped = jax.jit(with_key_data, in_shardings=ins, out_shardings=rows)

        def place(variables, key, *rows):
            pad = [(0, self.padded(len(rows[0])) - len(rows[0]))]  # zero rows
            rows = [np.pad(r, pad + [(0, 0)] * (np.ndim(r) - 1)) for r in rows]
            placed = self.shard_batch(dict(enumerate(rows)))
            return (variables, np.asarray(jax.random.key_data(key)), *placed.values())

        def to_host(x) -> np.ndarray:  # the global rows, the same on every host
            if self.mode == "pmap":  # this host's rows as [local devices, rows, ...]
                x = np.asarray(x).reshape(-1, *x.shape[2:])
            # One process: the array itself; several: every host's rows, joined.
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))

        def run(variables, key, *rows):
            out = mapped(*place(variables, key, *rows))
            return tuple(to_host(o)[: len(rows[0])] for o in out)

        # The compiled program for these arguments (to inspect its collectives).
        run.lower = lambda *args: mapped.lower(*place(*args))
        return run

    # -- hosts -----------------------------------------------------------------

    def check_hosts_agree(self, config: ml_collections.ConfigDict) -> None:
        """Raises on every host when the hosts were given different configs."""
        every = np.asarray(multihost_utils.process_allgather(config_digest(config)))
        differ = np.flatnonzero(np.any(every != every[0], axis=1)).tolist()
        if differ:
            raise ConfigError(
                f"hosts disagree on the config: process(es) {differ} differ from "
                "process 0; pass every host the same config and overrides"
            )


def config_digest(config: ml_collections.ConfigDict) -> np.ndarray:
    """<uint32>[8]: SHA-256 of the config without the keys that are per host."""
    values = json.loads(config.to_json_best_effort())
    values.get("parallel", {}).pop("process_id", None)  # may differ between hosts
    text = json.dumps(values, sort_keys=True).encode()
    return np.frombuffer(hashlib.sha256(text).digest(), np.uint32).copy()


# Rows per accelerator below which another device no longer pays (README,
# "Scaling out"): an LSTM step is a chain of T small dependent products whose
# time hardly changes between 4 and 32 rows, so splitting the paper's batch of
# 32 over 8 GPUs saves little compute and adds a gradient all-reduce per step.
MIN_ROWS_PER_DEVICE = 32


def auto_devices(available: int, host_batch: int, platform: str) -> int:
    """Devices per host when ``parallel.num_devices`` is 0.

    CPU: all of them (a host shows several CPU devices only when asked to with
    ``--xla_force_host_platform_device_count``). Accelerators: the most devices
    that divide the host's share of the batch and keep at least
    ``MIN_ROWS_PER_DEVICE`` rows each; one when even two would not.
    """
    if platform == "cpu":
        return available
    fits = range(1, min(available, host_batch // MIN_ROWS_PER_DEVICE) + 1)
    return max((n for n in fits if host_batch % n == 0), default=1)


def build(cfg: ParallelConfig, batch_size: int = 0) -> Parallel:
    """The devices of this run: ``num_devices`` per host on every host.

    With ``num_devices`` 0, ``auto_devices`` picks them for a global batch of
    ``batch_size`` sentences (0: all local devices).

    Raises:
      ConfigError: a host has fewer devices than asked for.
    """
    check_parallel(cfg)
    local = jax.local_devices()
    n, platform = len(local), local[0].platform
    auto = auto_devices(n, batch_size // jax.process_count(), platform)
    per_host = cfg.num_devices or (auto if batch_size else n)
    if per_host > n:
        raise ConfigError(
            f"parallel.num_devices={cfg.num_devices} but this host has "
            f"{n} {platform} device(s)"
        )
    ordered = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    hosts = itertools.groupby(ordered, key=lambda d: d.process_index)
    chosen = [d for _, devices in hosts for d in list(devices)[:per_host]]
    return Parallel(mode=cfg.mode, mesh=Mesh(np.array(chosen), (AXIS,)))


def single_device() -> Parallel:
    """One device, jit: what a library call gets when it is not told otherwise."""
    return Parallel(mode="jit", mesh=Mesh(np.array(jax.devices()[:1]), (AXIS,)))


# -- random numbers of the pmap path ----------------------------------------------
#
# A key of this implementation stands for a threefry key together with the first
# row a device owns: a draw of shape [b, ...] returns rows [o, o + b) of the draw
# of the global batch from the plain key (threefry counts elements; its
# partitionable bits depend only on the global element number). fold_in and
# split keep the offset, so keys derived for other batch-shaped draws stay in
# step; per-row keys must come from ``split_rows``.

_THREEFRY = jex_random.threefry_prng_impl


def _offset_random_bits(key, bit_width, shape):
    start = key[2] * jnp.uint32(math.prod(shape[1:]))  # elements before row o
    lo = jax.lax.iota(np.uint32, math.prod(shape)) + start
    hi = (lo < start).astype(np.uint32)  # the carry into threefry's high word
    bits1, bits2 = jex_random.threefry2x32_p.bind(
        key[0], key[1], hi.reshape(shape), lo.reshape(shape)
    )
    if bit_width == 64:
        return bits1.astype(np.uint64) << 32 | bits2.astype(np.uint64)
    bits = bits1 ^ bits2
    return bits if bit_width == 32 else bits.astype(f"uint{bit_width}")


ROW_OFFSET_THREEFRY = jex_random.define_prng_impl(
    key_shape=(3,),
    seed=lambda s: jnp.concatenate([_THREEFRY.seed(s), jnp.zeros((1,), jnp.uint32)]),
    split=lambda key, shape: jnp.concatenate(
        [_THREEFRY.split(key[:2], shape), jnp.broadcast_to(key[2], (*shape, 1))], -1
    ),
    random_bits=_offset_random_bits,
    fold_in=lambda key, data: jnp.concatenate(
        [_THREEFRY.fold_in(key[:2], data), key[2:]]
    ),
    name="row_offset_threefry",
    tag="rof",
)


def row_offset_key(key: jax.Array, axis_name: str | None, rows: int) -> jax.Array:
    """``key`` for a batch-shaped draw of this device's ``rows`` rows.

    Without an axis (jit, one device) the key itself: the draw is global.
    """
    if axis_name is None:
        return key
    offset = jax.lax.axis_index(axis_name).astype(jnp.uint32) * jnp.uint32(rows)
    data = jnp.concatenate([jax.random.key_data(key), offset[None]])
    return jax.random.wrap_key_data(data, impl=ROW_OFFSET_THREEFRY)


def split_rows(key: jax.Array, axis_name: str | None, rows: int) -> jax.Array:
    """Per-row keys <key>[rows]: this device's rows of ``split(key, global rows)``."""
    if axis_name is None:
        return jax.random.split(key, rows)
    keys = jax.random.split(key, rows * jax.lax.axis_size(axis_name))
    start = jax.lax.axis_index(axis_name) * rows
    return jax.lax.dynamic_slice_in_dim(keys, start, rows)


def psum(tree: Any, axis_name: str | None) -> Any:
    """``lax.psum`` over ``axis_name``; the identity without one."""
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)
