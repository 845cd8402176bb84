"""A StreamingGaussianMixture as scikit-learn's ``GaussianMixture``, and back: the
parameters and fitted attributes the two share, converted one way or the other."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from .gmm_params import mixture_init
from .kernels import gmm as G

__all__ = [
    "FITTED_ATTRIBUTES",
    "SHARED_PARAMS",
    "from_sklearn",
    "params_from_resp",
    "params_from_tuple",
    "to_sklearn",
]

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


def params_from_tuple(params: Any, cov_type: str) -> G.Params:
    """Mixture parameters from scikit-learn's ``(weights, means, covariances,
    precisions_cholesky)`` tuple (its ``_get_parameters``/``_set_parameters``)."""
    weights, means, _, prec_chol = params
    return G.Params(
        np.log(np.asarray(weights, np.float64)),
        np.asarray(means, np.float64),
        np.asarray(prec_chol, np.float64),
        cov_type,
    )


def params_from_resp(model: Any, X: Any, resp: Any) -> G.Params:
    """The initial parameters scikit-learn's ``_initialize`` gives ``model`` from rows
    ``X`` and their responsibilities ``resp``: one M-step, then the ``*_init``
    overrides."""
    X = np.asarray(X, np.float64)
    resp = np.asarray(resp, np.float64)
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    ref = (resp.T @ X) / nk[:, None]
    K, d = ref.shape
    dummy = G.Params(
        np.zeros(K), ref, G.precision_cholesky(G.zero_s2(K, d, "diag") + 1, "diag"), "diag"
    )
    st = G.estep_stats(
        X, G.Params(dummy.log_weights, ref, dummy.prec_chol, model.covariance_type), resp
    )
    first = G.m_step(st, ref, model.covariance_type, float(model.reg_covar), initial=True)
    return mixture_init(model).apply(first)
