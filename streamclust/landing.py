"""Where a stream's batches land: a local directory, or a prefix in object storage.

A batch is complete once it has its final name: in a directory the producer
renames ``NAME.tmp`` to ``NAME.npy`` (``.csv``, ``.parquet``); in object
storage a PUT is atomic, so an object is complete as soon as it is listed
(names ending ``.tmp``, and hidden ones, are never read). An object carries
its size and ETag, which the stream's ledger records: an object uploaded again
under a name already applied is noticed and refused, never applied twice.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import ParameterError, SourceError
from .sources import BATCH_SUFFIXES, is_url, read_batch_file, redact_url
from .sources.remote import explain_failure, filesystem

__all__ = ["Batch", "DirectoryLanding", "Landing", "PrefixLanding", "open_landing"]


@dataclass(frozen=True)
class Batch:
    """One landed batch: its name (the file's or the object's last path part), size,
    and ETag (objects only)."""

    name: str
    size: int
    etag: str | None = None

    @property
    def stem(self) -> str:
        return Path(self.name).stem


class Landing(ABC):
    """A place batches land in; :attr:`name` is how messages show it."""

    name: str

    @abstractmethod
    def batches(self) -> list[Batch]:
        """The complete batches there now, in name order."""

    @abstractmethod
    def read(self, batch: Batch, header: bool) -> np.ndarray:
        """The batch as a 2-D array (SourceError / DataError if it cannot be used)."""

    @abstractmethod
    def set_aside(self, batch: Batch, rejected: Path) -> None:
        """Take a rejected batch out of the way, into directory ``rejected``."""

    def where(self, batch: Batch) -> str:
        """The batch as messages name it."""
        return f"{self.name.rstrip('/')}/{batch.name}"


class DirectoryLanding(Landing):
    """Batch files in a local directory; a rejected one is moved to the state."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_dir():
            raise SourceError(f"{self.path}: no such directory to watch; create it first")

    def batches(self) -> list[Batch]:
        found = []
        for p in self.path.iterdir():
            if p.suffix.lower() in BATCH_SUFFIXES and p.is_file() and not p.name.startswith("."):
                found.append(Batch(p.name, p.stat().st_size))
        return sorted(found, key=lambda b: b.name)

    def read(self, batch: Batch, header: bool) -> np.ndarray:
        path = self.path / batch.name
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(self.path.resolve()):
                raise SourceError(
                    f"{path}: is a link to {target}, outside the landing directory; "
                    "copy the batch into it instead"
                )
        return read_batch_file(str(path), header)

    def set_aside(self, batch: Batch, rejected: Path) -> None:
        os.replace(self.path / batch.name, rejected / batch.name)


class PrefixLanding(Landing):
    """Objects under a prefix in object storage (``s3://bucket/incoming/``).

    A rejected object stays in the bucket (its reason is in the state) unless
    ``move_rejected``: then it is copied into the state and deleted.
    """

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        move_rejected: bool = False,
    ) -> None:
        self.url = url
        self.name = redact_url(url)
        self.move_rejected = move_rejected
        self.fs, root = filesystem(url, storage_options)
        self.root = root.rstrip("/")
        try:
            self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            pass  # an empty prefix: nothing has landed yet
        except Exception as exc:
            reason = explain_failure(exc) or f"cannot be listed ({type(exc).__name__})"
            raise SourceError(f"{self.name}: {reason}") from exc

    def batches(self) -> list[Batch]:
        try:
            entries = self.fs.ls(self.root, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        found = []
        for info in entries:
            name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") != "file" or name.startswith("."):
                continue
            if not name.lower().endswith(BATCH_SUFFIXES):
                continue  # NAME.tmp, and anything that is not a batch
            etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
            size = int(info.get("size") or 0)
            found.append(Batch(name, size, None if etag is None else str(etag)))
        return sorted(found, key=lambda b: b.name)

    def read(self, batch: Batch, header: bool) -> np.ndarray:
        key = f"{self.root}/{batch.name}"
        try:
            data = self.fs.cat_file(key)
        except FileNotFoundError as exc:
            raise SourceError(f"{self.where(batch)}: was deleted before it was read") from exc
        except Exception as exc:
            reason = explain_failure(exc) or f"cannot be read ({type(exc).__name__})"
            raise SourceError(f"{self.where(batch)}: {reason}") from exc
        return read_batch_file(self.where(batch), header, data=data)

    def set_aside(self, batch: Batch, rejected: Path) -> None:
        if not self.move_rejected:
            return
        key = f"{self.root}/{batch.name}"
        self.fs.get_file(key, str(rejected / batch.name))
        self.fs.rm_file(key)


def open_landing(
    incoming: str | os.PathLike,
    storage_options: dict[str, Any] | None = None,
    move_rejected: bool = False,
) -> Landing:
    """The landing place ``incoming`` names: a URL prefix or a local directory."""
    if is_url(os.fspath(incoming)):
        return PrefixLanding(os.fspath(incoming), storage_options, move_rejected)
    if move_rejected:
        raise ParameterError(
            "--move-rejected applies to a prefix in object storage; rejected local batches "
            "are always moved into the state"
        )
    return DirectoryLanding(incoming)
