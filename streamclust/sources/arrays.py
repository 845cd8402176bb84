"""Sources over data already in the driver's memory or behind an array API: NumPy
arrays, array-likes read by slices (``h5py.Dataset``, ``xarray.DataArray``),
and dask arrays."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ..exceptions import DataError
from ..validation import compute_dtype
from .base import TARGET_BLOCK_BYTES, Source, check_2d, default_block_rows

__all__ = [
    "ArraySource",
    "DaskSource",
    "LazyArraySource",
    "is_dask_array",
    "is_lazy_array",
    "is_xarray",
    "xarray_source",
]


class ArraySource(Source):
    """An in-memory 2-D NumPy array (or anything ``np.asarray`` accepts)."""

    in_memory = True

    def __init__(self, array: Any, block_rows: int | None = None, name: str = "array") -> None:
        array = np.asarray(array)
        check_2d(array, name)
        self.array = array
        self.n_rows, self.n_features = array.shape
        self.dtype = array.dtype
        self.block_rows = block_rows or default_block_rows(
            self.n_features, compute_dtype(self.dtype).itemsize
        )
        self.name = name

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.array[start:stop]


class LazyArraySource(Source):
    """An array-like object read by row slices, never converted whole: an
    ``h5py.Dataset``, an ``xarray.DataArray`` or anything with ``shape``,
    ``dtype`` and ``__getitem__``. It is read on the driver, as in-memory data is."""

    in_memory = True

    def __init__(self, array: Any, block_rows: int | None = None, name: str | None = None) -> None:
        check_2d(array, name or type(array).__name__)
        self.array = array
        self.name = name or str(getattr(array, "name", None) or type(array).__name__)
        self.n_rows, self.n_features = (int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        compute_dtype(self.dtype)
        self.block_rows = block_rows or default_block_rows(
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


def is_dask_array(obj: Any) -> bool:
    """True for a ``dask.array.Array``."""
    return type(obj).__module__.startswith("dask.array") and hasattr(obj, "chunks")


def is_xarray(obj: Any) -> bool:
    """True for an ``xarray.DataArray``."""
    return type(obj).__module__.startswith("xarray") and type(obj).__name__ == "DataArray"


def xarray_source(data: Any, block_rows: int | None = None) -> Source:
    """A 2-D ``xarray.DataArray`` read lazily: its dask array when it has one, else by
    row slices (an array opened from Zarr or netCDF loads only the rows asked for)."""
    if data.ndim != 2:
        raise DataError(
            f"DataArray {data.name!r} has dims {data.dims}; a dataset is 2-D (rows, features): "
            "select or stack to two dims first"
        )
    if data.chunks is not None:
        return DaskSource(data.data)
    return LazyArraySource(data, block_rows=block_rows)
