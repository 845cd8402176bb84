"""StreamingKMeans: mini-batch K-Means whose initializations advance in lockstep."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from . import runtime
from .engine import chains as E
from .engine.apply import apply_blocks
from .engine.caching import fit_cache
from .engine.plan import block_ranges
from .engine.seeds import SEED_PARTIAL, child, root_seed
from .inputs import as_source, is_out_of_core, takes_storage_options
from .kernels import chain as C
from .kernels import kmeans as K
from .kmeans_params import batch_plan, chain_spec, check_params, forgetting
from .persistence import fit_fingerprint, register_model, save_model
from .sources import ArraySource, Source, SparseSource, with_weights

__all__ = [
    "StreamingKMeans",
    "center_counts",
    "set_fitted_chain",
    "validate_params",
]


class StreamingKMeans(
    ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator
):
    """Mini-batch K-Means over data larger than memory, with lockstep initializations.

    ``n_init`` candidates are initialized independently and then advance in
    lockstep over the *same* mini-batches: every block is read once and each
    mini-batch is assigned for all candidates with one stacked GEMM
    (``|x|^2 - 2 x C^T + |c|^2``) in the data's dtype. Each candidate updates
    its centers as scikit-learn's ``MiniBatchKMeans`` does (per-center learning
    rate ``1 / count``, low-count centers reassigned onto random rows so no
    center dies).

    Definitions
    -----------
    block
        A row range of the source (whole Zarr chunks, one batch file, about
        8 MiB of a memmap), merged with its neighbours until it has at least
        ``batch_size`` rows. A block is one task.
    step
        One mini-batch of ``batch_size`` rows (the last of a block may be
        shorter) applied to every candidate. A *pass* visits every block once;
        with ``shuffle`` the block order and the rows within each block are
        permuted (seeded) on every pass.
    batch inertia
        Sum of squared distances of the step's rows to a candidate's centers,
        before that step's update.
    ``init_scores_``
        Per candidate, the sum of its batch inertias over the last ``last_n``
        steps (all steps when fewer were run). ``selection="last_n"`` picks the
        lowest; ``selection="full"`` instead computes every candidate's exact
        inertia over all rows in one extra pass and picks the lowest.
    ``inertia_``
        Exact sum of squared distances of *all* rows to the final centers,
        accumulated in float64 in one pass after fitting.
    initialization
        ``init_size`` rows are sampled uniformly from up to 8 randomly chosen
        blocks; each candidate runs greedy k-means++ (or picks random rows) on
        that sample with its own seed. The candidates' k-means++ rounds also
        run in lockstep: one stacked GEMM measures all their trial centers.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "random"}, callable or array of shape (n_clusters, n_features)
        An array starts the (single) candidate from those centers; a callable
        ``init(X_sample, n_clusters, random_state)`` returns each candidate's
        centers from the initialization sample.
    n_init : int or "auto", default=3
        Number of candidates advanced in lockstep; ``"auto"`` as scikit-learn's
        ``MiniBatchKMeans``: 1 for k-means++ (or an array), 3 for random or a
        callable.
    batch_size : int, default=1024
        Rows per mini-batch step.
    init_size : int, default=None
        Rows sampled for initialization; ``3 * batch_size`` when None. Below
        ``n_clusters`` it warns and ``3 * n_clusters`` is used; it is clamped to
        the number of rows (scikit-learn's rules).
    max_passes : int, default=1
        Passes over the data when ``max_steps`` is None.
    max_steps : int, default=None
        When given, wins over ``max_passes``: exactly this many steps are run,
        starting new passes as needed.
    last_n : int, default=10
        Steps whose batch inertias form ``init_scores_``.
    selection : {"last_n", "full"}, default="last_n"
    refine : int, default=0
        Lloyd iterations (one data-parallel pass each) from the selected centers.
    reassignment_ratio : float, default=0.01
    shuffle : bool, default=True
    random_state : int, RandomState instance or None, default=None
        Resolved once per fit; every candidate and pass derives its own seed,
        so results do not depend on where tasks run.
    client : None, "sync", "threads", "local", address or distributed.Client
        Where the work runs (see :func:`streamclust.get_client`). None uses an
        active Dask client, else ``DASK_SCHEDULER_ADDRESS`` (on-disk data),
        else threads in this process; ``"local"`` starts a local cluster of
        worker processes. Results are bit-identical whatever it is.
    progress : bool, default=True
        Progress bars (one per pass) on terminals.
    checkpoint : path or None, default=None
        Directory where ``fit`` saves its progress after every block (one
        ``kmeans-fit.npz``, replaced atomically). Running the same fit again
        (same parameters, same data) resumes from the last saved block and
        ends with the model an uninterrupted fit gives. Needs an int
        ``random_state``.
    cache_mb : float or None, default=None
        Memory budget (MiB) of the fit's block cache: blocks read by the first
        pass are kept for the later ones (exact inertia, ``selection="full"``,
        ``refine``) within it. None: ``STREAMCLUST_CACHE_MB``, else a quarter of
        the available memory; 0 turns it off. Results do not depend on it.
    tol : float, default=0.0
        Early stopping, as scikit-learn's ``MiniBatchKMeans``: a candidate stops
        when one step moves its centers (squared, summed) by at most ``tol``
        times the mean feature variance (of the initialization sample here).
        0 turns it off.
    max_no_improvement : int or None, default=None
        Early stopping: a candidate stops when the exponentially weighted
        average of its batch inertia has not improved for this many steps.
        None (the default, unlike scikit-learn's 10, so that a streaming fit
        sees all of its data) turns it off. A stopped candidate keeps its
        centers; the fit ends after the block in which the last one stopped,
        whatever ``max_passes``.
    verbose : int, default=0
        Print scikit-learn's progress lines (initialization, every step's batch
        inertia and its average, convergence) on the driver.
    decay, half_life : float or None, default=None
        Forgetting, as Spark MLlib's streaming K-Means: before every step the
        centers' counts are multiplied by ``decay`` (or by the factor that
        halves them in ``half_life``), so a stream whose clusters drift is
        followed. None: never forget (every row counts forever).
    time_unit : {"batches", "rows"}, default="batches"
        What ``decay`` and ``half_life`` count: steps, or rows.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    inertia_ : float
        Exact full-data inertia of ``cluster_centers_`` (after ``fit``); after
        ``partial_fit``, the inertia of the last batch with the updated centers.
    labels_ : ndarray of shape (n_samples,)
        Only when fitted on in-memory data (or the last ``partial_fit`` batch).
    best_init_ : int
        Index of the selected candidate.
    init_scores_ : ndarray of shape (n_init,)
    init_inertias_ : ndarray of shape (n_init,)
        Exact inertia of every candidate (``selection="full"`` only).
    n_steps_, n_passes_ : int
        Steps run, and passes started.
    n_iter_ : int
        Passes started (scikit-learn's name; early stopping may end a fit sooner).
    read_stats_ : dict or None
        What the last ``fit`` read: ``blocks_read`` and ``rows_read`` from
        storage, ``cache_hits`` (blocks served from the cache) and
        ``cached_bytes``; None on a cluster, whose workers read the blocks.
    n_features_in_ : int

    Examples
    --------
    >>> import numpy as np
    >>> from streamclust import StreamingKMeans
    >>> X = np.r_[np.zeros((50, 2)), np.ones((50, 2)) * 10]
    >>> km = StreamingKMeans(n_clusters=2, batch_size=20, random_state=0).fit(X)
    >>> sorted(np.round(km.cluster_centers_[:, 0]).tolist())
    [0.0, 10.0]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: Any = "k-means++",
        n_init: int = 3,
        batch_size: int = 1024,
        init_size: int | None = None,
        max_passes: int = 1,
        max_steps: int | None = None,
        last_n: int = 10,
        selection: str = "last_n",
        refine: int = 0,
        reassignment_ratio: float = 0.01,
        shuffle: bool = True,
        random_state: Any = None,
        client: Any = None,
        progress: bool = True,
        checkpoint: Any = None,
        cache_mb: Any = None,
        tol: float = 0.0,
        max_no_improvement: int | None = None,
        verbose: int = 0,
        decay: float | None = None,
        half_life: float | None = None,
        time_unit: str = "batches",
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.batch_size = batch_size
        self.init_size = init_size
        self.max_passes = max_passes
        self.max_steps = max_steps
        self.last_n = last_n
        self.selection = selection
        self.refine = refine
        self.reassignment_ratio = reassignment_ratio
        self.shuffle = shuffle
        self.random_state = random_state
        self.client = client
        self.progress = progress
        self.checkpoint = checkpoint
        self.cache_mb = cache_mb
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.verbose = verbose
        self.decay = decay
        self.half_life = half_life
        self.time_unit = time_unit

    @takes_storage_options
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamingKMeans:
        """Fit on an array, dask array, Source or path (see the class docstring).

        ``sample_weight`` (one weight >= 0 per row; None: all 1) weighs each row in
        the initialization, the center updates and the inertias; integer weights
        act as repeated rows. Out of core it is a second source of the same rows
        (an array, a ``.npy`` or Zarr path or URL, a zarr or dask array), read
        block by block alongside ``X``.
        """
        n_init = check_params(self)
        source = as_source(self, X, reset=True)
        in_memory = isinstance(source, (ArraySource, SparseSource))
        source = with_weights(source, sample_weight)
        runner = runtime.resolve_runner(self.client, source)
        checkpoint = None
        if self.checkpoint is not None:
            checkpoint = E.KMeansCheckpoint(self.checkpoint, fit_fingerprint(self, source))
        source, cache = fit_cache(source, runner, self.cache_mb)
        spec = chain_spec(self, n_init)
        # (scikit-learn's private names, which its tests and some users read)
        self._n_init, self._init_size = n_init, spec.init_rows(self.batch_size, source.n_rows)
        fitted = E.fit_kmeans_chains(
            [spec],
            batch_plan(self),
            source,
            runner,
            root_seed(self.random_state),
            checkpoint=checkpoint,
            progress=self.progress,
        )
        state = self._state = fitted.chains[0]
        self.n_steps_, self.n_passes_ = fitted.n_steps, fitted.n_passes
        self.n_iter_ = fitted.n_passes
        self.init_scores_ = state.window_scores()
        chosen = E.choose_candidate(
            state,
            source,
            runner,
            full=self.selection == "full",
            refine=self.refine,
            want_labels=in_memory,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        if chosen.inertias is not None:
            self.init_inertias_ = chosen.inertias
        self.best_init_ = chosen.best
        self.cluster_centers_ = chosen.centers
        self.inertia_ = chosen.inertia
        if in_memory:
            self.labels_ = chosen.labels
        elif hasattr(self, "labels_"):
            del self.labels_
        distinct = int(np.count_nonzero(chosen.sizes))
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                f"({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.read_stats_ = None if cache is None else cache.stats()
        return self

    @takes_storage_options
    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamingKMeans:
        """Advance every candidate on new data.

        An in-memory ``X`` is one mini-batch step (as scikit-learn's
        ``partial_fit``); a Source, path or dask array is read once in storage
        order and cut into steps of ``batch_size`` rows. The first call
        initializes every candidate from a sample of ``X``. ``cluster_centers_``
        is then the candidate with the lowest ``init_scores_``. ``sample_weight``
        as in :meth:`fit`.
        """
        fitted = hasattr(self, "_state")
        if not fitted:
            n_init = check_params(self)
        source = with_weights(as_source(self, X, reset=not fitted), sample_weight)
        out_of_core = is_out_of_core(X)
        runner = runtime.resolve_runner(self.client if out_of_core else "sync", source)
        if not fitted:
            root = root_seed(self.random_state)
            spec = chain_spec(self, n_init)
            ranges = block_ranges(source, self.batch_size)
            size = spec.init_rows(self.batch_size, source.n_rows)
            self._n_init, self._init_size = n_init, size
            pool = E.init_pool(source, ranges, runner, child(root, SEED_PARTIAL), size)
            self._state = E.init_candidates(spec, pool, root, runner, source.n_features)
            self.n_steps_ = 0
            self.n_passes_ = 0
        state = self._state.copy()
        # partial_fit never stops early (scikit-learn's rule); forgetting is as set now.
        state.stop, state.stopped_at = None, np.zeros_like(state.stopped_at)
        state.forget = forgetting(self)
        if out_of_core:
            ratio = float(self.reassignment_ratio)
            state = E.advance_in_row_order(state, source, runner, self.batch_size, ratio)
        else:
            K.minibatch_step(state, source.read(0, source.n_rows), float(self.reassignment_ratio))
        self._state = state
        self.n_steps_ = state.steps
        self.init_scores_ = state.window_scores()
        self.best_init_ = int(np.argmin(self.init_scores_))
        self.cluster_centers_ = state.centers[self.best_init_].copy()
        if out_of_core:
            self.n_passes_ += 1
            self.inertia_ = -self.score(source)
            if hasattr(self, "labels_"):
                del self.labels_
        else:
            block = source.read(0, source.n_rows)
            labels, inertia, _ = K.block_labels_inertia(block, 0, self.cluster_centers_[None], True)
            assert labels is not None
            self.labels_ = labels[:, 0]
            self.inertia_ = float(inertia[0])
        return self

    def _centers_for(self, source: Source) -> np.ndarray:
        return self.cluster_centers_.astype(source.compute_dtype)

    @takes_storage_options
    def predict(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Index of the nearest center for every row.

        Returns an ndarray for in-memory input and for Sources/paths (or writes
        to ``out``, a ``.zarr`` or ``.npy`` path, and returns the written
        Source's path; an existing ``out`` is replaced only with
        ``overwrite=True``), and a lazy dask array for dask input.
        """
        return apply_blocks(
            self, X, K.block_predict, self._centers_for, np.int32, None, out, overwrite
        )

    @takes_storage_options
    def transform(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Euclidean distance of every row to every center, shape (n_samples, n_clusters)."""
        return apply_blocks(
            self, X, K.block_transform, self._centers_for, None, self.n_clusters, out, overwrite
        )

    @takes_storage_options
    def score_samples(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Minus the squared distance of every row to its nearest center (float64):
        higher is more typical, as a density. Used by :class:`DensityAnomalyDetector`."""
        return apply_blocks(
            self, X, K.block_score_samples, self._centers_for, np.float64, None, out, overwrite
        )

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (scikit-learn's hook for ``get_feature_names_out``)."""
        return int(self.cluster_centers_.shape[0])

    def score_kernel(self) -> tuple[Any, Any]:
        """The per-block task of :meth:`score_samples` and its model argument."""
        check_is_fitted(self, "cluster_centers_")
        return K.block_score_samples, self.cluster_centers_

    @takes_storage_options
    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the labels of ``X`` (``labels_`` for in-memory data)."""
        self.fit(X, sample_weight=sample_weight)
        return self.labels_ if hasattr(self, "labels_") else self.predict(X)

    @takes_storage_options
    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> Any:
        """Fit, then return the distances of ``X`` to the centers (see :meth:`transform`)."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    @takes_storage_options
    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Negative exact inertia of ``X`` with the fitted centers (higher is better),
        each row's squared distance weighted by its ``sample_weight``."""
        check_is_fitted(self, "cluster_centers_")
        source = with_weights(as_source(self, X, reset=False), sample_weight)
        centers = self.cluster_centers_.astype(source.compute_dtype)[None]
        runner = runtime.resolve_runner(self.client, source)
        _, inertia, _ = E.labels_inertia(
            source, runner, centers, False, self.batch_size, self.progress
        )
        return -float(inertia[0])

    def save(self, path: Any, overwrite: bool = False) -> None:
        """Save to directory ``path`` (arrays in ``.npz`` + JSON manifest, atomically);
        a model saved there before is replaced only with ``overwrite=True``."""
        save_model(self, path, overwrite=overwrite)

    def _to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Scalars (JSON) and arrays (npz) that fully describe the fitted model."""
        check_is_fitted(self, "cluster_centers_")
        scalars, arrays = C.chain_to_state(self._state)
        scalars.update(
            {
                "n_features_in_": int(self.n_features_in_),
                "inertia_": float(self.inertia_),
                "best_init_": int(self.best_init_),
                "n_steps_": int(self.n_steps_),
                "n_passes_": int(self.n_passes_),
            }
        )
        arrays.update(
            {"cluster_centers_": self.cluster_centers_, "init_scores_": self.init_scores_}
        )
        if hasattr(self, "init_inertias_"):
            arrays["init_inertias_"] = self.init_inertias_
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in_"] = self.feature_names_in_.astype(str)
        return scalars, arrays

    def _from_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        for name in ("n_features_in_", "inertia_", "best_init_", "n_steps_", "n_passes_"):
            setattr(self, name, scalars[name])
        self.n_iter_ = self.n_passes_
        self.cluster_centers_ = arrays["cluster_centers_"]
        self.init_scores_ = arrays["init_scores_"]
        if "init_inertias_" in arrays:
            self.init_inertias_ = arrays["init_inertias_"]
        if "feature_names_in_" in arrays:
            self.feature_names_in_ = arrays["feature_names_in_"].astype(object)
        centers = arrays["state_centers"]
        if centers.ndim != 3 or centers.shape[1:] != self.cluster_centers_.shape:
            raise ValueError("state_centers does not match cluster_centers_")
        self._state = C.chain_from_state(scalars, arrays)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.input_tags.sparse = True
        return tags


def set_fitted_chain(
    model: StreamingKMeans, chain: C.Chain, n_steps: int, n_passes: int, n_features: int
) -> None:
    """Give ``model`` the state of a chain the engine fitted for it (in passes shared
    with other models): its candidates, the one with the lowest ``init_scores_``
    as ``cluster_centers_``. ``inertia_`` is left to the caller's exact pass."""
    model._state = chain
    model.n_steps_, model.n_passes_ = n_steps, n_passes
    model.n_iter_ = n_passes
    model.n_features_in_ = n_features
    model.init_scores_ = chain.window_scores()
    model.best_init_ = int(np.argmin(model.init_scores_))
    model.cluster_centers_ = chain.centers[model.best_init_].copy()


def center_counts(model: StreamingKMeans) -> np.ndarray:
    """Rows (or weight, forgetting applied) each of ``cluster_centers_`` has absorbed."""
    check_is_fitted(model, "cluster_centers_")
    return model._state.counts[model.best_init_].copy()


def validate_params(model: StreamingKMeans) -> int:
    """Check ``model``'s parameters as ``fit`` does, before any I/O; the effective
    ``n_init`` (1 for an array ``init``)."""
    return check_params(model)


register_model(StreamingKMeans, StreamingKMeans._to_state, StreamingKMeans._from_state)
