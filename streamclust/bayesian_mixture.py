"""StreamingBayesianGaussianMixture: variational EM over data larger than memory."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from . import runtime, sklearn_mixture
from .bayesian_params import check_params, fit_prior, mixture_init
from .engine import em as EM
from .engine.caching import fit_cache
from .engine.mixture_init import initial_stats
from .engine.seeds import draw_seed
from .gmm_params import best_candidate, check_rows, em_settings
from .inputs import as_source, takes_storage_options
from .kernels import gmm as G
from .kernels import variational as V
from .mixture_scoring import MixtureScoring
from .persistence import array_digest, fit_fingerprint, register_model
from .sources import ArraySource, Source

__all__ = ["StreamingBayesianGaussianMixture", "validate_params"]


class StreamingBayesianGaussianMixture(MixtureScoring, DensityMixin, BaseEstimator):
    """Variational Bayesian Gaussian mixture fitted over data larger than memory.

    Each iteration of variational EM is one data-parallel pass: every block
    returns, for every candidate, the sums its E-step needs (responsibility
    sums, weighted sums, scatter matrices and ``sum r log r``), and the driver
    adds them in block order in float64, then updates the posterior and the
    lower bound with scikit-learn's formulas. The ``n_init`` candidates
    iterate in lockstep over one read of each block; the one with the highest
    lower bound wins. With more components than the data need, the weights of
    the extra components fall towards zero. Parameters, fitted attributes and
    results follow scikit-learn's ``BayesianGaussianMixture``.

    Parameters
    ----------
    n_components : int, default=1
        An upper bound on the components used.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound.
    reg_covar : float, default=1e-6
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        As for :class:`StreamingGaussianMixture` (``"kmeans"``: one pass of
        :class:`StreamingKMeans` and one of hard assignments).
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}
        default="dirichlet_process" (stick-breaking).
    weight_concentration_prior : float or None, default=None
        None: ``1 / n_components``. Smaller values put the mass on fewer
        components.
    mean_precision_prior : float or None, default=None
        None: 1.
    mean_prior : array (n_features,) or None, default=None
        None: the mean of the data (one pass, shared with the covariance).
    degrees_of_freedom_prior : float or None, default=None
        None: ``n_features``; must exceed ``n_features - 1``.
    covariance_prior : float or array or None, default=None
        None: the data's sample covariance in the layout of ``covariance_type``.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Start from the fitted posterior (one candidate).
    verbose : int, default=0
    verbose_interval : int, default=10
    batch_size : int, default=4096
        Rows per logical block of every pass (and the ``"kmeans"`` mini-batch).
    client, progress
        As for :class:`StreamingKMeans`.
    checkpoint : path or None, default=None
        Directory where ``fit`` saves its progress after every block (see
        :class:`StreamingGaussianMixture`); the same fit run again resumes
        there and ends with the model an uninterrupted fit gives.
    cache_mb : float or None, default=None
        Memory budget (MiB) of the fit's block cache.
    init_sample_size : int or None, default=None
        Start from a posterior fitted (in memory, ``n_init`` candidates, up to
        ``20 * max_iter`` iterations, ``tol`` at most scikit-learn's 1e-3) on a
        seeded uniform sample of this many rows, which the passes over all rows
        then refine. On millions of rows, variational EM from a K-Means split
        needs thousands of passes to empty the components the data do not use
        (scikit-learn's too); a sample of some 20,000 rows empties them in
        seconds. None: scikit-learn's start.

    The lower bound is a sum over rows, as in scikit-learn, so ``tol`` is an
    absolute change of that sum: on millions of rows, scale it with the rows
    (e.g. ``tol=1e-6 * n_rows``).

    ``lower_bound_`` is the variational lower bound (a sum over the rows, as in
    scikit-learn) and ``lower_bounds_`` its value after every iteration.
    ``score_samples`` and ``predict_proba`` use the expected mixture of the
    posterior, as scikit-learn's do.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        batch_size: int = 4096,
        client: Any = None,
        progress: bool = True,
        checkpoint: Any = None,
        cache_mb: Any = None,
        init_sample_size: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.batch_size = batch_size
        self.client = client
        self.progress = progress
        self.checkpoint = checkpoint
        self.cache_mb = cache_mb
        self.init_sample_size = init_sample_size

    # ------------------------------------------------------------------ fitting

    @takes_storage_options
    def fit(self, X: Any, y: Any = None) -> StreamingBayesianGaussianMixture:
        """Fit on an array, dask array, Source or path."""
        check_params(self)
        warm = self.warm_start and hasattr(self, "_posterior")
        source = as_source(self, X, reset=not warm)
        check_rows(source)
        runner = runtime.resolve_runner(self.client, source)
        source, cache = fit_cache(source, runner, self.cache_mb)
        fp = None
        if self.checkpoint is not None:
            start = array_digest(*self._posterior.arrays().values()) if warm else None
            fp = fit_fingerprint(self, source, start=start)
        prior = fit_prior(self, source, runner, progress=self.progress, checkpoint=fp)
        steps = V.VariationalSteps(float(self.reg_covar), prior)
        saver = None if fp is None else EM.EMCheckpoint(self.checkpoint, fp, steps)

        def candidates() -> list[V.Posterior]:
            if warm:
                return [self._posterior]
            return self._initial_posteriors(source, runner, prior)

        settings = em_settings(self, steps)
        self._dtype = source.compute_dtype
        lower = float(getattr(self, "lower_bound_", -np.inf)) if warm else -np.inf
        result = EM.fit_em(candidates, source, runner, settings, saver, lower)
        best = best_candidate(self, result)
        self._set_posterior(result.params[best], prior)
        self.converged_ = bool(result.converged[best])
        self.n_iter_ = int(result.n_iter[best])
        self.lower_bound_ = float(result.lower[best])
        self.lower_bounds_ = list(result.history[best])
        self.init_lower_bounds_ = result.lower
        self.read_stats_ = None if cache is None else cache.stats()
        return self

    def _initial_posteriors(
        self, source: Source, runner: runtime.Runner, prior: V.Prior, seed: int | None = None
    ) -> list[V.Posterior]:
        """Every candidate's first posterior: scikit-learn's initial responsibilities
        (``init_params``) summed over the data, then one variational update; or the
        posterior of a fit on a sample (``init_sample_size``)."""
        seed = draw_seed(self.random_state) if seed is None else seed
        size = self.init_sample_size
        if size is not None and size < source.n_rows:
            first = clone(self).set_params(
                init_sample_size=None,
                max_iter=20 * int(self.max_iter),
                tol=min(float(self.tol), 1e-3),  # as scikit-learn would fit the sample
                random_state=seed,
                warm_start=False,
                checkpoint=None,
                cache_mb=None,
                client="sync",
                progress=False,
                verbose=0,
            )
            with warnings.catch_warnings():  # the passes over all rows go on from it
                warnings.simplefilter("ignore", ConvergenceWarning)
                first.fit(source.uniform_sample(size, seed)[1])
            return [first._posterior]
        stats, refs = initial_stats(
            mixture_init(self),
            source,
            runner,
            seed,
            checkpoint_dir=self.checkpoint,
            progress=self.progress,
        )
        ct, reg = self.covariance_type, float(self.reg_covar)
        return [V.update(st, ref, ct, reg, prior) for st, ref in zip(stats, refs, strict=True)]

    def _set_posterior(self, post: V.Posterior, prior: V.Prior) -> None:
        """Keep ``post`` and ``prior`` and show them as scikit-learn's attributes."""
        self._posterior, self._prior = post, prior
        self._params = V.expected_mixture(post)
        ct = post.cov_type
        self.weight_concentration_prior_ = prior.weight_concentration
        self.mean_precision_prior_ = prior.mean_precision
        self.mean_prior_ = prior.mean
        self.degrees_of_freedom_prior_ = prior.degrees_of_freedom
        self.covariance_prior_ = prior.covariance if ct != "spherical" else float(prior.covariance)
        wc = post.concentration
        self.weight_concentration_ = (wc[0], wc[1]) if wc.ndim == 2 else wc
        self.mean_precision_ = post.mean_precision
        self.means_ = post.means
        self.degrees_of_freedom_ = (
            float(post.degrees_of_freedom) if ct == "tied" else post.degrees_of_freedom
        )
        self.covariances_ = post.covariances
        self.precisions_cholesky_ = post.prec_chol
        self.precisions_ = G.precisions_from_prec_chol(post.prec_chol, ct)
        self.weights_ = V.mixture_weights(post)

    # ------------------------------------------------------------------ scikit-learn's hooks

    def _check_parameters(self, X: Any) -> None:
        """scikit-learn's private hook: check the parameters and take the priors
        from the in-memory rows ``X``."""
        check_params(self)
        X = np.asarray(X)
        prior = fit_prior(self, ArraySource(X), runtime.resolve_runner("sync"), progress=False)
        self._checked = (X.shape, prior)

    def _prior_of(self, X: np.ndarray) -> V.Prior:
        checked = getattr(self, "_checked", None)
        if checked is not None and checked[0] == X.shape:
            return checked[1]
        return fit_prior(self, ArraySource(X), runtime.resolve_runner("sync"), progress=False)

    def _initialize_parameters(self, X: Any, random_state: Any) -> None:
        """scikit-learn's private hook: the first posterior of the in-memory rows ``X``
        as ``fit`` would start it, seeded by ``random_state``."""
        X = np.asarray(X)
        self._dtype, prior = X.dtype, self._prior_of(X)
        sync = runtime.resolve_runner("sync")
        first = self._initial_posteriors(ArraySource(X), sync, prior, draw_seed(random_state))
        self._set_posterior(first[0], prior)
        self.n_features_in_ = X.shape[1]

    def _initialize(self, X: Any, resp: Any) -> None:
        """scikit-learn's private hook: the first posterior from responsibilities
        ``resp`` of the in-memory rows ``X`` (the priors taken from ``X``)."""
        X = np.asarray(X)
        self._dtype, prior = X.dtype, self._prior_of(X)
        st, ref = sklearn_mixture.stats_from_resp(X, resp, self.covariance_type)
        self._set_posterior(
            V.update(st, ref, self.covariance_type, float(self.reg_covar), prior), prior
        )
        self.n_features_in_ = X.shape[1]

    # ------------------------------------------------------------------ persistence

    def _to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self, "_posterior")
        prior = self._prior
        scalars = {
            "n_features_in_": int(self.n_features_in_),
            "converged_": bool(self.converged_),
            "n_iter_": int(self.n_iter_),
            "lower_bound_": float(self.lower_bound_),
            "lower_bounds_": [float(v) for v in getattr(self, "lower_bounds_", [])],
            "dtype": str(getattr(self, "_dtype", np.float64)),
        }
        scalars["prior"], arrays = prior.to_state()
        arrays |= {f"post_{k}": v for k, v in self._posterior.arrays().items()}
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in_"] = self.feature_names_in_.astype(str)
        return scalars, arrays

    def _from_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for name in ("n_features_in_", "converged_", "n_iter_", "lower_bound_", "lower_bounds_"):
            setattr(self, name, scalars[name])
        self._dtype = np.dtype(scalars.get("dtype", "float64"))
        if "feature_names_in_" in arrays:
            self.feature_names_in_ = arrays["feature_names_in_"].astype(object)
        post = V.Posterior.from_arrays(
            {k[5:]: v for k, v in arrays.items() if k.startswith("post_")}, self.covariance_type
        )
        if post.means.shape != (self.n_components, self.n_features_in_):
            raise ValueError("means do not match n_components and n_features_in_")
        self._set_posterior(post, V.Prior.from_state(scalars["prior"], arrays))

    # ------------------------------------------------------------------ interop

    def to_sklearn(self) -> Any:
        """A fitted scikit-learn ``BayesianGaussianMixture`` with the same posterior."""
        return sklearn_mixture.bayesian_to_sklearn(self)

    @classmethod
    def from_sklearn(cls, bgm: Any, **params: Any) -> StreamingBayesianGaussianMixture:
        """A StreamingBayesianGaussianMixture with a fitted scikit-learn model's posterior."""
        shared, post, prior, fitted = sklearn_mixture.bayesian_from_sklearn(bgm)
        new = cls(**shared, **params)
        new._set_posterior(post, prior)
        for name, value in fitted.items():
            setattr(new, name, value)
        return new


def validate_params(model: StreamingBayesianGaussianMixture) -> None:
    """Check ``model``'s parameters as ``fit`` does, before any I/O."""
    check_params(model)


register_model(
    StreamingBayesianGaussianMixture,
    StreamingBayesianGaussianMixture._to_state,
    StreamingBayesianGaussianMixture._from_state,
)
