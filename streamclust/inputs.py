"""What an estimator accepts as ``X``, turned into a Source and checked against it."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from sklearn.utils.validation import validate_data

from .exceptions import DataError, ParameterError
from .sources import (
    ArraySource,
    Source,
    SparseSource,
    is_dask_array,
    is_lazy_array,
    is_sparse,
    is_xarray,
    is_zarr_array,
    is_zarr_group,
    open_source,
    storage_options_for_outputs,
)
from .validation import check_finite_block, check_n_features

__all__ = ["as_source", "is_out_of_core", "takes_storage_options", "with_storage_options"]


def is_out_of_core(X: Any) -> bool:
    """True for inputs read block by block: paths, Sources, dask and zarr arrays, and
    array-likes too large to convert at once."""
    return (
        isinstance(X, (str, os.PathLike, Source))
        or is_dask_array(X)
        or is_zarr_array(X)
        or is_zarr_group(X)
        or is_lazy_array(X)
        or is_xarray(X)
    )


def with_storage_options(X: Any, storage_options: dict[str, Any] | None) -> Any:
    """``X``, or for a URL with ``storage_options`` the Source that opens it with them
    (a Source passes on through every method unchanged)."""
    if storage_options is None:
        return X
    if not isinstance(storage_options, dict):
        raise ParameterError(
            f"storage_options must be a dict, not {type(storage_options).__name__}"
        )
    if not isinstance(X, (str, os.PathLike)):
        raise ParameterError(
            f"storage_options apply to data named by URL, not to this {type(X).__name__}: "
            "drop storage_options"
        )
    return open_source(os.fspath(X), storage_options=storage_options)


F = TypeVar("F", bound=Callable[..., Any])


def takes_storage_options(method: F) -> F:
    """Give a method that takes data ``X`` the keyword ``storage_options``: for ``X`` named
    by URL, the options of its filesystem (credentials, ``endpoint_url``...), as
    ``open_source(X, storage_options=...)`` takes them; an ``out=`` URL is written
    with the same options."""
    sig = inspect.signature(method)
    extra = inspect.Parameter("storage_options", inspect.Parameter.KEYWORD_ONLY, default=None)

    @functools.wraps(method)
    def wrapper(self: Any, X: Any, *args: Any, storage_options: Any = None, **kwargs: Any) -> Any:
        if storage_options is None:  # (an enclosing call's options stay in force)
            return method(self, X, *args, **kwargs)
        X = with_storage_options(X, storage_options)
        with storage_options_for_outputs(storage_options):  # for an out= URL
            return method(self, X, *args, **kwargs)

    wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[*sig.parameters.values(), extra]
    )
    return wrapper  # type: ignore[return-value]


def as_source(est: Any, X: Any, *, reset: bool) -> Any:
    """Turn any accepted input into a Source, checking its width against the estimator.

    In-memory inputs go through scikit-learn's ``validate_data`` (its messages
    are what its estimator checks expect); its ValueErrors are re-raised as
    :class:`DataError` with the same text on one line. A NaN or inf is named
    by its row and column index.
    """
    if is_out_of_core(X):
        source = open_source(X)
        if source.n_rows == 0:
            raise DataError(f"{source.name}: has 0 rows; a dataset needs at least one row")
        if reset:
            est.n_features_in_ = source.n_features
        else:
            check_n_features(type(est).__name__, est.n_features_in_, source.n_features)
        return source
    sparse = is_sparse(X)
    if sparse and not est.__sklearn_tags__().input_tags.sparse:
        raise DataError(
            f"Sparse data was passed for X, but dense data is required for "
            f"{type(est).__name__}; use X.toarray() to convert it to a dense array"
        )
    try:
        array = validate_data(
            est,
            X,
            dtype=[np.float64, np.float32],
            reset=reset,
            ensure_all_finite=False,
            accept_sparse=["csr", "csc"] if sparse else False,
        )
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    if sparse:
        return SparseSource(array)
    check_finite_block(array, 0, "Input X")
    return ArraySource(array)
