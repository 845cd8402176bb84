"""StreamingGaussianMixture: exact out-of-core EM with lockstep initializations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import check_is_fitted

from . import runtime, sklearn_mixture
from .engine import em as EM
from .engine.caching import fit_cache
from .engine.mixture_init import initial_candidates
from .engine.seeds import draw_seed
from .exceptions import DataError
from .gmm_params import best_candidate, check_params, check_rows, em_settings, mixture_init
from .inputs import as_source, is_out_of_core, takes_storage_options
from .kernels import gmm as G
from .kernels import online_em as O
from .mixture_scoring import MixtureScoring
from .persistence import array_digest, fit_fingerprint, register_model
from .sources import ArraySource, Source

__all__ = ["StreamingGaussianMixture", "criteria", "set_fitted", "validate_params"]


class StreamingGaussianMixture(MixtureScoring, DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by exact EM over data larger than memory.

    Every EM iteration is one data-parallel pass: each block returns the
    sufficient statistics of every candidate (responsibility sums, weighted
    sums and scatter matrices, log-likelihood), the driver adds them up in
    block order in float64 and runs the M-step. The ``n_init`` candidates
    iterate in lockstep, so one read of a block serves all of them; a
    candidate that has converged stops costing anything. The candidate with
    the highest lower bound wins. Parameters, attributes and formulas follow
    scikit-learn's ``GaussianMixture``.

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (the mean
        per-row log-likelihood).
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance.
    max_iter : int, default=100
        EM iterations (passes over the data) per candidate.
    n_init : int, default=1
    init_params : {"kmeans", "k-means++", "random"}, default="kmeans"
        ``"kmeans"``: one pass of :class:`StreamingKMeans` (whose ``n_init``
        candidates give one start each) and one pass of hard assignments.
        ``"k-means++"``: k-means++ rows of a sample as means, ``reg_covar``
        covariances (as scikit-learn). ``"random"``: one pass of uniform
        random responsibilities.
    weights_init, means_init, precisions_init : array, optional
        Override the initialization, as in scikit-learn.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Start from the fitted parameters (one candidate).
    batch_size : int, default=4096
        Mini-batch of the ``"kmeans"`` initialization, and the rows of one
        online EM step when :meth:`partial_fit` reads a Source.
    step_offset : float, default=1.0
    step_decay : float in (0.5, 1], default=0.6
        Step size of online EM: the ``t``-th :meth:`partial_fit` step (from 0)
        moves the running statistics by ``(t + 1 + step_offset) ** -step_decay``
        towards the batch's. ``step_decay=1, step_offset=0`` averages every
        batch equally; smaller decays forget old batches faster.
    half_life : float or None, default=None
        A constant floor under that step, ``1 - 0.5 ** (1 / half_life)``: a
        batch's weight halves every ``half_life`` steps, so a drifting stream
        is followed. None: the schedule alone.
    client, progress
        As for :class:`StreamingKMeans`.
    checkpoint : path or None, default=None
        Directory where ``fit`` saves its progress after every block of every
        EM pass (one ``gmm-fit.npz``, replaced atomically; the ``"kmeans"``
        initialization keeps its own ``kmeans-fit.npz`` there). Running the
        same fit again (same parameters, same data) resumes from the last
        saved block and ends with the model an uninterrupted fit gives.
        Needs an int ``random_state``.
    cache_mb : float or None, default=None
        Memory budget (MiB) of the fit's block cache: blocks read by the first
        pass are kept for the initialization and EM passes within it (see
        :class:`StreamingKMeans`). ``read_stats_`` tells what a fit read.
    verbose : int, default=0
        Print scikit-learn's progress lines: each candidate's start, every
        ``verbose_interval`` iterations (with the time and the change of the
        lower bound when 2), and whether it converged.
    verbose_interval : int, default=10

    Fitted parameters (``weights_``, ``means_``, ``covariances_``,
    ``precisions_``, ``precisions_cholesky_``) and the outputs of
    ``score_samples`` and ``predict_proba`` are in the data's dtype (float32
    or float64), as scikit-learn gives them; sums are accumulated in float64.
    ``lower_bounds_`` lists the lower bound of every iteration of the chosen
    candidate; ``max_iter=0`` returns the initialization.
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
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        batch_size: int = 4096,
        step_offset: float = 1.0,
        step_decay: float = 0.6,
        client: Any = None,
        progress: bool = True,
        checkpoint: Any = None,
        cache_mb: Any = None,
        verbose: int = 0,
        verbose_interval: int = 10,
        half_life: float | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.step_offset = step_offset
        self.step_decay = step_decay
        self.client = client
        self.progress = progress
        self.checkpoint = checkpoint
        self.cache_mb = cache_mb
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.half_life = half_life

    # ------------------------------------------------------------------ validation

    def _check_inits(self, d: int) -> None:
        mixture_init(self).check(d)

    def _initial_params(
        self, source: Source, runner: runtime.Runner, checkpoint: Any = None
    ) -> list[G.Params]:
        """Every candidate's starting parameters, with the user's ``*_init`` overrides."""
        seed = draw_seed(self.random_state)
        return initial_candidates(
            mixture_init(self),
            source,
            runner,
            seed,
            checkpoint_dir=checkpoint,
            progress=self.progress,
        )

    # ------------------------------------------------------------------ fitting

    @takes_storage_options
    def fit(self, X: Any, y: Any = None) -> StreamingGaussianMixture:
        """Fit on an array, dask array, Source or path."""
        check_params(self)
        warm = self.warm_start and hasattr(self, "_params")
        source = as_source(self, X, reset=not warm)
        check_rows(source)
        self._check_inits(source.n_features)
        runner = runtime.resolve_runner(self.client, source)
        saver = None
        if self.checkpoint is not None:
            start = None
            if warm:  # it begins from the fitted parameters (covariance_type is a parameter)
                p = self._params
                start = array_digest(p.log_weights, p.means, p.prec_chol)
            saver = EM.EMCheckpoint(self.checkpoint, fit_fingerprint(self, source, start=start))
        source, cache = fit_cache(source, runner, self.cache_mb)

        def candidates() -> list[G.Params]:
            if warm:
                return [self._params]
            return self._initial_params(source, runner, self.checkpoint)

        settings = em_settings(self)
        self._dtype = source.compute_dtype
        lower = float(self.lower_bound_) if warm else -np.inf  # type: ignore[has-type]
        result = EM.fit_em(candidates, source, runner, settings, saver, lower)
        best = best_candidate(self, result)
        set_fitted(self, result, best)
        stats = O.stats_from_params(self._params, self.reg_covar)
        steps = math.ceil(source.n_rows / self.batch_size)
        self._online = O.OnlineState(self._params, stats, float(result.lower[best]), steps)
        self.read_stats_ = None if cache is None else cache.stats()
        return self

    @takes_storage_options
    def partial_fit(self, X: Any, y: Any = None) -> StreamingGaussianMixture:
        """Online (stepwise) EM: update the model with new rows.

        An in-memory ``X`` is one step; a Source, path or dask array is read
        once in row order, in steps of about ``batch_size`` rows. Each step
        runs the E-step on its rows, moves the running per-row statistics
        towards them (see ``step_decay``) and runs the M-step. The first call
        initializes from its first batch (``init_params``, best of ``n_init``
        by the batch's likelihood). On a model fitted with :meth:`fit`, online
        EM starts from the fitted parameters, counting the fit as the
        ``ceil(n_rows / batch_size)`` steps it would take to read its rows.
        ``lower_bound_`` is the running mean log-likelihood of the batches and
        ``n_iter_`` the number of steps; online EM has no convergence test, so
        ``converged_`` stays False.
        """
        check_params(self)
        fitted = hasattr(self, "_params")
        source = as_source(self, X, reset=not fitted)
        if not fitted:
            self._dtype = source.compute_dtype
        out_of_core = is_out_of_core(X)
        runner = runtime.resolve_runner(self.client if out_of_core else "sync", source)
        state = getattr(self, "_online", None)
        if state is None:  # a first call, or a model from from_sklearn
            if fitted:
                start, log_lik = self._params, float(getattr(self, "lower_bound_", np.nan))
            else:
                start, log_lik = self._init_from_batch(source, whole=not out_of_core), np.nan
            state = O.OnlineState(start, O.stats_from_params(start, self.reg_covar), log_lik, 0)
        arg = O.OnlineArg(
            int(self.batch_size),
            float(self.step_offset),
            float(self.step_decay),
            float(self.reg_covar),
            0.0 if self.half_life is None else 1 - 0.5 ** (1 / float(self.half_life)),
        )
        if out_of_core:
            state = EM.online_em_pass(state, source, runner, arg, self.progress)
        else:
            state = O.online_step(state, source.read(0, source.n_rows), *arg[1:])
        self._online = state
        self._set_params(state.params)
        self.converged_ = False
        self.n_iter_ = state.steps
        self.lower_bound_ = state.log_lik
        return self

    def _init_from_batch(self, source: Source, whole: bool) -> G.Params:
        """Initial parameters from ``source`` (``whole``) or its first ``batch_size`` rows,
        the best of ``n_init`` by their likelihood."""
        batch = source.read(0, source.n_rows if whole else min(source.n_rows, self.batch_size))
        if batch.shape[0] < 2:
            raise DataError(
                f"{source.name}: the first partial_fit batch has {batch.shape[0]} row "
                f"(n_samples={batch.shape[0]}); initializing a mixture needs at least 2 rows"
            )
        self._check_inits(source.n_features)
        first = ArraySource(batch, name=source.name)
        sync = runtime.resolve_runner("sync")
        cands = self._initial_params(first, sync)
        X = batch.astype(np.float64, copy=False)
        fits = [float(G.log_resp(X, p)[0].sum()) for p in cands]
        return cands[int(np.argmax(fits))]

    def _set_params(self, p: G.Params) -> None:
        """Keep ``p`` (float64) and show it in the data's dtype (``_dtype``)."""
        self._params = p
        ct = p.cov_type
        dtype = getattr(self, "_dtype", np.float64)
        self.weights_ = np.exp(p.log_weights).astype(dtype)
        self.means_ = p.means.astype(dtype)
        self.precisions_cholesky_ = p.prec_chol.astype(dtype)
        self.precisions_ = G.precisions_from_prec_chol(p.prec_chol, ct).astype(dtype)
        self.covariances_ = G.covariances_from_prec_chol(p.prec_chol, ct).astype(dtype)

    def _initialize(self, X: Any, resp: Any) -> None:
        """scikit-learn's private hook: the initial parameters from ``resp``."""
        self._dtype = np.asarray(X).dtype
        self._set_params(sklearn_mixture.params_from_resp(self, X, resp))

    def _set_parameters(self, params: Any) -> None:
        """scikit-learn's private hook: set ``(weights, means, covariances, prec_chol)``."""
        self._dtype = np.asarray(params[1]).dtype
        self._set_params(sklearn_mixture.params_from_tuple(params, self.covariance_type))

    def _n_parameters(self) -> int:
        """Free parameters of the model (scikit-learn's name; see :meth:`bic`)."""
        return G.n_parameters(self.n_components, self.means_.shape[1], self.covariance_type)

    # ------------------------------------------------------------------ scoring

    @takes_storage_options
    def information_criteria(self, X: Any) -> dict[str, float]:
        """Mean log-likelihood (``score``), ``bic`` and ``aic`` of ``X`` in one pass,
        with the total ``log_likelihood`` and ``n_samples``."""
        return criteria(self, *self.total_log_likelihood(X))

    @takes_storage_options
    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better), in one pass."""
        return self.information_criteria(X)["bic"]

    @takes_storage_options
    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better), in one pass."""
        return self.information_criteria(X)["aic"]

    # ------------------------------------------------------------------ persistence

    def _to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        check_is_fitted(self, "_params")
        scalars = {
            "n_features_in_": int(self.n_features_in_),
            "converged_": bool(self.converged_),
            "n_iter_": int(self.n_iter_),
            "lower_bound_": float(self.lower_bound_),
            "dtype": str(getattr(self, "_dtype", np.float64)),
        }
        p = self._params
        arrays = {
            "log_weights": p.log_weights,
            "means": p.means,
            "prec_chol": p.prec_chol,
        }
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in_"] = self.feature_names_in_.astype(str)
        online = getattr(self, "_online", None)
        if online is not None:  # everything partial_fit needs to continue bit-identically
            more_scalars, more_arrays = O.state_to_arrays(online)
            scalars |= more_scalars
            arrays |= more_arrays
        return scalars, arrays

    def _from_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for name in ("n_features_in_", "converged_", "n_iter_", "lower_bound_"):
            setattr(self, name, scalars[name])
        self._dtype = np.dtype(scalars.get("dtype", "float64"))
        if "feature_names_in_" in arrays:
            self.feature_names_in_ = arrays["feature_names_in_"].astype(object)
        means = arrays["means"]
        if means.shape != (self.n_components, self.n_features_in_):
            raise ValueError("means do not match n_components and n_features_in_")
        self._set_params(
            G.Params(arrays["log_weights"], means, arrays["prec_chol"], self.covariance_type)
        )
        if "online_steps" in scalars:
            self._online = O.state_from_arrays(self._params, scalars, arrays)

    # ------------------------------------------------------------------ interop

    def to_sklearn(self) -> Any:
        """A fitted scikit-learn ``GaussianMixture`` with the same parameters."""
        return sklearn_mixture.to_sklearn(self)

    @classmethod
    def from_sklearn(cls, gm: Any, **params: Any) -> StreamingGaussianMixture:
        """A StreamingGaussianMixture with a fitted scikit-learn model's parameters."""
        shared, mixture, fitted = sklearn_mixture.from_sklearn(gm)
        new = cls(**shared, **params)
        new._set_params(mixture)
        for name, value in fitted.items():
            setattr(new, name, value)
        return new


def set_fitted(
    model: StreamingGaussianMixture, result: EM.EMResult, best: int, dtype: Any = None
) -> None:
    """Give ``model`` the fitted attributes of candidate ``best`` of an exact EM run
    whose candidates were all this model's (``init_lower_bounds_``), shown in
    ``dtype`` (the data's; None: as the model's last fit)."""
    if dtype is not None:
        model._dtype = np.dtype(dtype)
    model._set_params(result.params[best])
    model.converged_ = bool(result.converged[best])
    model.n_iter_ = int(result.n_iter[best])
    model.lower_bound_ = float(result.lower[best])
    model.lower_bounds_ = list(result.history[best])
    model.init_lower_bounds_ = result.lower


def criteria(
    model: StreamingGaussianMixture, total_log_lik: float, n_rows: int
) -> dict[str, float]:
    """Mean log-likelihood, BIC and AIC of a fitted ``model`` from the total
    log-likelihood of ``n_rows`` rows (see :meth:`~StreamingGaussianMixture.bic`)."""
    check_is_fitted(model, "_params")
    return G.information_criteria(total_log_lik, n_rows, model._n_parameters())


def validate_params(model: StreamingGaussianMixture) -> None:
    """Check ``model``'s parameters as ``fit`` does, before any I/O."""
    check_params(model)


register_model(
    StreamingGaussianMixture,
    StreamingGaussianMixture._to_state,
    StreamingGaussianMixture._from_state,
)
