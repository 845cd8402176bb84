"""Pure NumPy kernels of the variational Bayesian Gaussian mixture: no Dask, no
estimator.

The variational posterior of one mixture is a :class:`Posterior` (scikit-learn's
``weight_concentration_``, ``mean_precision_``, ``means_``,
``degrees_of_freedom_``, ``covariances_``, ``precisions_cholesky_``). Its E-step
is an ordinary Gaussian mixture E-step whose log-weights carry the expected log
weights and the Wishart terms (:func:`expected_mixture`), so the block
statistics of :mod:`.gmm` serve both models; the M-step (:func:`update`) and the
lower bound (:func:`lower_bound`) follow scikit-learn's
``BayesianGaussianMixture`` formula for formula. The lower bound needs one more
sum over rows, ``sum r log r`` (``Stats.r_log_r``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaln, digamma, gammaln

from . import gmm as G

__all__ = [
    "PRIOR_TYPES",
    "Moments",
    "Posterior",
    "Prior",
    "VariationalSteps",
    "block_moments",
    "expected_mixture",
    "lower_bound",
    "mixture_weights",
    "update",
]

PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")


@dataclass(frozen=True)
class Prior:
    """The priors of one model (scikit-learn's fitted ``*_prior_`` attributes)."""

    weight_type: str  # one of PRIOR_TYPES
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray  # (d,)
    degrees_of_freedom: float
    #: full/tied (d, d), diag (d,), spherical: a 0-d array
    covariance: np.ndarray

    def to_state(self) -> tuple[list[Any], dict[str, np.ndarray]]:
        """JSON scalars and arrays to save, see :meth:`from_state`."""
        scalars = [self.weight_type, self.weight_concentration, self.mean_precision]
        arrays = {"prior_mean": self.mean, "prior_covariance": np.asarray(self.covariance)}
        return [*scalars, self.degrees_of_freedom], arrays

    @classmethod
    def from_state(cls, scalars: list[Any], arrays: Any) -> Prior:
        kind, weight, mean_precision, dof = scalars
        mean, covariance = arrays["prior_mean"], arrays["prior_covariance"]
        return cls(kind, float(weight), float(mean_precision), mean, float(dof), covariance)


@dataclass
class Posterior:
    """The variational posterior of one mixture of ``K`` components."""

    concentration: np.ndarray  # dirichlet_process (2, K), dirichlet_distribution (K,)
    mean_precision: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    degrees_of_freedom: np.ndarray  # (K,); tied: 0-d
    covariances: np.ndarray  # scikit-learn's layout for cov_type
    prec_chol: np.ndarray
    cov_type: str

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array by name (to save), see :meth:`from_arrays`."""
        return {
            "concentration": self.concentration,
            "mean_precision": self.mean_precision,
            "means": self.means,
            "dof": np.asarray(self.degrees_of_freedom),
            "covariances": self.covariances,
            "prec_chol": self.prec_chol,
        }

    @classmethod
    def from_arrays(cls, a: Any, cov_type: str) -> Posterior:
        def get(name: str) -> np.ndarray:
            return np.asarray(a[name], np.float64)

        return cls(
            get("concentration"),
            get("mean_precision"),
            get("means"),
            get("dof"),
            get("covariances"),
            get("prec_chol"),
            cov_type,
        )


def update(
    st: G.Stats, ref_means: np.ndarray, cov_type: str, reg_covar: float, prior: Prior
) -> Posterior:
    """The M-step: the posterior from summed E-step statistics (taken around
    ``ref_means``), as scikit-learn's ``_m_step`` (and ``_initialize``) computes it."""
    nk, xk, sk = G.gaussian_estimates(st, ref_means, cov_type, reg_covar)
    K = nk.shape[0]
    if prior.weight_type == "dirichlet_process":
        tail = np.hstack((np.cumsum(nk[::-1])[-2::-1], 0))
        concentration = np.stack([1.0 + nk, prior.weight_concentration + tail])
    else:
        concentration = prior.weight_concentration + nk
    b0 = prior.mean_precision
    mean_precision = b0 + nk
    means = (b0 * prior.mean + nk[:, None] * xk) / mean_precision[:, None]
    diff = xk - prior.mean
    if cov_type == "full":
        dof = prior.degrees_of_freedom + nk
        covs = (
            prior.covariance
            + nk[:, None, None] * sk
            + (nk * b0 / mean_precision)[:, None, None] * (diff[:, :, None] * diff[:, None, :])
        )
        covs /= dof[:, None, None]
    elif cov_type == "tied":
        dof = np.asarray(prior.degrees_of_freedom + nk.sum() / K)
        covs = (
            prior.covariance
            + sk * nk.sum() / K
            + b0 / K * np.dot((nk / mean_precision) * diff.T, diff)
        )
        covs = covs / dof
    elif cov_type == "diag":
        dof = prior.degrees_of_freedom + nk
        covs = prior.covariance + nk[:, None] * (
            sk + (b0 / mean_precision)[:, None] * np.square(diff)
        )
        covs /= dof[:, None]
    else:
        dof = prior.degrees_of_freedom + nk
        covs = prior.covariance + nk * (sk + b0 / mean_precision * np.mean(np.square(diff), 1))
        covs = covs / dof
    prec_chol = G.precision_cholesky(covs, cov_type)
    return Posterior(concentration, mean_precision, means, dof, covs, prec_chol, cov_type)


def expected_log_weights(post: Posterior) -> np.ndarray:
    """``E[log pi_k]`` under the posterior (scikit-learn's ``_estimate_log_weights``)."""
    wc = post.concentration
    if wc.ndim == 2:  # stick-breaking
        digamma_sum = digamma(wc[0] + wc[1])
        digamma_b = digamma(wc[1])
        below = np.hstack((0, np.cumsum(digamma_b - digamma_sum)[:-1]))
        return digamma(wc[0]) - digamma_sum + below
    return digamma(wc) - digamma(np.sum(wc))


def expected_mixture(post: Posterior) -> G.Params:
    """The Gaussian mixture whose E-step is the variational E-step: its densities at
    ``means`` and ``prec_chol``, and log-weights that carry ``E[log pi_k]`` and the
    Wishart expectations (scikit-learn's ``_estimate_weighted_log_prob``)."""
    K, d = post.means.shape
    dof = post.degrees_of_freedom
    log_lambda = d * np.log(2.0) + np.sum(digamma(0.5 * (dof - np.arange(d)[:, None])), 0)
    extra = -0.5 * d * np.log(dof) + 0.5 * (log_lambda - d / post.mean_precision)
    log_w = expected_log_weights(post) + np.broadcast_to(extra, (K,))
    return G.Params(log_w, post.means, post.prec_chol, post.cov_type)


def _log_wishart_norm(dof: np.ndarray, log_det_chol: np.ndarray, d: int) -> np.ndarray:
    """The log normalization of Wishart distributions (without its log pi term)."""
    return -(
        dof * log_det_chol
        + dof * d * 0.5 * np.log(2.0)
        + np.sum(gammaln(0.5 * (dof - np.arange(d)[:, None])), 0)
    )


def lower_bound(post: Posterior, r_log_r: float) -> float:
    """The variational lower bound after an M-step, from the E-step's ``sum r log r``
    (scikit-learn's ``_compute_lower_bound``; a sum over rows, not a mean)."""
    K, d = post.means.shape
    dof = post.degrees_of_freedom
    log_det = G.log_det_chol(G.Params(np.zeros(K), post.means, post.prec_chol, post.cov_type))
    log_det = log_det - 0.5 * d * np.log(dof)  # (K,); tied: K equal values
    log_wishart = float(np.sum(_log_wishart_norm(np.broadcast_to(dof, (K,)), log_det, d)))
    wc = post.concentration
    if wc.ndim == 2:
        log_norm_weight = -float(np.sum(betaln(wc[0], wc[1])))
    else:
        log_norm_weight = float(gammaln(np.sum(wc)) - np.sum(gammaln(wc)))
    return (
        -r_log_r
        - log_wishart
        - log_norm_weight
        - 0.5 * d * float(np.sum(np.log(post.mean_precision)))
    )


def mixture_weights(post: Posterior) -> np.ndarray:
    """The expected weights (scikit-learn's ``weights_``)."""
    wc = post.concentration
    if wc.ndim == 2:
        total = wc[0] + wc[1]
        weights = wc[0] / total * np.hstack((1, np.cumprod(wc[1] / total)[:-1]))
        return weights / np.sum(weights)
    return wc / np.sum(wc)


@dataclass(frozen=True)
class VariationalSteps:
    """The steps of variational EM for the exact EM engine: E-step mixture, M-step,
    lower bound and the arrays a checkpoint keeps."""

    reg_covar: float
    prior: Prior
    entropy: bool = True

    def estep(self, post: Posterior) -> G.Params:
        return expected_mixture(post)

    def mstep(self, st: G.Stats, post: Posterior) -> Posterior:
        return update(st, post.means, post.cov_type, self.reg_covar, self.prior)

    def bound(self, st: G.Stats, post: Posterior) -> float:
        return lower_bound(post, st.r_log_r)

    def to_arrays(self, post: Posterior) -> dict[str, np.ndarray]:
        return post.arrays()

    def from_arrays(self, arrays: Any, cov_type: str) -> Posterior:
        return Posterior.from_arrays(arrays, cov_type)


# --------------------------------------------------------------------------- data moments


@dataclass
class Moments:
    """Row count, mean and centred scatter of rows; ``+=`` merges two parts exactly
    (Chan et al.'s pairwise update), so block order does not lose precision."""

    n: int
    mean: np.ndarray  # (d,)
    scatter: np.ndarray  # (d, d): sum (x - mean)(x - mean)^T

    def __iadd__(self, other: Moments) -> Moments:
        n = self.n + other.n
        delta = other.mean - self.mean
        self.scatter = (
            self.scatter + other.scatter + np.outer(delta, delta) * (self.n * other.n / n)
        )
        self.mean = self.mean + delta * (other.n / n)
        self.n = n
        return self

    def covariance(self) -> np.ndarray:
        """The sample covariance (``ddof=1``, as ``np.cov``)."""
        return self.scatter / (self.n - 1)


def block_moments(block: np.ndarray, start: int) -> list[Moments]:
    """Task: the :class:`Moments` of one block (a one-item list, as the EM tasks)."""
    X = block.astype(np.float64, copy=False)
    mean = X.mean(axis=0)
    Xc = X - mean
    return [Moments(X.shape[0], mean, Xc.T @ Xc)]
