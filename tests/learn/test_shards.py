import numpy as np
import pytest

from fedp2p.errors import UserError
from fedp2p.learn.shards import dirichlet_partition


def labels(n: int = 6000, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def all_indices(p) -> list[np.ndarray]:
    return [p.reference_idx] + [i for s in p.shards for i in (s.train_idx, s.test_idx)]


def test_shards_are_disjoint_and_cover_everything_but_nothing_twice():
    y = labels()
    p = dirichlet_partition(y, clients=12, alpha=0.1, seed=3, min_size=40, reference_size=500)
    joined = np.concatenate(all_indices(p))
    assert len(joined) == len(np.unique(joined)) == len(y)
    assert len(p.reference_idx) == 500


def test_min_size_and_local_test_fraction():
    y = labels()
    p = dirichlet_partition(y, 20, 0.1, 1, min_size=60, reference_size=0, local_test_fraction=0.25)
    for s in p.shards:
        assert s.size >= 60
        assert abs(len(s.test_idx) - 0.25 * s.size) <= 1
        assert len(s.train_idx) >= 1


def test_same_seed_same_shards_other_seed_other_shards():
    y = labels()
    a = dirichlet_partition(y, 10, 0.5, seed=7, reference_size=200)
    b = dirichlet_partition(y, 10, 0.5, seed=7, reference_size=200)
    c = dirichlet_partition(y, 10, 0.5, seed=8, reference_size=200)
    assert all(np.array_equal(x, z) for x, z in zip(all_indices(a), all_indices(b), strict=True))
    assert not all(
        np.array_equal(x, z) for x, z in zip(all_indices(a), all_indices(c), strict=True)
    )


def test_small_alpha_is_skewed_large_alpha_approaches_uniform():
    y = labels(20000)

    def skew(alpha: float) -> float:
        p = dirichlet_partition(y, 10, alpha, seed=0, reference_size=0)
        counts = p.label_counts(y).astype(float)
        share = counts / counts.sum(1, keepdims=True)
        return float(np.abs(share - 0.1).sum(1).mean())  # mean L1 distance to uniform labels

    assert skew(0.1) > 0.8
    assert skew(1000.0) < 0.05


def test_label_counts_match_the_shards():
    y = labels()
    p = dirichlet_partition(y, 5, 1.0, 0, reference_size=100)
    counts = p.label_counts(y)
    assert counts.shape == (5, 10)
    assert counts.sum() == len(y) - 100
    assert counts[2].sum() == p.shards[2].size


def test_impossible_request_is_a_user_error():
    with pytest.raises(UserError, match="lower clients"):
        dirichlet_partition(labels(100), 10, 0.1, 0, min_size=50, reference_size=0)
