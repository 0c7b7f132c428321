"""Weighted source mixtures: exact counts, determinism in (seed, epoch), disjoint DDP shards."""
import numpy as np
import pytest

from facekd.distill.batches import _MixtureBatches, epoch_plan, mixture_counts


def test_mixture_counts_by_hand():
    assert mixture_counts(10, [1, 1]).tolist() == [5, 5]
    assert mixture_counts(10, [3, 1]).tolist() == [8, 2]  # 7.5 / 2.5: ties go to the first
    assert mixture_counts(7, [1, 0, 1]).tolist() == [4, 0, 3]
    with pytest.raises(ValueError):
        mixture_counts(5, [0, 0])


def test_epoch_plan_is_deterministic_and_covers_sources():
    plan = epoch_plan([5, 100], [1, 1], 40, seed=0, epoch=1)
    assert plan.shape == (40, 2) and (plan[:, 0] == 0).sum() == 20 and (plan[:, 0] == 1).sum() == 20
    small = plan[plan[:, 0] == 0, 1]
    assert all((small == i).sum() == 4 for i in range(5))  # oversampled: whole permutations, evenly
    big = plan[plan[:, 0] == 1, 1]
    assert len(set(big)) == 20  # undersampled: without replacement
    assert np.array_equal(plan, epoch_plan([5, 100], [1, 1], 40, seed=0, epoch=1))
    assert not np.array_equal(plan, epoch_plan([5, 100], [1, 1], 40, seed=0, epoch=2))


def test_ranks_get_disjoint_full_batches():
    shards = [_MixtureBatches([30, 30], [1, 2], batch_size=4, samples_per_epoch=50, rank=r, world_size=2)
              for r in range(2)]
    assert len(shards[0]) == 6  # 50 // (4 * 2)
    a, b = (s.plan(3) for s in shards)
    assert len(a) == len(b) == 24
    full = epoch_plan([30, 30], [1, 2], 50, seed=0, epoch=3)[:48]
    together = np.concatenate([a.reshape(6, 4, 2), b.reshape(6, 4, 2)], axis=1).reshape(-1, 2)
    assert np.array_equal(together, full)
    with pytest.raises(ValueError, match="no full batch"):
        _MixtureBatches([3], [1], batch_size=4, samples_per_epoch=6, world_size=2)
