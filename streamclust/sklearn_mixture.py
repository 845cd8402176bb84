"""A StreamingGaussianMixture as scikit-learn's ``GaussianMixture``, and back: the
parameters and fitted attributes the two share, converted one way or the other."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from .kernels import gmm as G

__all__ = ["FITTED_ATTRIBUTES", "SHARED_PARAMS", "from_sklearn", "to_sklearn"]

#: Parameters with the same name and meaning in scikit-learn's GaussianMixture.
SHARED_PARAMS = ("n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init")
#: The fitted attributes a GaussianMixture needs to score, predict and sample.
FITTED_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "converged_",
    "n_iter_",
    "lower_bound_",
    "n_features_in_",
)


def to_sklearn(model: Any) -> GaussianMixture:
    """A fitted ``GaussianMixture`` with the parameters of the fitted ``model``."""
    check_is_fitted(model, "_params")
    gm = GaussianMixture(
        **{name: getattr(model, name) for name in SHARED_PARAMS},
        random_state=model.random_state,
    )
    for name in FITTED_ATTRIBUTES:
        setattr(gm, name, getattr(model, name))
    return gm


def from_sklearn(gm: Any) -> tuple[dict[str, Any], G.Params, dict[str, Any]]:
    """What a fitted ``GaussianMixture`` gives a StreamingGaussianMixture: its shared
    parameters, its mixture parameters, and its other fitted attributes."""
    check_is_fitted(gm)
    params = G.Params(
        np.log(gm.weights_),
        np.asarray(gm.means_, np.float64),
        np.asarray(gm.precisions_cholesky_, np.float64),
        gm.covariance_type,
    )
    fitted = {
        "n_features_in_": int(gm.means_.shape[1]),
        "converged_": bool(gm.converged_),
        "n_iter_": int(gm.n_iter_),
        "lower_bound_": float(gm.lower_bound_),
    }
    return {name: getattr(gm, name) for name in SHARED_PARAMS}, params, fitted
