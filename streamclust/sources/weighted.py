"""Sample weights: a second source of the same rows, read block by block with the data.

A :class:`WeightedSource` reads a row range of the data and the same range of
the weights (from wherever they are stored: an array, a ``.npy`` file, a Zarr
store or URL) and returns both as one :class:`WeightedRows` block, the weights
in the data's compute dtype (scikit-learn casts weights to ``X``'s dtype too).
The runtime reads, caches and ships it like any other block; the rows are not
copied (a copy of every block into a wider array cost 12% of a fit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import DataError
from ..kernels.seeding import WeightedRows
from .arrays import ArraySource
from .base import Source
from .opening import open_source

__all__ = ["WeightedSource", "weights_source", "with_weights"]


def weights_source(sample_weight: Any, n_rows: int) -> Source:
    """The Source of ``sample_weight`` for data of ``n_rows``: a scalar or an array-like
    of ``n_rows`` in memory, or (for out-of-core data) a path, URL, zarr or dask array
    of one weight per row (1-D, or one column)."""
    if isinstance(sample_weight, (int, float, np.integer, np.floating)) and not isinstance(
        sample_weight, bool
    ):
        sample_weight = np.full(n_rows, float(sample_weight))
    if isinstance(sample_weight, (list, tuple, np.ndarray)):
        array = np.asarray(sample_weight)
        if array.ndim == 1:
            array = array[:, None]
        sample_weight = ArraySource(array, name="sample_weight") if array.ndim == 2 else array
    source = open_source(sample_weight, column=True)
    if source.n_features != 1 or source.n_rows != n_rows:
        shape = (source.n_rows,) if source.n_features == 1 else source.shape
        raise DataError(
            f"sample_weight.shape == {shape}, expected ({n_rows},); pass one weight per row"
        )
    return source


def with_weights(source: Source, sample_weight: Any) -> Source:
    """``source`` itself when ``sample_weight`` is None, else its :class:`WeightedSource`."""
    if sample_weight is None:
        return source
    return WeightedSource(source, weights_source(sample_weight, source.n_rows))


class WeightedSource(Source):
    """The rows of ``data``, each with its weight from ``weights`` as a last column.

    It reports the data's shape, dtype and blocks; :meth:`read` returns
    :class:`WeightedRows`. Weights must be finite and non-negative, and
    not all zero (checked as each block is read, naming the row).
    """

    def __init__(self, data: Source, weights: Source) -> None:
        self.data, self.weights = data, weights
        self.n_rows, self.n_features = data.n_rows, data.n_features
        self.dtype, self.block_rows = data.dtype, data.block_rows
        self.in_memory = data.in_memory and weights.in_memory
        label = weights.name
        if weights.in_memory:  # the weights' contents name them, for checkpoints
            digest = hashlib.sha256(weights.read(0, weights.n_rows).tobytes())
            label = f"weights {digest.hexdigest()[:16]}"
        self.name = f"{data.name} (sample_weight: {label})"

    def blocks(self, min_rows: int = 1) -> Sequence[tuple[int, int]]:
        return self.data.blocks(min_rows)

    def read(self, start: int, stop: int) -> Any:
        X = self.data.read(start, stop)
        w = self.weights.read(start, stop)[:, 0]
        if (w < 0).any():
            i = int(np.flatnonzero(w < 0)[0])
            raise DataError(
                f"sample_weight: row {start + i} has weight {w[i]:g}; weights should be "
                "non-negative (>= 0)"
            )
        return WeightedRows(X, w.astype(X.dtype, copy=False))

    def _read(self, start: int, stop: int) -> Any:
        return self.read(start, stop)

    def __repr__(self) -> str:
        return f"WeightedSource({self.data!r}, {self.weights!r})"
