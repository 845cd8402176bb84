"""The NumPy kernels of StreamingKMeans against brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus

from streamclust import _kmeans_kernels as K


def _brute_labels(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(b, g) labels by float64 direct differences and argmin."""
    X64, C64 = X.astype(np.float64), centers.astype(np.float64)
    d = ((X64[:, None, None, :] - C64[None]) ** 2).sum(-1)
    return d.argmin(axis=2)


@pytest.mark.parametrize(
    ("b", "g", "k", "d"), [(1000, 3, 8, 2), (5000, 10, 64, 32), (777, 2, 300, 5), (3, 1, 1, 4)]
)
def test_assign_matches_brute_force(b, g, k, d):
    rng = np.random.default_rng(b + k)
    X = rng.standard_normal((b, d)).astype(np.float32)
    C = rng.standard_normal((g, k, d)).astype(np.float32)
    labels, dist = K.assign(X, C)
    ref = _brute_labels(X, C)
    # The GEMM identity in float32 may flip near-ties only.
    assert (labels == ref).mean() > 0.999
    exact = ((X[:, None, :].astype(np.float64) - C[np.arange(g), labels]) ** 2).sum(-1)
    np.testing.assert_allclose(dist, exact, rtol=1e-4, atol=1e-4)


def test_assign_ties_go_to_the_lowest_index_and_candidates_are_independent():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 4)).astype(np.float32)
    C = rng.standard_normal((4, 300, 4)).astype(np.float32)  # k > 255: 16-bit weights
    C[:, 200] = C[:, 7]  # exact duplicates
    C[:, 299] = C[:, 7]
    labels, _ = K.assign(X, C)
    assert not np.isin(labels, [200, 299]).any()
    assert (labels == 7).any()
    # A candidate's labels do not depend on the others stacked with it.
    for c in range(4):
        np.testing.assert_array_equal(K.assign(X, C[c : c + 1])[0][:, 0], labels[:, c])
    # A constant data set: every distance ties, every row goes to center 0.
    same = np.repeat(C[:, :1], 300, axis=1)
    assert (K.assign(X, same)[0] == 0).all()


def test_kmeans_plusplus_lockstep():
    rng = np.random.default_rng(1)
    means = rng.standard_normal((20, 6)) * 8
    pool = (means[rng.integers(20, size=4000)] + rng.standard_normal((4000, 6))).astype(np.float32)
    seeds = [11, 22, 33, 44, 55, 66]
    stacked = K.kmeans_plusplus(pool, 20, seeds)
    assert stacked.shape == (6, 20, 6) and stacked.dtype == np.float32
    # Candidate i depends only on seeds[i], not on the candidates beside it.
    np.testing.assert_array_equal(K.kmeans_plusplus(pool, 20, [33])[0], stacked[2])
    # Centers are distinct rows of the pool.
    for cand in stacked:
        assert len({tuple(r) for r in cand}) == 20
        assert all((pool == r).all(axis=1).any() for r in cand)

    def potential(c: np.ndarray) -> float:
        return float(((pool[:, None, :] - c[None]) ** 2).sum(-1).min(1).sum())

    ours = np.mean([potential(c) for c in stacked])
    ref = np.mean(
        [potential(kmeans_plusplus(pool.astype(np.float64), 20, random_state=s)[0]) for s in seeds]
    )
    # Same algorithm, other random draws: the same quality on average.
    assert ours < 1.1 * ref
