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

import json
import os
import shutil
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import runtime
from .exceptions import DataError, ParameterError, SchedulerError, SourceError, StreamclustError
from .persistence import fsync_dir, write_atomic
from .sources import _BATCH_SUFFIXES

LATEST = "LATEST"
_FORMAT = "streamclust-stream"


def _write_npy(path: Path, array: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_atomic(path, buf.getvalue())


@dataclass
class Ledger:
    """What the checkpoint says has been applied."""

    config: dict[str, Any]
    batches: list[str] = field(default_factory=list)
    rows: int = 0
    anomalies: int = 0
    threshold: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "config": self.config,
                "batches": self.batches,
                "rows": self.rows,
                "anomalies": self.anomalies,
                "threshold": self.threshold,
            },
            indent=0,
        )


class StreamState:
    """The ``--state`` directory: published checkpoints, flags, scores and rejected batches."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.flags = self.root / "flags"
        self.scores = self.root / "scores"
        self.rejected = self.root / "rejected"

    def create(self) -> None:
        for d in (self.root, self.checkpoints, self.flags, self.scores, self.rejected):
            d.mkdir(parents=True, exist_ok=True)

    def latest(self) -> Path | None:
        pointer = self.root / LATEST
        if not pointer.exists():
            return None
        name = pointer.read_text().strip()
        if name in ("", ".", "..") or name != Path(name).name:
            raise SourceError(
                f"{pointer}: names {name!r}, not a checkpoint inside {self.checkpoints}; "
                "restore it or start a new --state"
            )
        path = self.checkpoints / name
        if not (path / "ledger.json").is_file():
            raise SourceError(
                f"{pointer}: names checkpoint {name!r}, which is missing; restore it or "
                "start a new --state"
            )
        return path

    def load(self) -> tuple[Ledger, Any] | None:
        """The last published ledger and model (or detector), or None for a new state."""
        from .persistence import load

        path = self.latest()
        if path is None:
            return None
        raw = json.loads((path / "ledger.json").read_text())
        if raw.get("format") != _FORMAT:
            raise SourceError(f"{path}: not a streamclust stream checkpoint")
        ledger = Ledger(
            raw["config"], raw["batches"], raw["rows"], raw["anomalies"], raw["threshold"]
        )
        if not (path / "model").exists():
            return ledger, None
        model = load(path / "model")
        if (path / "detector.npz").exists():
            model = _load_detector(path / "detector.npz", model, ledger.config)
        return ledger, model

    def publish(self, ledger: Ledger, model: Any) -> Path:
        """Write a new checkpoint and make it the latest, atomically."""
        from .anomaly import DensityAnomalyDetector
        from .persistence import save_model

        seq = len(ledger.batches)
        name = f"ckpt-{seq:09d}-{uuid.uuid4().hex[:6]}"
        tmp = self.checkpoints / f".{name}.tmp"
        tmp.mkdir()
        try:
            if model is not None:
                est = model.model_ if isinstance(model, DensityAnomalyDetector) else model
                save_model(est, tmp / "model")
                if isinstance(model, DensityAnomalyDetector):
                    _save_detector(tmp / "detector.npz", model)
            write_atomic(tmp / "ledger.json", ledger.to_json().encode())
            fsync_dir(tmp)
            os.replace(tmp, self.checkpoints / name)
            fsync_dir(self.checkpoints)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        write_atomic(self.root / LATEST, name.encode())
        fsync_dir(self.root)
        for old in self.checkpoints.iterdir():  # only the published one is needed
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return self.checkpoints / name


def _save_detector(path: Path, det: Any) -> None:
    import io

    arrays: dict[str, np.ndarray] = {"threshold": np.array(det.threshold_)}
    for i, item in enumerate(getattr(det, "_window", ())):
        if isinstance(item, np.ndarray):
            arrays[f"window_{i:06d}"] = item
        else:
            arrays[f"window_{i:06d}"] = np.frombuffer(item.to_bytes(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    write_atomic(path, buf.getvalue())


def _load_detector(path: Path, model: Any, config: dict[str, Any]) -> Any:
    from .anomaly import QuantileSketch

    det = _new_detector(model, config)
    det.model_, det._owns_model = model, True
    det.n_features_in_ = model.n_features_in_
    with np.load(path, allow_pickle=False) as npz:
        det.threshold_ = float(npz["threshold"])
        det.n_passes_ = 1
        det._window = deque(maxlen=det.window)
        for name in sorted(n for n in npz.files if n.startswith("window_")):
            item = npz[name]
            det._window.append(
                item if det.method == "exact" else QuantileSketch.from_bytes(item.tobytes())
            )
    return det


def _new_detector(model: Any, config: dict[str, Any]) -> Any:
    from .anomaly import DensityAnomalyDetector

    return DensityAnomalyDetector(
        model,
        percentile=config["percentile"],
        method=config["method"],
        window=config["window"],
        progress=False,
    )


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
        loaded = self.state.load() if self.state.root.exists() else None
        self.model: Any = None
        self._make_model = make_model
        if loaded is None:
            self.ledger = Ledger(config)
        else:
            self.ledger, self.model = loaded
            if self.ledger.config != config:
                raise ParameterError(
                    f"{self.state.root}: was started with {_describe(self.ledger.config)}; "
                    "pass the same options, or a new --state"
                )
        self._done = set(self.ledger.batches)
        self._since_checkpoint = 0

    @property
    def detecting(self) -> bool:
        return self.config.get("percentile") is not None

    def pending(self) -> list[Path]:
        """Complete batch files not applied yet, in name order."""
        names = sorted(
            p.name
            for p in self.incoming.iterdir()
            if p.suffix.lower() in _BATCH_SUFFIXES and p.is_file() and p.name not in self._done
        )
        return [self.incoming / n for n in names]

    def _reject(self, path: Path, reason: str) -> BatchResult:
        self.state.rejected.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state.rejected / f"{path.name}.reason", (reason + "\n").encode())
        os.replace(path, self.state.rejected / path.name)
        return BatchResult(path.name, 0, rejected=reason)

    def _read(self, path: Path) -> np.ndarray:
        from ._validation import check_finite_block
        from .sources import read_batch_file

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
        from .anomaly import DensityAnomalyDetector

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
            if self.detecting:
                model = _new_detector(model, self.config)
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
            from .anomaly import flags

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
        if self.state.latest() is None:
            self.state.publish(self.ledger, None)  # a new state, with its configuration
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
                self.checkpoint()
                if once:
                    return self.ledger
                time.sleep(poll_interval)


def _update(model: Any, detecting: bool, data: np.ndarray) -> tuple[Any, np.ndarray | None]:
    """One batch's update of ``model``: (the model, the batch's scores when detecting).

    With detection, the scores are those under the updated model, computed once.
    """
    if detecting:
        return model, model._partial_fit(data)
    return model.partial_fit(data), None


def _describe(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(config.items()) if v is not None)
