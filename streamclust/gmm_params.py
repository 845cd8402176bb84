"""What a StreamingGaussianMixture accepts: its parameters checked before any I/O;
and what every exact or variational mixture fit shares: its rows checked, its EM
settings, and the choice of its best candidate."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .engine.em import EMResult, EMSettings
from .engine.mixture_init import MixtureInit
from .exceptions import DataError, ParameterError
from .kernels import gmm as G
from .sources.cache import check_cache_mb
from .validation import (
    check_checkpoint,
    check_float,
    check_int,
    check_option,
    check_seed,
)

__all__ = [
    "INIT_PARAMS",
    "best_candidate",
    "check_mixture_params",
    "check_params",
    "check_rows",
    "em_settings",
    "mixture_init",
]

#: The initializations, as scikit-learn names them.
INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")


def check_mixture_params(model: Any) -> None:
    """Check the parameters every mixture (exact or variational) shares, before any I/O."""
    check_int("n_components", model.n_components, low=1)
    check_seed(model.random_state)
    check_option("covariance_type", model.covariance_type, G.COVARIANCE_TYPES)
    check_float("tol", model.tol, low=0.0)
    check_float("reg_covar", model.reg_covar, low=0.0)
    check_int("max_iter", model.max_iter, low=0)
    check_int("n_init", model.n_init, low=1)
    check_option("init_params", model.init_params, INIT_PARAMS)
    check_int("batch_size", model.batch_size, low=1)
    check_checkpoint(model.checkpoint, model.random_state)
    check_cache_mb(model.cache_mb)
    if not isinstance(model.verbose, (bool, int, np.integer)) or model.verbose < 0:
        raise ParameterError(f"verbose={model.verbose!r} must be an int >= 0 or a bool")
    check_int("verbose_interval", model.verbose_interval, low=1)


def check_params(model: Any) -> None:
    """Check a StreamingGaussianMixture's parameters before any I/O."""
    check_mixture_params(model)
    check_float("step_offset", model.step_offset, low=0.0)
    check_float("step_decay", model.step_decay, low=0.5, high=1.0)
    if model.half_life is not None:
        check_float("half_life", model.half_life, low=0.0)
        if model.half_life == 0:
            raise ParameterError("half_life=0 forgets every batch at once; pass a value > 0")
    if model.step_decay == 0.5:
        raise ParameterError(
            "step_decay=0.5 is outside (0.5, 1]; pass a value above 0.5 (e.g. 0.6)"
        )


def mixture_init(model: Any) -> MixtureInit:
    """How the model's candidates start, as the engine takes it."""
    return MixtureInit(
        model.n_components,
        model.covariance_type,
        int(model.n_init),
        model.init_params,
        float(model.reg_covar),
        int(model.batch_size),
        model.weights_init,
        model.means_init,
        model.precisions_init,
    )


def check_rows(source: Any) -> None:
    """A mixture is fitted on 2 rows at least."""
    if source.n_rows < 2:
        raise DataError(
            f"{source.name}: has {source.n_rows} row (n_samples={source.n_rows}); "
            "a Gaussian mixture needs at least 2 rows"
        )


def em_settings(model: Any, steps: Any = None) -> EMSettings:
    """The EM settings of ``model``'s parameters (``steps``: which EM, see EMSettings)."""
    return EMSettings(
        model.tol,
        model.max_iter,
        model.reg_covar,
        model.batch_size,
        model.progress,
        int(model.verbose),
        int(model.verbose_interval),
        steps,
    )


def best_candidate(model: Any, result: EMResult) -> int:
    """The candidate with the highest lower bound (the first of equals, as scikit-learn),
    with scikit-learn's ConvergenceWarning when it did not converge."""
    best = int(np.argmax(result.lower))
    if not result.converged[best] and model.max_iter > 0:
        warnings.warn(
            "Best performing initialization did not converge. Try different init "
            "parameters, or increase max_iter, tol, or check for degenerate data "
            f"(max_iter={model.max_iter}, tol={model.tol}).",
            ConvergenceWarning,
            stacklevel=4,
        )
    return best
