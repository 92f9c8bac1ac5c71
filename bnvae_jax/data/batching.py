"""Length-bucketed batches with fixed membership and a per-epoch shuffled order."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from bnvae_jax.config import require, require_choice
from bnvae_jax.data.vocab import PAD

MODES = ("same_length", "mixed")


@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    """One batch, padded to exactly ``batch_size`` examples.

    Attributes:
        tokens: <int32>[B, T] rows ``<s> w_1 .. w_L </s>`` padded with ``PAD``.
        lengths: <int32>[B] real row length L+2; 0 for padding examples.
        mask: <float32>[B] 1 for a real example, 0 for padding.
        index: <int32>[B] sentence index in the corpus; -1 for padding.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    mask: np.ndarray
    index: np.ndarray

    @property
    def num_real(self) -> int:
        """Real (not padding) examples."""
        return int(np.count_nonzero(self.index >= 0))

    @property
    def num_tokens(self) -> int:
        """Predicted tokens Σ (L+1) over the real examples (``<s>`` excluded)."""
        real = self.lengths[self.index >= 0]
        return int(np.sum(real.astype(np.int64) - 1))


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """How sentences are grouped into batches.

    Attributes:
        batch_size: examples per batch B; every batch is padded to exactly this.
        bucket_width: the time axis is padded up to a multiple of this, so T is
            one of ``bucket_width, 2 * bucket_width, ...``.
        mode: ``"same_length"`` (the reference: every batch holds sentences of
            one length) or ``"mixed"`` (sentences sorted by length and cut into
            consecutive chunks across lengths).
        min_batch: batches with fewer sentences are dropped from the plan.
    """

    batch_size: int
    bucket_width: int = 8
    mode: str = "same_length"
    min_batch: int = 1

    def __post_init__(self):
        for name in ("batch_size", "bucket_width"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be >= 1, got {value}")
        require_choice("batching mode", self.mode, MODES)
        require(
            1 <= self.min_batch <= self.batch_size,
            f"min_batch must be between 1 and batch_size={self.batch_size}, "
            f"got {self.min_batch}",
        )


@dataclasses.dataclass(frozen=True, eq=False)
class BatchPlan:
    """Fixed batch membership; only the order changes between epochs.

    Attributes:
        groups: per batch, the <int64>[n] sentence indices (1 <= n <= B).
        rows: the <int32>[L+2] id rows the indices point into.
        config: the batching config.
    """

    groups: tuple[np.ndarray, ...]
    rows: tuple[np.ndarray, ...]
    config: BatchingConfig

    def __len__(self) -> int:
        return len(self.groups)

    def padded_time(self, i: int) -> int:
        """T of batch ``i``: its longest row rounded up to the bucket width."""
        longest = max(len(self.rows[j]) for j in self.groups[i])
        width = self.config.bucket_width
        return max(1, -(-longest // width)) * width

    def make_batch(self, i: int) -> Batch:
        """Batch ``i`` of the plan (plan order), padded to ``(batch_size, T)``."""
        group, size = self.groups[i], self.config.batch_size
        tokens = np.full((size, self.padded_time(i)), PAD, dtype=np.int32)
        lengths = np.zeros(size, dtype=np.int32)
        for slot, j in enumerate(group):
            lengths[slot] = len(self.rows[j])
            tokens[slot, : lengths[slot]] = self.rows[j]
        index = np.full(size, -1, dtype=np.int32)
        index[: len(group)] = group
        return Batch(tokens, lengths, (index >= 0).astype(np.float32), index)

    def shapes(self) -> list[tuple[int, int]]:
        """The distinct ``(B, T)`` batch shapes, sorted (bounds compilations)."""
        size = self.config.batch_size
        return sorted({(size, self.padded_time(i)) for i in range(len(self))})


def plan_batches(rows: Sequence[np.ndarray], config: BatchingConfig) -> BatchPlan:
    """Groups sentences into batches once.

    Sentence indices are stable-sorted by length. ``"same_length"`` cuts each
    group of equal length into consecutive chunks of ``batch_size`` (the last
    chunk of a group is smaller); ``"mixed"`` cuts the whole sorted order.

    Args:
        rows: <int32>[L+2] id rows.
        config: the batching config.

    Returns:
        The plan; batches with fewer than ``config.min_batch`` sentences are
        left out.
    """
    rows = tuple(rows)
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    order = np.argsort(lengths, kind="stable")
    same = config.mode == "same_length"
    runs = np.split(order, np.flatnonzero(np.diff(lengths[order])) + 1 if same else [])
    size = config.batch_size
    chunks = [run[s : s + size] for run in runs for s in range(0, len(run), size)]
    groups = tuple(c for c in chunks if len(c) >= config.min_batch)
    return BatchPlan(groups=groups, rows=rows, config=config)


def iterate(
    plan: BatchPlan, *, seed: int, epoch: int, start: int = 0
) -> Iterator[tuple[int, Batch]]:
    """Yields ``(position, batch)`` for positions ``start .. len(plan) - 1``.

    The epoch's batch order is a permutation fixed by ``(seed, epoch)``, so
    resuming with ``start`` gives the same batches as the rest of an
    uninterrupted pass over the same epoch.

    Args:
        plan: the batches.
        seed: run seed.
        epoch: epoch number (picks the order).
        start: first position within the epoch.
    """
    if not 0 <= start <= len(plan):
        raise ValueError(f"start={start} is outside 0..{len(plan)}")
    order = np.random.default_rng([seed, epoch]).permutation(len(plan))
    for position in range(start, len(plan)):
        yield position, plan.make_batch(int(order[position]))
