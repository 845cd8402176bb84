"""Apply a fitted model's per-block kernel to any accepted input.

Shared by every estimator's ``predict``-like methods: an ndarray gives an
ndarray, a dask array a lazy dask array, a Source or path one data-parallel
pass (results concatenated, or streamed into ``out``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .. import runtime
from ..inputs import as_source
from ..sources import ArraySource, Source, check_output, is_dask_array, write_array
from ..validation import check_finite_block

__all__ = ["DATA_DTYPE", "apply_blocks"]

#: ``out_dtype`` of a kernel whose result is in the data's compute dtype.
DATA_DTYPE = "data"


def apply_blocks(
    est: Any,
    X: Any,
    fn: Callable[..., np.ndarray],
    arg_for: Callable[[Source], Any],
    out_dtype: Any,
    width: int | None,
    out: Any = None,
    overwrite: bool = False,
) -> Any:
    """``fn(block, start, arg)`` over every row of ``X``, collected.

    ``arg_for(source)`` gives the kernel's model argument (e.g. centers in the
    data's compute dtype). ``width`` is the result's number of columns (None
    for one value per row). With ``out`` (a ``.zarr`` or ``.npy`` path) the
    result is streamed to disk block by block and its path returned (an
    existing ``out`` is replaced only with ``overwrite``).
    """
    if out is not None:
        check_output(out, overwrite)
    check_is_fitted(est)
    source = as_source(est, X, reset=False)
    if isinstance(out_dtype, str) and out_dtype == DATA_DTYPE:
        out_dtype = source.compute_dtype
    arg = arg_for(source)
    if is_dask_array(X):
        arr = X if len(X.chunks[1]) == 1 else X.rechunk({1: -1})
        kwargs: dict[str, Any] = {
            "dtype": out_dtype,
            "meta": np.empty((0,) * (1 if width is None else 2), out_dtype),
        }
        if width is None:
            kwargs["drop_axis"] = 1
        else:
            kwargs["chunks"] = (arr.chunks[0], (width,))
        lazy = arr.map_blocks(_dask_block, fn, arg, source.compute_dtype, source.name, **kwargs)
        return _collect(lazy, None, out, overwrite)
    if isinstance(source, ArraySource) and source.n_rows <= source.block_rows:
        return _collect(fn(source.read(0, source.n_rows), 0, arg), None, out, overwrite)
    # Larger arrays: blocks in parallel (views of the array, nothing is copied on threads).
    runner = runtime.resolve_runner(est.client, source)
    return _collect(runtime.map_blocks(fn, source, arg, runner=runner), source, out, overwrite)


def _dask_block(
    block: np.ndarray, fn: Any, arg: Any, dtype: Any, name: str, block_info: Any = None
) -> Any:
    start = 0 if not block_info else int(block_info[0]["array-location"][0][0])
    block = np.asarray(block, dtype=dtype)
    check_finite_block(block, start, name)
    return fn(block, start, arg)


def _collect(result: Any, source: Source | None, out: Any, overwrite: bool) -> Any:
    """Return the result, or stream it into ``out`` and return its path.

    ``result`` is an ndarray (in-memory input), a lazy dask array (dask input),
    or an iterator of per-block arrays in order (a Source).
    """
    if source is not None:
        if out is None:
            return np.concatenate(list(result))
        parts, n_rows = result, source.n_rows
    elif out is None:
        return result
    elif isinstance(result, np.ndarray):
        parts, n_rows = [result], len(result)
    else:  # a lazy dask array: compute and write one block at a time
        parts = (np.asarray(b.compute()) for b in result.to_delayed().ravel())
        n_rows = int(result.shape[0])
    write_array(parts, out, n_rows=n_rows, overwrite=overwrite)
    return str(out)
