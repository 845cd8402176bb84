"""DensityAnomalyDetector: flag the rows whose density falls below a percentile of all densities."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

import numpy as np
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from . import runtime
from .engine.plan import block_ranges
from .exceptions import ParameterError
from .inputs import as_source, is_out_of_core, takes_storage_options
from .kernels import quantile as Q
from .persistence import model_from_parts, model_parts, register_model, save_model
from .sources import ArrayWriter, open_source
from .validation import check_float, check_int, check_option

__all__ = [
    "DensityAnomalyDetector",
    "QuantileSketch",
    "restore_window",
    "update_and_score",
    "validate_stream_params",
    "window_arrays",
    "window_length",
]


class QuantileSketch:
    """A mergeable quantile sketch: a t-digest (the ``fastdigest`` library).

    A t-digest keeps its centroids small at both tails, where density
    thresholds such as "the 4th percentile" live: on a million heavy-tailed
    values the rank error there is about 0.003 percentage points, merged from
    blocks or not. It is deterministic (no random compaction), so a stream
    replayed after a restart gives the same thresholds, and it serializes to
    bytes (no pickle) for checkpoints and for shipping between workers.
    """

    def __init__(self, max_centroids: int = 1000) -> None:
        from fastdigest import TDigest

        self._digest = TDigest(max_centroids=max_centroids)

    def update(self, values: np.ndarray) -> QuantileSketch:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size:
            self._digest.batch_update(cast(Any, values))  # takes ndarrays as they are
        return self

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        self._digest.merge_inplace(other._digest)
        return self

    @property
    def n(self) -> int:
        return int(self._digest.n_values)

    def percentile(self, q: float) -> float:
        """The value at ``q`` percent of the ranks seen."""
        return float(self._digest.quantile(q / 100.0))

    def to_bytes(self) -> bytes:
        return bytes(self._digest.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> QuantileSketch:
        from fastdigest import TDigest

        new = cls.__new__(cls)
        new._digest = TDigest.from_bytes(bytes(data))
        return new


def _first_column(block: np.ndarray, start: int, arg: Any) -> np.ndarray:
    return block[:, 0]


class _Precomputed(BaseEstimator):
    """``model="precomputed"``: the data's single column holds the scores."""

    def __init__(self) -> None:
        self.n_features_in_ = 1

    @takes_storage_options
    def fit(self, X: Any, y: Any = None) -> _Precomputed:
        return self

    @takes_storage_options
    def score_samples(self, X: Any) -> Any:
        if is_out_of_core(X):
            source = open_source(X)
            return np.concatenate([b[:, 0] for _, b in source.iter_blocks()])
        return np.asarray(X, dtype=np.float64)[:, 0]

    def score_kernel(self) -> tuple[Any, Any]:
        return _first_column, None


def _model_scores(block: np.ndarray, start: int, kernel: Any, arg: Any) -> np.ndarray:
    """Scores of one block: our estimators' own kernel, or ``arg.score_samples``."""
    if kernel is None:
        return np.asarray(arg.score_samples(block), dtype=np.float64)
    return np.asarray(kernel(block, start, arg), dtype=np.float64)


#: Rows per task of the exact search: its temporaries are a few times the block's scores.
_SMALL_BLOCK_ROWS = 1 << 17

#: The sketch summarizes the logical blocks of this batch size (see engine.plan), so
#: its threshold does not depend on how the data are stored.
SKETCH_BATCH_ROWS = 4096


def _small_ranges(source: Any) -> list[tuple[int, int]]:
    """The source's blocks cut into pieces of about 2^17 rows, on chunk boundaries when
    the source has chunks (each piece then decompresses whole chunks only)."""
    step = _SMALL_BLOCK_ROWS
    chunk = getattr(source, "chunk_rows", None)
    if chunk:
        step = chunk * max(1, step // chunk)
    return [(lo, min(lo + step, hi)) for blo, hi in source.blocks() for lo in range(blo, hi, step)]


def _block_summary(
    block: np.ndarray, start: int, kernel: Any, arg: Any, brackets: list[Q.Bracket]
) -> list[np.ndarray]:
    """Task: one block's scores summarized for the exact percentile search."""
    return Q.summarize(_model_scores(block, start, kernel, arg), brackets)


def _block_sketch(block: np.ndarray, start: int, kernel: Any, arg: Any) -> bytes:
    """Task: one block's scores as a serialized quantile sketch."""
    return QuantileSketch().update(_model_scores(block, start, kernel, arg)).to_bytes()


def _block_detect(
    block: np.ndarray, start: int, kernel: Any, arg: Any, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Task: scores and -1/1 flags (int8) of one block."""
    scores = _model_scores(block, start, kernel, arg)
    return scores, flags(scores, threshold)


def flags(scores: np.ndarray, threshold: float) -> np.ndarray:
    """-1 (int8) where a score falls strictly below ``threshold``, 1 elsewhere."""
    return np.where(scores < threshold, -1, 1).astype(np.int8)


class DensityAnomalyDetector(OutlierMixin, BaseEstimator):
    """Flags as anomalies the rows whose score falls below a percentile of the scores.

    The score is the model's ``score_samples``: the log-density of a
    :class:`StreamingGaussianMixture` (or scikit-learn ``GaussianMixture``),
    minus the squared distance to the nearest center for
    :class:`StreamingKMeans`, or that of any estimator with ``score_samples``.
    A fitted model is used as it is; an unfitted one is cloned and fitted on
    the data given to :meth:`fit` (or updated by :meth:`partial_fit`).

    Parameters
    ----------
    model : estimator or "precomputed"
        ``"precomputed"``: the data hold the scores themselves, one column.
    percentile : float in [0, 100], default=4.0
        Rows scoring strictly below this percentile of the scores are anomalies.
    method : {"exact", "sketch"}, default="exact"
        ``"exact"``: :meth:`fit` computes ``np.percentile(scores, percentile)``
        bit for bit over data of any size in a few passes (usually two) with
        memory independent of the rows; :meth:`partial_fit` keeps the scores of
        the last ``window`` batches. ``"sketch"``: a mergeable t-digest
        (:class:`QuantileSketch`), one pass, blocks summarized in parallel.
    window : int, optional
        :meth:`partial_fit` keeps the threshold over the last ``window``
        batches (required with ``method="exact"``); None: all batches (sketch).
    client, progress
        As for the estimators.

    Attributes
    ----------
    model_ : the fitted model
    threshold_ : float
    n_passes_ : int
        Passes over the data the last :meth:`fit` took (model fit excluded).
    """

    def __init__(
        self,
        model: Any,
        *,
        percentile: float = 4.0,
        method: str = "exact",
        window: int | None = None,
        client: Any = None,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.percentile = percentile
        self.method = method
        self.window = window
        self.client = client
        self.progress = progress

    def _check_params(self) -> None:
        check_float("percentile", self.percentile, low=0.0, high=100.0)
        check_option("method", self.method, ("exact", "sketch"))
        check_int("window", self.window, low=1, allow_none=True)
        if self.model != "precomputed" and not callable(getattr(self.model, "score_samples", None)):
            raise ParameterError(
                f"model={type(self.model).__name__} has no score_samples; pass a "
                "StreamingGaussianMixture, a StreamingKMeans or another density model"
            )

    def _kernel(self) -> tuple[Any, Any]:
        """The block task computing the model's scores, and its argument."""
        model: Any = self.model_
        own = getattr(model, "score_kernel", None)
        return own() if own is not None else (None, model)

    def _use_model(self, X: Any, how: str) -> None:
        current: Any = getattr(self, "model_", None)
        if current is not None:
            if how == "partial_fit" and getattr(self, "_owns_model", False):
                current.partial_fit(X)
            return
        model: Any = _Precomputed() if self.model == "precomputed" else self.model
        try:
            check_is_fitted(model)
            self._owns_model = False
        except NotFittedError:
            if is_out_of_core(X) and not type(model).__module__.startswith("streamclust"):
                raise ParameterError(
                    f"model={type(model).__name__} is not fitted and cannot read {X!r} "
                    "block by block; fit it first, or use a streamclust estimator"
                ) from None
            model, self._owns_model = clone(model), True
            getattr(model, how)(X)
        self.model_ = model
        self.n_features_in_ = self.model_.n_features_in_

    # ------------------------------------------------------------------ fitting

    @takes_storage_options
    def fit(self, X: Any, y: Any = None) -> DensityAnomalyDetector:
        """Fit the model if it is not fitted, then the threshold over every row of ``X``."""
        self._check_params()
        for name in ("model_", "_window"):
            self.__dict__.pop(name, None)
        self._use_model(X, "fit")
        source = as_source(self, X, reset=False)
        q = float(self.percentile)
        if not is_out_of_core(X):
            self.threshold_ = float(np.percentile(self.model_.score_samples(X), q))
            self.n_passes_ = 1
            return self
        kernel, arg = self._kernel()
        runner = runtime.resolve_runner(self.client, source)
        if self.method == "sketch":
            sketch = QuantileSketch()
            ranges = block_ranges(source, SKETCH_BATCH_ROWS)
            parts = runtime.map_blocks(
                _block_sketch, source, kernel, arg, runner=runner, ranges=ranges
            )
            for part in parts:
                sketch.merge(QuantileSketch.from_bytes(part))
            self.threshold_, self.n_passes_ = sketch.percentile(q), 1
            return self

        ranges = _small_ranges(source)

        def run_pass(brackets: list[Q.Bracket]) -> Any:
            return runtime.map_blocks(
                _block_summary, source, kernel, arg, brackets, runner=runner, ranges=ranges
            )

        self.threshold_, self.n_passes_ = Q.exact_percentile(run_pass, source.n_rows, q)
        return self

    def _check_stream_params(self) -> None:
        """The parameters :meth:`partial_fit` needs (checked before a stream starts)."""
        self._check_params()
        if self.method == "exact" and self.window is None:
            raise ParameterError(
                "method='exact' over a stream needs window=N (the last N batches); "
                "pass window=... or method='sketch'"
            )

    @takes_storage_options
    def partial_fit(self, X: Any, y: Any = None) -> DensityAnomalyDetector:
        """Add one batch: update the model if the detector fitted it, then the threshold
        over the window of recent batches."""
        self._partial_fit(X)
        return self

    def _partial_fit(self, X: Any) -> np.ndarray:
        """:meth:`partial_fit`, returning the batch's scores under the updated model."""
        self._check_stream_params()
        self._use_model(X, "partial_fit")
        scores = np.asarray(self.model_.score_samples(X), dtype=np.float64)
        if not hasattr(self, "_window"):
            self._window: deque[Any] = deque(maxlen=self.window)
        q = float(self.percentile)
        if self.method == "exact":
            self._window.append(scores)
            self.threshold_ = float(np.percentile(np.concatenate(list(self._window)), q))
        else:
            self._window.append(QuantileSketch().update(scores))
            merged = QuantileSketch()
            for sk in self._window:
                merged.merge(sk)
            self.threshold_ = merged.percentile(q)
        self.n_passes_ = 1
        return scores

    # ------------------------------------------------------------------ scoring

    @takes_storage_options
    def score_samples(self, X: Any, out: Any = None, overwrite: bool = False) -> Any:
        """The model's score of every row (higher is more normal)."""
        check_is_fitted(self, "threshold_")
        if out is None:
            return self.model_.score_samples(X)
        return self.model_.score_samples(X, out=out, overwrite=overwrite)

    @takes_storage_options
    def decision_function(self, X: Any) -> Any:
        """``score_samples(X) - threshold_``: negative for anomalies."""
        return self.score_samples(X) - self.threshold_

    @takes_storage_options
    def predict(self, X: Any) -> Any:
        """-1 for anomalies, 1 for normal rows (as scikit-learn's outlier detectors)."""
        dec = self.decision_function(X)
        if isinstance(dec, np.ndarray):
            return np.where(dec < 0, -1, 1)
        return (dec >= 0).astype(np.int8) * 2 - 1  # a lazy dask array

    def save(self, path: Any, overwrite: bool = False) -> None:
        """Save the detector and its model to directory ``path`` (as the estimators'
        ``save``); ``streamclust.load`` gives them back, its stream window included."""
        save_model(self, path, overwrite=overwrite)

    @takes_storage_options
    def detect(
        self, X: Any, out: Any = None, scores_out: Any = None, overwrite: bool = False
    ) -> dict[str, Any]:
        """Score and flag every row of ``X`` in one pass.

        Flags (int8, -1 anomaly / 1 normal) stream to ``out`` and scores
        (float64) to ``scores_out`` (``.zarr`` or ``.npy`` paths, written
        atomically; nothing is left behind on error; an existing path is
        replaced only with ``overwrite``). Returns a summary:
        rows, anomalies, their rate and the threshold.
        """
        check_is_fitted(self, "threshold_")
        source = as_source(self, X, reset=False)
        kernel, arg = self._kernel()
        runner = runtime.resolve_runner(self.client, source)
        writers = [
            None if path is None else ArrayWriter(path, n_rows=source.n_rows, overwrite=overwrite)
            for path in (out, scores_out)
        ]
        anomalies = 0
        try:
            parts = runtime.map_blocks(
                _block_detect, source, kernel, arg, self.threshold_, runner=runner
            )
            with runtime.progress_bar(source.n_rows, "detect", self.progress) as bar:
                for scores, flags in parts:
                    anomalies += int((flags < 0).sum())
                    if writers[0] is not None:
                        writers[0].append(flags)
                    if writers[1] is not None:
                        writers[1].append(scores)
                    bar.update(len(flags))
            written = [None if w is None else str(w.commit()) for w in writers]
        finally:
            for w in writers:
                if w is not None:
                    w.abort()
        return {
            "rows": source.n_rows,
            "anomalies": anomalies,
            "rate": anomalies / source.n_rows,
            "threshold": self.threshold_,
            "out": written[0],
            "scores_out": written[1],
        }


def validate_stream_params(detector: DensityAnomalyDetector) -> None:
    """Check the parameters ``partial_fit`` needs, before a stream starts."""
    detector._check_stream_params()


def update_and_score(detector: DensityAnomalyDetector, X: Any) -> np.ndarray:
    """:meth:`~DensityAnomalyDetector.partial_fit` on ``X``, returning the batch's scores
    under the updated model (computed once, for the caller to flag the batch)."""
    return detector._partial_fit(X)


def window_length(detector: DensityAnomalyDetector) -> int:
    """Batches in the detector's stream window."""
    return len(getattr(detector, "_window", ()))


def window_arrays(detector: DensityAnomalyDetector) -> dict[str, np.ndarray]:
    """The stream state of a detector as arrays: ``threshold`` and one ``window_NNNNNN``
    per batch in the window (its scores, or its sketch's bytes)."""
    arrays: dict[str, np.ndarray] = {"threshold": np.array(detector.threshold_)}
    for i, item in enumerate(getattr(detector, "_window", ())):
        if isinstance(item, np.ndarray):
            arrays[f"window_{i:06d}"] = item
        else:
            arrays[f"window_{i:06d}"] = np.frombuffer(item.to_bytes(), dtype=np.uint8)
    return arrays


def restore_window(
    detector: DensityAnomalyDetector, model: Any, arrays: dict[str, np.ndarray]
) -> DensityAnomalyDetector:
    """Give a new ``detector`` (built with a stream's parameters) the fitted ``model``,
    which it owns and updates on :meth:`~DensityAnomalyDetector.partial_fit`, and the
    stream state :func:`window_arrays` saved."""
    detector.model_, detector._owns_model = model, True
    detector.n_features_in_ = model.n_features_in_
    detector.threshold_ = float(arrays["threshold"])
    detector.n_passes_ = 1
    detector._window = deque(maxlen=detector.window)
    for name in sorted(n for n in arrays if n.startswith("window_")):
        item = arrays[name]
        if detector.method == "exact":
            detector._window.append(item)
        else:
            detector._window.append(QuantileSketch.from_bytes(item.tobytes()))
    return detector


def _detector_state(det: DensityAnomalyDetector) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    check_is_fitted(det, "threshold_")
    scalars: dict[str, Any] = {
        "threshold_": float(det.threshold_),
        "n_passes_": int(det.n_passes_),
        "owns_model": bool(getattr(det, "_owns_model", False)),
        "streaming": hasattr(det, "_window"),
    }
    arrays = window_arrays(det) if hasattr(det, "_window") else {}
    if isinstance(det.model_, _Precomputed):
        scalars["model"] = "precomputed"
    else:
        scalars["model"], model_arrays = model_parts(det.model_)
        arrays |= {f"model__{name}": value for name, value in model_arrays.items()}
    return scalars, arrays


def _restore_detector(
    det: DensityAnomalyDetector, scalars: dict[str, Any], arrays: dict[str, np.ndarray]
) -> None:
    if scalars["model"] == "precomputed":
        model: Any = _Precomputed()
    else:
        prefix = "model__"
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        model = det.model = model_from_parts(scalars["model"], own)
    if scalars["streaming"]:
        restore_window(det, model, arrays)
    det.model_, det.n_features_in_ = model, model.n_features_in_
    det._owns_model = bool(scalars["owns_model"])
    det.threshold_, det.n_passes_ = float(scalars["threshold_"]), int(scalars["n_passes_"])


register_model(DensityAnomalyDetector, _detector_state, _restore_detector)
