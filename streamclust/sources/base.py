"""The :class:`Source` contract: a 2-D table of numbers read in row ranges.

A Source holds a *description* (a path, dtype, shape), not open file handles,
so it pickles cheaply: a Dask task carries the source and a row range, and the
worker reads the rows itself. Every block is validated as it is read (its
width, and finite values), and a Source also reads like a NumPy array of rows.
"""

from __future__ import annotations

import bisect
import hashlib
import operator
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np

from ..exceptions import DataError, SourceError
from ..validation import check_finite_block, compute_dtype, row_span

__all__ = ["TARGET_BLOCK_BYTES", "BlockRanges", "Source", "check_2d", "default_block_rows"]


#: Rows per block are chosen so that a block of the source holds about this many bytes.
TARGET_BLOCK_BYTES = 8 * 2**20


def default_block_rows(n_features: int, itemsize: int) -> int:
    return max(1, TARGET_BLOCK_BYTES // max(1, n_features * itemsize))


def check_2d(array: Any, name: str) -> None:
    ndim = len(array.shape)
    if ndim != 2:
        hint = (
            "Reshape your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
        raise DataError(f"{name}: expected a 2-D array, got {ndim}-D. {hint}")


class Source(ABC):
    """A 2-D dataset read block by block.

    It also reads like a NumPy array of rows: ``len(X)``, ``X[:5000]``,
    ``X[[3, 1]]`` or ``X[10:20, :3]`` return ndarrays and read only the blocks
    that hold those rows; ``np.asarray(X)`` reads every row.

    Attributes
    ----------
    n_rows, n_features : int
        Shape of the table.
    dtype : numpy.dtype
        The stored dtype; blocks are returned in :attr:`compute_dtype`.
    block_rows : int
        Rows in a block (the last block may be shorter).
    name : str
        What error messages call this source (usually its path).
    in_memory : bool
        True when the data already lives in the driver's memory; the runtime
        then ships blocks to workers instead of letting workers read them.
    """

    n_rows: int
    n_features: int
    dtype: np.dtype
    block_rows: int
    name: str
    in_memory: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_features)

    @property
    def compute_dtype(self) -> np.dtype:
        return compute_dtype(self.dtype)

    def blocks(self, min_rows: int = 1) -> Sequence[tuple[int, int]]:
        """Row ranges ``(start, stop)`` covering the source in order.

        Consecutive storage blocks are merged until each range holds at least
        ``min_rows`` rows (the last range may be shorter), so a mini-batch never
        needs rows from two tasks. Blocks of one size are computed, not listed
        (:class:`BlockRanges`): a store that claims 10**15 rows costs nothing
        to plan.
        """
        bounds = self._storage_bounds()
        if bounds is None:
            size = self.block_rows * max(1, -(-min_rows // self.block_rows))
            return BlockRanges(self.n_rows, size, min_rows)
        merged: list[tuple[int, int]] = []
        start = None
        for lo, hi in bounds:
            start = lo if start is None else start
            if hi - start >= min_rows:
                merged.append((start, hi))
                start = None
        if start is not None:
            if merged and bounds[-1][1] - start < min_rows:
                merged[-1] = (merged[-1][0], bounds[-1][1])
            else:
                merged.append((start, bounds[-1][1]))
        return merged

    def _storage_bounds(self) -> list[tuple[int, int]] | None:
        """The storage blocks' row ranges, or None when all are ``block_rows`` long."""
        return None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a validated array in :attr:`compute_dtype`."""
        if not 0 <= start <= stop <= self.n_rows:
            raise SourceError(
                f"{self.name}: {row_span(start, stop)} are outside its {self.n_rows} rows "
                f"({row_span(0, self.n_rows)})"
            )
        block = np.asarray(self._read(start, stop))
        if block.ndim != 2 or block.shape[1] != self.n_features:
            raise DataError(
                f"{self.name}: {row_span(start, stop)} have shape {block.shape}, "
                f"expected (n, {self.n_features}); every block must have the same width"
            )
        block = block.astype(self.compute_dtype, copy=False)
        if not np.isfinite(block).all():
            self._raise_not_finite(block, start)
        return block

    def _raise_not_finite(self, block: np.ndarray, start: int) -> None:
        check_finite_block(block, start, self.name)

    @abstractmethod
    def _read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as stored (no validation)."""

    def iter_blocks(self, order: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` for every block, in storage order or in ``order``."""
        bounds = self.blocks()
        for i in range(len(bounds)) if order is None else order:
            lo, hi = bounds[i]
            yield lo, self.read(lo, hi)

    # ------------------------------------------------------------ NumPy-style access

    def __len__(self) -> int:
        return self.n_rows

    def __getitem__(self, key: Any) -> np.ndarray:
        """Rows read into an ndarray, indexed as NumPy does: ``X[:5000]``, ``X[-1]``,
        ``X[10:20, :3]``, ``X[[3, 1, 4]]``. Only the blocks holding those rows are read."""
        rows, cols = key if isinstance(key, tuple) and len(key) == 2 else (key, slice(None))
        if isinstance(key, tuple) and len(key) > 2:
            raise IndexError(f"{self.name}: too many indices {key!r} for a 2-D source")
        if isinstance(rows, slice):
            r = range(*rows.indices(self.n_rows))
            if not r:
                return np.empty((0, self.n_features), self.compute_dtype)[:, cols]
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            return self.read(lo, hi)[r[0] - lo :: r.step][:, cols]
        if isinstance(rows, (int, np.integer)) and not isinstance(rows, bool):
            return self._take(np.array([int(rows)]))[0][cols]
        index = np.asarray(rows)
        if index.ndim == 1 and index.dtype == bool and len(index) == self.n_rows:
            index = np.flatnonzero(index)
        if index.ndim != 1 or not (index.dtype.kind in "iu" or index.size == 0):
            raise IndexError(
                f"{self.name}: rows are indexed by an int, a slice or a 1-D array of ints or "
                f"of {self.n_rows} booleans, not {type(rows).__name__}"
            )
        return self._take(index.astype(np.int64))[:, cols]

    def uniform_sample(self, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``min(size, n_rows)`` distinct rows drawn uniformly with generator ``seed``: their
        sorted indices and the rows (float64), each block holding them read once."""
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(self.n_rows, size=min(size, self.n_rows), replace=False))
        return index, np.asarray(self[index], dtype=np.float64)

    def _take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (0-based, negative from the end), reading each block once."""
        bad = (index < -self.n_rows) | (index >= self.n_rows)
        if bad.any():
            raise IndexError(
                f"{self.name}: row index {int(index[bad][0])} is out of bounds for "
                f"{self.n_rows} rows"
            )
        index = np.where(index < 0, index + self.n_rows, index)
        out = np.empty((len(index), self.n_features), self.compute_dtype)
        order = np.argsort(index, kind="stable")
        bounds = self.blocks()
        at = [bisect.bisect_right(bounds, int(i), key=lambda r: r[1]) for i in index[order]]
        block_of = np.asarray(at, np.int64)
        for b in np.unique(block_of):
            lo, hi = bounds[b]
            sel = order[block_of == b]
            out[sel] = self.read(lo, hi)[index[sel] - lo]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        """The rows, one 1-D array each (read block by block)."""
        for _, block in self.iter_blocks():
            yield from block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row in memory (``np.asarray(X)``): the whole dataset is read."""
        data = self.read(0, self.n_rows)
        return data if dtype is None else data.astype(dtype, copy=False)

    def to_dask(self) -> Any:
        """A lazy dask array over this source, one chunk per block."""
        import dask.array as da

        chunks = (tuple(hi - lo for lo, hi in self.blocks()), (self.n_features,))
        return da.from_array(
            _SourceArray(self), chunks=chunks, asarray=True, fancy=False, name=self.token()
        )

    def token(self) -> str:
        """A deterministic name of this source's contents description (for dask graphs)."""
        return "streamclust-source-" + hashlib.sha1(repr(self).encode()).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getstate__(self) -> dict[str, Any]:
        # Open handles (zarr arrays, memmaps) stay behind; a worker reopens by path.
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h_")}


class BlockRanges(Sequence[tuple[int, int]]):
    """Consecutive row ranges of ``size`` rows covering ``n_rows`` rows, as a sequence
    computed on demand; a last range shorter than ``min_rows`` joins the one before."""

    def __init__(self, n_rows: int, size: int, min_rows: int = 1) -> None:
        self.n_rows, self.size = int(n_rows), int(size)
        count = -(-self.n_rows // self.size)
        if count > 1 and self.n_rows - (count - 1) * self.size < min_rows:
            count -= 1
        self._n = count

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> tuple[int, int]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[int, int]]: ...

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return _RangesView(self, range(self._n)[i])
        i = operator.index(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"block {i} of {self._n}")
        lo = i * self.size
        return lo, (self.n_rows if i == self._n - 1 else lo + self.size)

    def __repr__(self) -> str:
        return f"BlockRanges({self.n_rows} rows in {self._n} ranges of {self.size})"


class _RangesView(Sequence[tuple[int, int]]):
    """Some of a :class:`BlockRanges`, by their indices (a slice of it)."""

    def __init__(self, ranges: BlockRanges, indices: range) -> None:
        self.ranges, self.indices = ranges, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return _RangesView(self.ranges, self.indices[i])
        return self.ranges[self.indices[i]]


class _SourceArray:
    """Array-like adapter so ``dask.array.from_array`` can slice a Source."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.shape = source.shape
        self.dtype = source.compute_dtype
        self.ndim = 2

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        start, stop, _ = rows.indices(self.source.n_rows)
        return self.source.read(start, stop)[:, cols]
