"""Pure NumPy kernels of StreamingKMeans: no Dask, no estimator.

A *chain* is a group of K-Means candidates that advance in lockstep over the
same mini-batches. Its state is a :class:`Chain`; :func:`scan_block` is the
task that advances a chain over one block, :func:`minibatch_step` over one
mini-batch. Both copy the state they are given (tasks may be retried).

Distances use ``|x|^2 - 2 x.c + |c|^2`` with one stacked GEMM over all the
chain's centers in the data's dtype. Row ``i`` of that GEMM does not depend on
which other centers are stacked with it, so splitting candidates into chains
(one per worker) changes nothing in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

#: Rows per sub-chunk when assigning a whole block (bounds the distance matrix).
ASSIGN_CHUNK_ROWS = 4096


@dataclass
class Chain:
    """State of ``g`` candidates with ``k`` centers of ``d`` features.

    centers : (g, k, d) array in the data dtype
    counts : (g, k) float64, rows absorbed per center (per-center learning rate 1/count)
    since_reassign : (g,) int64, rows seen since the last low-count reassignment
    rng_states : per-candidate ``numpy.random.PCG64`` states (for reassignment draws)
    recent : (g, last_n) float64 ring of the latest batch inertias
    n_recorded : number of batch inertias recorded so far (ring position)
    """

    centers: np.ndarray
    counts: np.ndarray
    since_reassign: np.ndarray
    rng_states: list[dict[str, Any]]
    recent: np.ndarray
    n_recorded: int = 0
    steps: int = 0
    candidates: tuple[int, ...] = field(default_factory=tuple)

    def copy(self) -> Chain:
        return replace(
            self,
            centers=self.centers.copy(),
            counts=self.counts.copy(),
            since_reassign=self.since_reassign.copy(),
            rng_states=[dict(s, state=dict(s["state"])) for s in self.rng_states],
            recent=self.recent.copy(),
        )

    def window_scores(self) -> np.ndarray:
        """Sum of each candidate's last ``min(n_recorded, last_n)`` batch inertias."""
        n = min(self.n_recorded, self.recent.shape[1])
        return self.recent[:, :n].sum(axis=1)


def new_chain(
    centers: np.ndarray, rng_states: list[dict[str, Any]], last_n: int, candidates: tuple[int, ...]
) -> Chain:
    g, k, _ = centers.shape
    return Chain(
        centers=centers,
        counts=np.zeros((g, k), np.float64),
        since_reassign=np.zeros(g, np.int64),
        rng_states=rng_states,
        recent=np.zeros((g, last_n), np.float64),
        candidates=candidates,
    )


def _neg2_gemm(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """``|c|^2 - 2 x.c`` for every row of X and row of C (scaling by -2 is exact)."""
    D = X @ (C * C.dtype.type(-2)).T
    D += np.einsum("ij,ij->i", C, C)
    return D


def assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of every row for each of ``g`` candidates, by one stacked GEMM.

    Returns ``labels`` (b, g) int64 and squared distances (b, g) in the data
    dtype (from the GEMM identity, clipped at 0).
    """
    g, k, d = centers.shape
    b = X.shape[0]
    D = _neg2_gemm(X, centers.reshape(g * k, d)).reshape(b, g, k)
    labels = D.argmin(axis=2)
    dist = np.take_along_axis(D, labels[..., None], axis=2)[..., 0]
    dist += np.einsum("ij,ij->i", X, X)[:, None]
    np.maximum(dist, 0, out=dist)
    return labels, dist


def minibatch_step(chain: Chain, X: np.ndarray, reassignment_ratio: float) -> None:
    """One mini-batch step of every candidate of ``chain`` on batch ``X`` (in place).

    As scikit-learn's MiniBatchKMeans: each center moves to the running mean of
    the rows it has absorbed (learning rate ``n_batch / count``), and when a
    center's count is 0 or every ``10 * k`` rows, centers whose count is below
    ``reassignment_ratio * max(count)`` are moved onto random rows of the batch.
    The batch inertia recorded is computed before the update.
    """
    g, k, d = chain.centers.shape
    b = X.shape[0]
    # Decided before the update, from the counts so far (scikit-learn's rule).
    chain.since_reassign += b
    reassign = (chain.counts == 0).any(axis=1) | (chain.since_reassign >= 10 * k)
    chain.since_reassign[reassign] = 0

    labels, dist = assign(X, chain.centers)
    chain.recent[:, chain.n_recorded % chain.recent.shape[1]] = dist.sum(axis=0, dtype=np.float64)
    chain.n_recorded += 1

    glabels = (labels + np.arange(g) * k).ravel()
    # Column j of this (g*k, b) matrix has a 1 at each candidate's label of row j:
    # built in CSC form without sorting; S @ X sums the rows per (candidate, center).
    S = sp.csc_matrix(
        (np.ones(b * g, X.dtype), glabels, np.arange(0, b * g + 1, g)), shape=(g * k, b)
    )
    sums = np.asarray(S @ X).reshape(g, k, d)
    n_new = np.bincount(glabels, minlength=g * k).reshape(g, k).astype(np.float64)
    hit = n_new > 0
    total = chain.counts + n_new
    chain.centers[hit] = (chain.centers[hit] * chain.counts[hit][:, None] + sums[hit]) / total[hit][
        :, None
    ]
    chain.counts = total

    if reassignment_ratio > 0:
        for c in np.flatnonzero(reassign):
            _reassign_low_counts(chain, int(c), X, reassignment_ratio)
    chain.steps += 1


def _reassign_low_counts(chain: Chain, c: int, X: np.ndarray, ratio: float) -> None:
    counts = chain.counts[c]
    low = counts < ratio * counts.max()
    half = int(0.5 * X.shape[0])
    if low.sum() > half:
        low[np.argsort(counts, kind="stable")[half:]] = False
    n = int(low.sum())
    if not n:
        return
    bitgen = np.random.PCG64()
    bitgen.state = chain.rng_states[c]  # type: ignore[assignment]
    rows = np.random.Generator(bitgen).choice(X.shape[0], size=n, replace=False)
    chain.rng_states[c] = dict(bitgen.state)
    chain.centers[c][low] = X[rows]
    # Not reset to 0, or they would be reassigned again at once.
    counts[low] = counts[~low].min()


def scan_block(chain: Chain, block: np.ndarray, start: int, arg: tuple[Any, ...]) -> Chain:
    """Task: advance ``chain`` over the mini-batches of one block.

    ``arg = (perm_seed, n_batches, batch_size, reassignment_ratio)``. With a
    ``perm_seed`` the block's rows are permuted (seeded) before being cut into
    consecutive batches of ``batch_size``; only the first ``n_batches`` are run.
    """
    perm_seed, n_batches, batch_size, ratio = arg
    chain = chain.copy()
    rows = block.shape[0]
    order = None if perm_seed is None else np.random.default_rng(perm_seed).permutation(rows)
    for i in range(n_batches):
        lo, hi = i * batch_size, min((i + 1) * batch_size, rows)
        X = block[lo:hi] if order is None else block[order[lo:hi]]
        minibatch_step(chain, X, ratio)
    return chain


def exact_sq_distances(X: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Float64 squared distance of every row to its labelled center, by direct difference."""
    diff = X.astype(np.float64) - centers.astype(np.float64)[labels]
    return np.einsum("ij,ij->i", diff, diff)


def block_labels_inertia(
    block: np.ndarray, start: int, centers: np.ndarray, want_labels: bool
) -> tuple[np.ndarray | None, np.ndarray]:
    """Task: labels (b, g) and exact float64 inertia (g,) of each candidate on one block."""
    g = centers.shape[0]
    inertia = np.zeros(g, np.float64)
    out = np.empty((block.shape[0], g), np.int32) if want_labels else None
    for lo in range(0, block.shape[0], ASSIGN_CHUNK_ROWS):
        X = block[lo : lo + ASSIGN_CHUNK_ROWS]
        labels, _ = assign(X, centers)
        for c in range(g):
            inertia[c] += exact_sq_distances(X, centers[c], labels[:, c]).sum()
        if out is not None:
            out[lo : lo + len(X)] = labels
    return out, inertia


def block_lloyd_stats(
    block: np.ndarray, start: int, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Task: per-center float64 sums and counts, and the inertia, for one Lloyd step."""
    k, d = centers.shape
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.float64)
    inertia = 0.0
    for lo in range(0, block.shape[0], ASSIGN_CHUNK_ROWS):
        X = block[lo : lo + ASSIGN_CHUNK_ROWS]
        labels = assign(X, centers[None])[0][:, 0]
        inertia += float(exact_sq_distances(X, centers, labels).sum())
        counts += np.bincount(labels, minlength=k)
        for j in range(d):
            sums[:, j] += np.bincount(labels, weights=X[:, j], minlength=k)
    return sums, counts, inertia


def block_transform(block: np.ndarray, start: int, centers: np.ndarray) -> np.ndarray:
    """Task: Euclidean distance of every row to every center, (b, k) in the data dtype."""
    D = _neg2_gemm(block, centers)
    D += np.einsum("ij,ij->i", block, block)[:, None]
    np.maximum(D, 0, out=D)
    return np.sqrt(D, out=D)


def block_predict(block: np.ndarray, start: int, centers: np.ndarray) -> np.ndarray:
    """Task: nearest-center labels (int32) of one block."""
    out = np.empty(block.shape[0], np.int32)
    for lo in range(0, block.shape[0], ASSIGN_CHUNK_ROWS):
        X = block[lo : lo + ASSIGN_CHUNK_ROWS]
        out[lo : lo + len(X)] = assign(X, centers[None])[0][:, 0]
    return out


def kmeans_plusplus_task(pool: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Task: k-means++ centers of ``pool`` (run in float64: scikit-learn's float32 path
    upcasts chunk by chunk and is about twice as slow), returned in the pool's dtype."""
    from sklearn.cluster import kmeans_plusplus

    centers, _ = kmeans_plusplus(pool.astype(np.float64), k, random_state=seed)
    return centers.astype(pool.dtype)


def sample_rows(block: np.ndarray, start: int, n: int, seed: int) -> np.ndarray:
    """Task: ``n`` rows of a block drawn uniformly without replacement (seeded)."""
    if n >= block.shape[0]:
        return block.copy()
    idx = np.sort(np.random.default_rng(seed).choice(block.shape[0], size=n, replace=False))
    return block[idx]
