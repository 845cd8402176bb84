"""Pure NumPy kernels that start K-Means candidates: k-means++ for several candidates
in lockstep, random rows, and the seeded row samples they start from.

Weights are optional everywhere: with weights, a row is chosen in proportion to
its weight (times its squared distance, for k-means++), as scikit-learn's
initializations do; equal weights make the same choices as no weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import DataError
from . import sparse as S

__all__ = [
    "WeightedRows",
    "kmeans_plusplus",
    "random_rows",
    "sample_block_rows",
    "sample_rows",
    "split_weights",
    "stack_rows",
]


class WeightedRows:
    """Rows (dense or CSR) with one weight each: a block of a weighted source. The rows
    are the data's own block, not copied; indexing selects rows of both."""

    __slots__ = ("rows", "weights")

    def __init__(self, rows: Any, weights: np.ndarray) -> None:
        self.rows, self.weights = rows, weights

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.shape  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        return int(getattr(self.rows, "nbytes", 0)) + int(self.weights.nbytes)

    def __getitem__(self, index: Any) -> WeightedRows:
        return WeightedRows(self.rows[index], self.weights[index])

    def copy(self) -> WeightedRows:
        return WeightedRows(self.rows.copy(), self.weights.copy())

    def setflags(self, write: bool) -> None:
        for part in (self.rows, self.weights):
            if isinstance(part, np.ndarray):
                part.setflags(write=write)


def split_weights(block: Any) -> tuple[Any, np.ndarray | None]:
    """A block's rows and their weights (None: unweighted)."""
    if isinstance(block, WeightedRows):
        return block.rows, block.weights
    return block, None


def stack_rows(parts: list[Any]) -> Any:
    """Blocks' rows stacked, with their weights when they have them."""
    if parts and isinstance(parts[0], WeightedRows):
        return WeightedRows(
            S.vstack([p.rows for p in parts]), np.concatenate([p.weights for p in parts])
        )
    return S.vstack(parts)


def _uniform(weights: np.ndarray | None) -> bool:
    """True when every row weighs the same: choices are then made as without weights."""
    return weights is None or bool((weights == weights[0]).all())


def _check_weights(weights: np.ndarray | None, k: int) -> None:
    if weights is not None and np.count_nonzero(weights) < k:
        raise DataError(
            f"sample_weight: only {np.count_nonzero(weights)} rows of the initialization "
            f"sample have a non-zero weight, fewer than n_clusters={k}; give more rows a weight"
        )


def kmeans_plusplus(
    pool: np.ndarray, k: int, seeds: list[int], weights: np.ndarray | None = None
) -> np.ndarray:
    """Greedy k-means++ for ``len(seeds)`` candidates in lockstep, (g, k, d) in the pool dtype.

    The algorithm of scikit-learn's ``kmeans_plusplus`` (``2 + log(k)`` local
    trials per center, the trial that lowers the potential most wins), run for
    every candidate at once: each round's trial centers of all candidates are
    measured against the pool with one stacked GEMM, as the mini-batch steps
    are. In float64 (scikit-learn's float32 path upcasts chunk by chunk and is
    about twice as slow). Candidate ``i`` depends only on ``seeds[i]``. With
    ``weights``, rows are drawn in proportion to weight times squared distance.
    """
    _check_weights(weights, k)
    X = pool.astype(np.float64)
    n, d = X.shape
    g = len(seeds)
    w = None if weights is None else weights.astype(np.float64)
    trials = 2 + int(np.log(k))
    rngs = [np.random.default_rng(s) for s in seeds]
    xx = S.row_sq_norms(X)
    minus_2xt = -2 * X.T  # once, not every round (scaling by -2 is exact)

    def sq_dist(C: np.ndarray) -> np.ndarray:
        D = np.asarray(C @ minus_2xt)
        D += np.einsum("ij,ij->i", C, C)[:, None]
        D += xx
        return np.maximum(D, 0, out=D)

    def weighted(D: np.ndarray) -> np.ndarray:
        return D if w is None else D * w

    every = np.arange(g)
    if w is None or _uniform(w):
        ids = np.array([rng.integers(n) for rng in rngs])
    else:
        cum_w = np.cumsum(w)
        ids = np.array([np.searchsorted(cum_w, rng.uniform() * cum_w[-1]) for rng in rngs])
        np.minimum(ids, n - 1, out=ids)
    centers = np.empty((g, k, d), np.float64)
    centers[:, 0] = S.dense(X[ids])
    closest = sq_dist(centers[:, 0])  # (g, n): squared distance to the nearest chosen center
    potential = weighted(closest).sum(axis=1)
    for c in range(1, k):
        draws = np.stack([rng.uniform(size=trials) for rng in rngs]) * potential[:, None]
        cum = np.cumsum(weighted(closest), axis=1)
        trial_ids = np.stack([np.searchsorted(cum[i], draws[i]) for i in range(g)])
        np.minimum(trial_ids, n - 1, out=trial_ids)
        dist = sq_dist(S.dense(X[trial_ids.ravel()])).reshape(g, trials, n)
        np.minimum(dist, closest[:, None, :], out=dist)
        pots = weighted(dist).sum(axis=2)
        best = pots.argmin(axis=1)
        closest = dist[every, best]
        potential = pots[every, best]
        centers[:, c] = S.dense(X[trial_ids[every, best]])
    return centers.astype(pool.dtype)


def random_rows(
    pool: np.ndarray, k: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """``k`` distinct rows of the pool drawn at random (in proportion to ``weights``)."""
    _check_weights(weights, k)
    n = pool.shape[0]
    if _uniform(weights):
        return S.dense(pool[rng.choice(n, size=k, replace=False)])
    assert weights is not None
    p = weights.astype(np.float64) / weights.sum(dtype=np.float64)
    return S.dense(pool[rng.choice(n, size=k, replace=False, p=p)])


def sample_rows(block: np.ndarray, start: int, n: int, seed: int) -> np.ndarray:
    """Task: ``n`` rows of a block drawn uniformly without replacement (seeded)."""
    if n >= block.shape[0]:
        return block.copy()
    idx = np.sort(np.random.default_rng(seed).choice(block.shape[0], size=n, replace=False))
    return block[idx]


def sample_block_rows(block: np.ndarray, start: int, n: int, seeds: dict[int, int]) -> np.ndarray:
    """Task: :func:`sample_rows` with the seed of the block that starts at ``start``."""
    return sample_rows(block, start, n, seeds[start])
