"""``open_source``: anything streamclust reads (a path, a ``zarr.Array``, a dask
array, an ndarray or array-like) as a :class:`Source`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import DataError, SourceError
from .arrays import (
    ArraySource,
    DaskSource,
    LazyArraySource,
    is_dask_array,
    is_lazy_array,
    is_xarray,
    xarray_source,
)
from .base import Source
from .files import BATCH_SUFFIXES, BatchDirSource, NpySource, RawSource
from .parquet import ParquetSource
from .remote import is_url, local_path, redact_url
from .zarr_store import ZarrSource, is_zarr_array, is_zarr_dir, is_zarr_group, pick_array

__all__ = ["open_source"]


def open_source(
    data: Any,
    *,
    dtype: Any = None,
    shape: tuple[int, int] | None = None,
    component: str | None = None,
    header: bool = False,
    block_rows: int | None = None,
    storage_options: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    column: bool = False,
) -> Source:
    """Open anything streamclust can read as a :class:`Source`.

    Parameters
    ----------
    data : Source, path, URL, zarr.Array, dask array, ndarray or array-like
        A URL (``s3://``, ``gs://``, ``az://``/``abfs://``, ``http(s)://``,
        ``memory://``; ``file://`` is a local path) names a Zarr store in
        object storage, read through zarr's own stores: obstore's for
        ``s3://`` (when installed), fsspec's otherwise (an array inside a
        group: ``s3://bucket/store.zarr/NAME``), or a Parquet file or a prefix
        of Parquet files. A path may name a Zarr store
        (directory with ``zarr.json`` or ``.zarray``, optionally
        ``store.zarr/array``), a ``.npy`` file (memory-mapped), a raw binary
        file (with ``dtype`` and ``shape``), a ``.parquet`` file or a directory
        of them (row groups are the blocks), or a directory of batch files
        (``.npy``, ``.csv``, ``.parquet``). A ``zarr.Array`` (any store)
        is read chunk by chunk like its path (a ``zarr.Group``: its array
        ``component``, its only one, or ``X``); an array-like with ``shape``,
        ``dtype`` and ``__getitem__`` that is larger than a block (an
        ``h5py.Dataset``, say) is read by row slices, never converted whole;
        a 2-D ``xarray.DataArray`` through its dask array, or else by row slices.
    dtype, shape : optional
        Required for raw binary files; ``shape=(-1, n_features)`` infers rows.
    component : str, optional
        The array inside a Zarr group.
    header : bool
        CSV batch files start with a header row.
    block_rows : int, optional
        Rows per block (default: whole Zarr chunks, or about 8 MiB).
    columns : list of str, optional
        Parquet: the feature columns (default: every numeric column).
    storage_options : dict, optional
        For a URL: fsspec's options of its filesystem (``endpoint_url``,
        ``key``, ``secret``, ``token``, ``anon``...), given to obstore in its
        terms for ``s3://``; an option obstore does not take, or credentials
        left to a profile, make it fsspec. ``backend="obstore"`` or
        ``"fsspec"`` chooses. Without options, the provider's usual environment
        credentials apply. They are never shown: the source's name hides any
        credentials in the URL.

    column : bool
        Read a 1-D array (Zarr, ``.npy``, dask or in memory) as one column, as
        sample weights are given; without it a 1-D array is refused.

    Examples
    --------
    >>> import numpy as np, streamclust as sc
    >>> src = sc.open_source(np.zeros((10, 3)))
    >>> src.shape
    (10, 3)
    """
    if isinstance(data, Source):
        return data
    if is_url(data):
        if storage_options is not None and not isinstance(storage_options, dict):
            raise SourceError(
                f"storage_options must be a dict, not {type(storage_options).__name__}"
            )
        return _open_url(data, component, block_rows, storage_options, columns, column)
    if isinstance(data, str):
        data = local_path(data)
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.suffix.lower() == ".parquet" or (
            path.is_dir() and not is_zarr_dir(path) and _only_parquet(path)
        ):
            return ParquetSource(path, columns=columns)
        if columns is not None:
            raise SourceError(f"{path}: columns= applies to Parquet data only; drop it")
        return _open_path(path, dtype, shape, component, header, block_rows, column)
    if is_xarray(data):
        return xarray_source(data, block_rows)
    if is_dask_array(data):
        return DaskSource(data[:, None] if column and data.ndim == 1 else data)
    if is_zarr_group(data):
        data = pick_array(data, component, f"zarr.Group at {data.store_path}")
        return ZarrSource(data, block_rows=block_rows, column=column)
    if is_zarr_array(data):
        return ZarrSource(data, block_rows=block_rows, column=column)
    if is_lazy_array(data):
        return LazyArraySource(data, block_rows=block_rows)
    if hasattr(data, "__array__") or isinstance(data, (list, tuple)):
        try:
            array = np.asarray(data)
        except (TypeError, ValueError) as exc:
            raise DataError(f"cannot convert input to a numeric array ({exc})") from exc
        if column and array.ndim == 1:
            array = array[:, None]
        return ArraySource(array, block_rows=block_rows)
    raise SourceError(
        f"cannot read {type(data).__name__}; pass a path, an ndarray, a dask array or a Source"
    )


def _open_url(
    url: str,
    component: str | None,
    block_rows: int | None,
    storage_options: dict[str, Any] | None,
    columns: Sequence[str] | None,
    column: bool = False,
) -> Source:
    """A Zarr store, or a Parquet file or prefix of Parquet files, at a URL."""
    if url.rstrip("/").lower().endswith(".parquet") or columns is not None:
        return ParquetSource(url, columns=columns, storage_options=storage_options)
    try:
        return ZarrSource(
            url,
            component=component,
            block_rows=block_rows,
            storage_options=storage_options,
            column=column,
        )
    except SourceError as exc:
        if "no Zarr store there" not in str(exc):
            raise
        try:
            return ParquetSource(url, storage_options=storage_options)
        except SourceError:
            raise SourceError(
                f"{redact_url(url)}: no Zarr store and no Parquet files there; check the URL"
            ) from exc


def _only_parquet(path: Path) -> bool:
    """A directory whose data files are all ``.parquet`` (one at least)."""
    names = [n for n in os.listdir(path) if n.endswith(BATCH_SUFFIXES) and not n.startswith(".")]
    return bool(names) and all(n.endswith(".parquet") for n in names)


def _open_path(
    path: Path,
    dtype: Any,
    shape: tuple[int, int] | None,
    component: str | None,
    header: bool,
    block_rows: int | None,
    column: bool = False,
) -> Source:
    if not path.exists():
        # "store.zarr/X" names an array inside a group.
        if path.parent.exists() and is_zarr_dir(path.parent) and component is None:
            return ZarrSource(
                path.parent, component=path.name, block_rows=block_rows, column=column
            )
        raise SourceError(f"{path}: no such file or directory; check the path")
    if path.is_dir():
        if is_zarr_dir(path):
            return ZarrSource(path, component=component, block_rows=block_rows, column=column)
        return BatchDirSource(path, header=header)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return NpySource(path, block_rows=block_rows, column=column)
    if suffix == ".csv":
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
