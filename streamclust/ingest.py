"""Exactly-once streaming ingest of batch files that land in a directory or a prefix.

The producer's contract: write a batch under a temporary name ending in
``.tmp`` (or any name not ending in ``.npy``, ``.csv`` or ``.parquet``), then
rename it to its final name in the same directory. A rename is atomic, so a
file with a final name is complete; nothing else is ever read. In object
storage (``s3://bucket/incoming/``) a PUT is atomic: an object is complete once
listed, and the ledger records its size and ETag (see :mod:`.landing`).

Batches are applied in name order (name them so that this is their time
order, e.g. ``2026-11-23T10-00-05_000123.npy``). Each batch is read, checked,
applied with ``partial_fit`` (to the model, or to a
:class:`DensityAnomalyDetector` that owns the model), and with ``detect`` its
scores and -1/1 flags are written to ``state/scores/`` and ``state/flags/``.

Exactly once: the ledger of applied batches, the model and the detector live
in one checkpoint directory, written in full under a temporary name, flushed
to disk, renamed, and then published by atomically replacing ``state/LATEST``.
A process killed at any point restarts from the last published checkpoint
and re-applies, in the same order, the batches after it: the result is
bit-identical to an uninterrupted run, and no batch is skipped or counted
twice. A batch that cannot be used (unreadable, wrong width, NaN or inf,
empty) is moved to ``state/rejected/`` next to a ``.reason`` file, and the
stream goes on (an object stays in its bucket unless asked to be moved, and
is not tried again until it is uploaded anew). An object uploaded again under
a name already applied is refused with a reason, never applied twice.

On a Dask cluster (``client``), each batch is read and checked on the driver
and its update runs as one task on a worker. If the scheduler
goes away, the stream waits up to ``reconnect_timeout`` seconds for it (and a
worker) to come back and runs the lost update again; past that it
checkpoints the batches applied so far and raises :class:`SchedulerError`,
and rerunning the same command resumes exactly once.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import runtime
from .anomaly import DensityAnomalyDetector, flags, update_and_score
from .drift import PageHinkley
from .exceptions import DataError, ParameterError, SchedulerError, StreamclustError
from .kmeans import StreamingKMeans, center_counts
from .landing import Batch, open_landing
from .persistence import write_atomic
from .sources import is_url
from .stream_state import Ledger, StreamState, new_detector
from .validation import check_finite_block


def _write_npy(path: Path, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_atomic(path, buf.getvalue())


@dataclass
class BatchResult:
    name: str
    rows: int
    anomalies: int | None = None
    rejected: str | None = None
    drift: bool = False


class Ingest:
    """Apply the batch files of ``incoming`` to a model, exactly once, with checkpoints.

    ``make_model()`` builds the (unfitted) estimator for a new state; ``config``
    describes it and the detector, and must match what an existing state was
    created with. ``percentile`` (not None) turns on detection with a
    :class:`DensityAnomalyDetector` (``method``, ``window``) that owns the model.
    ``client`` says where the updates run (as an estimator's ``client``; the
    default ``"sync"`` is in-process) and ``reconnect_timeout`` how many seconds
    to wait for a lost scheduler.

    The state is locked for this process from construction to :meth:`close`
    (a second process raises :class:`StateError`, or waits with
    ``wait_lock``). Its newest checkpoint that passes its checks is resumed
    (see :mod:`streamclust.stream_state`); ``state.notes`` says what was
    worked around.
    """

    def __init__(
        self,
        incoming: str | os.PathLike,
        state: str | os.PathLike,
        make_model: Callable[[], Any],
        config: dict[str, Any],
        *,
        checkpoint_every: int = 1,
        header: bool = False,
        client: Any = "sync",
        reconnect_timeout: float = 60.0,
        wait_lock: bool = False,
        storage_options: dict[str, Any] | None = None,
        move_rejected: bool = False,
    ) -> None:
        if checkpoint_every < 1:
            raise ParameterError(
                f"checkpoint_every={checkpoint_every} must be >= 1; pass 1 to checkpoint "
                "after every batch"
            )
        if is_url(os.fspath(state)):
            raise ParameterError(
                f"--state {os.fspath(state).split('://')[0]}://...: the state must be a local "
                "directory (it is locked and renamed into; object storage can do neither); "
                "the batches may be in a bucket"
            )
        self.landing = open_landing(incoming, storage_options, move_rejected)
        self.state = StreamState(state)
        self.config = config
        self.checkpoint_every = checkpoint_every
        self.header = header
        if reconnect_timeout < 0:
            raise ParameterError(
                f"reconnect_timeout={reconnect_timeout:g} must be >= 0 seconds; pass 0 to exit "
                "as soon as the scheduler is lost"
            )
        self.reconnect_timeout = reconnect_timeout
        self.runner = runtime.resolve_runner(client)
        self.model: Any = None
        self._make_model = make_model
        # One process at a time: the state is ours until close() (or this process ends).
        self.state.lock(wait=wait_lock)
        try:
            self.state.sweep()
            params = make_model().get_params(deep=False)
            loaded = self.state.load(config, params)
        except BaseException:
            self.state.unlock()
            raise
        if loaded is None:
            self.ledger = Ledger(config)
        else:
            self.ledger, self.model = loaded
            self.state.write_metrics(self.ledger)  # as the resumed checkpoint has them
        self._done = set(self.ledger.batches)
        self._since_checkpoint = 0
        #: Refusals found while listing (objects uploaded again), for the next report.
        self.rejections: list[BatchResult] = []

    def close(self) -> None:
        """Let another process use the state."""
        self.state.unlock()

    def __enter__(self) -> Ingest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def detecting(self) -> bool:
        return self.config.get("percentile") is not None

    def pending(self) -> list[Batch]:
        """Complete batches not applied yet, in name order. An object under a name already
        applied but with another ETag is refused here, once, with its reason."""
        todo = []
        for batch in self.landing.batches():
            if batch.name in self._done:
                applied = self.ledger.objects.get(batch.name)
                if applied and batch.etag is not None and applied["etag"] != batch.etag:
                    self._refuse_reupload(batch, applied["etag"])
                continue
            if self._rejected_before(batch):
                continue
            todo.append(batch)
        return todo

    def _rejected_before(self, batch: Batch) -> bool:
        """An object rejected before, still in its bucket (not tried again unless it is
        uploaded anew, with another ETag)."""
        if batch.etag is None:
            return False
        record = self.state.rejected / f"{batch.name}.etag"
        return record.exists() and record.read_text().strip() == batch.etag

    def _refuse_reupload(self, batch: Batch, applied: str) -> None:
        name = f"{batch.name}.reupload-{_safe(batch.etag)}.reason"
        if (self.state.rejected / name).exists():
            return
        reason = (
            f"{self.landing.where(batch)}: uploaded again (ETag {batch.etag}) after it was "
            f"applied (ETag {applied}); not applied twice: give new data a new name"
        )
        self.state.rejected.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state.rejected / name, (reason + "\n").encode())
        self.rejections.append(BatchResult(batch.name, 0, rejected=reason))

    def _reject(self, batch: Batch, reason: str) -> BatchResult:
        self.state.rejected.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state.rejected / f"{batch.name}.reason", (reason + "\n").encode())
        self.landing.set_aside(batch, self.state.rejected)
        if batch.etag is not None:
            write_atomic(self.state.rejected / f"{batch.name}.etag", (batch.etag + "\n").encode())
        return BatchResult(batch.name, 0, rejected=reason)

    def _read(self, batch: Batch) -> np.ndarray:
        data = self.landing.read(batch, self.header)
        where = self.landing.where(batch)
        if data.shape[0] == 0:
            raise DataError(f"{where}: has no rows")
        check_finite_block(data, 0, where)
        width = getattr(self._estimator(), "n_features_in_", None)
        if width is not None and data.shape[1] != width:
            raise DataError(f"{where}: has {data.shape[1]} columns; the stream has {width}")
        return data

    def _estimator(self) -> Any:
        if isinstance(self.model, DensityAnomalyDetector):
            return getattr(self.model, "model_", None)
        return self.model

    def apply(self, batch: Batch) -> BatchResult:
        """Read, check and apply one batch (not yet checkpointed)."""
        try:
            data = self._read(batch)
        except StreamclustError as exc:
            return self._reject(batch, " ".join(str(exc).split()))
        loss = batch_loss(self._estimator(), data)  # by the model before it learns the batch
        model = self.model
        if model is None:
            model = self._make_model()
            k = getattr(model, "n_clusters", getattr(model, "n_components", 1))
            if data.shape[0] < k:
                # The model's parameters, not this batch, are wrong: every batch would be
                # rejected for them. Stop before moving anything.
                raise ParameterError(
                    f"k={k} is more than the {data.shape[0]} rows of the first batch "
                    f"{batch.name}, which the model starts from; lower --k, or send larger batches"
                )
            if self.detecting:
                model = new_detector(model, self.config)
        # The update works on a copy: self.model changes only when it succeeds.
        try:
            self.model, scores = runtime.call(
                _update,
                model,
                self.detecting,
                data=data,
                runner=self.runner,
                reconnect_timeout=self.reconnect_timeout,
            )
        except SchedulerError:
            raise
        except StreamclustError as exc:  # e.g. a first batch too small to initialize from
            return self._reject(batch, " ".join(str(exc).split()))
        result = BatchResult(batch.name, int(data.shape[0]))
        if scores is not None:
            marks = flags(scores, self.model.threshold_)
            _write_npy(self.state.scores / f"{batch.stem}.npy", scores)
            _write_npy(self.state.flags / f"{batch.stem}.npy", marks)
            result.anomalies = int((marks < 0).sum())
            self.ledger.anomalies += result.anomalies
            self.ledger.threshold = float(self.model.threshold_)
        self.ledger.batches.append(batch.name)
        if batch.etag is not None:
            self.ledger.objects[batch.name] = {"size": batch.size, "etag": batch.etag}
        self.ledger.rows += result.rows
        self._record(result, loss)
        self._done.add(batch.name)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        return result

    def _record(self, result: BatchResult, loss: float | None) -> None:
        """The batch's metrics line, and the drift test on its score (``on_drift``:
        ``reset`` starts a new model from the next batch, ``refit`` from the batches
        since the change began)."""
        test = PageHinkley(threshold=float(self.config.get("drift_threshold") or 10.0))
        if self.ledger.drift:
            test = PageHinkley.from_dict(self.ledger.drift)
        result.drift = loss is not None and test.update(loss)
        self.ledger.drift = test.to_dict()
        rate = None if result.anomalies is None else result.anomalies / result.rows
        self.ledger.metrics.append(
            {
                "batch": result.name,
                "rows": result.rows,
                "score": loss,
                "anomaly_rate": rate,
                "threshold": self.ledger.threshold if self.detecting else None,
                "drift": result.drift,
                "sizes": cluster_shares(self._estimator()),
                "time": round(time.time(), 3),
            }
        )
        if result.drift and self.config.get("on_drift") in ("reset", "refit"):
            self.model = None
            self.ledger.model_since = len(self.ledger.batches)
            if self.config.get("on_drift") == "refit":
                self._refit(self.ledger.batches[-max(1, test.window) :])

    def _refit(self, names: list[str]) -> None:
        """A new model learnt from the batches ``names`` (applied, still in the
        landing), batch by batch in order, as if it had started with the first. A
        batch gone from the landing, or uploaded anew since, leaves the reset: a new
        model from the next batch."""
        landed = {batch.name: batch for batch in self.landing.batches()}
        for name in names:
            batch, applied = landed.get(name), self.ledger.objects.get(name)
            if batch is None or (applied is not None and applied["etag"] != batch.etag):
                return
        model: Any = self._make_model()
        if self.detecting:
            model = new_detector(model, self.config)
        try:
            for name in names:
                model = _update(
                    model, self.detecting, self.landing.read(landed[name], self.header)
                )[0]
        except StreamclustError:  # unreadable now: keep the reset
            return
        self.model = model
        self.ledger.model_since = len(self.ledger.batches) - len(names)

    def checkpoint(self) -> None:
        if self._since_checkpoint:
            self.state.publish(self.ledger, self.model)
            self._since_checkpoint = 0

    def run(
        self,
        *,
        once: bool = False,
        poll_interval: float = 1.0,
        report: Callable[[BatchResult, Ingest], None] | None = None,
    ) -> Ledger:
        """Apply pending batches; with ``once``, stop when none are left, else poll for more."""
        self.state.create()
        # Only states between two batches are published. On a cluster, a batch's
        # update reaches the driver whole or not at all, so when the scheduler is
        # lost the batches applied so far are checkpointed; any other exception
        # leaves the last checkpoint (a later run re-applies the rest).
        while True:
            batch = self.pending()
            for refused in self.rejections:
                if report is not None:
                    report(refused, self)
            self.rejections.clear()
            for one in batch:
                try:
                    result = self.apply(one)
                except SchedulerError as exc:
                    self.checkpoint()
                    raise SchedulerError(
                        f"{exc}, while applying {one.name}; {len(self.ledger.batches)} batches "
                        f"are checkpointed in {self.state.root}: rerun the same command to resume"
                    ) from exc
                if report is not None:
                    report(result, self)
            if not batch:
                # A new state's first checkpoint records its options, once a batch was
                # applied or none is waiting (never before a first batch stopped the run).
                if self._since_checkpoint or not self.state.complete():
                    self.state.publish(self.ledger, self.model)
                    self._since_checkpoint = 0
                if once:
                    return self.ledger
                time.sleep(poll_interval)


def _safe(etag: str | None) -> str:
    """An ETag as part of a file name."""
    return "".join(c for c in str(etag) if c.isalnum())[:40]


def cluster_shares(est: Any) -> list[float] | None:
    """The model's cluster sizes as shares summing to 1 (mixture weights, or the rows
    each K-Means center absorbed, forgetting applied), rounded for the metrics line."""
    if hasattr(est, "weights_"):
        sizes = np.asarray(est.weights_, np.float64)
    elif isinstance(est, StreamingKMeans):
        sizes = center_counts(est)
    else:
        return None
    total = float(sizes.sum())
    return [round(float(s) / total, 6) for s in sizes] if total > 0 else None


def batch_loss(est: Any, data: np.ndarray) -> float | None:
    """How badly the fitted ``est`` fits a batch (None before it is fitted): the mean
    squared distance to the nearest center, or minus the mean log-likelihood."""
    if est is None or not hasattr(est, "n_features_in_"):
        return None
    if hasattr(est, "cluster_centers_"):
        return float(-est.score(data) / data.shape[0])
    if hasattr(est, "means_"):
        return float(-est.score(data))
    return None


def _update(model: Any, detecting: bool, data: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """One batch's update of ``model``: (the model, the batch's scores when detecting).

    With detection, the scores are those under the updated model, computed once.
    """
    if detecting:
        return model, update_and_score(model, data)
    return model.partial_fit(data), None
