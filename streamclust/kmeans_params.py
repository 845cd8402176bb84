"""What a StreamingKMeans accepts: its parameters checked before any I/O, and given to
the engine in its terms (the candidates' :class:`ChainSpec`, the :class:`BatchPlan`)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from .engine.chains import ChainSpec
from .engine.plan import BatchPlan
from .exceptions import ParameterError
from .kernels.chain import Forgetting
from .sources.cache import check_cache_mb
from .validation import (
    check_checkpoint,
    check_float,
    check_int,
    check_option,
    check_seed,
)

__all__ = ["batch_plan", "chain_spec", "check_params", "forgetting"]


def check_params(model: Any) -> int:
    """Check a StreamingKMeans's parameters before any I/O; return the effective
    ``n_init`` (1 for an array ``init``; ``"auto"`` resolved as scikit-learn does)."""
    check_int("n_clusters", model.n_clusters, low=1)
    auto = isinstance(model.n_init, str)
    if auto and model.n_init != "auto":
        raise ParameterError(f"n_init={model.n_init!r} must be an int >= 1 or 'auto'")
    if not auto:
        check_int("n_init", model.n_init, low=1)
    check_int("batch_size", model.batch_size, low=1)
    check_int("init_size", model.init_size, low=1, allow_none=True)
    check_int("max_passes", model.max_passes, low=1)
    check_int("max_steps", model.max_steps, low=1, allow_none=True)
    check_float("tol", model.tol, low=0.0)
    forgetting(model)
    check_int("max_no_improvement", model.max_no_improvement, low=0, allow_none=True)
    if not isinstance(model.verbose, (bool, int, np.integer)) or model.verbose < 0:
        raise ParameterError(f"verbose={model.verbose!r} must be an int >= 0 or a bool")
    check_int("last_n", model.last_n, low=1)
    check_option("selection", model.selection, ("last_n", "full"))
    check_int("refine", model.refine, low=0)
    check_float("reassignment_ratio", model.reassignment_ratio, low=0.0, high=1.0)
    check_seed(model.random_state)
    if not isinstance(model.shuffle, (bool, np.bool_)):
        raise ParameterError(f"shuffle={model.shuffle!r} must be True or False")
    check_checkpoint(model.checkpoint, model.random_state)
    check_cache_mb(model.cache_mb)
    if model.init_size is not None and model.init_size < model.n_clusters:
        warnings.warn(
            f"init_size={model.init_size} should be larger than n_clusters="
            f"{model.n_clusters}. Setting it to min(3*n_clusters, n_samples)",
            RuntimeWarning,
            stacklevel=3,
        )
    if callable(model.init):  # init(X_sample, n_clusters, random_state=...) per candidate
        return 3 if auto else int(model.n_init)
    if isinstance(model.init, str):
        check_option("init", model.init, ("k-means++", "random"))
        if auto:
            return 3 if model.init == "random" else 1
        return int(model.n_init)
    init = np.asarray(model.init)
    if init.ndim != 2 or init.shape[0] != model.n_clusters:
        raise ParameterError(
            f"The shape of the initial centers {init.shape} does not match the number of "
            f"clusters {model.n_clusters}; pass init of shape (n_clusters, n_features)"
        )
    if not np.isfinite(init).all():
        raise ParameterError("init contains NaN or inf; pass finite initial centers")
    if not auto and model.n_init != 1:
        warnings.warn(
            f"Explicit initial center position passed: performing only one init "
            f"instead of n_init={model.n_init}.",
            RuntimeWarning,
            stacklevel=3,
        )
    return 1


def chain_spec(model: Any, n_init: int) -> ChainSpec:
    """The model's candidates as the engine takes them (``n_init`` effective)."""
    return ChainSpec(
        model.n_clusters, n_init, model.init, model.init_size, model.last_n, forgetting(model)
    )


def forgetting(model: Any) -> Forgetting | None:
    """How the model's old rows lose weight: ``decay`` per step (Spark's decay factor)
    or per row, or the factor that halves a weight in ``half_life`` steps or rows;
    bad values are refused in one line."""
    check_option("time_unit", model.time_unit, ("batches", "rows"))
    if model.decay is not None:
        check_float("decay", model.decay, low=0.0, high=1.0)
        if model.decay == 0:
            raise ParameterError("decay=0 forgets every row at once; pass a factor in (0, 1]")
    if model.half_life is not None:
        check_float("half_life", model.half_life, low=0.0)
        if model.half_life == 0 or model.decay is not None:
            raise ParameterError(
                f"half_life={model.half_life!r} must be > 0, and not given with decay; "
                "pass one of them"
            )
        return Forgetting(0.5 ** (1.0 / float(model.half_life)), model.time_unit == "rows")
    if model.decay is not None and float(model.decay) < 1.0:
        return Forgetting(float(model.decay), model.time_unit == "rows")
    return None


def batch_plan(model: Any) -> BatchPlan:
    """How the model's fit walks the data, as the engine takes it."""
    return BatchPlan(
        model.batch_size,
        model.max_passes,
        model.max_steps,
        bool(model.shuffle),
        float(model.reassignment_ratio),
        float(model.tol),
        model.max_no_improvement,
        bool(model.verbose),
    )
