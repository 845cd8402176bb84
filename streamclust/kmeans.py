"""StreamingKMeans: mini-batch K-Means whose initializations advance in lockstep."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import runtime
from .engine.apply import apply_blocks
from .exceptions import DataError, ParameterError
from .inputs import as_source, is_out_of_core
from .kernels import kmeans as K
from .persistence import FitCheckpoint, fit_fingerprint
from .sources import ArraySource, Source
from .validation import (
    check_checkpoint,
    check_float,
    check_int,
    check_option,
    check_seed,
)

__all__ = ["StreamingKMeans"]

#: At most this many randomly chosen blocks supply the initialization sample.
INIT_BLOCKS = 8

# Purposes of the child seed sequences derived from random_state.
_SEED_INIT, _SEED_CANDIDATE, _SEED_PASS, _SEED_PARTIAL = range(4)


def _child(root: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, *key))


def _seed_int(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1, np.uint32)[0])


class StreamingKMeans(ClusterMixin, TransformerMixin, BaseEstimator):
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
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features)
        An array starts the (single) candidate from those centers.
    n_init : int, default=3
        Number of candidates advanced in lockstep.
    batch_size : int, default=1024
        Rows per mini-batch step.
    init_size : int, default=None
        Rows sampled for initialization; ``3 * batch_size`` when None (at
        least ``3 * n_clusters``), clamped to the number of rows.
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

    # ------------------------------------------------------------------ validation

    def _check_params(self) -> int:
        """Validate parameters before any I/O; return the effective n_init."""
        check_int("n_clusters", self.n_clusters, low=1)
        check_int("n_init", self.n_init, low=1)
        check_int("batch_size", self.batch_size, low=1)
        check_int("init_size", self.init_size, low=1, allow_none=True)
        check_int("max_passes", self.max_passes, low=1)
        check_int("max_steps", self.max_steps, low=1, allow_none=True)
        check_int("last_n", self.last_n, low=1)
        check_option("selection", self.selection, ("last_n", "full"))
        check_int("refine", self.refine, low=0)
        check_float("reassignment_ratio", self.reassignment_ratio, low=0.0, high=1.0)
        check_seed(self.random_state)
        if not isinstance(self.shuffle, (bool, np.bool_)):
            raise ParameterError(f"shuffle={self.shuffle!r} must be True or False")
        check_checkpoint(self.checkpoint, self.random_state)
        if self.init_size is not None and self.init_size < self.n_clusters:
            raise ParameterError(
                f"init_size={self.init_size} is smaller than n_clusters={self.n_clusters}; "
                f"pass init_size >= {self.n_clusters} (or leave it None)"
            )
        if isinstance(self.init, str):
            check_option("init", self.init, ("k-means++", "random"))
            return int(self.n_init)
        init = np.asarray(self.init)
        if init.ndim != 2 or init.shape[0] != self.n_clusters:
            raise ParameterError(
                f"init has shape {init.shape}; an array init needs shape "
                f"(n_clusters={self.n_clusters}, n_features)"
            )
        if not np.isfinite(init).all():
            raise ParameterError("init contains NaN or inf; pass finite initial centers")
        if self.n_init != 1:
            warnings.warn(
                f"Explicit initial center position passed: performing only one init "
                f"instead of n_init={self.n_init}.",
                RuntimeWarning,
                stacklevel=3,
            )
        return 1

    def _effective_init_size(self, n_rows: int) -> int:
        size = self.init_size
        if size is None:
            size = max(3 * self.batch_size, 3 * self.n_clusters)
        return min(size, n_rows)

    def _root_seed(self) -> np.random.SeedSequence:
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(
            self.random_state, bool
        ):
            return np.random.SeedSequence(int(self.random_state))
        rs = check_random_state(self.random_state)
        return np.random.SeedSequence(rs.randint(0, 2**31 - 1, size=4).tolist())

    # ------------------------------------------------------------------ initialization

    def _init_candidates(
        self, pool: np.ndarray, n_init: int, root: np.random.SeedSequence, runner: runtime.Runner
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Initial centers (n_init, k, d) and reassignment RNG states of every candidate."""
        k = self.n_clusters
        if pool.shape[0] < k:
            raise DataError(
                f"n_clusters={k} exceeds the {pool.shape[0]} rows seen at initialization "
                f"(n_samples={pool.shape[0]}); pass more rows or lower n_clusters"
            )
        if not isinstance(self.init, str) and np.shape(self.init)[1] != pool.shape[1]:
            raise DataError(
                f"init has {np.shape(self.init)[1]} features but the data has {pool.shape[1]}; "
                "pass centers of the data's width"
            )
        seeds = [_child(root, _SEED_CANDIDATE, c).spawn(2) for c in range(n_init)]
        states = [dict(np.random.PCG64(rng_ss).state) for _, rng_ss in seeds]
        if not isinstance(self.init, str):
            centers = np.repeat(np.asarray(self.init, dtype=pool.dtype)[None], n_init, axis=0)
        elif self.init == "k-means++":
            # A task per group of candidates, on workers or pool threads (one BLAS thread
            # each, like the steps): a candidate depends only on its own seed.
            seed_ints = [_seed_int(init_ss) for init_ss, _ in seeds]
            groups = np.array_split(np.arange(n_init), min(n_init, runner.n_workers))
            with runner.parallel():
                tasks = [
                    functools.partial(
                        runner.submit, K.kmeans_plusplus, pool, k, [seed_ints[i] for i in group]
                    )
                    for group in groups
                ]
                futures = [task() for task in tasks]
                centers = np.concatenate(
                    [runner.result(f, task) for f, task in zip(futures, tasks, strict=True)]
                )
        else:
            centers = np.stack(
                [
                    pool[np.random.default_rng(init_ss).choice(len(pool), size=k, replace=False)]
                    for init_ss, _ in seeds
                ]
            )
        return centers, states

    def _init_pool(
        self,
        source: Source,
        ranges: Sequence[tuple[int, int]],
        runner: runtime.Runner,
        root: np.random.SeedSequence,
    ) -> np.ndarray:
        """``init_size`` rows sampled uniformly from up to INIT_BLOCKS random blocks."""
        size = self._effective_init_size(source.n_rows)
        rng = np.random.default_rng(_child(root, _SEED_INIT))
        chosen = np.sort(rng.choice(len(ranges), size=min(INIT_BLOCKS, len(ranges)), replace=False))
        picked = [ranges[i] for i in chosen]
        per_block = math.ceil(size / len(picked))
        seeds = rng.integers(0, 2**31 - 1, size=len(picked))
        by_start = {lo: int(seed) for (lo, _), seed in zip(picked, seeds, strict=True)}
        # The picked blocks are read in parallel, their samples come back in order.
        pool = np.concatenate(
            list(
                runtime.map_blocks(
                    K.sample_block_rows, source, per_block, by_start, runner=runner, ranges=picked
                )
            )
        )
        if pool.shape[0] > size:
            pool = pool[np.sort(rng.choice(pool.shape[0], size=size, replace=False))]
        return pool

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any = None) -> StreamingKMeans:
        """Fit on an array, dask array, Source or path (see the class docstring)."""
        n_init = self._check_params()
        source = as_source(self, X, reset=True)
        runner = runtime.resolve_runner(self.client, source)
        state = self._lockstep_fit(source, runner, n_init)
        self.init_scores_ = state.window_scores()

        in_memory = isinstance(source, ArraySource)
        exact: tuple[np.ndarray | None, np.ndarray, np.ndarray] | None = None
        if self.selection == "full":
            labels, inertias, sizes = self._labels_inertia(source, runner, state.centers, in_memory)
            self.init_inertias_ = inertias
            best = int(np.argmin(inertias))
            exact = (None if labels is None else labels[:, best], inertias[best], sizes[best])
        else:
            best = int(np.argmin(self.init_scores_))
        self.best_init_ = best
        centers_best = state.centers[best].copy()
        if self.refine:
            centers_best = self._lloyd(source, runner, centers_best)
            state.centers[best] = centers_best
            exact = None
        if exact is None:  # one pass for the chosen centers (the full selection had it)
            labels, inertia, sizes = self._labels_inertia(
                source, runner, centers_best[None], in_memory
            )
            exact = (None if labels is None else labels[:, 0], inertia[0], sizes[0])
        labels, inertia_best, sizes_best = exact
        self.cluster_centers_ = centers_best
        self.inertia_ = float(inertia_best)
        if in_memory:
            self.labels_ = labels
        elif hasattr(self, "labels_"):
            del self.labels_
        distinct = int(np.count_nonzero(sizes_best))
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                f"({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _lockstep_fit(self, source: Source, runner: runtime.Runner, n_init: int) -> K.Chain:
        """Initialize ``n_init`` candidates and run every step; the merged state."""
        return _lockstep_fit_many([self], source, runner, [n_init], self.checkpoint)[0]

    def _pass_plan(
        self,
        ranges: Sequence[tuple[int, int]],
        batches: list[int],
        root: np.random.SeedSequence,
        p: int,
        remaining: int,
    ) -> list[tuple[int, int, tuple[Any, ...]]]:
        """Blocks of pass ``p`` in visiting order, each with its permutation seed and step count."""
        order = np.arange(len(ranges))
        seeds: list[int | None] = [None] * len(ranges)
        if self.shuffle:
            rng = np.random.default_rng(_child(root, _SEED_PASS, p))
            order = rng.permutation(len(ranges))
            seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=len(ranges))]
        plan = []
        for i in order:
            if remaining <= 0:
                break
            n = min(batches[i], remaining)
            remaining -= n
            lo, hi = ranges[int(i)]
            plan.append((lo, hi, (seeds[i], n, self.batch_size, float(self.reassignment_ratio))))
        return plan

    def _labels_inertia(
        self, source: Source, runner: runtime.Runner, centers: np.ndarray, want_labels: bool
    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """Exact float64 inertia of each candidate (one pass), the rows nearest to each
        of its centers, and labels when asked."""
        inertia = np.zeros(centers.shape[0], np.float64)
        sizes = np.zeros(centers.shape[:2], np.int64)
        labels = []
        with runtime.progress_bar(source.n_rows, "inertia", self.progress) as bar:
            for lab, part, part_sizes in runtime.map_blocks(
                K.block_labels_inertia,
                source,
                centers,
                want_labels,
                runner=runner,
                progress=bar.update,
            ):
                inertia += part
                sizes += part_sizes
                if want_labels:
                    labels.append(lab)
        return (np.concatenate(labels) if want_labels else None), inertia, sizes

    def _lloyd(self, source: Source, runner: runtime.Runner, centers: np.ndarray) -> np.ndarray:
        for it in range(self.refine):
            sums = np.zeros(centers.shape, np.float64)
            counts = np.zeros(centers.shape[0], np.float64)
            with runtime.progress_bar(source.n_rows, f"refine {it + 1}", self.progress) as bar:
                for s, c, _ in runtime.map_blocks(
                    K.block_lloyd_stats, source, centers, runner=runner, progress=bar.update
                ):
                    sums += s
                    counts += c
            hit = counts > 0
            centers = centers.copy()
            centers[hit] = (sums[hit] / counts[hit][:, None]).astype(centers.dtype)
        return centers

    def partial_fit(self, X: Any, y: Any = None) -> StreamingKMeans:
        """Advance every candidate on new data.

        An in-memory ``X`` is one mini-batch step (as scikit-learn's
        ``partial_fit``); a Source, path or dask array is read once in storage
        order and cut into steps of ``batch_size`` rows. The first call
        initializes every candidate from a sample of ``X``. ``cluster_centers_``
        is then the candidate with the lowest ``init_scores_``.
        """
        fitted = hasattr(self, "_state")
        if not fitted:
            n_init = self._check_params()
        source = as_source(self, X, reset=not fitted)
        out_of_core = is_out_of_core(X)
        runner = runtime.resolve_runner(self.client if out_of_core else "sync", source)
        if not fitted:
            root = self._root_seed()
            ranges = source.blocks(min_rows=self.batch_size)
            pool = self._init_pool(source, ranges, runner, _child(root, _SEED_PARTIAL))
            centers, rng_states = self._init_candidates(pool, n_init, root, runner)
            self._state = K.new_chain(centers, rng_states, self.last_n, tuple(range(n_init)))
            self.n_steps_ = 0
            self.n_passes_ = 0
        state = self._state
        if out_of_core:
            ranges = source.blocks(min_rows=self.batch_size)
            steps = [
                (
                    lo,
                    hi,
                    (
                        None,
                        math.ceil((hi - lo) / self.batch_size),
                        self.batch_size,
                        float(self.reassignment_ratio),
                    ),
                )
                for lo, hi in ranges
            ]
            state = runtime.scan(K.scan_block, source, [state], steps, runner=runner)[0]
        else:
            state = state.copy()
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

    # ------------------------------------------------------------------ prediction

    def _centers_for(self, source: Source) -> np.ndarray:
        return self.cluster_centers_.astype(source.compute_dtype)

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

    def transform(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Euclidean distance of every row to every center, shape (n_samples, n_clusters)."""
        return apply_blocks(
            self, X, K.block_transform, self._centers_for, None, self.n_clusters, out, overwrite
        )

    def score_samples(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """Minus the squared distance of every row to its nearest center (float64):
        higher is more typical, as a density. Used by :class:`DensityAnomalyDetector`."""
        return apply_blocks(
            self, X, K.block_score_samples, self._centers_for, np.float64, None, out, overwrite
        )

    def _score_kernel(self) -> tuple[Any, Any]:
        """The per-block task of :meth:`score_samples` and its model argument."""
        check_is_fitted(self, "cluster_centers_")
        return K.block_score_samples, self.cluster_centers_

    def fit_predict(self, X: Any, y: Any = None) -> Any:
        """Fit, then return the labels of ``X`` (``labels_`` for in-memory data)."""
        self.fit(X)
        return self.labels_ if hasattr(self, "labels_") else self.predict(X)

    def score(self, X: Any, y: Any = None) -> float:
        """Negative exact inertia of ``X`` with the fitted centers (higher is better)."""
        check_is_fitted(self, "cluster_centers_")
        source = as_source(self, X, reset=False)
        centers = self.cluster_centers_.astype(source.compute_dtype)[None]
        runner = runtime.resolve_runner(self.client, source)
        _, inertia, _ = self._labels_inertia(source, runner, centers, False)
        return -float(inertia[0])

    # ------------------------------------------------------------------ persistence

    def save(self, path: Any, overwrite: bool = False) -> None:
        """Save to directory ``path`` (arrays in ``.npz`` + JSON manifest, atomically);
        a model saved there before is replaced only with ``overwrite=True``."""
        from .persistence import save_model

        save_model(self, path, overwrite=overwrite)

    def _to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Scalars (JSON) and arrays (npz) that fully describe the fitted model."""
        check_is_fitted(self, "cluster_centers_")
        scalars, arrays = K.chain_to_state(self._state)
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
        self.cluster_centers_ = arrays["cluster_centers_"]
        self.init_scores_ = arrays["init_scores_"]
        if "init_inertias_" in arrays:
            self.init_inertias_ = arrays["init_inertias_"]
        if "feature_names_in_" in arrays:
            self.feature_names_in_ = arrays["feature_names_in_"].astype(object)
        centers = arrays["state_centers"]
        if centers.ndim != 3 or centers.shape[1:] != self.cluster_centers_.shape:
            raise ValueError("state_centers does not match cluster_centers_")
        self._state = K.chain_from_state(scalars, arrays)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def _lockstep_fit_many(
    models: list[StreamingKMeans],
    source: Source,
    runner: runtime.Runner,
    n_inits: list[int],
    checkpoint: Any = None,
) -> list[K.Chain]:
    """Fit several models over the same passes: each block is read once for all of them.

    The models may differ in ``n_clusters``, ``init`` and ``n_init``; they share
    the data plan (``batch_size``, ``max_steps``/``max_passes``, ``shuffle``,
    ``random_state``), so each gets exactly the state it would get alone.
    With a ``checkpoint`` directory (one model only), the state is saved after
    every block and a matching saved state is resumed from.
    """
    lead = models[0]
    root = lead._root_seed()
    ranges = source.blocks(min_rows=lead.batch_size)
    batches = [math.ceil((hi - lo) / lead.batch_size) for lo, hi in ranges]
    per_pass = sum(batches)
    total = lead.max_steps if lead.max_steps is not None else lead.max_passes * per_pass
    n_passes = math.ceil(total / per_pass)
    saver = (
        None if checkpoint is None else _FitCheckpoint(checkpoint, fit_fingerprint(lead, source))
    )
    resumed = None if saver is None else saver.load_chain()
    chains: list[K.Chain] = []
    owner: list[int] = []
    if resumed is not None:
        merged, start = resumed
        chains = K.split_chain(merged, min(merged.centers.shape[0], runner.n_workers))
        owner = [0] * len(chains)
    else:
        start = (0, 0)
        pools: dict[int, np.ndarray] = {}
        for m_idx, (model, n_init) in enumerate(zip(models, n_inits, strict=True)):
            size = model._effective_init_size(source.n_rows)
            if size not in pools:  # the same sample for every model of the same init_size
                pools[size] = model._init_pool(source, ranges, runner, root)
            centers, rng_states = model._init_candidates(pools[size], n_init, root, runner)
            merged = K.new_chain(centers, rng_states, model.last_n, tuple(range(n_init)))
            n_groups = min(n_init, max(1, runner.n_workers // len(models)))
            chains += K.split_chain(merged, n_groups)
            owner += [m_idx] * n_groups
        if saver is not None:
            saver.save_chains(chains, start)
    done = 0
    for p in range(n_passes):
        steps = lead._pass_plan(ranges, batches, root, p, total - done)
        done += sum(s[2][1] for s in steps)
        if (p, len(steps)) <= start:
            continue
        skip = start[1] if p == start[0] else 0
        on_step = None
        if saver is not None:

            def on_step(i: int, states: list[K.Chain], p: int = p, skip: int = skip) -> None:
                saver.save_chains(states, (p, skip + i + 1))

        with runtime.progress_bar(
            sum(hi - lo for lo, hi, _ in steps[skip:]), f"pass {p + 1}/{n_passes}", lead.progress
        ) as bar:
            chains = runtime.scan(
                K.scan_block,
                source,
                chains,
                steps[skip:],
                runner=runner,
                progress=bar.update,
                on_step=on_step,
            )
    states = []
    for m_idx, model in enumerate(models):
        model._state = _merge_chains([c for c, o in zip(chains, owner, strict=True) if o == m_idx])
        model.n_steps_ = done
        model.n_passes_ = n_passes
        states.append(model._state)
    return states


class _FitCheckpoint(FitCheckpoint):
    """The scan state of one fit in ``DIR/kmeans-fit.npz``: chains, position, fingerprint."""

    def __init__(self, directory: Any, fingerprint: dict[str, Any]) -> None:
        super().__init__(directory, "kmeans-fit.npz", fingerprint)

    def load_chain(self) -> tuple[K.Chain, tuple[int, int]] | None:
        saved = self.load()
        if saved is None:
            return None
        meta, arrays = saved
        return K.chain_from_state(meta["chain"], arrays), (int(meta["pass"]), int(meta["step"]))

    def save_chains(self, chains: list[K.Chain], position: tuple[int, int]) -> None:
        scalars, arrays = K.chain_to_state(_merge_chains(chains))
        self.save({"chain": scalars, "pass": position[0], "step": position[1]}, arrays)


def _merge_chains(chains: list[K.Chain]) -> K.Chain:
    order = np.argsort(np.concatenate([c.candidates for c in chains]))
    merged = K.Chain(
        centers=np.concatenate([c.centers for c in chains])[order],
        counts=np.concatenate([c.counts for c in chains])[order],
        since_reassign=np.concatenate([c.since_reassign for c in chains])[order],
        rng_states=[s for c in chains for s in c.rng_states],
        recent=np.concatenate([c.recent for c in chains])[order],
        n_recorded=chains[0].n_recorded,
        steps=chains[0].steps,
        candidates=tuple(range(len(order))),
    )
    merged.rng_states = [merged.rng_states[i] for i in order]
    return merged
