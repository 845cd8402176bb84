"""Exactly-once streaming ingest of batch files that land in a directory.

The producer's contract: write a batch under a temporary name ending in
``.tmp`` (or any name not ending in ``.npy``, ``.csv`` or ``.parquet``), then
rename it to its final name in the same directory. A rename is atomic, so a
file with a final name is complete; nothing else is ever read.

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
stream goes on.

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
from .exceptions import DataError, ParameterError, SchedulerError, SourceError, StreamclustError
from .persistence import write_atomic
from .sources import BATCH_SUFFIXES, read_batch_file
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
    ) -> None:
        if checkpoint_every < 1:
            raise ParameterError(
                f"checkpoint_every={checkpoint_every} must be >= 1; pass 1 to checkpoint "
                "after every batch"
            )
        self.incoming = Path(incoming)
        if not self.incoming.is_dir():
            raise SourceError(f"{self.incoming}: no such directory to watch; create it first")
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
        self._done = set(self.ledger.batches)
        self._since_checkpoint = 0

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

    def pending(self) -> list[Path]:
        """Complete batch files not applied yet, in name order."""
        names = sorted(
            p.name
            for p in self.incoming.iterdir()
            if p.suffix.lower() in BATCH_SUFFIXES and p.is_file() and p.name not in self._done
        )
        return [self.incoming / n for n in names]

    def _reject(self, path: Path, reason: str) -> BatchResult:
        self.state.rejected.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state.rejected / f"{path.name}.reason", (reason + "\n").encode())
        os.replace(path, self.state.rejected / path.name)
        return BatchResult(path.name, 0, rejected=reason)

    def _read(self, path: Path) -> np.ndarray:
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(self.incoming.resolve()):
                raise SourceError(
                    f"{path}: is a link to {target}, outside the landing directory; "
                    "copy the batch into it instead"
                )
        data = read_batch_file(str(path), self.header)
        if data.shape[0] == 0:
            raise DataError(f"{path}: has no rows")
        check_finite_block(data, 0, str(path))
        width = getattr(self._estimator(), "n_features_in_", None)
        if width is not None and data.shape[1] != width:
            raise DataError(f"{path}: has {data.shape[1]} columns; the stream has {width}")
        return data

    def _estimator(self) -> Any:
        if isinstance(self.model, DensityAnomalyDetector):
            return getattr(self.model, "model_", None)
        return self.model

    def apply(self, path: Path) -> BatchResult:
        """Read, check and apply one batch (not yet checkpointed)."""
        try:
            data = self._read(path)
        except StreamclustError as exc:
            return self._reject(path, " ".join(str(exc).split()))
        model = self.model
        if model is None:
            model = self._make_model()
            k = getattr(model, "n_clusters", getattr(model, "n_components", 1))
            if data.shape[0] < k:
                # The model's parameters, not this batch, are wrong: every batch would be
                # rejected for them. Stop before moving anything.
                raise ParameterError(
                    f"k={k} is more than the {data.shape[0]} rows of the first batch "
                    f"{path.name}, which the model starts from; lower --k, or send larger batches"
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
            return self._reject(path, " ".join(str(exc).split()))
        result = BatchResult(path.name, int(data.shape[0]))
        if scores is not None:
            marks = flags(scores, self.model.threshold_)
            _write_npy(self.state.scores / f"{path.stem}.npy", scores)
            _write_npy(self.state.flags / f"{path.stem}.npy", marks)
            result.anomalies = int((marks < 0).sum())
            self.ledger.anomalies += result.anomalies
            self.ledger.threshold = float(self.model.threshold_)
        self.ledger.batches.append(path.name)
        self.ledger.rows += result.rows
        self._done.add(path.name)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.checkpoint_every:
            self.checkpoint()
        return result

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
            for path in batch:
                try:
                    result = self.apply(path)
                except SchedulerError as exc:
                    self.checkpoint()
                    raise SchedulerError(
                        f"{exc}, while applying {path.name}; {len(self.ledger.batches)} batches "
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


def _update(model: Any, detecting: bool, data: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """One batch's update of ``model``: (the model, the batch's scores when detecting).

    With detection, the scores are those under the updated model, computed once.
    """
    if detecting:
        return model, update_and_score(model, data)
    return model.partial_fit(data), None
