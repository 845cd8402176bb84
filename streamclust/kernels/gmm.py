"""Pure NumPy kernels of StreamingGaussianMixture: no Dask, no estimator.

Everything runs in float64. The parameters of one mixture are a :class:`Params`
(``log_weights``, ``means``, ``prec_chol`` in scikit-learn's layout for each
covariance type). A block task returns, per candidate mixture, the sufficient
statistics of one EM iteration (:class:`Stats`), which the driver adds up in
block order; :func:`m_step` turns their sum into new parameters with
scikit-learn's formulas.

The second-order statistics are *shifted*: they are taken around each
component's current mean ``m`` (``sum r (x - m)(x - m)^T``), which the next
mean differs from only by the EM update. Raw moments (``E[xx^T] - mu mu^T``)
would cancel catastrophically when the data sit far from the origin.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from ..exceptions import DataError
from .kmeans import assign

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_LOG_2PI = np.log(2 * np.pi)


@dataclass
class Params:
    """One Gaussian mixture: ``K`` components in ``d`` features, one covariance type."""

    log_weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    prec_chol: np.ndarray  # full (K,d,d), tied (d,d), diag (K,d), spherical (K,)
    cov_type: str


@dataclass
class Stats:
    """Sums over rows of one candidate's E-step (shifted around ``Params.means``)."""

    nk: np.ndarray  # (K,) sum of responsibilities
    s1: np.ndarray  # (K, d) sum r (x - m)
    #: full/tied (K, d, d): sum r (x - m)(x - m)^T; diag/spherical (K, d): its diagonal
    s2: np.ndarray
    log_lik: float  # sum over rows of log p(x)
    n: int  # rows
    #: sum over rows and components of r log r (taken only when asked: ``entropy``)
    r_log_r: float = 0.0

    def __iadd__(self, other: Stats) -> Stats:
        self.nk += other.nk
        self.s1 += other.s1
        self.s2 += other.s2
        self.log_lik += other.log_lik
        self.n += other.n
        self.r_log_r += other.r_log_r
        return self


def precision_cholesky(covariances: np.ndarray, cov_type: str) -> np.ndarray:
    """Cholesky factor of the precision matrices (scikit-learn's ``precisions_cholesky_``)."""
    fail = (
        "Fitting the mixture model failed because some components have ill-defined "
        "empirical covariance (for instance caused by singleton or collapsed samples). "
        "Try to decrease the number of components, increase reg_covar, or scale the "
        "input data. (A covariance is not positive definite: e.g. reg_covar=1e-4.)"
    )
    if cov_type in ("full", "tied"):
        covs = covariances[None] if cov_type == "tied" else covariances
        d = covs.shape[-1]
        out = np.empty_like(covs)
        for k, cov in enumerate(covs):
            try:
                chol = linalg.cholesky(cov, lower=True)
            except linalg.LinAlgError as exc:
                raise DataError(fail) from exc
            out[k] = linalg.solve_triangular(chol, np.eye(d), lower=True).T
        return out[0] if cov_type == "tied" else out
    if np.any(covariances <= 0.0):
        raise DataError(fail)
    return 1.0 / np.sqrt(covariances)


def prec_chol_from_precisions(precisions: np.ndarray, cov_type: str) -> np.ndarray:
    """Precision Cholesky factors from precision matrices, as scikit-learn builds them
    (upper triangular for full and tied, via the flipped lower Cholesky)."""

    def upper(prec: np.ndarray) -> np.ndarray:
        return np.flipud(np.fliplr(linalg.cholesky(np.flipud(np.fliplr(prec)), lower=True)))

    if cov_type == "full":
        return np.stack([upper(p) for p in precisions])
    if cov_type == "tied":
        return upper(precisions)
    return np.sqrt(precisions)


def precisions_from_prec_chol(prec_chol: np.ndarray, cov_type: str) -> np.ndarray:
    """Precision matrices (scikit-learn's ``precisions_``) from their Cholesky factors."""
    if cov_type == "full":
        return np.einsum("kij,klj->kil", prec_chol, prec_chol)
    if cov_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_prec_chol(prec_chol: np.ndarray, cov_type: str) -> np.ndarray:
    """Covariances from precision Cholesky factors (inverse of :func:`precision_cholesky`)."""
    if cov_type == "full":
        return np.stack([np.linalg.inv(p @ p.T) for p in prec_chol])
    if cov_type == "tied":
        return np.linalg.inv(prec_chol @ prec_chol.T)
    return 1.0 / prec_chol**2


def _chunk_rows(width: int) -> int:
    """Rows per chunk so that a (width, rows) float64 scratch stays near 4 MiB."""
    return int(np.clip(2**19 // max(width, 1) // 64 * 64, 64, 4096))


def _whitened_chunks(X: np.ndarray, p: Params) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """``(start, y, maha)`` for consecutive row chunks of ``X`` (full and tied covariances).

    ``y`` (K, d, rows) holds ``(x - mean_k) @ prec_chol_k`` of every row for
    every component, components-major, and ``maha`` (K, rows) its squared
    norms. Full: one GEMM of all components' factors, augmented with the
    ``-mean_k @ prec_chol_k`` column, against ``[x, 1]``; tied: one GEMM with
    the shared factor. The scratch arrays are reused from chunk to chunk
    (yielded arrays are valid until the next chunk).
    """
    n, d = X.shape
    K = p.means.shape[0]
    full = p.cov_type == "full"
    L = p.prec_chol if full else p.prec_chol[None]
    offs = np.einsum("kd,kde->ke", p.means, L) if full else p.means @ p.prec_chol  # (K, d)
    chunk = _chunk_rows(K * d)
    if full:
        # Row k*d + j of A is [L_k[:, j], -offs[k, j]].
        A = np.empty((K * d, d + 1))
        A[:, :d] = L.transpose(0, 2, 1).reshape(K * d, d)
        A[:, d] = -offs.reshape(-1)
        Xa = np.empty((chunk, d + 1))
        Xa[:, d] = 1.0
    else:
        base = np.empty((d, chunk))
    Y = np.empty((K * d, chunk))
    maha = np.empty((K, chunk))
    for lo in range(0, n, chunk):
        Xc = X[lo : lo + chunk]
        c = Xc.shape[0]
        if full:
            Xa[:c, :d] = Xc
            y = np.matmul(A, Xa[:c].T, out=Y[:, :c]).reshape(K, d, c)
        else:
            b = np.matmul(L[0].T, Xc.T, out=base[:, :c])
            y = np.subtract(b[None], offs[:, :, None], out=Y[:, :c].reshape(K, d, c))
        m = np.einsum("kdc,kdc->kc", y, y, out=maha[:, :c])
        yield lo, y, m


def log_det_chol(p: Params) -> np.ndarray:
    """``log det prec_chol_k`` for every component (K,)."""
    K, d = p.means.shape
    pc = p.prec_chol
    if p.cov_type == "full":
        return np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1)
    if p.cov_type == "tied":
        return np.full(K, np.log(np.diag(pc)).sum())
    if p.cov_type == "diag":
        return np.log(pc).sum(axis=1)
    return d * np.log(pc)


def log_gaussian_prob(X: np.ndarray, p: Params) -> np.ndarray:
    """``log N(x | mean_k, cov_k)`` of every row for every component, (n, K).

    Full and tied: the Mahalanobis distances of :func:`_whitened_chunks`.
    Diagonal and spherical: three GEMM-shaped products over all components, on
    rows centred on the mean of the means.
    """
    n, d = X.shape
    means, pc = p.means, p.prec_chol
    K = means.shape[0]
    if p.cov_type in ("full", "tied"):
        out = np.empty((n, K))
        for lo, _, maha in _whitened_chunks(X, p):
            out[lo : lo + maha.shape[1]] = maha.T
    else:
        # Expanded squares on rows centred inside the data (see estep_stats).
        center = means.mean(axis=0)
        X = X - center
        means = means - center
        prec = pc**2
        if p.cov_type == "diag":
            out = (means**2 * prec).sum(axis=1) - 2.0 * (X @ (means * prec).T) + (X**2) @ prec.T
        else:
            xx = np.einsum("ij,ij->i", X, X)
            out = (means**2).sum(axis=1) * prec - 2.0 * (X @ means.T) * prec + np.outer(xx, prec)
    return -0.5 * (d * _LOG_2PI + out) + log_det_chol(p)


def log_resp(X: np.ndarray, p: Params) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``log p(x)`` (n,) and log responsibilities (n, K)."""
    weighted = log_gaussian_prob(X, p)
    weighted += p.log_weights
    top = weighted.max(axis=1)
    weighted -= top[:, None]
    norm = np.log(np.exp(weighted).sum(axis=1))
    weighted -= norm[:, None]
    return norm + top, weighted


def estep_stats(
    X: np.ndarray, p: Params, resp: np.ndarray | None = None, entropy: bool = False
) -> Stats:
    """Sufficient statistics of one block for one mixture.

    ``resp`` replaces the E-step's responsibilities (used to initialize from
    hard or random assignments); ``log_lik`` is then 0. ``entropy``: also sum
    ``r log r`` (the variational lower bound's term).
    """
    if resp is None and p.cov_type in ("full", "tied"):
        return _estep_whitened(X, p, entropy)
    r_log_r = 0.0
    if resp is None:
        norm, lr = log_resp(X, p)
        resp = np.exp(lr)
        log_lik = float(norm.sum())
        if entropy:
            r_log_r = float(np.einsum("ij,ij->", resp, lr))
    else:
        log_lik = 0.0
    K, d = p.means.shape
    nk = resp.sum(axis=0)
    if p.cov_type in ("full", "tied"):
        s1 = resp.T @ X - nk[:, None] * p.means
        s2 = np.empty((K, d, d))
        for k in range(K):
            diff = X - p.means[k]
            s2[k] = (resp[:, k] * diff.T) @ diff
    else:
        # sum r (x - m) and sum r (x - m)^2 from the moments of the rows centred
        # on one point inside the data (the mean of the means): GEMMs instead
        # of a pass per component, and no cancellation when the data sit far
        # from the origin.
        center = p.means.mean(axis=0)
        Xc = X - center
        mc = p.means - center
        sx = resp.T @ Xc
        s1 = sx - nk[:, None] * mc
        s2 = resp.T @ (Xc * Xc) - 2 * mc * sx + nk[:, None] * mc**2
    return Stats(nk, s1, s2, log_lik, X.shape[0], r_log_r)


def _to_responsibilities(
    maha: np.ndarray, const: np.ndarray, entropy: list[float] | None = None
) -> np.ndarray:
    """Turn squared Mahalanobis distances (K, rows) into responsibilities, in place;
    return every row's ``log p(x)``. ``const`` (K, 1) is ``log w_k`` plus the
    Gaussian's normalizing terms. ``entropy``: add the rows' ``sum r log r`` to
    its one item."""
    maha *= -0.5
    maha += const  # log w_k + log N(x | k)
    top = maha.max(axis=0)
    maha -= top
    shifted = None if entropy is None else maha.copy()
    np.exp(maha, out=maha)
    total = maha.sum(axis=0)
    maha /= total
    log_total = np.log(total)
    if shifted is not None and entropy is not None:
        # log r = shifted - log total, and every row's r sums to 1
        entropy[0] += float(np.einsum("kc,kc->", maha, shifted) - log_total.sum())
    return log_total + top


def _weighted_const(p: Params) -> np.ndarray:
    d = p.means.shape[1]
    return (log_det_chol(p) - 0.5 * d * _LOG_2PI + p.log_weights)[:, None]


def log_density(X: np.ndarray, p: Params) -> np.ndarray:
    """``log p(x)`` of every row (n,), without the (n, K) responsibilities for
    full and tied covariances."""
    if p.cov_type not in ("full", "tied"):
        return log_resp(X, p)[0]
    out = np.empty(X.shape[0])
    const = _weighted_const(p)
    for lo, _, maha in _whitened_chunks(X, p):
        out[lo : lo + maha.shape[1]] = _to_responsibilities(maha, const)
    return out


def _estep_whitened(X: np.ndarray, p: Params, entropy: bool = False) -> Stats:
    """E-step statistics for full and tied covariances, chunk by chunk in cache.

    The scatter of component k is accumulated on the whitened rows
    ``y = (x - m_k) @ L_k`` that the densities already needed, as
    ``sum r y^T y``, and mapped back once per block: ``L_k^-T (sum r y^T y) L_k^-1``.
    """
    n, d = X.shape
    K = p.means.shape[0]
    const = _weighted_const(p)
    nk = np.zeros(K)
    sx = np.zeros((K, d))
    S = np.zeros((K, d, d))
    log_lik = 0.0
    r_log_r = [0.0] if entropy else None
    for lo, y, lp in _whitened_chunks(X, p):
        c = lp.shape[1]
        log_lik += float(_to_responsibilities(lp, const, r_log_r).sum())
        nk += lp.sum(axis=1)
        sx += lp @ X[lo : lo + c]
        y *= np.sqrt(lp, out=lp)[:, None, :]
        for k in range(K):
            S[k] += y[k] @ y[k].T
    L = p.prec_chol if p.cov_type == "full" else np.broadcast_to(p.prec_chol, (K, d, d))
    s2 = np.empty((K, d, d))
    for k in range(K):
        inv = np.linalg.inv(L[k])
        s2[k] = inv.T @ S[k] @ inv
    return Stats(nk, sx - nk[:, None] * p.means, s2, log_lik, n, r_log_r[0] if r_log_r else 0.0)


def gaussian_estimates(
    st: Stats, ref_means: np.ndarray, cov_type: str, reg_covar: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(nk, means, covariances)`` from summed statistics, as scikit-learn's
    ``_estimate_gaussian_parameters`` gives them: ``10 * eps`` added to every
    ``nk`` (no empty component divides by zero), ``reg_covar`` to every variance."""
    d = ref_means.shape[1]
    nk = st.nk + 10 * np.finfo(np.float64).eps
    delta = st.s1 / nk[:, None]  # new mean - reference mean
    means = ref_means + delta
    if cov_type in ("full", "tied"):
        # sum r (x - mu)(x - mu)^T  with  mu = m + delta
        cross = st.s1[:, :, None] * delta[:, None, :]
        scatter = (
            st.s2
            - cross
            - cross.transpose(0, 2, 1)
            + st.nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
        )
        if cov_type == "full":
            covs = scatter / nk[:, None, None]
            covs[:, np.arange(d), np.arange(d)] += reg_covar
        else:
            covs = scatter.sum(axis=0) / nk.sum()
            covs.flat[:: d + 1] += reg_covar
    else:
        scatter = st.s2 - 2 * st.s1 * delta + st.nk[:, None] * delta**2
        covs = scatter / nk[:, None] + reg_covar
        if cov_type == "spherical":
            covs = covs.mean(axis=1)
    return nk, means, covs


def m_step(
    st: Stats, ref_means: np.ndarray, cov_type: str, reg_covar: float, initial: bool = False
) -> Params:
    """New parameters from summed statistics, with scikit-learn's formulas
    (:func:`gaussian_estimates`); weights are ``nk`` normalized to sum 1, except
    at initialization (``initial``), where scikit-learn divides by the number of
    rows."""
    nk, means, covs = gaussian_estimates(st, ref_means, cov_type, reg_covar)
    weights = nk / (st.n if initial else nk.sum())
    return Params(np.log(weights), means, precision_cholesky(covs, cov_type), cov_type)


def shift_stats(st: Stats, delta: np.ndarray) -> Stats:
    """The same statistics taken around ``ref - delta`` instead of ``ref``.

    With ``x - new = (x - ref) + delta``: ``s1 + nk delta`` and
    ``s2 + s1 delta^T + delta s1^T + nk delta delta^T`` (the diagonal of it
    for diag/spherical).
    """
    nk, s1 = st.nk, st.s1
    if st.s2.ndim == 3:
        cross = s1[:, :, None] * delta[:, None, :]
        s2 = (
            st.s2
            + cross
            + cross.transpose(0, 2, 1)
            + nk[:, None, None] * (delta[:, :, None] * delta[:, None, :])
        )
    else:
        s2 = st.s2 + 2 * s1 * delta + nk[:, None] * delta**2
    return Stats(nk.copy(), s1 + nk[:, None] * delta, s2, st.log_lik, st.n)


def zero_s2(K: int, d: int, cov_type: str) -> np.ndarray:
    """Zero scatter statistics of ``K`` components for ``cov_type``."""
    return np.zeros((K, d, d) if cov_type in ("full", "tied") else (K, d))


def n_parameters(K: int, d: int, cov_type: str) -> int:
    """Free parameters of a mixture (for BIC and AIC), as scikit-learn counts them."""
    cov = {"full": K * d * (d + 1) // 2, "diag": K * d, "tied": d * (d + 1) // 2}.get(cov_type, K)
    return int(cov + K * d + K - 1)


def information_criteria(total_log_lik: float, n_rows: int, n_params: int) -> dict[str, float]:
    """Mean log-likelihood (``score``), BIC and AIC from the total log-likelihood of
    ``n_rows`` rows under a mixture of ``n_params`` free parameters."""
    return {
        "score": total_log_lik / n_rows,
        "bic": -2 * total_log_lik + n_params * np.log(n_rows),
        "aic": -2 * total_log_lik + 2 * n_params,
        "log_likelihood": total_log_lik,
        "n_samples": n_rows,
    }


# --------------------------------------------------------------------------- block tasks


def block_estep(
    block: np.ndarray, start: int, params: list[Params | None], entropy: bool = False
) -> list[Stats | None]:
    """Task: statistics of one block for every candidate still iterating (None = done)."""
    X = block.astype(np.float64, copy=False)
    return [None if p is None else estep_stats(X, p, entropy=entropy) for p in params]


def block_hard_stats(
    block: np.ndarray, start: int, centers: np.ndarray, cov_types: tuple[str, ...]
) -> list[Stats]:
    """Task: statistics of hard nearest-center assignments of (g, K, d) centers, for
    every covariance type (outer) and candidate (inner); the rows are assigned once.

    Shifted around the centers themselves (used for ``init_params="kmeans"``).
    """
    X = block.astype(np.float64, copy=False)
    labels, _ = assign(X, centers.astype(np.float64))
    g, K, _ = centers.shape
    resps = []
    for c in range(g):
        resp = np.zeros((X.shape[0], K))
        resp[np.arange(X.shape[0]), labels[:, c]] = 1.0
        resps.append(resp)
    return [
        estep_stats(X, Params(np.zeros(K), centers[c].astype(np.float64), np.empty(0), ct), r)
        for ct in cov_types
        for c, r in enumerate(resps)
    ]


def block_random_stats(
    block: np.ndarray, start: int, ref_means: np.ndarray, seeds: list[int], cov_type: str
) -> list[Stats]:
    """Task: statistics of uniform random responsibilities (``init_params="random"``).

    Each candidate's rows draw from a generator seeded by its seed and the
    block's first row, so the result does not depend on where the task runs.
    """
    X = block.astype(np.float64, copy=False)
    K = ref_means.shape[0]
    out = []
    for seed in seeds:
        rng = np.random.default_rng([seed, start])
        resp = rng.uniform(size=(X.shape[0], K))
        resp /= resp.sum(axis=1, keepdims=True)
        ref = Params(np.zeros(K), ref_means, np.empty(0), cov_type)
        out.append(estep_stats(X, ref, resp))
    return out


def block_score(block: np.ndarray, start: int, p: Params) -> np.ndarray:
    """Task: ``log p(x)`` of every row of one block."""
    return log_density(block.astype(np.float64, copy=False), p)


def block_score_sum(block: np.ndarray, start: int, p: Params) -> float:
    """Task: the sum of ``log p(x)`` over one block."""
    return float(block_score(block, start, p).sum())


def block_proba(block: np.ndarray, start: int, p: Params) -> np.ndarray:
    """Task: responsibilities (n, K) of one block."""
    return np.exp(log_resp(block.astype(np.float64, copy=False), p)[1])


def block_score_as_data(block: np.ndarray, start: int, p: Params) -> np.ndarray:
    """Task: :func:`block_score` in the block's dtype (float32 data: float32, as
    scikit-learn returns it)."""
    return block_score(block, start, p).astype(block.dtype, copy=False)


def block_proba_as_data(block: np.ndarray, start: int, p: Params) -> np.ndarray:
    """Task: :func:`block_proba` in the block's dtype."""
    return block_proba(block, start, p).astype(block.dtype, copy=False)


def block_predict(block: np.ndarray, start: int, p: Params) -> np.ndarray:
    """Task: most likely component (int32) of every row."""
    return log_resp(block.astype(np.float64, copy=False), p)[1].argmax(axis=1).astype(np.int32)
