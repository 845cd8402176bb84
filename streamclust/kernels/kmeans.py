"""Pure NumPy kernels of StreamingKMeans: no Dask, no estimator.

A *chain* is a group of K-Means candidates that advance in lockstep over the
same mini-batches. Its state is a :class:`Chain`; :func:`scan_block` is the
task that advances a chain over one block, :func:`minibatch_step` over one
mini-batch. Both copy the state they are given (tasks may be retried).

Distances use ``|x|^2 - 2 x.c + |c|^2`` with one stacked GEMM over all the
chain's centers in the data's dtype (``|c|^2`` rides in the GEMM as an extra
column). Each entry of that GEMM does not depend on which other centers are
stacked with it, so splitting candidates into chains (one per worker) changes
nothing in the result.

A block may carry sample weights (a
:class:`~streamclust.kernels.seeding.WeightedRows`): each row then counts with
its weight in the center updates, the counts and the inertias. Unit weights
give exactly the results of no weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from . import sparse as S
from .chain import Chain, track_convergence
from .seeding import WeightedRows, split_weights

#: Rows per sub-chunk when assigning a whole block (bounds the distance matrix).
ASSIGN_CHUNK_ROWS = 4096
#: Distance-matrix cells per GEMM chunk inside :func:`assign`: about 2 MiB of float32
#: (chunks of 256 to 2048 rows). Measured on 2 cores with two chains in parallel (10
#: candidates, k=64): 8% faster than 1 MiB, which stays in L2 but makes twice the
#: NumPy calls, each taking the GIL; 4 MiB was slower again.
ASSIGN_CHUNK_CELLS = 2**19


def _augmented_centers(C: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``[-2 c, |c|^2]`` for every row ``c`` of C, shape (m, d + 1) (scaling by -2 is exact)."""
    m, d = C.shape
    Ca = np.empty((m, d + 1), C.dtype) if out is None else out
    np.multiply(C, C.dtype.type(-2), out=Ca[:, :d])
    np.einsum("ij,ij->i", C, C, out=Ca[:, d])
    return Ca


def _augmented_rows(X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``[x, 1]`` for every row of X, so ``Ca @ Xa.T`` is ``|c|^2 - 2 c.x`` in one GEMM."""
    n, d = X.shape
    Xa = np.empty((n, d + 1), X.dtype) if out is None else out
    Xa[:, :d] = X
    Xa[:, d] = 1
    return Xa


def _flat(buf: np.ndarray, *shape: int) -> np.ndarray:
    """A C-contiguous view of the first ``prod(shape)`` items of a 1-D buffer."""
    return buf[: math.prod(shape)].reshape(shape)


class Workspace:
    """Scratch arrays that one task reuses across all its steps and chunks.

    The inner loop allocates (almost) nothing: Dask workers run with
    ``MALLOC_TRIM_THRESHOLD_=65536``, under which every fresh temporary above
    64 KiB is new memory from the kernel, and a step took 2.3x longer.

    ``assign`` works on chunks of ``chunk`` rows: the (g*k, chunk) distance
    matrix and its temporaries stay near 2 MiB, in cache.
    """

    def __init__(self, g: int, k: int, d: int, max_rows: int, dtype: Any) -> None:
        dtype = np.dtype(dtype)
        self.shape = (g, k, d)
        chunk = max(256, min(2048, ASSIGN_CHUNK_CELLS // (g * k) // 64 * 64))
        self.chunk = min(max_rows, chunk)
        self.w_dtype = np.uint8 if k < 2**8 else np.uint16 if k < 2**16 else np.uint32
        #: Weights ``k - j``: the largest among a candidate's minima is its first index.
        self.weights = (k - np.arange(k)).astype(self.w_dtype)[None, :, None]
        cells = g * k * self.chunk
        self.Ca = np.empty((g * k, d + 1), dtype)
        self.Xa = np.empty(self.chunk * (d + 1), dtype)
        self.D = np.empty(cells, dtype)
        self.eq = np.empty(cells, bool)
        self.scores = np.empty(cells, self.w_dtype)
        self.m = np.empty(g * self.chunk, dtype)
        self.first = np.empty(g * self.chunk, self.w_dtype)
        self.labels = np.empty(max_rows * g, np.int32)
        self.dist = np.empty(max_rows * g, dtype)
        self.xx = np.empty(max_rows, dtype)
        self.batch = np.empty(max_rows * d, dtype)
        self.ones = np.ones(max_rows * g, dtype)
        self.indptr = np.arange(0, max_rows * g + 1, g, dtype=np.int32)
        self.sums64 = np.empty((g, k, d), np.float64)

    def fits(self, g: int, k: int, d: int, rows: int) -> bool:
        return self.shape == (g, k, d) and rows * g <= self.labels.size


def assign(
    X: np.ndarray, centers: np.ndarray, ws: Workspace | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center of every row for each of ``g`` candidates, by one stacked GEMM.

    Returns ``labels`` (b, g) int32 and squared distances (g, b) in the data
    dtype (from the GEMM identity, clipped at 0); with a workspace they are
    views of its buffers, valid until its next use. Ties go to the lowest
    center index, as ``argmin``.

    The GEMM is laid out centers-major, ``(g*k, n)`` over chunks of ``n`` rows
    that fit in cache, so the minimum over each candidate's ``k`` centers is a
    vectorized reduction over rows; the first index reaching it is the largest
    weight ``k - j`` among the minima. This is about 1.5x faster than
    ``argmin`` over short rows of a row-major distance matrix.
    """
    g, k, d = centers.shape
    b = X.shape[0]
    if ws is None or not ws.fits(g, k, d, b):
        ws = Workspace(g, k, d, b, X.dtype)
    Ca = _augmented_centers(centers.reshape(g * k, d), out=ws.Ca)
    labels = _flat(ws.labels, b, g)
    dist = _flat(ws.dist, g, b)
    sparse = S.is_sparse(X)
    for lo in range(0, b, ws.chunk):
        n = min(ws.chunk, b - lo)
        if sparse:  # (x . -2c)^T + |c|^2, the sparse rows times the dense centers
            D = np.asarray((X[lo : lo + n] @ Ca[:, :d].T).T, X.dtype)
            D += Ca[:, d][:, None]
            D = D.reshape(g, k, n)
        else:
            Xa = _augmented_rows(X[lo : lo + n], out=_flat(ws.Xa, n, d + 1))
            D = np.matmul(Ca, Xa.T, out=_flat(ws.D, g * k, n)).reshape(g, k, n)
        m = np.minimum.reduce(D, axis=1, out=_flat(ws.m, g, n))
        eq = np.equal(D, m[:, None, :], out=_flat(ws.eq, g, k, n))
        scores = np.multiply(eq.view(np.uint8), ws.weights, out=_flat(ws.scores, g, k, n))
        first = np.maximum.reduce(scores, axis=1, out=_flat(ws.first, g, n))
        np.subtract(k, first, out=labels[lo : lo + n].T, casting="unsafe")
        dist[:, lo : lo + n] = m
    if sparse:
        xx = S.row_sq_norms(X)
    else:
        xx = np.einsum("ij,ij->i", X, X, out=ws.xx[:b])
    dist += xx
    np.maximum(dist, 0, out=dist)
    return labels, dist


def minibatch_step(
    chain: Chain,
    X: np.ndarray,
    reassignment_ratio: float,
    ws: Workspace | None = None,
    total_steps: int | None = None,
    verbose: bool = False,
) -> None:
    """One mini-batch step of every candidate of ``chain`` on batch ``X`` (in place).

    As scikit-learn's MiniBatchKMeans: each center moves to the running mean of
    the rows it has absorbed (learning rate ``n_batch / count``), and when a
    center's count is 0 or every ``10 * k`` rows, centers whose count is below
    ``reassignment_ratio * max(count)`` are moved onto random rows of the batch.
    The batch inertia recorded is computed before the update. A weighted batch
    (weights as a last column) moves each center to the weighted running mean, its
    count being the weight it absorbed, as scikit-learn's weighted update does.
    ``X`` may be :class:`~streamclust.kernels.seeding.WeightedRows`.

    Candidates that have stopped (see :mod:`~streamclust.kernels.chain`) keep their
    centers; their batch inertia is still recorded. ``total_steps`` and ``verbose``
    shape the progress lines.
    """
    g, k, d = chain.centers.shape
    X, w = split_weights(X)
    b = X.shape[0]
    if ws is None or not ws.fits(g, k, d, b):
        ws = Workspace(g, k, d, b, X.dtype)
    # Decided before the update, from the counts so far (scikit-learn's rule).
    chain.since_reassign += b
    stopped = chain.stopped
    reassign = ((chain.counts == 0).any(axis=1) | (chain.since_reassign >= 10 * k)) & ~stopped
    chain.since_reassign[reassign] = 0
    kept = (chain.centers[stopped].copy(), chain.counts[stopped].copy()) if stopped.any() else None
    rule = chain.stop
    before = chain.centers.copy() if rule is not None and rule.tol > 0 else None

    if chain.forget is not None:  # old rows weigh less (the stopped keep their counts)
        chain.counts[~stopped] *= chain.forget.step_factor(b)
    labels, dist = assign(X, chain.centers, ws)
    if w is not None:
        dist = dist * w  # (unit weights: the same values)
    batch_inertia = dist.sum(axis=1, dtype=np.float64)
    chain.recent[:, chain.n_recorded % chain.recent.shape[1]] = batch_inertia
    chain.n_recorded += 1

    labels += (np.arange(g, dtype=np.int32) * k)[None, :]
    glabels = labels.ravel()
    # Column j of this (g*k, b) matrix has a 1 (row j's weight) at each candidate's
    # label of row j: built in CSC form without sorting; S @ X sums the rows per
    # (candidate, center).
    ones = ws.ones[: b * g] if w is None else np.repeat(w, g)
    one_hot = sp.csc_matrix((ones, glabels, ws.indptr[: b + 1]), shape=(g * k, b))
    sums = S.dense(one_hot @ X).reshape(g, k, d)
    if w is None:
        n_new = np.bincount(glabels, minlength=g * k).reshape(g, k)
    else:
        n_new = np.bincount(glabels, weights=ones, minlength=g * k).reshape(g, k)
    counts = chain.counts + n_new
    # New center = (old * count + sum of new rows) / new count, in float64; centers
    # that absorbed no row stay as they are.
    acc = np.multiply(chain.centers, chain.counts[:, :, None], out=ws.sums64)
    acc += sums
    np.divide(acc, counts[:, :, None], out=chain.centers, where=(n_new > 0)[:, :, None])
    chain.counts = counts

    if reassignment_ratio > 0 and reassign.any():
        _reassign_low_counts(chain, np.flatnonzero(reassign), X, reassignment_ratio)
    if kept is not None:
        chain.centers[stopped], chain.counts[stopped] = kept
    if rule is not None or verbose:
        moved = None
        if before is not None:
            moved = ((chain.centers - before) ** 2).sum(axis=(1, 2), dtype=np.float64)
        track_convergence(chain, batch_inertia, moved, ~stopped, total_steps, verbose)
    chain.steps += 1


def _reassign_low_counts(chain: Chain, cands: np.ndarray, X: np.ndarray, ratio: float) -> None:
    """Move the low-count centers of candidates ``cands`` onto random rows of ``X``."""
    counts = chain.counts[cands]
    low = counts < ratio * counts.max(axis=1, keepdims=True)
    half = int(0.5 * X.shape[0])
    n_low = low.sum(axis=1)
    for i in np.flatnonzero(n_low):
        c = int(cands[i])
        cl = low[i]
        if n_low[i] > half:
            cl[np.argsort(counts[i], kind="stable")[half:]] = False
        n = int(cl.sum())
        bitgen = np.random.PCG64()
        bitgen.state = chain.rng_states[c]  # type: ignore[assignment]
        rows = np.random.Generator(bitgen).choice(X.shape[0], size=n, replace=False)
        chain.rng_states[c] = dict(bitgen.state)
        chain.centers[c][cl] = S.dense(X[rows])
        # Not reset to 0, or they would be reassigned again at once.
        chain.counts[c][cl] = chain.counts[c][~cl].min()


class StepArg(NamedTuple):
    """What :func:`scan_block` does with one block."""

    perm_seed: int | None  # permute the block's rows with this seed (None: storage order)
    n_batches: int  # run only the first n_batches mini-batches
    batch_size: int
    reassignment_ratio: float
    total_steps: int | None = None  # steps of the whole fit (progress lines)
    verbose: bool = False


def scan_block(chain: Chain, block: np.ndarray, start: int, arg: StepArg) -> Chain:
    """Task: advance ``chain`` over the mini-batches of one block.

    With a ``perm_seed`` the block's rows are permuted (seeded) before being cut
    into consecutive batches of ``batch_size``; only the first ``n_batches`` are run.
    """
    perm_seed, n_batches, batch_size, ratio, total_steps, verbose = arg
    chain = chain.copy()
    rows = block.shape[0]
    order = None if perm_seed is None else np.random.default_rng(perm_seed).permutation(rows)
    g, k, d = chain.centers.shape
    data, weights = split_weights(block)
    ws = Workspace(g, k, d, min(batch_size, rows), data.dtype)
    for i in range(n_batches):
        lo, hi = i * batch_size, min((i + 1) * batch_size, rows)
        X: Any
        if order is None:
            X = block[lo:hi]
        else:
            out = None if S.is_sparse(data) else _flat(ws.batch, hi - lo, d)
            X = S.take_rows(data, order[lo:hi], out)
            if weights is not None:
                X = WeightedRows(X, weights[order[lo:hi]])
        minibatch_step(chain, X, ratio, ws, total_steps, verbose)
    return chain


def exact_sq_distances(
    X: Any, centers64: np.ndarray, labels: np.ndarray, buf: np.ndarray | None = None
) -> np.ndarray:
    """Float64 squared distance of every row to its labelled center, by direct difference.

    ``centers64`` are the centers in float64; ``buf`` an optional (>= b, d) float64 scratch.
    """
    n = X.shape[0]
    if S.is_sparse(X):  # |x|^2 - 2 x.c + |c|^2 in float64 (sparse rows stay sparse)
        cc = np.einsum("ij,ij->i", centers64, centers64)[labels]
        dot = np.asarray(X.multiply(centers64[labels]).sum(axis=1), np.float64).ravel()
        return np.maximum(S.row_sq_norms(X, np.float64) - 2 * dot + cc, 0)
    diff = np.take(centers64, labels, axis=0, out=None if buf is None else buf[:n], mode="clip")
    np.subtract(X, diff, out=diff)
    return np.einsum("ij,ij->i", diff, diff)


def _assigned_chunks(
    block: np.ndarray, centers: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(start, rows, labels (n, g))`` for chunks of a block, sharing one workspace."""
    g, k, d = centers.shape
    ws = Workspace(g, k, d, max(1, min(ASSIGN_CHUNK_ROWS, block.shape[0])), block.dtype)
    for lo in range(0, block.shape[0], ASSIGN_CHUNK_ROWS):
        X = block[lo : lo + ASSIGN_CHUNK_ROWS]
        yield lo, X, assign(X, centers, ws)[0]


def block_labels_inertia(
    block: np.ndarray, start: int, centers: np.ndarray, want_labels: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Task: labels (b, g), exact float64 inertia (g,) and the rows nearest to each
    center (g, k) of each candidate on one block (the inertia weighted, with weights)."""
    g, k, d = centers.shape
    block, weights = split_weights(block)
    inertia = np.zeros(g, np.float64)
    sizes = np.zeros((g, k), np.int64)
    out = np.empty((block.shape[0], g), np.int32) if want_labels else None
    centers64 = centers.astype(np.float64)
    buf = np.empty((min(ASSIGN_CHUNK_ROWS, block.shape[0]), d), np.float64)
    for lo, X, labels in _assigned_chunks(block, centers):
        w = None if weights is None else weights[lo : lo + X.shape[0]]
        for c in range(g):
            sq = exact_sq_distances(X, centers64[c], labels[:, c], buf)
            inertia[c] += (sq if w is None else sq * w).sum()
            sizes[c] += np.bincount(labels[:, c], minlength=k)
        if out is not None:
            out[lo : lo + X.shape[0]] = labels
    return out, inertia, sizes


def block_lloyd_stats(
    block: np.ndarray, start: int, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Task: per-center float64 sums and counts (weights, with weights), and the inertia,
    for one Lloyd step."""
    k, d = centers.shape
    block, weights = split_weights(block)
    sums = np.zeros((k, d), np.float64)
    counts = np.zeros(k, np.float64)
    inertia = 0.0
    centers64 = centers.astype(np.float64)
    for lo, X, labels in _assigned_chunks(block, centers[None]):
        lab = labels[:, 0]
        sq = exact_sq_distances(X, centers64, lab)
        if S.is_sparse(X):
            w = np.ones(X.shape[0]) if weights is None else weights[lo : lo + X.shape[0]]
            w = w.astype(np.float64)
            inertia += float((sq * w).sum())
            counts += np.bincount(lab, weights=w, minlength=k)
            one_hot = sp.csr_matrix((w, (lab, np.arange(X.shape[0]))), shape=(k, X.shape[0]))
            sums += S.dense(one_hot @ X.astype(np.float64))
        elif weights is None:
            inertia += float(sq.sum())
            counts += np.bincount(lab, minlength=k)
            for j in range(d):
                sums[:, j] += np.bincount(lab, weights=X[:, j], minlength=k)
        else:
            w = weights[lo : lo + X.shape[0]].astype(np.float64)
            inertia += float((sq * w).sum())
            counts += np.bincount(lab, weights=w, minlength=k)
            for j in range(d):
                sums[:, j] += np.bincount(lab, weights=X[:, j] * w, minlength=k)
    return sums, counts, inertia


def block_transform(block: np.ndarray, start: int, centers: np.ndarray) -> np.ndarray:
    """Task: Euclidean distance of every row to every center, (b, k) in the data dtype."""
    if S.is_sparse(block):
        Ca = _augmented_centers(centers.astype(block.dtype))
        D = np.asarray(block @ Ca[:, :-1].T, block.dtype) + Ca[:, -1]
        D += S.row_sq_norms(block)[:, None]
        np.maximum(D, 0, out=D)
        return np.sqrt(D, out=D)
    D = _augmented_rows(block) @ _augmented_centers(centers).T
    D += np.einsum("ij,ij->i", block, block)[:, None]
    np.maximum(D, 0, out=D)
    return np.sqrt(D, out=D)


def block_score_samples(block: np.ndarray, start: int, centers: np.ndarray) -> np.ndarray:
    """Task: minus the exact float64 squared distance of every row to its nearest center."""
    out = np.empty(block.shape[0], np.float64)
    centers64 = centers.astype(np.float64)
    buf = np.empty((min(ASSIGN_CHUNK_ROWS, block.shape[0]), centers.shape[1]), np.float64)
    for lo, X, labels in _assigned_chunks(block, centers.astype(block.dtype)[None]):
        sq = exact_sq_distances(X, centers64, labels[:, 0], buf)
        np.negative(sq, out=out[lo : lo + X.shape[0]])
    return out


def block_predict(block: np.ndarray, start: int, centers: np.ndarray) -> np.ndarray:
    """Task: nearest-center labels (int32) of one block."""
    out = np.empty(block.shape[0], np.int32)
    for lo, X, labels in _assigned_chunks(block, centers[None]):
        out[lo : lo + X.shape[0]] = labels[:, 0]
    return out
