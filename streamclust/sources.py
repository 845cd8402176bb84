"""Datasets read block by block.

A :class:`Source` is a 2-D table of ``n_rows x n_features`` numbers that is
read in row ranges. Sources hold a *description* (a path, dtype, shape), not
open file handles, so they pickle cheaply: a Dask task carries the source and
a row range, and the worker reads the rows itself.

Every block is validated as it is read: it must be finite, and a Zarr store
must have committed the rows and have intact chunks.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import operator
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from ._validation import check_finite_block, compute_dtype, row_span
from .exceptions import DataError, SourceError

__all__ = [
    "ArraySource",
    "ArrayWriter",
    "BatchDirSource",
    "BlockRanges",
    "DaskSource",
    "LazyArraySource",
    "NpySource",
    "RawSource",
    "Source",
    "ZarrSource",
    "check_output",
    "check_writable",
    "is_dask_array",
    "is_lazy_array",
    "is_zarr_array",
    "open_source",
    "write_array",
    "write_zarr",
]

#: Rows per block are chosen so that a block of the source holds about this many bytes.
TARGET_BLOCK_BYTES = 8 * 2**20

_BATCH_SUFFIXES = (".npy", ".csv", ".parquet")


def _default_block_rows(n_features: int, itemsize: int) -> int:
    return max(1, TARGET_BLOCK_BYTES // max(1, n_features * itemsize))


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


class ArraySource(Source):
    """An in-memory 2-D NumPy array (or anything ``np.asarray`` accepts)."""

    in_memory = True

    def __init__(self, array: Any, block_rows: int | None = None, name: str = "array") -> None:
        array = np.asarray(array)
        _check_2d(array, name)
        self.array = array
        self.n_rows, self.n_features = array.shape
        self.dtype = array.dtype
        self.block_rows = block_rows or _default_block_rows(
            self.n_features, compute_dtype(self.dtype).itemsize
        )
        self.name = name

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class NpySource(Source):
    """A ``.npy`` file, its rows read from the file block by block.

    Its header is read through a memory map; its rows are read with plain reads
    (``np.fromfile`` at their offset), so the pages of a large file never stay
    mapped in this process: its memory is the blocks in flight, not the file.
    A Fortran-ordered file (rows not contiguous) is read through the map.
    """

    def __init__(self, path: str | os.PathLike, block_rows: int | None = None) -> None:
        self.path = str(path)
        self.name = self.path
        try:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise SourceError(f"{self.path}: no such file; check the path") from exc
        except (ValueError, OSError, EOFError) as exc:
            raise SourceError(
                f"{self.path}: not a readable .npy array ({exc}); "
                "write it with numpy.save from a numeric array"
            ) from exc
        _check_2d(mapped, self.path)
        self.n_rows, self.n_features = mapped.shape
        self.dtype = mapped.dtype
        compute_dtype(self.dtype)
        self.offset = int(mapped.offset)
        self.fortran = bool(mapped.flags.f_contiguous and not mapped.flags.c_contiguous)
        del mapped
        self.block_rows = block_rows or _default_block_rows(self.n_features, self.dtype.itemsize)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.fortran:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
            return np.array(mapped[start:stop])
        return _read_rows(self.path, self.dtype, self.n_features, self.offset, start, stop)


class RawSource(Source):
    """A raw binary file (``np.memmap``) with an explicit dtype and shape.

    ``shape=(-1, n_features)`` infers the number of rows from the file size.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dtype: Any,
        shape: tuple[int, int],
        offset: int = 0,
        block_rows: int | None = None,
    ) -> None:
        self.path = str(path)
        self.name = self.path
        self.dtype = np.dtype(dtype)
        compute_dtype(self.dtype)
        self.offset = int(offset)
        if len(shape) != 2:
            raise DataError(f"{self.path}: shape={shape} must have two entries (rows, features)")
        try:
            size = os.path.getsize(self.path)
        except OSError as exc:
            raise SourceError(f"{self.path}: no such file; check the path") from exc
        rows, cols = int(shape[0]), int(shape[1])
        row_bytes = cols * self.dtype.itemsize
        if cols < 1:
            raise DataError(f"{self.path}: shape={shape} needs at least one feature")
        if rows < 0:
            rows, rest = divmod(size - self.offset, row_bytes)
            if rest:
                raise DataError(
                    f"{self.path}: {size - self.offset} bytes is not a whole number of "
                    f"{cols}-feature {self.dtype} rows; check dtype and shape"
                )
        if self.offset + rows * row_bytes != size:
            raise DataError(
                f"{self.path}: file has {size} bytes but shape={(rows, cols)} of {self.dtype} "
                f"needs {self.offset + rows * row_bytes}; check dtype and shape"
            )
        self.n_rows, self.n_features = rows, cols
        self.block_rows = block_rows or _default_block_rows(cols, self.dtype.itemsize)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return _read_rows(self.path, self.dtype, self.n_features, self.offset, start, stop)


def _read_rows(
    path: str, dtype: np.dtype, width: int, offset: int, start: int, stop: int
) -> np.ndarray:
    """Rows ``start:stop`` of a C-ordered table of ``dtype`` at ``offset`` in a file, by
    plain reads (the pages stay in the OS cache, not mapped into this process)."""
    count = (stop - start) * width
    rows = np.fromfile(
        path, dtype=dtype, count=count, offset=offset + start * width * dtype.itemsize
    )
    if rows.size != count:
        raise SourceError(f"{path}: {row_span(start, stop)} are cut short; the file is truncated")
    return rows.reshape(stop - start, width)


class ZarrSource(Source):
    """A 2-D Zarr array (v2 or v3), or the array ``component`` inside a Zarr group.

    Blocks are whole chunks along the rows (several chunks when chunks are
    small). Rows beyond the ``committed_rows`` attribute (written by
    :func:`write_zarr` after every block) and corrupt chunks raise
    :class:`SourceError` naming the chunk; a chunk that was never written reads
    as the NaN fill value and is reported as missing.
    """

    def __init__(
        self, path: Any, component: str | None = None, block_rows: int | None = None
    ) -> None:
        self.array: Any = None
        if is_zarr_array(path):
            path, self.array = _zarr_array_location(path)
            # An array in this process's memory is read here and its blocks shipped,
            # as an ndarray's are: pickled for a worker, it would copy the whole store.
            self.in_memory = self.array is not None and "Memory" in type(self.array.store).__name__
        self.path = str(path)
        self.component = component
        self.name = self.path if component is None else f"{self.path}/{component}"
        arr = self._h_array()
        _check_2d(arr, self.name)
        self.n_rows, self.n_features = (int(s) for s in arr.shape)
        self.dtype = np.dtype(arr.dtype)
        compute_dtype(self.dtype)
        self.chunk_rows = int(arr.chunks[0])
        if arr.chunks[1] != self.n_features:
            # Reading a row range then touches several chunks per row; still correct.
            pass
        committed = arr.attrs.get("committed_rows")
        self.committed_rows = self.n_rows if committed is None else int(committed)
        if committed is None:  # not written by streamclust: do its chunks reach its shape?
            stop = _stored_rows(arr)
            if stop is not None:
                raise SourceError(
                    f"{self.name}: its shape says {self.n_rows} rows, but its chunks stop at "
                    f"row {stop} (the chunks after it do not exist); rewrite the store, or "
                    "fix the shape in its metadata"
                )
        if block_rows is None:
            target = _default_block_rows(self.n_features, self.dtype.itemsize)
            block_rows = self.chunk_rows * max(1, target // self.chunk_rows)
        self.block_rows = int(block_rows)

    def _h_array(self) -> Any:
        arr = self.__dict__.get("_h_arr", self.array)
        if arr is None:
            import zarr

            if not os.path.exists(self.path) and "://" not in self.path:
                raise SourceError(f"{self.path}: no such Zarr store; check the path")
            try:
                node = zarr.open(self.path, mode="r")
            except Exception as exc:
                raise SourceError(f"{self.path}: not a readable Zarr store ({exc})") from exc
            if isinstance(node, zarr.Group):
                names = sorted(name for name, _ in node.arrays())
                choice = self.component
                if choice is None:
                    if len(names) == 1:
                        choice = names[0]
                    elif "X" in names:
                        choice = "X"
                    else:
                        raise SourceError(
                            f"{self.path}: Zarr group holds arrays {names}; "
                            "name one with component= (or path/NAME)"
                        )
                if choice not in names:
                    raise SourceError(f"{self.path}: no array {choice!r} in group; has {names}")
                node = node[choice]
            elif self.component is not None:
                raise SourceError(f"{self.path}: is an array, not a group; drop component=")
            arr = node
            self.__dict__["_h_arr"] = arr
        return arr

    def _chunk_span(self, start: int, stop: int) -> str:
        first, last = start // self.chunk_rows, max(start, stop - 1) // self.chunk_rows
        if first == last:
            return f"chunk {first} ({row_span(start, stop)})"
        return f"chunks {first} to {last} ({row_span(start, stop)})"

    def _read(self, start: int, stop: int) -> np.ndarray:
        if stop > self.committed_rows:
            bad = max(start, self.committed_rows)
            raise SourceError(
                f"{self.name}: {self._chunk_span(bad, stop)} lie past committed_rows="
                f"{self.committed_rows}: the store was not completely written; rewrite it"
            )
        arr = self._h_array()
        self._check_links(arr, start, stop)
        try:
            return arr[start:stop]
        except Exception as exc:
            first_error: Exception = exc
        # Find the chunk that fails, so the message names it. Only the error's kind is
        # said: a codec's message can quote the bytes it failed on.
        lo = start
        while lo < stop:
            hi = min((lo // self.chunk_rows + 1) * self.chunk_rows, stop)
            try:
                arr[lo:hi]
            except Exception as exc:
                raise SourceError(
                    f"{self.name}: {self._chunk_span(lo, hi)} cannot be read "
                    f"({type(exc).__name__}); the chunk is corrupt: restore or rewrite the store"
                ) from exc
            lo = hi
        raise SourceError(
            f"{self.name}: {self._chunk_span(start, stop)} cannot be read "
            f"({type(first_error).__name__})"
        ) from first_error

    def _check_links(self, arr: Any, start: int, stop: int) -> None:
        """Refuse to read a chunk of a store on disk that is a link leaving the store (to
        /etc/passwd, or to another store's chunk), as batch links are refused."""
        store = arr.store
        root = getattr(store, "root", None)
        if type(store).__name__ != "LocalStore" or root is None:
            return
        rows = int((getattr(arr, "shards", None) or arr.chunks)[0])
        cols = int((getattr(arr, "shards", None) or arr.chunks)[1])
        inside = os.path.realpath(root) + os.sep
        for c in range(start // rows, max(start, stop - 1) // rows + 1):
            for j in range(-(-self.n_features // cols)):
                file = os.path.join(root, arr.path, arr.metadata.encode_chunk_key((c, j)))
                target = os.path.realpath(file)
                if not target.startswith(inside):
                    lo, hi = c * rows, min((c + 1) * rows, self.n_rows)
                    raise SourceError(
                        f"{self.name}: chunk {c} ({row_span(lo, hi)}) is a link to {target}, "
                        "outside the store; refused: copy the chunk into the store"
                    )

    def _raise_not_finite(self, block: np.ndarray, start: int) -> None:
        # A chunk that was never written reads back as the NaN fill value.
        c0 = start // self.chunk_rows
        for c in range(c0, (start + len(block) - 1) // self.chunk_rows + 1):
            lo, hi = (
                max(c * self.chunk_rows, start),
                min((c + 1) * self.chunk_rows, start + len(block)),
            )
            if np.isnan(block[lo - start : hi - start]).all():
                raise SourceError(
                    f"{self.name}: chunk {c} ({row_span(lo, hi)}) reads as all NaN, the fill "
                    "value: it is missing from the store; restore or rewrite it"
                )
        # Name the chunk that holds the first bad row, not the whole (multi-chunk) block.
        c = (start + int(np.argwhere(~np.isfinite(block))[0][0])) // self.chunk_rows
        lo, hi = max(c * self.chunk_rows, start), min((c + 1) * self.chunk_rows, start + len(block))
        where = f"{self.name}: chunk {c} ({row_span(lo, hi)})"
        check_finite_block(block[lo - start : hi - start], lo, where)

    def to_dask(self) -> Any:
        import dask.array as da

        arr = self._h_array()
        if self.committed_rows == self.n_rows:
            return da.from_zarr(arr, chunks=(self.block_rows, self.n_features)).astype(
                self.compute_dtype
            )
        return super().to_dask()


def _stored_rows(arr: Any) -> int | None:
    """Where a Zarr array's stored chunks stop, when it is before its last row (else None).

    One existence check when the last chunk (or shard) is there; else a binary
    search for the first one missing, assuming the chunks before it exist. A
    shape that claims far more rows than were written is found before any
    planning or reading.
    """
    try:
        from zarr.core.sync import sync

        rows = int((getattr(arr, "shards", None) or arr.chunks)[0])
        count = -(-int(arr.shape[0]) // rows)
        rest = (0,) * (len(arr.shape) - 1)

        def exists(i: int) -> bool:
            key = arr.metadata.encode_chunk_key((i, *rest))
            return bool(sync((arr.store_path / key).exists()))

        if count == 0 or exists(count - 1):
            return None
        lo, hi = 0, count - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if exists(mid):
                lo = mid + 1
            else:
                hi = mid
        return lo * rows
    except (AttributeError, ImportError, TypeError):  # another zarr: not checked here
        return None


def is_zarr_array(obj: Any) -> bool:
    """True for a ``zarr.Array`` (v2 or v3 format, any store)."""
    return type(obj).__module__.startswith("zarr.") and type(obj).__name__ == "Array"


def _zarr_array_location(arr: Any) -> tuple[str, Any]:
    """Where a ``zarr.Array`` lives: its path on disk (workers reopen it there) and None,
    or, in any other store, the store's URL as its name and the array itself (which
    pickles with its store)."""
    store = arr.store
    root = getattr(store, "root", None)
    if type(store).__name__ == "LocalStore" and root is not None:
        return os.path.join(str(root), arr.path) if arr.path else str(root), None
    return str(arr.store_path), arr


class LazyArraySource(Source):
    """An array-like object read by row slices, never converted whole: an
    ``h5py.Dataset``, an ``xarray.DataArray`` or anything with ``shape``,
    ``dtype`` and ``__getitem__``. It is read on the driver, as in-memory data is."""

    in_memory = True

    def __init__(self, array: Any, block_rows: int | None = None, name: str | None = None) -> None:
        _check_2d(array, name or type(array).__name__)
        self.array = array
        self.name = name or str(getattr(array, "name", None) or type(array).__name__)
        self.n_rows, self.n_features = (int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        compute_dtype(self.dtype)
        self.block_rows = block_rows or _default_block_rows(
            self.n_features, compute_dtype(self.dtype).itemsize
        )

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])


def is_lazy_array(obj: Any) -> bool:
    """True for an array-like that is not an ndarray and would take more than a block of
    memory if converted: it is then read by row slices (:class:`LazyArraySource`)."""
    if isinstance(obj, np.ndarray) or not all(
        hasattr(obj, name) for name in ("shape", "dtype", "__getitem__")
    ):
        return False
    if hasattr(obj, "tocsr") or type(obj).__module__.startswith("pandas"):
        return False  # sparse matrices and pandas objects convert their own way
    try:
        itemsize = np.dtype(obj.dtype).itemsize
        size = math.prod(int(n) for n in obj.shape)
    except (TypeError, ValueError):
        return False
    return size * itemsize > TARGET_BLOCK_BYTES


class DaskSource(Source):
    """A 2-D dask array; its row chunks are the blocks."""

    def __init__(self, array: Any, name: str = "dask array") -> None:
        if array.ndim != 2:
            raise DataError(f"{name}: expected a 2-D array, got {array.ndim}-D; reshape it")
        if any(math.isnan(c) for c in array.chunks[0]):
            raise DataError(
                f"{name}: unknown chunk sizes; call .compute_chunk_sizes() on the dask array first"
            )
        if len(array.chunks[1]) != 1:
            array = array.rechunk({1: -1})
        self.array = array
        self.name = name
        self.n_rows, self.n_features = (int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)
        compute_dtype(self.dtype)
        self._bounds = [
            (int(lo), int(lo + n))
            for lo, n in zip(
                itertools.accumulate((0, *array.chunks[0][:-1])), array.chunks[0], strict=True
            )
        ]
        self.block_rows = int(max(array.chunks[0])) if self.n_rows else 1

    def _storage_bounds(self) -> list[tuple[int, int]]:
        return list(self._bounds)

    def _read(self, start: int, stop: int) -> np.ndarray:
        # Runs inside a task: compute the slice in this thread, never re-enter a cluster.
        return np.asarray(self.array[start:stop].compute(scheduler="sync"))

    def to_dask(self) -> Any:
        return self.array.astype(self.compute_dtype)


class BatchDirSource(Source):
    """A directory of batch files (``.npy``, headerless ``.csv``, ``.parquet``), in name order.

    Each file is a storage block. Files still being written (``*.tmp``) and
    hidden files are ignored. All files must have the same number of columns.
    """

    def __init__(self, path: str | os.PathLike, header: bool = False) -> None:
        self.path = str(path)
        self.name = self.path
        self.header = header
        files = sorted(
            f
            for f in os.listdir(self.path)
            if f.endswith(_BATCH_SUFFIXES) and not f.startswith(".")
        )
        if not files:
            raise SourceError(
                f"{self.path}: no .npy, .csv or .parquet batch files; check the directory"
            )
        self.files = files
        rows, widths, dtypes = [], set(), []
        for f in files:
            n, d, dt = _batch_file_shape(os.path.join(self.path, f), header)
            rows.append(n)
            widths.add(d)
            dtypes.append(dt)
        if len(widths) != 1:
            raise DataError(
                f"{self.path}: batch files have different widths {sorted(widths)}; "
                "every file needs the same number of columns"
            )
        self.n_features = widths.pop()
        self.offsets = [0, *itertools.accumulate(rows)]
        self.n_rows = self.offsets[-1]
        self.dtype = np.result_type(*dtypes)
        self.block_rows = max(rows) if rows else 1

    def _storage_bounds(self) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi in itertools.pairwise(self.offsets) if hi > lo]

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for i, (lo, hi) in enumerate(itertools.pairwise(self.offsets)):
            if hi <= start or lo >= stop or hi == lo:
                continue
            data = read_batch_file(os.path.join(self.path, self.files[i]), self.header)
            parts.append(data[max(start, lo) - lo : min(stop, hi) - lo])
        if not parts:
            return np.empty((0, self.n_features), self.dtype)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _check_2d(array: Any, name: str) -> None:
    ndim = len(array.shape)
    if ndim != 2:
        hint = (
            "Reshape your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
        raise DataError(f"{name}: expected a 2-D array, got {ndim}-D. {hint}")


def _batch_file_shape(path: str, header: bool) -> tuple[int, int, np.dtype]:
    if path.endswith(".npy"):
        try:
            # A memory map reads only the header.
            mapped: Any = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = mapped.shape, mapped.dtype
            del mapped
        except (OSError, ValueError, EOFError) as exc:
            raise SourceError(f"{path}: not a readable .npy file ({exc})") from exc
        if len(shape) != 2:
            raise DataError(f"{path}: holds a {len(shape)}-D array; batch files must be 2-D")
        return int(shape[0]), int(shape[1]), np.dtype(dtype)
    data = read_batch_file(path, header)
    return data.shape[0], data.shape[1], data.dtype


def read_batch_file(path: str, header: bool = False) -> np.ndarray:
    """Read one batch file (``.npy`` without pickle, ``.csv``, ``.parquet``) as a 2-D array."""
    try:
        if path.endswith(".npy"):
            # Mapped first: a header that claims more rows than the file holds fails
            # here, before anything of that size is allocated.
            data = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
        elif path.endswith(".csv"):
            data = _read_csv(path, header)
        elif path.endswith(".parquet"):
            data = _read_parquet(path)
        else:
            raise SourceError(f"{path}: unknown batch file type; use .npy, .csv or .parquet")
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: no such file; check the path") from exc
    except (SourceError, DataError):
        raise
    except (ValueError, OSError, EOFError) as exc:
        if "objects in dtype" in str(exc):
            raise SourceError(
                f"{path}: holds Python objects, which loading would unpickle (never done); "
                "save numbers only"
            ) from exc
        if "mmap length is greater than file size" in str(exc):
            raise SourceError(
                f"{path}: its header claims more rows than the file holds; it is damaged or "
                "was cut short"
            ) from exc
        raise SourceError(f"{path}: cannot be read ({exc})") from exc
    except MemoryError as exc:
        raise SourceError(
            f"{path}: does not fit in memory ({exc}); split it into smaller batches"
        ) from exc
    if data.ndim == 1 and path.endswith(".csv"):
        data = data.reshape(-1, 1) if data.size else data.reshape(0, 0)
    if data.ndim != 2:
        raise DataError(f"{path}: holds a {data.ndim}-D array; batch files must be 2-D")
    if data.dtype.kind not in "biuf":
        raise DataError(f"{path}: dtype {data.dtype} is not numeric; write numbers only")
    return data


def _read_csv(path: str, header: bool) -> np.ndarray:
    with open(path) as fh:
        return _parse_csv_lines(path, fh, header, 0)


def _parse_csv_lines(path: str, lines: Iterable[str], header: bool, first_row: int) -> np.ndarray:
    """Comma-separated numbers as a 2-D float64 array (blank lines skipped, the first
    line skipped with ``header``); ``first_row`` is the row index of the first row."""
    lines = list(lines)
    if header:
        lines = lines[1:]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return np.empty((0, 0))
    try:
        return np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(_csv_problem(path, lines, first_row, exc)) from exc


def _csv_problem(path: str, lines: list[str], first_row: int, exc: Exception) -> str:
    """What is wrong with CSV ``lines`` that NumPy could not parse, by row and column index."""
    width = None
    for r, line in enumerate(lines):
        cells = line.rstrip("\r\n").split(",")
        if width is not None and len(cells) != width:
            return (
                f"{path}: row index {first_row + r} has {len(cells)} columns, the rows before "
                f"it {width}; every row needs the same number of columns"
            )
        width = len(cells)
        for c, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                hint = (
                    ": it looks like a header row; pass --header"
                    if first_row + r == 0
                    else "; CSV cells must be numbers"
                )
                return (
                    f"{path}: row index {first_row + r}, column index {c} holds {cell.strip()!r}, "
                    f"not a number{hint}"
                )
    return f"{path}: not comma-separated numbers ({exc}); CSV cells must be numbers"


def _read_parquet(path: str) -> np.ndarray:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise SourceError(
            f"{path}: reading .parquet needs pyarrow; pip install pyarrow or convert to .npy"
        ) from exc
    table = pq.read_table(path)
    return (
        np.column_stack([c.to_numpy() for c in table.columns])
        if table.num_columns
        else (np.empty((table.num_rows, 0)))
    )


def iter_csv_blocks(path: str, block_rows: int, header: bool = False) -> Iterator[np.ndarray]:
    """Parse a CSV file in blocks of ``block_rows`` lines (bounded memory)."""
    try:
        fh = open(path)
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: no such file; check the path") from exc
    with fh:
        if header:
            next(fh, None)
        rows = 0
        while True:
            lines = list(itertools.islice(fh, block_rows))
            if not lines:
                return
            block = _parse_csv_lines(path, lines, False, rows)
            rows += len(block)
            if block.size:
                yield block


def open_source(
    data: Any,
    *,
    dtype: Any = None,
    shape: tuple[int, int] | None = None,
    component: str | None = None,
    header: bool = False,
    block_rows: int | None = None,
) -> Source:
    """Open anything streamclust can read as a :class:`Source`.

    Parameters
    ----------
    data : Source, path, zarr.Array, dask array, ndarray or array-like
        A path may name a Zarr store (directory with ``zarr.json`` or ``.zarray``,
        optionally ``store.zarr/array``), a ``.npy`` file (memory-mapped), a raw
        binary file (with ``dtype`` and ``shape``), or a directory of batch
        files (``.npy``, ``.csv``, ``.parquet``). A ``zarr.Array`` (any store)
        is read chunk by chunk like its path; an array-like with ``shape``,
        ``dtype`` and ``__getitem__`` that is larger than a block (an
        ``h5py.Dataset``, say) is read by row slices, never converted whole.
    dtype, shape : optional
        Required for raw binary files; ``shape=(-1, n_features)`` infers rows.
    component : str, optional
        The array inside a Zarr group.
    header : bool
        CSV batch files start with a header row.
    block_rows : int, optional
        Rows per block (default: whole Zarr chunks, or about 8 MiB).

    Examples
    --------
    >>> import numpy as np, streamclust as sc
    >>> src = sc.open_source(np.zeros((10, 3)))
    >>> src.shape
    (10, 3)
    """
    if isinstance(data, Source):
        return data
    if isinstance(data, (str, os.PathLike)):
        return _open_path(Path(data), dtype, shape, component, header, block_rows)
    if is_dask_array(data):
        return DaskSource(data)
    if is_zarr_array(data):
        return ZarrSource(data, block_rows=block_rows)
    if is_lazy_array(data):
        return LazyArraySource(data, block_rows=block_rows)
    if hasattr(data, "__array__") or isinstance(data, (list, tuple)):
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise DataError(f"cannot convert input to a numeric array ({exc})") from exc
        return ArraySource(array, block_rows=block_rows)
    raise SourceError(
        f"cannot read {type(data).__name__}; pass a path, an ndarray, a dask array or a Source"
    )


def is_dask_array(obj: Any) -> bool:
    """True for a ``dask.array.Array``."""
    return type(obj).__module__.startswith("dask.array") and hasattr(obj, "chunks")


def _open_path(
    path: Path,
    dtype: Any,
    shape: tuple[int, int] | None,
    component: str | None,
    header: bool,
    block_rows: int | None,
) -> Source:
    if not path.exists():
        # "store.zarr/X" names an array inside a group.
        if path.parent.exists() and _is_zarr(path.parent) and component is None:
            return ZarrSource(path.parent, component=path.name, block_rows=block_rows)
        raise SourceError(f"{path}: no such file or directory; check the path")
    if path.is_dir():
        if _is_zarr(path):
            return ZarrSource(path, component=component, block_rows=block_rows)
        return BatchDirSource(path, header=header)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpySource(path, block_rows=block_rows)
    if suffix in (".csv", ".parquet"):
        raise SourceError(
            f"{path}: a single {suffix} file is read by 'streamclust convert {path} out.zarr' "
            "or as part of a batch directory; convert it first"
        )
    if dtype is None or shape is None:
        raise SourceError(
            f"{path}: unknown format '{suffix or path.name}'; for a raw binary memmap pass "
            "dtype= and shape= (CLI: --dtype float32 --shape -1,N)"
        )
    return RawSource(path, dtype=dtype, shape=shape, block_rows=block_rows)


def _is_zarr(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup"))


def _allocate(tmp: Path, path: Path) -> None:
    """Reserve the disk blocks of a new memory-mapped file: on a full disk, writing into
    a sparse map is a SIGBUS that kills the process; reserving first is an OSError."""
    if not hasattr(os, "posix_fallocate"):  # not on every platform
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        raise SourceError(
            f"{path}: no room for its {os.fstat(fd).st_size} bytes ({exc.strerror}); free some "
            "space or write it elsewhere"
        ) from exc
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise SourceError unless a file can be created in ``folder`` (checked by making
    and removing one), so that a long computation does not end unable to save."""
    probe = Path(folder) / f".streamclust-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise SourceError(
            f"{folder}: cannot write here ({exc.strerror}); choose a writable place for the output"
        ) from exc


def check_output(path: str | os.PathLike, overwrite: bool, flag: str = "overwrite=True") -> Path:
    """``path`` as a place to write new output: refused when it exists, unless
    ``overwrite`` is set and it holds what a writer of ours would replace (a file or a
    Zarr store; never another directory); its folder must exist."""
    out = Path(path)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise SourceError(
                f"{out}: already exists; pass {flag} to replace it, or choose another path"
            )
        if out.is_dir() and not _is_zarr(out):
            raise SourceError(
                f"{out}: is a directory that is not a Zarr store; it is not replaced even with "
                f"{flag}: choose another path"
            )
    if not out.resolve().parent.is_dir():
        raise SourceError(f"{out.parent}: no such directory for the output")
    check_writable(out.resolve().parent)
    return out


class ArrayWriter:
    """Streams blocks of rows into a new ``.zarr`` store or ``.npy`` file, then renames it.

    Everything is written under a temporary name next to ``path`` and moved
    into place by :meth:`commit` (replacing ``path`` only with ``overwrite``);
    :meth:`abort` removes it. A Zarr store gets
    a zstd + crc32c codec chain, the fill value ``fill`` (NaN for floats, so a
    missing chunk cannot pass for data) and a ``committed_rows`` attribute
    advanced after every block.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        chunk_rows: int | None = None,
        n_rows: int | None = None,
        compression_level: int = 1,
        attributes: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".zarr", ".npy"):
            raise SourceError(f"{self.path}: output must end in .zarr or .npy")
        check_output(self.path, overwrite)
        self.zarr = suffix == ".zarr"
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.chunk_rows = chunk_rows
        self.n_rows = n_rows
        self.level = compression_level
        self.attributes = attributes or {}
        self.arr: Any = None
        self.rows = 0

    def _create(self, block: np.ndarray) -> None:
        tail = block.shape[1:]
        dtype = block.dtype
        if self.zarr:
            import zarr
            from zarr.codecs import Crc32cCodec, ZstdCodec

            width = int(np.prod(tail)) if tail else 1
            rows = self.chunk_rows or _default_block_rows(width, dtype.itemsize)
            fill = np.nan if dtype.kind == "f" else -1
            self.arr = zarr.create_array(
                store=str(self.tmp),
                shape=(0, *tail),
                chunks=(rows, *tail),
                dtype=dtype,
                fill_value=fill,
                compressors=[ZstdCodec(level=self.level), Crc32cCodec()],
                attributes={**self.attributes, "committed_rows": 0},
            )
        else:
            if self.n_rows is None:
                raise SourceError(f"{self.path}: .npy output needs the row count up front")
            self.arr = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=dtype, shape=(self.n_rows, *tail)
            )
            _allocate(self.tmp, self.path)

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if self.arr is None:
            self._create(block)
        if block.shape[1:] != self.arr.shape[1:]:
            raise DataError(
                f"{self.path}: block of shape {block.shape} does not match earlier blocks "
                f"{self.arr.shape[1:]}; every block needs the same columns"
            )
        stop = self.rows + len(block)
        if self.zarr:
            self.arr.resize((stop, *self.arr.shape[1:]))
            self.arr[self.rows : stop] = block
            self.rows = stop
            self.arr.attrs["committed_rows"] = stop
        else:
            self.arr[self.rows : stop] = block
            self.rows = stop

    def commit(self) -> Path:
        if self.arr is None:
            raise DataError(f"{self.path}: no rows to write")
        if not self.zarr:
            self.arr.flush()
            del self.arr
            self.arr = True
        old = None
        if self.path.exists():  # moved aside, so that a crash leaves the old or the new
            old = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        return self.path

    def abort(self) -> None:
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp.exists():
            self.tmp.unlink()


def write_array(
    data: Iterable[np.ndarray] | np.ndarray,
    path: str | os.PathLike,
    *,
    n_rows: int | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
) -> Path:
    """Write an array, or an iterable of row blocks, to a new ``.zarr`` or ``.npy``, atomically."""
    if isinstance(data, np.ndarray):
        n_rows, data = len(data), [data]
    writer = ArrayWriter(
        path, chunk_rows=chunk_rows, n_rows=n_rows, overwrite=overwrite, attributes=attributes
    )
    try:
        for block in data:
            writer.append(block)
        return writer.commit()
    finally:
        writer.abort()


def write_zarr(
    data: Any,
    path: str | os.PathLike,
    *,
    block_rows: int | None = None,
    dtype: Any = None,
    compression_level: int = 1,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
) -> ZarrSource:
    """Write a 2-D array, Source, or iterable of 2-D blocks as a Zarr v3 array.

    The array has chunks of ``block_rows`` full rows, a zstd + crc32c codec
    chain (so a corrupt chunk is detected on read), NaN as its fill value (so
    a missing chunk cannot pass for data) and a ``committed_rows`` attribute
    advanced after every block. The store is built in a temporary directory
    next to ``path`` and renamed into place when complete: a crash never leaves
    a half-written store at ``path``. Every block must be finite.

    Returns the written store opened as a :class:`ZarrSource`.

    Examples
    --------
    >>> import numpy as np, streamclust as sc, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> src = sc.write_zarr(np.ones((10, 2), np.float32), os.path.join(d, "x.zarr"))
    >>> src.shape, src.dtype
    ((10, 2), dtype('float32'))
    """
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        raise SourceError(f"{path}: a Zarr store's name must end in .zarr")
    if isinstance(data, (np.ndarray, Source)) or is_dask_array(data):
        src = open_source(data)
        blocks: Iterable[np.ndarray] = (b for _, b in src.iter_blocks())
        dtype = dtype or src.compute_dtype
    else:
        blocks = data
    writer = ArrayWriter(
        path,
        chunk_rows=block_rows,
        compression_level=compression_level,
        attributes=attributes,
        overwrite=overwrite,
    )
    try:
        for block in blocks:
            block = np.asarray(block)
            if block.ndim != 2:
                raise DataError(f"write_zarr({path}): block of shape {block.shape} is not 2-D")
            out_dtype = compute_dtype(dtype or block.dtype)
            check_finite_block(block, writer.rows, f"{path}: the data to write")
            writer.append(block.astype(out_dtype, copy=False))
        writer.commit()
    finally:
        writer.abort()
    return ZarrSource(path)
