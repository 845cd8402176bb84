"""A stream's ``--state`` directory: one writer, durable checkpoints, checked before use.

Layout::

    .lock                  held (``flock``) by the one stream using the state; its PID inside
    LATEST                 the name of the newest published checkpoint
    checkpoints/ckpt-<number of batches>-<id>/
        ledger.json        the applied batches in order, rows, anomalies, threshold, options
        model/             the saved model (see :mod:`streamclust.persistence`)
        detector.npz       the detector's threshold and window (with detection)
        checkpoint.json    the SHA-256 of every file above and the counts that must agree
    refused/               checkpoints that failed their check, moved aside (never deleted)
    flags/, scores/        per-batch outputs (with detection)
    rejected/              batches that could not be used, each next to a ``.reason``

The rules a careful consumer keeps: only one process writes a state (a
second one stops at once, or waits with ``wait=True``); a checkpoint is
written whole under a temporary name, flushed, renamed, and only then
published by replacing ``LATEST``; the checkpoint ``LATEST`` named before is
kept until the new one is durable, and the two newest complete checkpoints
are always kept. A checkpoint is used only if its files match their
checksums, its ledger parses, its counts agree (batches in the ledger =
steps seen by the model = the detector's window) and its model has the
stream's parameters and finite centers; otherwise it is moved to
``refused/``, said in one line, and the previous one is used. A missing or
damaged ``LATEST`` never starts the stream afresh while checkpoints exist.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .anomaly import (
    DensityAnomalyDetector,
    restore_window,
    window_arrays,
    window_length,
)
from .exceptions import ModelFileError, ParameterError, StateError
from .persistence import RUN_PARAMS, file_sha256, fsync_dir, load, save_model, write_atomic

__all__ = ["KEEP", "LATEST", "METRICS", "Ledger", "StreamState", "describe", "new_detector"]

LATEST = "LATEST"
#: Complete checkpoints kept after every publish (the newest first).
KEEP = 2
#: The stream's per-batch metrics, one JSON line each, in the state directory.
METRICS = "metrics.jsonl"
_FORMAT = "streamclust-stream"
_CHECKPOINT = "checkpoint.json"
_CHECKPOINT_FORMAT = "streamclust-stream-checkpoint"
_CHECKPOINT_VERSION = 1


@dataclass
class Ledger:
    """What a checkpoint says has been applied."""

    config: dict[str, Any]
    batches: list[str] = field(default_factory=list)
    rows: int = 0
    anomalies: int = 0
    threshold: float | None = None
    #: Applied objects of a prefix in object storage: name -> {"size", "etag"}.
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: One line per applied batch (``state/metrics.jsonl``), and the drift test's state.
    metrics: list[dict[str, Any]] = field(default_factory=list)
    drift: dict[str, Any] = field(default_factory=dict)
    #: Batches applied before the current model began (a drift reset starts a new one).
    model_since: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": _FORMAT,
                "config": self.config,
                "batches": self.batches,
                "rows": self.rows,
                "anomalies": self.anomalies,
                "threshold": self.threshold,
                **({"objects": self.objects} if self.objects else {}),
                "metrics": self.metrics,
                "drift": self.drift,
                "model_since": self.model_since,
            },
            indent=0,
        )

    @classmethod
    def from_json(cls, text: str) -> Ledger:
        """The ledger in ``text``; ValueError (its reason) unless it is one, whole."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
            raise ValueError("not a stream ledger")
        batches, rows, anomalies = raw.get("batches"), raw.get("rows"), raw.get("anomalies")
        threshold, config = raw.get("threshold"), raw.get("config")
        if not (isinstance(batches, list) and all(isinstance(b, str) for b in batches)):
            raise ValueError("its batches are not a list of names")
        if not (isinstance(rows, int) and isinstance(anomalies, int) and min(rows, anomalies) >= 0):
            raise ValueError("its rows or anomalies are not counts")
        if not (threshold is None or isinstance(threshold, (int, float))):
            raise ValueError("its threshold is not a number")
        if not isinstance(config, dict):
            raise ValueError("its options are missing")
        objects = raw.get("objects", {})
        if not (
            isinstance(objects, dict)
            and all(isinstance(v, dict) and "etag" in v for v in objects.values())
        ):
            raise ValueError("its objects are not a map of names to sizes and ETags")
        metrics, drift = raw.get("metrics", []), raw.get("drift", {})
        if not (isinstance(metrics, list) and all(isinstance(m, dict) for m in metrics)):
            raise ValueError("its metrics are not a list of records")
        if not isinstance(drift, dict):
            raise ValueError("its drift state is not a record")
        since = raw.get("model_since", 0)
        if not (isinstance(since, int) and 0 <= since <= len(batches)):
            raise ValueError("its model_since is not a batch count")
        return cls(config, batches, rows, anomalies, threshold, objects, metrics, drift, since)


class _Refused(Exception):
    """A checkpoint that failed its check (the message says why)."""


class StreamState:
    """The ``--state`` directory of one stream (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.refused = self.root / "refused"
        self.flags = self.root / "flags"
        self.scores = self.root / "scores"
        self.rejected = self.root / "rejected"
        self._lock: Any = None
        #: One line for each thing the last :meth:`load` had to work around.
        self.notes: list[str] = []

    # ------------------------------------------------------------------ one writer

    def lock(self, wait: bool = False) -> None:
        """Take the state for this process until :meth:`unlock` (or its exit).

        Raises :class:`StateError` naming the holder's PID when another process
        holds it, unless ``wait``: then it waits for it.
        """
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / ".lock", "a+")  # held until unlock()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise StateError(
                f"{self.root}: in use by another stream (pid {holder}); stop it, or pass "
                "--wait-lock to wait for it"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock = fh

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def create(self) -> None:
        for d in (self.root, self.checkpoints, self.flags, self.scores, self.rejected):
            d.mkdir(parents=True, exist_ok=True)

    def sweep(self) -> None:
        """Remove the temporary files an interrupted run left (the lock is ours)."""
        for folder in (self.root, self.checkpoints, self.flags, self.scores, self.rejected):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith(".") and ".tmp" in path.name:
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ reading

    def complete(self) -> list[Path]:
        """Complete checkpoints, the newest (most batches, then latest written) first."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if p.name.startswith("ckpt-") and p.is_dir()]
        return sorted(found, key=lambda p: (_batches_in(p.name), p.stat().st_mtime), reverse=True)

    def _named(self) -> str | None:
        """The checkpoint ``LATEST`` names (None: no LATEST); a note when it names none."""
        pointer = self.root / LATEST
        if not pointer.exists():
            return None
        try:
            name = pointer.read_bytes().decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if not name.startswith("ckpt-") or name != Path(name).name:
            self.notes.append(f"{pointer}: is damaged (it names no checkpoint)")
            return ""
        return name

    def load(
        self, config: dict[str, Any] | None = None, expected_params: dict[str, Any] | None = None
    ) -> tuple[Ledger, Any] | None:
        """The newest checkpoint that passes its check: ``(ledger, model or detector)``.

        None for a new state. A checkpoint that fails is moved to ``refused/``
        and the one before it is tried; what was worked around is in
        :attr:`notes`. Raises :class:`StateError` when checkpoints exist but
        none passes, or ``LATEST`` names one that is gone and none is left, and
        :class:`ParameterError` (moving nothing) when the state was started
        with other options than ``config``. ``expected_params`` are the
        parameters of the stream's model.
        """
        self.notes = []
        named = self._named()
        candidates = self.complete()
        if named:
            chosen = self.checkpoints / named
            if chosen in candidates:
                candidates.remove(chosen)
                candidates.insert(0, chosen)
            else:
                self.notes.append(f"{self.root / LATEST}: names {named!r}, which is missing")
        elif named is None and candidates:
            self.notes.append(f"{self.root / LATEST}: is missing")
        if not candidates:
            if named is None:
                return None
            raise StateError(
                f"{self.root}: {LATEST} names no checkpoint that exists, and none is left; "
                "restore the state from a backup or start a new --state"
            )
        reasons = []
        for path in candidates:
            try:
                loaded = self._check(path, config, expected_params)
            except _Refused as why:
                reasons.append(f"{path.name}: {why}")
                self._refuse(path, str(why))
                continue
            if reasons or self.notes:  # LATEST names what is resumed again
                self.notes.append(f"{self.root}: resuming from checkpoint {path.name}")
                write_atomic(self.root / LATEST, path.name.encode())
                fsync_dir(self.root)
            return loaded
        raise StateError(
            f"{self.root}: no usable checkpoint ({'; '.join(reasons)}); they are kept in "
            f"{self.refused}: restore the state from a backup or start a new --state"
        )

    def _refuse(self, path: Path, why: str) -> None:
        self.notes.append(f"{path}: refused ({why}); moved to {self.refused}")
        self.refused.mkdir(parents=True, exist_ok=True)
        os.replace(path, self.refused / f"{path.name}-{uuid.uuid4().hex[:6]}")

    def _check(
        self, path: Path, config: dict[str, Any] | None, expected_params: dict[str, Any] | None
    ) -> tuple[Ledger, Any]:
        """Raise :class:`_Refused` unless the checkpoint at ``path`` is whole and coherent."""
        try:
            manifest = json.loads((path / _CHECKPOINT).read_text())
            files = manifest["files"]
            if manifest.get("format") != _CHECKPOINT_FORMAT or not isinstance(files, dict):
                raise ValueError("of another format")
            if manifest.get("version") != _CHECKPOINT_VERSION:
                raise ValueError(f"of format version {manifest.get('version')!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _Refused(f"{_CHECKPOINT} is missing or unreadable ({exc})") from None
        if "ledger.json" not in files:
            raise _Refused("ledger.json is not covered by its checksums")
        for rel, digest in files.items():
            file = path / rel
            if rel != Path(rel).as_posix() or ".." in Path(rel).parts or not file.is_file():
                raise _Refused(f"{rel} is missing")
            if file_sha256(file) != digest:
                raise _Refused(f"{rel} does not match its checksum")
        try:
            ledger = Ledger.from_json((path / "ledger.json").read_text())
        except (OSError, ValueError) as exc:
            raise _Refused(f"ledger.json is unreadable ({exc})") from None
        if config is not None and ledger.config != config:  # the user's options, not damage
            raise ParameterError(
                f"{self.root}: was started with {describe(ledger.config)}; pass the same "
                "options, or a new --state"
            )
        n = len(ledger.batches)
        if ledger.metrics and len(ledger.metrics) != n:
            raise _Refused(f"its ledger holds {n} batches but {len(ledger.metrics)} metric lines")
        if (manifest.get("batches"), manifest.get("rows")) != (n, ledger.rows):
            raise _Refused(
                f"the ledger holds {n} batches and {ledger.rows} rows, the checkpoint was "
                f"written after {manifest.get('batches')} and {manifest.get('rows')}"
            )
        own = n - ledger.model_since  # the batches the current model learnt
        if "model/manifest.json" not in files:
            if own:
                raise _Refused(f"it has no model, after {n} batches")
            return ledger, None
        try:
            est = load(path / "model")
        except ModelFileError as exc:
            raise _Refused(f"its model cannot be loaded ({exc})") from None
        _check_model(est, own, expected_params)
        model: Any = est
        if ledger.config.get("percentile") is not None:
            if "detector.npz" not in files:
                raise _Refused("its detector is missing")
            model = _load_detector(path / "detector.npz", est, ledger.config)
            window = ledger.config.get("window")
            want = own if window is None else min(own, int(window))  # since a reset
            if window_length(model) != want:
                raise _Refused(
                    f"its detector's window holds {window_length(model)} batches, not {want}"
                )
        return ledger, model

    # ------------------------------------------------------------------ writing

    def write_metrics(self, ledger: Ledger) -> None:
        """``metrics.jsonl``: one JSON line per batch of the published ledger (rewritten
        whole and atomically, so it never holds a line a checkpoint does not)."""
        lines = "".join(json.dumps(m, sort_keys=True) + "\n" for m in ledger.metrics)
        write_atomic(self.root / METRICS, lines.encode())

    def publish(self, ledger: Ledger, model: Any) -> Path:
        """Write a new checkpoint, make it the latest, then prune the oldest."""
        before = self._named()
        name = f"ckpt-{len(ledger.batches):09d}-{uuid.uuid4().hex[:6]}"
        tmp = self.checkpoints / f".{name}.tmp"
        tmp.mkdir()
        try:
            if model is not None:
                est = model.model_ if isinstance(model, DensityAnomalyDetector) else model
                save_model(est, tmp / "model")
                if isinstance(model, DensityAnomalyDetector):
                    _save_detector(tmp / "detector.npz", model)
            write_atomic(tmp / "ledger.json", ledger.to_json().encode())
            files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
            manifest = {
                "format": _CHECKPOINT_FORMAT,
                "version": _CHECKPOINT_VERSION,
                "files": {rel: file_sha256(tmp / rel) for rel in files},
                "batches": len(ledger.batches),
                "rows": ledger.rows,
            }
            write_atomic(tmp / _CHECKPOINT, json.dumps(manifest, indent=1).encode())
            fsync_dir(tmp)
            os.replace(tmp, self.checkpoints / name)
            fsync_dir(self.checkpoints)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        write_atomic(self.root / LATEST, name.encode())
        fsync_dir(self.root)
        self.write_metrics(ledger)
        # The new checkpoint is durable and published: only now may older ones go.
        keep = {name, before} | {p.name for p in self.complete()[:KEEP]}
        for old in self.complete():
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
        return self.checkpoints / name


def _batches_in(name: str) -> int:
    try:
        return int(name.split("-")[1])
    except (IndexError, ValueError):
        return -1


def _check_model(est: Any, n_batches: int, expected_params: dict[str, Any] | None) -> None:
    """The loaded model saw one step per applied batch, has the stream's parameters and
    finite centers (raise :class:`_Refused` otherwise)."""
    steps = getattr(est, "n_steps_", getattr(est, "n_iter_", None))
    if steps != n_batches:
        raise _Refused(f"its model took {steps} steps, but the ledger applied {n_batches} batches")
    if expected_params is not None:
        params = {k: v for k, v in est.get_params(deep=False).items() if k not in RUN_PARAMS}
        for key, want in expected_params.items():
            if key not in RUN_PARAMS and params.get(key) != want:
                raise _Refused(f"its model has {key}={params.get(key)!r}, the stream {want!r}")
    for attr in ("cluster_centers_", "means_", "covariances_", "weights_"):
        value = getattr(est, attr, None)
        if value is not None and not np.isfinite(value).all():
            raise _Refused(f"its model's {attr} holds NaN or inf")


def _save_detector(path: Path, det: Any) -> None:
    buf = io.BytesIO()
    np.savez(buf, **window_arrays(det))  # type: ignore[arg-type]
    write_atomic(path, buf.getvalue())


def _load_detector(path: Path, model: Any, config: dict[str, Any]) -> Any:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        return restore_window(new_detector(model, config), model, arrays)
    except Exception as exc:  # whatever the file holds, the checkpoint is not usable
        raise _Refused(f"detector.npz is unreadable ({exc})") from None


def describe(config: dict[str, Any]) -> str:
    """A stream's options, as a message names them."""
    return ", ".join(f"{k}={v!r}" for k, v in sorted(config.items()) if v is not None)


def new_detector(model: Any, config: dict[str, Any]) -> Any:
    """The stream's :class:`DensityAnomalyDetector` over ``model``, from its options."""
    return DensityAnomalyDetector(
        model,
        percentile=config["percentile"],
        method=config["method"],
        window=config["window"],
        progress=False,
    )
