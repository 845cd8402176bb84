"""Zarr arrays (v2 or v3, on disk, in memory or in object storage) as sources: read
chunk by chunk, each read checked against ``committed_rows``, missing and
corrupt chunks, and chunk files that link out of the store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import DependencyError, SourceError, StreamclustError
from ..validation import check_finite_block, compute_dtype, row_span
from .base import Source, check_2d, default_block_rows
from .remote import check_url, explain_failure, is_url, redact_url, scheme_of, zarr_location

__all__ = [
    "ZarrSource",
    "is_zarr_array",
    "is_zarr_dir",
    "is_zarr_group",
    "open_error",
    "pick_array",
]


class ZarrSource(Source):
    """A 2-D Zarr array (v2 or v3), or the array ``component`` inside a Zarr group.

    Blocks are whole chunks along the rows (several chunks when chunks are
    small). Rows beyond the ``committed_rows`` attribute (written by
    :func:`write_zarr` after every block) and corrupt chunks raise
    :class:`SourceError` naming the chunk; a chunk that was never written reads
    as the NaN fill value and is reported as missing.
    """

    def __init__(
        self,
        path: Any,
        component: str | None = None,
        block_rows: int | None = None,
        storage_options: dict[str, Any] | None = None,
        column: bool = False,
    ) -> None:
        self.array: Any = None
        #: Passed to the store of a URL; pickled with the source for the workers, never
        #: shown (:attr:`name` is the URL with any credentials in it hidden).
        self.storage_options = dict(storage_options or {})
        if is_zarr_array(path):
            path, self.array = _zarr_array_location(path)
            # An array in this process's memory is read here and its blocks shipped,
            # as an ndarray's are: pickled for a worker, it would copy the whole store.
            self.in_memory = self.array is not None and "Memory" in type(self.array.store).__name__
        self.path = str(path)
        if self.array is None and is_url(self.path):
            check_url(self.path)
            # memory:// lives in this process only: read here, blocks shipped.
            self.in_memory = scheme_of(self.path) == "memory"
        self.component = component
        shown = redact_url(self.path)
        self.name = shown if component is None else f"{shown}/{component}"
        arr = self._h_array()
        if is_url(self.path):
            # Kept, and pickled with the source: a worker's task then reads chunks at
            # once, without requests for the store's metadata (each one a round trip
            # to object storage) in every task.
            self.array = arr
        #: A 1-D array read as one column (sample weights).
        self.column = bool(column) and len(arr.shape) == 1
        if not self.column:
            check_2d(arr, self.name)
        self.n_rows, self.n_features = int(arr.shape[0]), 1 if self.column else int(arr.shape[1])
        self.dtype = np.dtype(arr.dtype)
        compute_dtype(self.dtype)
        self.chunk_rows = int(arr.chunks[0])
        committed = arr.attrs.get("committed_rows")
        self.committed_rows = self.n_rows if committed is None else int(committed)
        if committed is None:  # not written by streamclust: do its chunks reach its shape?
            stop = _stored_rows(arr)
            if stop is not None:
                raise SourceError(
                    f"{self.name}: its shape says {self.n_rows} rows, but its chunks stop at "
                    f"row {stop} (the chunks after it do not exist, or held only the fill "
                    "value, which zarr skips unless write_empty_chunks=True); rewrite the "
                    "store, or fix the shape in its metadata"
                )
        if block_rows is None:
            target = default_block_rows(self.n_features, self.dtype.itemsize)
            block_rows = self.chunk_rows * max(1, target // self.chunk_rows)
        self.block_rows = int(block_rows)

    def _h_array(self) -> Any:
        arr = self.__dict__.get("_h_arr", self.array)
        if arr is None:
            import zarr

            remote = is_url(self.path)
            if not remote and not os.path.exists(self.path):
                raise SourceError(f"{self.path}: no such Zarr store; check the path")
            try:
                if remote:
                    store, inside, extra = zarr_location(self.path, self.storage_options, True)
                    node = zarr.open(store=store, path=inside, mode="r", **extra)
                else:
                    node = zarr.open(self.path, mode="r")
            except StreamclustError:
                raise
            except Exception as exc:
                raise open_error(self.name, exc, remote) from exc
            node = pick_array(node, self.component, self.name)
            arr = node
            self.__dict__["_h_arr"] = arr
        return arr

    def _chunk_span(self, start: int, stop: int) -> str:
        first, last = start // self.chunk_rows, max(start, stop - 1) // self.chunk_rows
        if first == last:
            return f"chunk {first} ({row_span(start, stop)})"
        return f"chunks {first} to {last} ({row_span(start, stop)})"

    def _read(self, start: int, stop: int) -> np.ndarray:
        if stop > self.committed_rows:
            bad = max(start, self.committed_rows)
            raise SourceError(
                f"{self.name}: {self._chunk_span(bad, stop)} lie past committed_rows="
                f"{self.committed_rows}: the store was not completely written; rewrite it"
            )
        arr = self._h_array()
        self._check_links(arr, start, stop)
        try:
            block = arr[start:stop]
            return block[:, None] if self.column else block
        except Exception as exc:
            first_error: Exception = exc
        # Find the chunk that fails, so the message names it. Only the error's kind is
        # said: a codec's message can quote the bytes it failed on.
        lo = start
        while lo < stop:
            hi = min((lo // self.chunk_rows + 1) * self.chunk_rows, stop)
            try:
                arr[lo:hi]
            except Exception as exc:
                raise SourceError(
                    f"{self.name}: {self._chunk_span(lo, hi)} cannot be read "
                    f"({type(exc).__name__}); the chunk is corrupt: restore or rewrite the store"
                ) from exc
            lo = hi
        raise SourceError(
            f"{self.name}: {self._chunk_span(start, stop)} cannot be read "
            f"({type(first_error).__name__})"
        ) from first_error

    def _check_links(self, arr: Any, start: int, stop: int) -> None:
        """Refuse to read a chunk of a store on disk that is a link leaving the store (to
        /etc/passwd, or to another store's chunk), as batch links are refused."""
        store = arr.store
        root = getattr(store, "root", None)
        if type(store).__name__ != "LocalStore" or root is None:
            return
        rows = int((getattr(arr, "shards", None) or arr.chunks)[0])
        cols = int((getattr(arr, "shards", None) or arr.chunks)[-1]) if not self.column else 1
        inside = os.path.realpath(root) + os.sep
        for c in range(start // rows, max(start, stop - 1) // rows + 1):
            for j in range(-(-self.n_features // cols)):
                key = (c,) if self.column else (c, j)
                file = os.path.join(root, arr.path, arr.metadata.encode_chunk_key(key))
                target = os.path.realpath(file)
                if not target.startswith(inside):
                    lo, hi = c * rows, min((c + 1) * rows, self.n_rows)
                    raise SourceError(
                        f"{self.name}: chunk {c} ({row_span(lo, hi)}) is a link to {target}, "
                        "outside the store; refused: copy the chunk into the store"
                    )

    def _raise_not_finite(self, block: np.ndarray, start: int) -> None:
        # A chunk that was never written reads back as the NaN fill value.
        c0 = start // self.chunk_rows
        for c in range(c0, (start + len(block) - 1) // self.chunk_rows + 1):
            lo, hi = (
                max(c * self.chunk_rows, start),
                min((c + 1) * self.chunk_rows, start + len(block)),
            )
            if np.isnan(block[lo - start : hi - start]).all():
                raise SourceError(
                    f"{self.name}: chunk {c} ({row_span(lo, hi)}) reads as all NaN, the fill "
                    "value: it is missing from the store; restore or rewrite it"
                )
        # Name the chunk that holds the first bad row, not the whole (multi-chunk) block.
        c = (start + int(np.argwhere(~np.isfinite(block))[0][0])) // self.chunk_rows
        lo, hi = max(c * self.chunk_rows, start), min((c + 1) * self.chunk_rows, start + len(block))
        where = f"{self.name}: chunk {c} ({row_span(lo, hi)})"
        check_finite_block(block[lo - start : hi - start], lo, where)

    def to_dask(self) -> Any:
        import dask.array as da

        arr = self._h_array()
        if self.committed_rows == self.n_rows:
            return da.from_zarr(arr, chunks=(self.block_rows, self.n_features)).astype(
                self.compute_dtype
            )
        return super().to_dask()


def pick_array(node: Any, component: str | None, name: str) -> Any:
    """The array of a Zarr node: ``node`` itself, or in a group the array ``component``
    (by default its only array, or the one named ``X``)."""
    if not is_zarr_group(node):
        if component is not None:
            raise SourceError(f"{name}: is an array, not a group; drop component=")
        return node
    names = sorted(n for n, _ in node.arrays())
    choice = component
    if choice is None:
        if len(names) == 1:
            choice = names[0]
        elif "X" in names:
            choice = "X"
        else:
            raise SourceError(
                f"{name}: Zarr group holds arrays {names}; name one with component= (or path/NAME)"
            )
    if choice not in names:
        raise SourceError(f"{name}: no array {choice!r} in group; has {names}")
    return node[choice]


def open_error(name: str, exc: Exception, remote: bool) -> StreamclustError:
    """The one-line error for a Zarr store that cannot be opened. For a URL only the
    error's kind is quoted (a provider's message can echo a request's headers)."""
    if not remote:
        return SourceError(f"{name}: not a readable Zarr store ({exc})")
    if isinstance(exc, ImportError):
        return DependencyError(f"{name}: {exc}; install the extra for this kind of URL")
    reason = explain_failure(exc)
    if reason is not None:
        return SourceError(f"{name}: {reason}")
    kind = type(exc).__name__
    if kind in ("GroupNotFoundError", "NodeNotFoundError", "ArrayNotFoundError") or isinstance(
        exc, FileNotFoundError
    ):
        return SourceError(
            f"{name}: no Zarr store there (no zarr.json or .zarray under this prefix, or no "
            "such bucket); check the URL"
        )
    return SourceError(f"{name}: cannot open the store ({kind}); check the URL and the network")


def _stored_rows(arr: Any) -> int | None:
    """Where a Zarr array's stored chunks stop, when it is before its last row (else None).

    One existence check when the last chunk (or shard) is there; else a binary
    search for the first one missing, assuming the chunks before it exist. A
    shape that claims far more rows than were written is found before any
    planning or reading.
    """
    try:
        from zarr.core.sync import sync

        rows = int((getattr(arr, "shards", None) or arr.chunks)[0])
        count = -(-int(arr.shape[0]) // rows)
        rest = (0,) * (len(arr.shape) - 1)

        def exists(i: int) -> bool:
            key = arr.metadata.encode_chunk_key((i, *rest))
            return bool(sync((arr.store_path / key).exists()))

        if count == 0 or exists(count - 1):
            return None
        lo, hi = 0, count - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if exists(mid):
                lo = mid + 1
            else:
                hi = mid
        return lo * rows
    except (AttributeError, ImportError, TypeError):  # another zarr: not checked here
        return None


def is_zarr_array(obj: Any) -> bool:
    """True for a ``zarr.Array`` (v2 or v3 format, any store)."""
    return type(obj).__module__.startswith("zarr.") and type(obj).__name__ == "Array"


def is_zarr_group(obj: Any) -> bool:
    """True for a ``zarr.Group`` (any store)."""
    return type(obj).__module__.startswith("zarr.") and type(obj).__name__ == "Group"


def _zarr_array_location(arr: Any) -> tuple[str, Any]:
    """Where a ``zarr.Array`` lives: its path on disk (workers reopen it there) and None,
    or, in any other store, the store's URL as its name and the array itself (which
    pickles with its store)."""
    store = arr.store
    root = getattr(store, "root", None)
    if type(store).__name__ == "LocalStore" and root is not None:
        return os.path.join(str(root), arr.path) if arr.path else str(root), None
    return str(arr.store_path), arr


def is_zarr_dir(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup"))
