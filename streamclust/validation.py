"""Parameter and input checks shared by the estimators and the command line."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from typing import Any

import numpy as np

from .exceptions import DataError, ParameterError


def check_int(name: str, value: Any, *, low: int | None = None, allow_none: bool = False) -> None:
    """Raise ParameterError unless ``value`` is an integer >= ``low`` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"{name}={value!r} must be an integer; pass a whole number")
    if low is not None and value < low:
        raise ParameterError(f"{name}={value!r} must be >= {low}; pass a larger value")


def check_float(
    name: str, value: Any, *, low: float | None = None, high: float | None = None
) -> None:
    """Raise ParameterError unless ``value`` is a real number within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParameterError(f"{name}={value!r} must be a finite number")
    value = float(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ParameterError(f"{name}={value!r} is outside [{lo}, {hi}]; pass a value in range")


def check_option(name: str, value: Any, options: Iterable[str]) -> None:
    """Raise ParameterError unless ``value`` is one of ``options``."""
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise ParameterError(f"{name}={value!r} is not one of {', '.join(map(repr, options))}")


def check_seed(value: Any) -> None:
    """Raise ParameterError unless ``value`` is None, an int NumPy can seed with
    (0 to 2**32 - 1), or a RandomState / Generator instance (scikit-learn's rule)."""
    if value is None or isinstance(value, (np.random.RandomState, np.random.Generator)):
        return
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if 0 <= int(value) < 2**32:
            return
    raise ParameterError(
        f"random_state={value!r} must be an int from 0 to 2**32 - 1, a RandomState, or None"
    )


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype computations run in: float32 stays float32, everything else becomes float64."""
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return dtype
    if dtype.kind not in "biuf":
        raise DataError(f"dtype {dtype} is not numeric; convert the data to float32 or float64")
    return np.dtype(np.float64)


def check_checkpoint(checkpoint: Any, random_state: Any) -> None:
    """A fit that checkpoints must draw the same numbers when it resumes."""
    if checkpoint is None:
        return
    if not isinstance(random_state, (int, np.integer)) or isinstance(random_state, bool):
        raise ParameterError(
            f"checkpoint={str(checkpoint)!r} needs an int random_state (got "
            f"{random_state!r}), so that a resumed fit repeats the same draws"
        )
    if os.path.exists(checkpoint) and not os.path.isdir(checkpoint):
        raise ParameterError(
            f"checkpoint={str(checkpoint)!r} is a file; pass a directory (new or one a fit "
            "checkpointed to)"
        )


def check_finite_block(block: np.ndarray, start: int, where: str) -> None:
    """Raise DataError naming the first NaN or inf of a block by its 0-based row and
    column index (``start`` is the row index of the block's first row)."""
    finite = np.isfinite(block)
    if finite.all():
        return
    bad_row, bad_col = np.argwhere(~finite)[0]
    value = block[bad_row, bad_col]
    kind = "NaN" if np.isnan(value) else "infinity"
    raise DataError(
        f"{where} contains {kind}: row index {start + int(bad_row)}, column index "
        f"{int(bad_col)} is {value}; drop or impute such rows before clustering"
    )


def row_span(start: int, stop: int) -> str:
    """Rows ``start`` up to, not including, ``stop``, as every message writes them."""
    return f"rows {start}:{stop}"


def check_n_features(est_name: str, expected: int, got: int) -> None:
    """scikit-learn's own wording, which its estimator checks look for."""
    if expected != got:
        raise DataError(
            f"X has {got} features, but {est_name} is expecting {expected} features as input."
        )
