"""SampleClusterer: any scikit-learn clusterer fitted on a sample, every row labelled
out of core.

The chapter's DBSCAN recipe at scale: a seeded uniform sample is drawn from the
data (one read of the blocks that hold its rows), the clusterer is fitted on it
in memory, and then every row of the data is labelled block by block, in
parallel, by the labelled sample points: the nearest one, or a vote of the
``n_neighbors`` nearest (a ``KNeighborsClassifier``, as the chapter does after
DBSCAN). Rows farther than ``noise_distance`` from every labelled point are
noise (``-1``); for DBSCAN the labelled points are its core samples and the
distance its ``eps``, which is DBSCAN's own rule for new points.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import cluster
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.utils.validation import check_is_fitted

from .engine.apply import apply_blocks
from .engine.seeds import draw_seed
from .exceptions import DataError, ParameterError
from .inputs import as_source, takes_storage_options
from .persistence import register_model, save_model
from .sources import ArraySource
from .validation import check_float, check_int, check_option, check_seed

__all__ = ["ESTIMATORS", "SampleClusterer", "block_label", "validate_params"]

#: The clusterers known by name (the CLI's ``--estimator``, and saved models).
ESTIMATORS: dict[str, type] = {
    "dbscan": cluster.DBSCAN,
    "hdbscan": cluster.HDBSCAN,
    "optics": cluster.OPTICS,
    "agglomerative": cluster.AgglomerativeClustering,
    "spectral": cluster.SpectralClustering,
    "meanshift": cluster.MeanShift,
    "affinity": cluster.AffinityPropagation,
    "birch": cluster.Birch,
}


class SampleClusterer(ClusterMixin, BaseEstimator):
    """Fit ``estimator`` on a uniform sample of the data; label every row by the sample.

    Parameters
    ----------
    estimator : scikit-learn clusterer or name, default="dbscan"
        Any estimator with ``fit`` and ``labels_`` (a name of :data:`ESTIMATORS`
        builds it with ``estimator_params``).
    estimator_params : dict or None
        Parameters of a named estimator (e.g. ``{"eps": 0.05, "min_samples": 5}``).
    sample_size : int, default=100_000
        Rows drawn uniformly without replacement (all rows when the data have fewer).
    labeler : {"nearest", "knn"}, default="nearest"
        How a row is labelled: by the nearest labelled sample point, or by the
        vote of the ``n_neighbors`` nearest (ties to the lowest label).
    n_neighbors : int, default=5
    noise_distance : float, "auto" or None, default="auto"
        Rows farther than this from every labelled sample point are noise (-1).
        ``"auto"``: DBSCAN's ``eps`` (its core samples are the labelled points),
        else no noise. Sample points the estimator called noise never label a row.
    random_state, client, progress
        As for :class:`StreamingKMeans`.

    Attributes
    ----------
    estimator_ : the fitted clusterer (not kept by :meth:`save`)
    sample_indices_ : ndarray of the sampled rows, sorted
    sample_labels_ : ndarray, the estimator's ``labels_`` of the sample
    labels_ : ndarray, only when fitted on in-memory data; a sampled row keeps the
        estimator's own label
    """

    def __init__(
        self,
        estimator: Any = "dbscan",
        *,
        estimator_params: dict[str, Any] | None = None,
        sample_size: int = 100_000,
        labeler: str = "nearest",
        n_neighbors: int = 5,
        noise_distance: Any = "auto",
        random_state: Any = None,
        client: Any = None,
        progress: bool = True,
    ) -> None:
        self.estimator = estimator
        self.estimator_params = estimator_params
        self.sample_size = sample_size
        self.labeler = labeler
        self.n_neighbors = n_neighbors
        self.noise_distance = noise_distance
        self.random_state = random_state
        self.client = client
        self.progress = progress

    def _make_estimator(self) -> Any:
        if isinstance(self.estimator, str):
            if self.estimator not in ESTIMATORS:
                raise ParameterError(
                    f"estimator={self.estimator!r} is not one of {sorted(ESTIMATORS)}; "
                    "pass a name or a scikit-learn clusterer"
                )
            try:
                return ESTIMATORS[self.estimator](**(self.estimator_params or {}))
            except TypeError as exc:
                raise ParameterError(f"estimator_params for {self.estimator}: {exc}") from exc
        if not hasattr(self.estimator, "fit"):
            raise ParameterError(f"estimator={self.estimator!r} has no fit; pass a clusterer")
        return clone(self.estimator).set_params(**(self.estimator_params or {}))

    def _check_params(self) -> Any:
        check_int("sample_size", self.sample_size, low=1)
        check_option("labeler", self.labeler, ("nearest", "knn"))
        check_int("n_neighbors", self.n_neighbors, low=1)
        check_seed(self.random_state)
        if self.noise_distance not in (None, "auto"):
            check_float("noise_distance", self.noise_distance, low=0.0)
        return self._make_estimator()

    # ------------------------------------------------------------------ fitting

    @takes_storage_options
    def fit(self, X: Any, y: Any = None) -> SampleClusterer:
        """Draw the sample, fit the estimator on it, and build the labeller; for
        in-memory ``X`` also label every row (``labels_``)."""
        est = self._check_params()
        source = as_source(self, X, reset=True)
        idx, sample = source.uniform_sample(int(self.sample_size), draw_seed(self.random_state))
        n = len(idx)
        try:
            est.fit(sample)
        except (ValueError, TypeError) as exc:  # its parameters, or what they ask of the data
            raise ParameterError(
                f"{type(est).__name__} could not be fitted on the {n}-row sample: {exc}"
            ) from exc
        labels = np.asarray(getattr(est, "labels_", None))
        if labels.shape != (n,):
            raise ParameterError(
                f"{type(est).__name__} gave no labels_ after fit; pass a clusterer"
            )
        self.estimator_ = est
        self.sample_indices_ = idx
        self.sample_labels_ = labels.astype(np.int64)
        self._build(sample, *self._reference(est, sample, labels))
        if isinstance(source, ArraySource):
            self.labels_ = self._label(X, None, False, sampled=True)
        elif hasattr(self, "labels_"):
            del self.labels_
        return self

    def _reference(
        self, est: Any, sample: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, float | None]:
        """Which sample points label rows (a mask), and the noise distance."""
        core = getattr(est, "core_sample_indices_", None)
        if isinstance(est, cluster.DBSCAN) and core is not None:
            mask = np.zeros(len(sample), bool)
            mask[core] = True
            radius = float(est.eps) if self.noise_distance == "auto" else self.noise_distance
        else:
            mask = labels >= 0
            radius = None if self.noise_distance == "auto" else self.noise_distance
        if not mask.any():
            raise DataError(
                f"{type(est).__name__} labelled no point of the {len(sample)}-row sample "
                "(all noise); loosen its parameters or draw a larger sample"
            )
        return mask, (None if radius is None else float(radius))

    def _build(self, sample: np.ndarray, mask: np.ndarray, radius: float | None) -> None:
        self.sample_ = sample
        self.reference_mask_ = mask
        self.noise_distance_ = radius
        ref, ref_labels = sample[mask], self.sample_labels_[mask]
        k = min(int(self.n_neighbors), len(ref))
        self._nearest = NearestNeighbors(n_neighbors=1).fit(ref)
        self._vote = None
        if self.labeler == "knn":
            self._vote = KNeighborsClassifier(n_neighbors=k).fit(ref, ref_labels)
        self._ref_labels = ref_labels
        self.n_features_in_ = sample.shape[1]

    # ------------------------------------------------------------------ labelling

    def _label(self, X: Any, out: Any, overwrite: bool, sampled: bool) -> Any:
        """Every row's label; ``sampled``: ``X`` is the fitted data, whose sampled rows
        keep the estimator's own labels."""
        known = (self.sample_indices_, self.sample_labels_) if sampled else None
        labeller = (self._nearest, self._vote, self._ref_labels, self.noise_distance_, known)
        return apply_blocks(
            self, X, block_label, lambda source: labeller, np.int64, None, out, overwrite
        )

    @takes_storage_options
    def predict(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """The label of every row of ``X`` (an ndarray, a lazy dask array, or written to
        ``out``, a ``.zarr`` or ``.npy`` path)."""
        check_is_fitted(self, "sample_labels_")
        return self._label(X, out, overwrite, sampled=False)

    @takes_storage_options
    def fit_predict(self, X: Any, y: Any = None, out: Any = None, overwrite: bool = False) -> Any:
        """Fit, then label every row of ``X`` (a sampled row keeps the estimator's label);
        out of core the labels stream to ``out`` when given."""
        self.fit(X)
        if hasattr(self, "labels_") and out is None:
            return self.labels_
        return self._label(X, out, overwrite, sampled=True)

    # ------------------------------------------------------------------ persistence

    def save(self, path: Any, overwrite: bool = False) -> None:
        """Save the sample, its labels and the labelling rule (not the fitted estimator)."""
        save_model(self, path, overwrite=overwrite)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def block_label(block: np.ndarray, start: int, labeller: Any) -> np.ndarray:
    """Task: the label of every row of one block by the labelled sample points
    (rows farther than the noise distance from all of them: -1; rows that were
    sampled, when ``known`` is given: the estimator's own label)."""
    nearest, vote, ref_labels, radius, known = labeller
    X = block.astype(np.float64, copy=False)
    dist, ind = nearest.kneighbors(X, n_neighbors=1)
    labels = ref_labels[ind[:, 0]] if vote is None else vote.predict(X)
    labels = np.asarray(labels, np.int64)
    if radius is not None:
        labels[dist[:, 0] > radius] = -1
    if known is not None:
        indices, own = known
        lo, hi = np.searchsorted(indices, [start, start + block.shape[0]])
        labels[indices[lo:hi] - start] = own[lo:hi]
    return labels


def validate_params(model: SampleClusterer) -> None:
    """Check ``model``'s parameters as ``fit`` does, before any I/O."""
    model._check_params()


def _to_state(model: SampleClusterer) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    check_is_fitted(model, "sample_labels_")
    est = model.estimator_
    name = next((k for k, v in ESTIMATORS.items() if type(est) is v), None)
    scalars = {
        "n_features_in_": int(model.n_features_in_),
        "noise_distance_": model.noise_distance_,
        "estimator_name": name,
    }
    arrays = {
        "sample_": model.sample_,
        "sample_indices_": model.sample_indices_,
        "sample_labels_": model.sample_labels_,
        "reference_mask_": model.reference_mask_,
    }
    return scalars, arrays


def _from_state(
    model: SampleClusterer, scalars: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    if model.estimator is None and scalars.get("estimator_name"):
        model.estimator = scalars["estimator_name"]
    model.sample_indices_ = arrays["sample_indices_"]
    model.sample_labels_ = arrays["sample_labels_"]
    radius = scalars["noise_distance_"]
    model._build(arrays["sample_"], arrays["reference_mask_"].astype(bool), radius)
    model.n_features_in_ = int(scalars["n_features_in_"])


register_model(SampleClusterer, _to_state, _from_state)
