"""The streaming mixtures as scikit-learn's ``GaussianMixture`` and
``BayesianGaussianMixture``, and back: the parameters and fitted attributes they
share, converted one way or the other."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.utils.validation import check_is_fitted

from .gmm_params import mixture_init
from .kernels import gmm as G
from .kernels import variational as V

__all__ = [
    "BAYESIAN_ATTRIBUTES",
    "BAYESIAN_PARAMS",
    "bayesian_from_sklearn",
    "bayesian_to_sklearn",
    "stats_from_resp",
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


def stats_from_resp(X: Any, resp: Any, cov_type: str) -> tuple[G.Stats, np.ndarray]:
    """The summed statistics of rows ``X`` under responsibilities ``resp``, taken
    around the means they give (what scikit-learn's ``_initialize`` estimates from)."""
    X = np.asarray(X, np.float64)
    resp = np.asarray(resp, np.float64)
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    ref = (resp.T @ X) / nk[:, None]
    K = ref.shape[0]
    return G.estep_stats(X, G.Params(np.zeros(K), ref, np.empty(0), cov_type), resp), ref


def params_from_resp(model: Any, X: Any, resp: Any) -> G.Params:
    """The initial parameters scikit-learn's ``_initialize`` gives ``model`` from rows
    ``X`` and their responsibilities ``resp``: one M-step, then the ``*_init``
    overrides."""
    st, ref = stats_from_resp(X, resp, model.covariance_type)
    first = G.m_step(st, ref, model.covariance_type, float(model.reg_covar), initial=True)
    return mixture_init(model).apply(first)


#: Parameters of scikit-learn's BayesianGaussianMixture a streaming one shares.
BAYESIAN_PARAMS = (
    *SHARED_PARAMS,
    "init_params",
    "weight_concentration_prior_type",
    "weight_concentration_prior",
    "mean_precision_prior",
    "mean_prior",
    "degrees_of_freedom_prior",
    "covariance_prior",
    "warm_start",
    "verbose",
    "verbose_interval",
)
#: Its fitted attributes beyond a GaussianMixture's.
BAYESIAN_ATTRIBUTES = (
    *FITTED_ATTRIBUTES,
    "lower_bounds_",
    "weight_concentration_prior_",
    "weight_concentration_",
    "mean_precision_prior_",
    "mean_precision_",
    "mean_prior_",
    "degrees_of_freedom_prior_",
    "degrees_of_freedom_",
    "covariance_prior_",
)


def bayesian_to_sklearn(model: Any) -> BayesianGaussianMixture:
    """A fitted ``BayesianGaussianMixture`` with the posterior of the fitted ``model``."""
    check_is_fitted(model, "_posterior")
    bgm = BayesianGaussianMixture(
        **{name: getattr(model, name) for name in BAYESIAN_PARAMS},
        random_state=model.random_state,
    )
    for name in BAYESIAN_ATTRIBUTES:
        if hasattr(model, name):
            setattr(bgm, name, getattr(model, name))
    return bgm


def bayesian_from_sklearn(
    bgm: Any,
) -> tuple[dict[str, Any], V.Posterior, V.Prior, dict[str, Any]]:
    """What a fitted ``BayesianGaussianMixture`` gives a streaming one: its shared
    parameters, its posterior and priors, and its other fitted attributes."""
    check_is_fitted(bgm)
    ct = bgm.covariance_type
    wc = bgm.weight_concentration_
    post = V.Posterior(
        np.stack(wc) if isinstance(wc, tuple) else np.asarray(wc, np.float64),
        np.asarray(bgm.mean_precision_, np.float64),
        np.asarray(bgm.means_, np.float64),
        np.asarray(bgm.degrees_of_freedom_, np.float64),
        np.asarray(bgm.covariances_, np.float64),
        np.asarray(bgm.precisions_cholesky_, np.float64),
        ct,
    )
    prior = V.Prior(
        bgm.weight_concentration_prior_type,
        float(bgm.weight_concentration_prior_),
        float(bgm.mean_precision_prior_),
        np.asarray(bgm.mean_prior_, np.float64),
        float(bgm.degrees_of_freedom_prior_),
        np.asarray(bgm.covariance_prior_, np.float64),
    )
    fitted = {
        "n_features_in_": int(bgm.means_.shape[1]),
        "converged_": bool(bgm.converged_),
        "n_iter_": int(bgm.n_iter_),
        # (scikit-learn's tied bounds are one-element arrays)
        "lower_bound_": np.asarray(bgm.lower_bound_).item(),
        "lower_bounds_": [np.asarray(v).item() for v in getattr(bgm, "lower_bounds_", [])],
    }
    return {name: getattr(bgm, name) for name in BAYESIAN_PARAMS}, post, prior, fitted
