import numpy as np
import pytest

from bnvae_jax.data import batching
from bnvae_jax.data.batching import BatchingConfig, iterate, plan_batches
from bnvae_jax.data.vocab import BOS, EOS, PAD
from bnvae_jax.errors import ConfigError


def _rows(lengths, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for n in lengths:
        words = rng.integers(4, 50, size=n)
        rows.append(np.concatenate([[BOS], words, [EOS]]).astype(np.int32))
    return rows


def _corpus(seed=0, n=200):
    lengths = np.random.default_rng(seed).integers(1, 30, size=n)
    return _rows(lengths, seed)


def test_config_validation():
    with pytest.raises(ConfigError):
        BatchingConfig(batch_size=0)
    with pytest.raises(ConfigError):
        BatchingConfig(batch_size=4, bucket_width=0)
    with pytest.raises(ConfigError, match="same_length, mixed"):
        BatchingConfig(batch_size=4, mode="random")
    with pytest.raises(ConfigError):
        BatchingConfig(batch_size=4, min_batch=5)


def test_same_length_groups():
    rows = _corpus()
    plan = plan_batches(rows, BatchingConfig(batch_size=8))
    assert sorted(np.concatenate(plan.groups).tolist()) == list(range(len(rows)))
    for group in plan.groups:
        assert 1 <= len(group) <= 8
        assert len({len(rows[j]) for j in group}) == 1
    # Within one length: consecutive chunks of the stable order, last smaller.
    by_length = {}
    for group in plan.groups:
        by_length.setdefault(len(rows[group[0]]), []).append(group)
    for length, groups in by_length.items():
        expected = [j for j in range(len(rows)) if len(rows[j]) == length]
        assert np.concatenate(groups).tolist() == expected
        assert all(len(g) == 8 for g in groups[:-1])


def test_make_batch_padding():
    rows = _rows([3, 3, 3, 5])
    plan = plan_batches(rows, BatchingConfig(batch_size=4, bucket_width=4))
    assert len(plan) == 2
    batch = plan.make_batch(0)
    assert batch.tokens.shape == (4, 8)
    assert batch.tokens.dtype == np.int32 and batch.mask.dtype == np.float32
    assert batch.lengths.dtype == np.int32 and batch.index.dtype == np.int32
    np.testing.assert_array_equal(batch.index, [0, 1, 2, -1])
    np.testing.assert_array_equal(batch.lengths, [5, 5, 5, 0])
    np.testing.assert_array_equal(batch.mask, [1, 1, 1, 0])
    np.testing.assert_array_equal(batch.tokens[0, :5], rows[0])
    assert np.all(batch.tokens[0, 5:] == PAD) and np.all(batch.tokens[3] == PAD)
    assert batch.num_real == 3
    assert batch.num_tokens == 3 * 4
    single = plan.make_batch(1)
    assert single.num_real == 1 and single.tokens.shape == (4, 8)


def test_time_is_bucketed_and_shapes_bounded():
    rows = _corpus()
    cfg = BatchingConfig(batch_size=8, bucket_width=8)
    plan = plan_batches(rows, cfg)
    for i in range(len(plan)):
        batch = plan.make_batch(i)
        assert batch.tokens.shape[0] == 8
        assert batch.tokens.shape[1] % 8 == 0
        assert batch.tokens.shape[1] >= batch.lengths.max()
        assert batch.tokens.shape[1] - 8 < batch.lengths.max()
    max_len = max(len(r) for r in rows)
    assert len(plan.shapes()) <= -(-max_len // 8)
    assert all(b == 8 for b, _ in plan.shapes())


def test_min_batch_drops_small_batches():
    rows = _rows([1, 1, 1, 2, 3, 3])
    plan = plan_batches(rows, BatchingConfig(batch_size=2, min_batch=2))
    assert [g.tolist() for g in plan.groups] == [[0, 1], [4, 5]]
    every = plan_batches(rows, BatchingConfig(batch_size=2)).groups
    assert [g.tolist() for g in every] == [[0, 1], [2], [3], [4, 5]]


def test_epoch_order_deterministic_and_varies():
    plan = plan_batches(_corpus(), BatchingConfig(batch_size=4))

    def order(seed, epoch):  # the plan's batch ids in the epoch's order
        firsts = [int(g[0]) for g in plan.groups]
        batches = iterate(plan, seed=seed, epoch=epoch)
        return [firsts.index(int(b.index[0])) for _, b in batches]

    a0 = order(3, 0)
    assert a0 == order(3, 0) and sorted(a0) == list(range(len(plan)))
    assert a0 != order(3, 1) and a0 != order(4, 0)


def test_iterate_each_sentence_once_and_membership_fixed():
    rows = _corpus()
    plan = plan_batches(rows, BatchingConfig(batch_size=8))
    memberships = []
    for epoch in range(2):
        seen, members, positions = [], set(), []
        for position, batch in iterate(plan, seed=0, epoch=epoch):
            positions.append(position)
            real = batch.index[batch.index >= 0]
            seen.extend(real.tolist())
            members.add(tuple(sorted(real.tolist())))
        assert sorted(seen) == list(range(len(rows)))
        assert positions == list(range(len(plan)))
        memberships.append(members)
    assert memberships[0] == memberships[1]


def test_iterate_resume_matches_uninterrupted():
    plan = plan_batches(_corpus(), BatchingConfig(batch_size=8))
    full = [(p, b.index.tolist()) for p, b in iterate(plan, seed=1, epoch=2)]
    start = len(plan) // 2
    resumed = [
        (p, b.index.tolist()) for p, b in iterate(plan, seed=1, epoch=2, start=start)
    ]
    assert resumed == full[start:]
    with pytest.raises(ValueError):
        next(iterate(plan, seed=1, epoch=0, start=len(plan) + 1))


def test_mixed_mode_mixes_lengths():
    rows = _corpus()
    plan = plan_batches(rows, BatchingConfig(batch_size=8, mode="mixed"))
    assert len(plan) == -(-len(rows) // 8)
    assert sorted(np.concatenate(plan.groups).tolist()) == list(range(len(rows)))
    assert any(len({len(rows[j]) for j in g}) > 1 for g in plan.groups)
    lengths = [len(rows[j]) for g in plan.groups for j in g]
    assert lengths == sorted(lengths)
    same = plan_batches(rows, BatchingConfig(batch_size=8))
    assert len(plan) < len(same)


def test_empty_rows():
    plan = plan_batches([], BatchingConfig(batch_size=4))
    assert len(plan) == 0 and plan.shapes() == []
    assert batching.MODES == ("same_length", "mixed")
