"""Writing row blocks to new ``.zarr`` stores and ``.npy`` files, atomically: under a
temporary name, renamed into place when complete, never over an output that
exists unless asked."""

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


def check_output(path: str | os.PathLike, overwrite: bool, flag: str = "overwrite=True") -> Path:
    """``path`` as a place to write new output: refused when it exists, unless
    ``overwrite`` is set and it holds what a writer of ours would replace (a file or a
    Zarr store; never another directory); its folder must exist."""
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
    ) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".zarr", ".npy"):
            raise SourceError(f"{self.path}: output must end in .zarr or .npy")
        check_output(self.path, overwrite)
        self.zarr = suffix == ".zarr"
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.chunk_rows = chunk_rows
        self.n_rows = n_rows
        self.level = compression_level
        self.attributes = attributes or {}
        self.arr: Any = None
        self.rows = 0

    def _create(self, block: np.ndarray) -> None:
        tail = block.shape[1:]
        dtype = block.dtype
        if self.zarr:
            import zarr
            from zarr.codecs import Crc32cCodec, ZstdCodec

            width = int(np.prod(tail)) if tail else 1
            rows = self.chunk_rows or default_block_rows(width, dtype.itemsize)
            fill = np.nan if dtype.kind == "f" else -1
            self.arr = zarr.create_array(
                store=str(self.tmp),
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
                f"{self.path}: block of shape {block.shape} does not match earlier blocks "
                f"{self.arr.shape[1:]}; every block needs the same columns"
            )
        stop = self.rows + len(block)
        if self.zarr:
            self.arr.resize((stop, *self.arr.shape[1:]))
            self.arr[self.rows : stop] = block
            self.rows = stop
            self.arr.attrs["committed_rows"] = stop
        else:
            self.arr[self.rows : stop] = block
            self.rows = stop

    def commit(self) -> Path:
        if self.arr is None:
            raise DataError(f"{self.path}: no rows to write")
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

    def abort(self) -> None:
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
) -> Path:
    """Write an array, or an iterable of row blocks, to a new ``.zarr`` or ``.npy``, atomically."""
    if isinstance(data, np.ndarray):
        n_rows, data = len(data), [data]
    writer = ArrayWriter(
        path, chunk_rows=chunk_rows, n_rows=n_rows, overwrite=overwrite, attributes=attributes
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
) -> ZarrSource:
    """Write a 2-D array, Source, or iterable of 2-D blocks as a Zarr v3 array.

    The array has chunks of ``block_rows`` full rows, a zstd + crc32c codec
    chain (so a corrupt chunk is detected on read), NaN as its fill value (so
    a missing chunk cannot pass for data) and a ``committed_rows`` attribute
    advanced after every block. The store is built in a temporary directory
    next to ``path`` and renamed into place when complete: a crash never leaves
    a half-written store at ``path``. Every block must be finite.

    Returns the written store opened as a :class:`ZarrSource`.

    Examples
    --------
    >>> import numpy as np, streamclust as sc, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> src = sc.write_zarr(np.ones((10, 2), np.float32), os.path.join(d, "x.zarr"))
    >>> src.shape, src.dtype
    ((10, 2), dtype('float32'))
    """
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        raise SourceError(f"{path}: a Zarr store's name must end in .zarr")
    if isinstance(data, (np.ndarray, Source)) or is_dask_array(data):
        src = open_source(data)
        blocks: Iterable[np.ndarray] = (b for _, b in src.iter_blocks())
        dtype = dtype or src.compute_dtype
    else:
        blocks = data
    writer = ArrayWriter(
        path,
        chunk_rows=block_rows,
        compression_level=compression_level,
        attributes=attributes,
        overwrite=overwrite,
    )
    try:
        for block in blocks:
            block = np.asarray(block)
            if block.ndim != 2:
                raise DataError(f"write_zarr({path}): block of shape {block.shape} is not 2-D")
            out_dtype = compute_dtype(dtype or block.dtype)
            check_finite_block(block, writer.rows, f"{path}: the data to write")
            writer.append(block.astype(out_dtype, copy=False))
        writer.commit()
    finally:
        writer.abort()
    return ZarrSource(path)
