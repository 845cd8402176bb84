"""The few operations the K-Means kernels do differently on sparse (CSR) rows.

Centers stay dense; sparse rows enter the distance identity
``|x|^2 - 2 x.c + |c|^2`` through a sparse-times-dense product, and are made
dense only a few rows at a time (centers drawn from rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["dense", "is_sparse", "mean_variance", "row_sq_norms", "take_rows", "vstack"]


def is_sparse(X: Any) -> bool:
    """True for a scipy.sparse matrix or array."""
    return bool(sp.issparse(X))


def dense(X: Any) -> np.ndarray:
    """``X`` as an ndarray (a sparse matrix made dense: only for a few rows)."""
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def row_sq_norms(X: Any, dtype: Any = None) -> np.ndarray:
    """``|x|^2`` of every row, in ``dtype`` (default: the rows' dtype)."""
    dtype = X.dtype if dtype is None else dtype
    if sp.issparse(X):
        sq = X.astype(dtype, copy=False).multiply(X.astype(dtype, copy=False))
        return np.asarray(sq.sum(axis=1), dtype).ravel()
    X = X.astype(dtype, copy=False)
    return np.einsum("ij,ij->i", X, X)


def take_rows(X: Any, index: np.ndarray, out: np.ndarray | None = None) -> Any:
    """Rows ``index`` of ``X`` (into ``out`` when dense)."""
    if sp.issparse(X):
        return X[index]
    return np.take(X, index, axis=0, out=out, mode="clip")


def vstack(parts: list[Any]) -> Any:
    """Rows of ``parts`` stacked (CSR when they are sparse)."""
    if parts and sp.issparse(parts[0]):
        return sp.vstack(parts, format="csr")
    return np.concatenate(parts)


def mean_variance(X: Any) -> float:
    """The mean over features of each feature's variance (float64)."""
    if sp.issparse(X):
        X = X.astype(np.float64)
        mean = np.asarray(X.mean(axis=0)).ravel()
        mean_sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        return float(np.mean(mean_sq - mean**2))
    return float(np.mean(np.var(X, axis=0, dtype=np.float64)))
