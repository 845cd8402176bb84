"""Saving and loading models without pickle.

A saved model is a directory with two files:

``manifest.json``
    format name and version, the estimator class, the library version, the
    constructor parameters, scalar fitted attributes, and the SHA-256 of the
    arrays file.
``arrays.npz``
    every array (fitted attributes and the streaming state), loaded with
    ``allow_pickle=False``.

The directory is written under a temporary name and renamed into place, so a
crash never leaves a half-written model; loading verifies the checksum, the
class and the array names before building anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ModelFileError, ParameterError
from .version import __version__

__all__ = [
    "RUN_PARAMS",
    "FitCheckpoint",
    "array_digest",
    "check_model_output",
    "file_sha256",
    "fingerprint",
    "fit_fingerprint",
    "fsync_dir",
    "load",
    "load_checkpoint",
    "model_from_parts",
    "model_parts",
    "register_model",
    "save_checkpoint",
    "save_model",
    "write_atomic",
]

FORMAT = "streamclust-model"
FORMAT_VERSION = 1
#: Estimator parameters that say how a fit runs, not what model it makes.
RUN_PARAMS = ("client", "progress", "checkpoint", "cache_mb")
#: Version of fit checkpoints; 2 walks logical blocks (rows, not storage chunks).
CHECKPOINT_VERSION = 2
_MANIFEST = "manifest.json"
_ARRAYS = "arrays.npz"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """One ``.npz`` file with ``arrays`` and the JSON ``meta``, replaced atomically."""
    buf = io.BytesIO()
    arrays = {"__meta__": np.array(json.dumps(meta, sort_keys=True)), **arrays}
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
    fsync_dir(path.parent)


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``(meta, arrays)`` of a checkpoint written by :func:`save_checkpoint`, or None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(str(arrays.pop("__meta__")))
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise ModelFileError(
            f"{path}: unreadable checkpoint ({exc}); remove it to start the fit over"
        ) from exc
    return meta, arrays


class FitCheckpoint:
    """The progress of one fit in ``DIR/NAME`` (see :func:`save_checkpoint`).

    Only the fit it was written by resumes from it: the same estimator
    parameters and the same data, as :func:`fit_fingerprint` says.
    """

    def __init__(self, directory: Any, name: str, fingerprint: dict[str, Any]) -> None:
        self.path = Path(directory) / name
        self.fingerprint = fingerprint

    def load(self) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        saved = load_checkpoint(self.path)
        if saved is None:
            return None
        meta, arrays = saved
        version = meta.get("format_version", 1)
        if version != CHECKPOINT_VERSION:
            raise ModelFileError(
                f"{self.path}: checkpoint format version {version!r} is not "
                f"{CHECKPOINT_VERSION} (written by another version of streamclust); "
                "remove it to start the fit over"
            )
        if meta.get("fingerprint") != self.fingerprint:
            raise ParameterError(
                f"{self.path}: was written by another fit (other parameters or data); "
                "remove it or pass another checkpoint directory"
            )
        return meta, arrays

    def save(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        meta = {**meta, "fingerprint": self.fingerprint, "format_version": CHECKPOINT_VERSION}
        save_checkpoint(self.path, meta, arrays)


def array_digest(*arrays: Any) -> str:
    """SHA-256 of the arrays' bytes, in order (what a fingerprint compares them by)."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def fit_fingerprint(estimator: Any, source: Any, **extra: Any) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the estimator's class and
    parameters (arrays by their SHA-256), the data's name, shape and dtype, and
    ``extra`` (e.g. the parameters a warm start begins from)."""
    params = {
        name: value
        for name, value in estimator.get_params(deep=False).items()
        if name not in RUN_PARAMS
    }
    return fingerprint(f"{type(estimator).__name__}.fit", params, source, **extra)


def fingerprint(kind: str, params: dict[str, Any], source: Any, **extra: Any) -> dict[str, Any]:
    """The fingerprint of a fit of ``kind`` with ``params`` on ``source`` (see
    :func:`fit_fingerprint`): JSON values, arrays by their digest."""
    clean: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, (bool, np.bool_)):
            value = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
        elif isinstance(value, (float, np.floating)):
            value = float(value)
        elif value is not None and not isinstance(value, str):  # an array: by its digest
            value = array_digest(value)
        clean[name] = value
    data = [source.name, source.n_rows, source.n_features, str(source.dtype)]
    return {"kind": kind, "params": clean, "data": data, **extra}


@dataclass(frozen=True)
class ModelKind:
    """How one estimator class becomes JSON scalars and arrays, and back."""

    cls: type
    to_state: Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray]]]
    from_state: Callable[[Any, dict[str, Any], dict[str, np.ndarray]], None]


_KINDS: dict[str, ModelKind] = {}


def register_model(
    cls: type,
    to_state: Callable[[Any], tuple[dict[str, Any], dict[str, np.ndarray]]],
    from_state: Callable[[Any, dict[str, Any], dict[str, np.ndarray]], None],
) -> None:
    """Make ``cls`` savable: ``to_state(model)`` gives its fitted scalars (JSON) and
    arrays; ``from_state(model, scalars, arrays)`` sets them on a new instance built
    from the saved parameters. Each estimator module registers its own classes."""
    _KINDS[cls.__name__] = ModelKind(cls, to_state, from_state)


def _json_param(name: str, value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, np.ndarray):
        arrays[f"param__{name}"] = value
        return {"__array__": f"param__{name}"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    # Clients, RandomState instances and the like are not part of a saved model.
    return None


def check_model_output(path: str | os.PathLike, overwrite: bool) -> None:
    """``path`` can take a new saved model: new, an empty directory, or (with
    ``overwrite``) a saved model; a directory holding anything else never can."""
    path = Path(path)
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    if not (path / _MANIFEST).is_file():
        raise ModelFileError(f"{path}: exists and is not a saved model; choose a new directory")
    if not overwrite:
        raise ModelFileError(
            f"{path}: a model is already saved here; pass overwrite=True (--overwrite) to "
            "replace it, or choose another directory"
        )


def _is_exactly(obj: Any, cls: type) -> bool:
    return type(obj) is cls


def save_model(model: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` to directory ``path`` atomically; an older save there is replaced
    only with ``overwrite``, and a directory that holds something else never is."""
    path = Path(path)
    parts, arrays = model_parts(model)
    check_model_output(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with open(tmp / _ARRAYS, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            **parts,
            "arrays": {
                "file": _ARRAYS,
                "sha256": file_sha256(tmp / _ARRAYS),
                "names": sorted(arrays),
            },
        }
        with open(tmp / _MANIFEST, "w") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load(path: str | os.PathLike, expected: type | None = None) -> Any:
    """Load a model saved with ``model.save(path)``; never unpickles anything.

    Raises :class:`ModelFileError` when the directory is missing, its files are
    truncated or tampered with, it holds another format, or (with
    ``expected``) another estimator class.
    """
    path = Path(path)
    manifest_path = path / _MANIFEST
    if not manifest_path.is_file():
        raise ModelFileError(
            f"{path}: no saved model here ({_MANIFEST} missing); check the --model-dir path"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(
            f"{manifest_path}: unreadable manifest ({exc}); save the model again"
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a streamclust model (format is not {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {manifest.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; save it again with this version of streamclust"
        )
    for part in ("params", "attributes", "arrays"):
        if not isinstance(manifest.get(part), dict):
            raise ModelFileError(
                f"{manifest_path}: its {part!r} is not a mapping; save the model again"
            )
    cls_name = manifest.get("class")
    if not isinstance(cls_name, str) or cls_name not in _KINDS:
        raise ModelFileError(f"{path}: unknown model class {cls_name!r}")
    if expected is not None and _KINDS[cls_name].cls is not expected:
        raise ModelFileError(
            f"{path}: holds a {cls_name}, not a {expected.__name__}; pass the matching --model"
        )
    info = manifest.get("arrays") or {}
    if info.get("file") != _ARRAYS:
        raise ModelFileError(
            f"{path}: manifest names an unexpected arrays file {info.get('file')!r}"
        )
    arrays_path = path / _ARRAYS
    if not arrays_path.is_file():
        raise ModelFileError(f"{arrays_path}: missing; the model directory is incomplete")
    if file_sha256(arrays_path) != info.get("sha256"):
        raise ModelFileError(
            f"{arrays_path}: checksum does not match the manifest (truncated or modified); "
            "restore it or save the model again"
        )
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ModelFileError(f"{arrays_path}: unreadable ({exc})") from exc
    if sorted(arrays) != sorted(info.get("names", [])):
        raise ModelFileError(f"{arrays_path}: holds other arrays than the manifest lists")
    try:
        return model_from_parts(manifest, arrays)
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise ModelFileError(f"{path}: inconsistent model contents ({exc}); save it again") from exc


def model_parts(model: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A fitted model as JSON (``class``, ``params``, ``attributes``) and arrays: what
    a saved model holds, also for a model saved inside another (a detector's)."""
    name = type(model).__name__
    kind = _KINDS.get(name)
    if kind is None or not _is_exactly(model, kind.cls):
        raise ModelFileError(f"{name} cannot be saved by streamclust")
    scalars, arrays = kind.to_state(model)
    params = {k: _json_param(k, v, arrays) for k, v in model.get_params(deep=False).items()}
    return {"class": name, "params": params, "attributes": scalars}, arrays


def model_from_parts(parts: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    """The model :func:`model_parts` described (a KeyError, TypeError or ValueError
    when the parts do not fit together)."""
    kind = _KINDS[parts["class"]]
    params = {}
    for name, value in parts["params"].items():
        if isinstance(value, dict) and "__array__" in value:
            value = arrays[value["__array__"]]
        params[name] = value
    model = kind.cls(**params)
    kind.from_state(model, parts["attributes"], arrays)
    return model
