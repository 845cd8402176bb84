"""What a StreamingBayesianGaussianMixture accepts: its parameters checked before
any I/O, its priors checked against the data's width, and the priors a fit uses
(the data's mean and covariance by default, from one pass)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import runtime
from .engine.em import sum_stats
from .engine.mixture_init import MixtureInit
from .exceptions import ParameterError
from .gmm_params import check_mixture_params
from .kernels import variational as V
from .persistence import FitCheckpoint
from .sources import Source
from .validation import check_float, check_int, check_option

__all__ = ["check_params", "fit_prior", "mixture_init"]


def _check_positive(name: str, value: Any) -> None:
    if value is not None:
        check_float(name, value, low=0.0)
        if value == 0:
            raise ParameterError(f"{name}=0 must be > 0; pass a positive value or None")


def check_params(model: Any) -> None:
    """Check a StreamingBayesianGaussianMixture's parameters before any I/O."""
    check_mixture_params(model)
    check_option(
        "weight_concentration_prior_type", model.weight_concentration_prior_type, V.PRIOR_TYPES
    )
    _check_positive("weight_concentration_prior", model.weight_concentration_prior)
    _check_positive("mean_precision_prior", model.mean_precision_prior)
    if model.degrees_of_freedom_prior is not None:
        check_float("degrees_of_freedom_prior", model.degrees_of_freedom_prior)
    if model.covariance_type == "spherical":
        _check_positive("covariance_prior", model.covariance_prior)
    check_int("init_sample_size", model.init_sample_size, low=2, allow_none=True)


def _prior_array(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be an array of numbers; got {value!r}") from None
    if array.shape != shape:
        raise ParameterError(
            f"{name} has shape {array.shape}; the data's {shape[-1]} features need {shape}"
        )
    if not np.isfinite(array).all():
        raise ParameterError(f"{name} contains NaN or inf; pass finite values")
    return array


def check_priors(model: Any, d: int) -> None:
    """Check the user's priors against ``d`` features (scikit-learn's rules)."""
    if model.mean_prior is not None:
        _prior_array("mean_prior", model.mean_prior, (d,))
    dof = model.degrees_of_freedom_prior
    if dof is not None and not dof > d - 1.0:
        raise ParameterError(
            f"The parameter 'degrees_of_freedom_prior' should be greater than {d - 1}, but "
            f"got {dof:.3f}; pass a larger value (above the features minus one) or None"
        )
    cov, ct = model.covariance_prior, model.covariance_type
    if cov is None or ct == "spherical":
        return
    if ct == "diag":
        if np.any(_prior_array("covariance_prior", cov, (d,)) <= 0.0):
            raise ParameterError("covariance_prior must be positive; pass positive variances")
        return
    matrix = _prior_array("covariance_prior", cov, (d, d))
    if not (np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0)):
        raise ParameterError(
            "covariance_prior must be symmetric, positive-definite; pass a covariance matrix"
        )


def fit_prior(
    model: Any,
    source: Source,
    runner: runtime.Runner,
    *,
    progress: bool = True,
    checkpoint: dict[str, Any] | None = None,
) -> V.Prior:
    """The priors of a fit on ``source``: the user's, and for those left None the
    defaults scikit-learn takes (the rows' mean and covariance, from one pass).

    ``checkpoint``: the fit's fingerprint; the priors are then kept in
    ``model.checkpoint``'s ``bgmm-prior.npz``, and a resumed fit reads them
    there instead of passing over the data again.
    """
    check_priors(model, source.n_features)
    saver = None
    if checkpoint is not None:
        saver = FitCheckpoint(model.checkpoint, "bgmm-prior.npz", checkpoint)
        saved = saver.load()
        if saved is not None:
            return V.Prior.from_state(saved[0]["prior"], saved[1])
    prior = _prior_of(model, source, runner, progress)
    if saver is not None:
        scalars, arrays = prior.to_state()
        saver.save({"prior": scalars}, arrays)
    return prior


def _prior_of(model: Any, source: Source, runner: runtime.Runner, progress: bool) -> V.Prior:
    d = source.n_features
    mean = cov = np.zeros(0)
    if model.mean_prior is None or model.covariance_prior is None:
        moments = sum_stats(
            V.block_moments,
            source,
            runner=runner,
            batch_size=int(model.batch_size),
            desc="priors",
            progress=progress,
        )[0]
        mean, cov = moments.mean, np.atleast_2d(moments.covariance())
    if model.mean_prior is not None:
        mean = _prior_array("mean_prior", model.mean_prior, (d,))
    ct = model.covariance_type
    if model.covariance_prior is not None:
        covariance = np.asarray(model.covariance_prior, dtype=np.float64)
    elif ct in ("full", "tied"):
        covariance = cov
    elif ct == "diag":
        covariance = np.diag(cov).copy()
    else:
        covariance = np.asarray(np.diag(cov).mean())
    K = int(model.n_components)
    weight = model.weight_concentration_prior
    return V.Prior(
        model.weight_concentration_prior_type,
        1.0 / K if weight is None else float(weight),
        1.0 if model.mean_precision_prior is None else float(model.mean_precision_prior),
        np.asarray(mean, dtype=np.float64),
        float(d if model.degrees_of_freedom_prior is None else model.degrees_of_freedom_prior),
        covariance,
    )


def mixture_init(model: Any) -> MixtureInit:
    """How the model's candidates start, as the engine takes it."""
    return MixtureInit(
        int(model.n_components),
        model.covariance_type,
        int(model.n_init),
        model.init_params,
        float(model.reg_covar),
        int(model.batch_size),
    )
