"""Writing row blocks to new ``.zarr`` stores and ``.npy`` files, atomically: under a
temporary name, renamed into place when complete, never over an output that
exists unless asked.

Object storage has no rename: a store at a URL is written in place, its
chunks before the ``committed_rows`` attribute that publishes them (readers
of a store still being written get the "past committed_rows" error), and
removed if the write fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import DataError, SourceError
from ..validation import check_finite_block, compute_dtype
from .arrays import is_dask_array
from .base import Source, default_block_rows
from .opening import open_source
from .remote import (
    READ_ONLY_SCHEMES,
    explain_failure,
    filesystem,
    is_url,
    output_storage_options,
    redact_url,
    scheme_of,
    zarr_location,
)
from .zarr_store import ZarrSource, is_zarr_dir

__all__ = ["ArrayWriter", "check_output", "check_writable", "write_array", "write_zarr"]


def _allocate(tmp: Path, path: Path) -> None:
    """Reserve the disk blocks of a new memory-mapped file: on a full disk, writing into
    a sparse map is a SIGBUS that kills the process; reserving first is an OSError."""
    if not hasattr(os, "posix_fallocate"):  # not on every platform
        return
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        raise SourceError(
            f"{path}: no room for its {os.fstat(fd).st_size} bytes ({exc.strerror}); free some "
            "space or write it elsewhere"
        ) from exc
    finally:
        os.close(fd)


def check_writable(folder: str | os.PathLike) -> None:
    """Raise SourceError unless a file can be created in ``folder`` (checked by making
    and removing one), so that a long computation does not end unable to save."""
    probe = Path(folder) / f".streamclust-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise SourceError(
            f"{folder}: cannot write here ({exc.strerror}); choose a writable place for the output"
        ) from exc


#: Keys whose presence makes a prefix a Zarr store (or group).
ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")


def check_output(
    path: str | os.PathLike,
    overwrite: bool,
    flag: str = "overwrite=True",
    storage_options: dict[str, Any] | None = None,
) -> Path | str:
    """``path`` as a place to write new output: refused when it exists, unless
    ``overwrite`` is set and it holds what a writer of ours would replace (a file or a
    Zarr store; never another directory); its folder must exist and be writable.
    A URL (a ``.zarr`` store in object storage) is checked the same way, with
    ``storage_options`` (default: those of the call in progress)."""
    if is_url(os.fspath(path)):
        options = output_storage_options() if storage_options is None else storage_options
        return _check_remote_output(os.fspath(path), overwrite, flag, options)
    out = Path(path)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise SourceError(
                f"{out}: already exists; pass {flag} to replace it, or choose another path"
            )
        if out.is_dir() and not is_zarr_dir(out):
            raise SourceError(
                f"{out}: is a directory that is not a Zarr store; it is not replaced even with "
                f"{flag}: choose another path"
            )
    if not out.resolve().parent.is_dir():
        raise SourceError(f"{out.parent}: no such directory for the output")
    check_writable(out.resolve().parent)
    return out


def _check_remote_output(
    url: str, overwrite: bool, flag: str, options: dict[str, Any] | None
) -> str:
    name = redact_url(url)
    if not url.rstrip("/").lower().endswith(".zarr"):
        raise SourceError(f"{name}: an output at a URL must be a .zarr store")
    if scheme_of(url) in READ_ONLY_SCHEMES:
        raise SourceError(f"{name}: {scheme_of(url)}:// is read-only; write to s3://, gs://, az://")
    fs, root = filesystem(url, options)
    root = root.rstrip("/")
    try:
        is_store = any(fs.exists(f"{root}/{m}") for m in ZARR_MARKERS)
        taken = is_store or bool(fs.exists(root) and fs.ls(root))
        # Made and removed now, so that a long computation does not end unable to save.
        probe = f"{root.rsplit('/', 1)[0]}/.streamclust-probe-{uuid.uuid4().hex[:8]}"
        fs.pipe_file(probe, b"")
        fs.rm_file(probe)
    except Exception as exc:
        reason = explain_failure(exc) or f"cannot write there ({type(exc).__name__})"
        raise SourceError(f"{name}: {reason}") from exc
    if taken and not overwrite:
        raise SourceError(
            f"{name}: already exists; pass {flag} to replace it, or choose another URL"
        )
    if taken and not is_store:
        raise SourceError(
            f"{name}: holds objects that are not a Zarr store; it is not replaced even with "
            f"{flag}: choose another URL"
        )
    return url


class ArrayWriter:
    """Streams blocks of rows into a new ``.zarr`` store or ``.npy`` file, then renames it.

    Everything is written under a temporary name next to ``path`` and moved
    into place by :meth:`commit` (replacing ``path`` only with ``overwrite``);
    :meth:`abort` removes it. A Zarr store gets
    a zstd + crc32c codec chain, the fill value ``fill`` (NaN for floats, so a
    missing chunk cannot pass for data) and a ``committed_rows`` attribute
    advanced after every block.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        chunk_rows: int | None = None,
        n_rows: int | None = None,
        compression_level: int = 1,
        attributes: dict[str, Any] | None = None,
        overwrite: bool = False,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = os.fspath(path) if is_url(os.fspath(path)) else None
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".zarr", ".npy"):
            raise SourceError(f"{self.name}: output must end in .zarr or .npy")
        if self.url is not None:
            self.options = output_storage_options() if storage_options is None else storage_options
            check_output(self.url, overwrite, storage_options=self.options)
            self.overwrite = overwrite
            self.published = False
        else:
            check_output(self.path, overwrite)
        self.zarr = suffix == ".zarr"
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.chunk_rows = chunk_rows
        self.n_rows = n_rows
        self.level = compression_level
        self.attributes = attributes or {}
        self.arr: Any = None
        self.rows = 0

    @property
    def name(self) -> str:
        """The output as it may be shown (a URL without its credentials)."""
        return str(self.path) if self.url is None else redact_url(self.url)

    def _create(self, block: np.ndarray) -> None:
        tail = block.shape[1:]
        dtype = block.dtype
        if self.zarr:
            import zarr
            from zarr.codecs import Crc32cCodec, ZstdCodec

            width = int(np.prod(tail)) if tail else 1
            rows = self.chunk_rows or default_block_rows(width, dtype.itemsize)
            fill = np.nan if dtype.kind == "f" else -1
            store: Any = str(self.tmp)
            extra: dict[str, Any] = {}
            if self.url is not None:  # in place: no rename in object storage
                store, inside, extra = zarr_location(self.url, self.options, False)
                if inside is not None:
                    extra["name"] = inside
                if self.overwrite:
                    self._remove_remote()
            self.arr = zarr.create_array(
                store=store,
                **extra,
                shape=(0, *tail),
                chunks=(rows, *tail),
                dtype=dtype,
                fill_value=fill,
                compressors=[ZstdCodec(level=self.level), Crc32cCodec()],
                attributes={**self.attributes, "committed_rows": 0},
            )
        else:
            if self.n_rows is None:
                raise SourceError(f"{self.path}: .npy output needs the row count up front")
            self.arr = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=dtype, shape=(self.n_rows, *tail)
            )
            _allocate(self.tmp, self.path)

    def append(self, block: np.ndarray) -> None:
        block = np.asarray(block)
        if self.arr is None:
            self._create(block)
        if block.shape[1:] != self.arr.shape[1:]:
            raise DataError(
                f"{self.name}: block of shape {block.shape} does not match earlier blocks "
                f"{self.arr.shape[1:]}; every block needs the same columns"
            )
        stop = self.rows + len(block)
        if self.zarr:
            self.arr.resize((stop, *self.arr.shape[1:]))
            self.arr[self.rows : stop] = block
            self.rows = stop
            if self.url is None:  # (at a URL, published whole by commit)
                self.arr.attrs["committed_rows"] = stop
        else:
            self.arr[self.rows : stop] = block
            self.rows = stop

    def commit(self) -> Path | str:
        if self.arr is None:
            raise DataError(f"{self.name}: no rows to write")
        if self.url is not None:  # every chunk is written: publish them
            self.arr.attrs["committed_rows"] = self.rows
            self.published = True
            return self.url
        if not self.zarr:
            self.arr.flush()
            del self.arr
            self.arr = True
        old = None
        if self.path.exists():  # moved aside, so that a crash leaves the old or the new
            old = self.path.with_name(f".{self.path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(self.path, old)
        os.replace(self.tmp, self.path)
        if old is not None:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink()
        return self.path

    def _remove_remote(self) -> None:
        assert self.url is not None
        fs, root = filesystem(self.url, self.options)
        if fs.exists(root):
            fs.rm(root, recursive=True)

    def abort(self) -> None:
        if self.url is not None:
            if not self.published and self.arr is not None:
                self._remove_remote()  # what was written of an unfinished store
            return
        if self.tmp.is_dir():
            shutil.rmtree(self.tmp, ignore_errors=True)
        elif self.tmp.exists():
            self.tmp.unlink()


def write_array(
    data: Iterable[np.ndarray] | np.ndarray,
    path: str | os.PathLike,
    *,
    n_rows: int | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path | str:
    """Write an array, or an iterable of row blocks, to a new ``.zarr`` or ``.npy``, atomically
    (or to a ``.zarr`` at a URL, published when complete)."""
    if isinstance(data, np.ndarray):
        n_rows, data = len(data), [data]
    writer = ArrayWriter(
        path,
        chunk_rows=chunk_rows,
        n_rows=n_rows,
        overwrite=overwrite,
        attributes=attributes,
        storage_options=storage_options,
    )
    try:
        for block in data:
            writer.append(block)
        return writer.commit()
    finally:
        writer.abort()


def write_zarr(
    data: Any,
    path: str | os.PathLike,
    *,
    block_rows: int | None = None,
    dtype: Any = None,
    compression_level: int = 1,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ZarrSource:
    """Write a 2-D array, Source, or iterable of 2-D blocks as a Zarr v3 array.

    The array has chunks of ``block_rows`` full rows, a zstd + crc32c codec
    chain (so a corrupt chunk is detected on read), NaN as its fill value (so
    a missing chunk cannot pass for data) and a ``committed_rows`` attribute
    advanced after every block. The store is built in a temporary directory
    next to ``path`` and renamed into place when complete: a crash never leaves
    a half-written store at ``path``. Every block must be finite.

    ``path`` may be a URL (``s3://bucket/x.zarr``, ``gs://``, ``az://``), written
    with ``storage_options``: object storage has no rename, so the chunks are
    written in place and published by ``committed_rows`` (a reader meanwhile
    gets a one-line "past committed_rows" error), and a failed write is removed.

    Returns the written store opened as a :class:`ZarrSource`.

    Examples
    --------
    >>> import numpy as np, streamclust as sc, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> src = sc.write_zarr(np.ones((10, 2), np.float32), os.path.join(d, "x.zarr"))
    >>> src.shape, src.dtype
    ((10, 2), dtype('float32'))
    """
    url = os.fspath(path) if is_url(os.fspath(path)) else None
    path = Path(path)
    name = str(path) if url is None else redact_url(url)
    if path.suffix.lower() != ".zarr":
        raise SourceError(f"{name}: a Zarr store's name must end in .zarr")
    if isinstance(data, (np.ndarray, Source)) or is_dask_array(data):
        src = open_source(data)
        blocks: Iterable[np.ndarray] = (b for _, b in src.iter_blocks())
        dtype = dtype or src.compute_dtype
    else:
        blocks = data
    writer = ArrayWriter(
        path if url is None else url,
        chunk_rows=block_rows,
        compression_level=compression_level,
        attributes=attributes,
        overwrite=overwrite,
        storage_options=storage_options,
    )
    try:
        for block in blocks:
            block = np.asarray(block)
            if block.ndim != 2:
                raise DataError(f"write_zarr({name}): block of shape {block.shape} is not 2-D")
            out_dtype = compute_dtype(dtype or block.dtype)
            check_finite_block(block, writer.rows, f"{name}: the data to write")
            writer.append(block.astype(out_dtype, copy=False))
        writer.commit()
    finally:
        writer.abort()
    if url is not None:
        return ZarrSource(url, storage_options=writer.options)
    return ZarrSource(path)
