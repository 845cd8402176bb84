"""Parquet datasets as sources: a file, or a directory or URL prefix of ``.parquet``
files (read in name order), their row groups the storage blocks."""

from __future__ import annotations

import bisect
import itertools
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import DataError, DependencyError, SourceError
from ..validation import row_span
from .base import Source
from .remote import explain_failure, filesystem, is_url, redact_url

__all__ = ["ParquetSource", "list_parquet_files"]


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DependencyError(
            "reading Parquet needs pyarrow; install it with: pip install 'streamclust[parquet]'"
        ) from exc
    return pq


def list_parquet_files(fs: Any, root: str) -> list[str]:
    """The ``.parquet`` files of a file, directory or prefix, in name order (hidden,
    ``_``-prefixed and ``.tmp`` names skipped)."""
    if fs.isfile(root):
        return [root]
    names = [
        path
        for path in fs.find(root)
        if path.endswith(".parquet") and not os.path.basename(path).startswith((".", "_"))
    ]
    return sorted(names)


class ParquetSource(Source):
    """A Parquet file, or a directory or prefix of Parquet files, local or at a URL.

    ``columns`` chooses the feature columns (default: every numeric column,
    in schema order, listed in :attr:`columns`); every file must have them.
    Each row group is a storage block. A null, or a chosen column that is not
    numeric, is a one-line error naming the file, row and column.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        columns: Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        pq = _pyarrow()
        self.path = os.fspath(path)
        self.storage_options = dict(storage_options or {})
        self.name = redact_url(self.path)
        fs, root = self._fs()
        try:
            if not fs.exists(root):
                raise FileNotFoundError(root)
            files = list_parquet_files(fs, root)
        except FileNotFoundError as exc:
            raise SourceError(
                f"{self.name}: no such file, directory or prefix; check the path"
            ) from exc
        except Exception as exc:
            reason = explain_failure(exc) or f"cannot be listed ({type(exc).__name__})"
            raise SourceError(f"{self.name}: {reason}") from exc
        if not files:
            raise SourceError(f"{self.name}: holds no .parquet files; check the path")
        self.files = files
        first = self._metadata(pq, fs, files[0]).schema.to_arrow_schema()
        self.columns = self._choose_columns(first, files[0], columns)
        rows: list[int] = []
        group_rows: list[list[int]] = []
        dtypes = []
        for f in files:
            meta = self._metadata(pq, fs, f)
            schema = meta.schema.to_arrow_schema()
            for c in self.columns:
                if schema.get_field_index(c) < 0:
                    raise DataError(
                        f"{self._show(f)}: has no column {c!r} (the files before it do); every "
                        "file needs the feature columns"
                    )
                dtypes.append(_numeric_dtype(schema.field(c).type, self._show(f), c))
            sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
            group_rows.append(sizes)
            rows.append(sum(sizes))
        self.file_offsets = [0, *itertools.accumulate(rows)]
        #: (file index, row group index, first row) of every non-empty row group, in order.
        self.groups: list[tuple[int, int, int]] = []
        for i, sizes in enumerate(group_rows):
            start = self.file_offsets[i]
            for g, n in enumerate(sizes):
                if n:
                    self.groups.append((i, g, start))
                start += n
        self.group_starts = [start for _, _, start in self.groups]
        self.n_rows = self.file_offsets[-1]
        self.n_features = len(self.columns)
        self.dtype = np.result_type(*dtypes) if dtypes else np.dtype(np.float64)
        self.block_rows = max((n for sizes in group_rows for n in sizes), default=1) or 1

    # ------------------------------------------------------------------ opening

    def _fs(self) -> tuple[Any, str]:
        fs = self.__dict__.get("_h_fs")
        if fs is None:
            if is_url(self.path):
                fs, root = filesystem(self.path, self.storage_options)
            else:
                import fsspec

                fs, root = fsspec.filesystem("file"), os.path.abspath(self.path)
            self.__dict__["_h_fs"], self.__dict__["_h_root"] = fs, root
        return fs, self.__dict__["_h_root"]

    def _show(self, path: str) -> str:
        """A file of the dataset as messages name it."""
        if len(self.files) == 1:
            return self.name
        return f"{self.name.rstrip('/')}/{os.path.basename(path)}"

    def _metadata(self, pq: Any, fs: Any, path: str) -> Any:
        try:
            return self._file(pq, fs, path).metadata
        except Exception as exc:
            reason = explain_failure(exc) or f"not a readable Parquet file ({type(exc).__name__})"
            raise SourceError(f"{self._show(path)}: {reason}") from exc

    def _file(self, pq: Any, fs: Any, path: str) -> Any:
        """The open file at ``path``, one per thread: a ParquetFile reads through a file
        object's seek position, and two threads reading one crashed the process."""
        local = self.__dict__.setdefault("_h_local", threading.local())
        handles = local.__dict__.setdefault("files", {})
        if path not in handles:
            handles[path] = pq.ParquetFile(fs.open(path, "rb"))
        return handles[path]

    def _choose_columns(self, schema: Any, path: str, columns: Sequence[str] | None) -> list[str]:
        if columns is None:
            chosen = [f.name for f in schema if _is_numeric(f.type)]
            if not chosen:
                raise DataError(
                    f"{self._show(path)}: has no numeric column (columns {schema.names}); "
                    "write numbers, or convert the columns first"
                )
            return chosen
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        missing = [c for c in columns if schema.get_field_index(c) < 0]
        if missing:
            raise DataError(
                f"{self._show(path)}: has no column {missing[0]!r}; its columns are {schema.names}"
            )
        for c in columns:
            _numeric_dtype(schema.field(c).type, self._show(path), c)
        return list(columns)

    # ------------------------------------------------------------------ reading

    def _storage_bounds(self) -> list[tuple[int, int]]:
        stops = [*self.group_starts[1:], self.n_rows]
        return list(zip(self.group_starts, stops, strict=True))

    def _read(self, start: int, stop: int) -> np.ndarray:
        if start == stop:
            return np.empty((0, self.n_features), self.dtype)
        pq = _pyarrow()
        fs, _ = self._fs()
        parts = []
        k = bisect.bisect_right(self.group_starts, start) - 1
        while k < len(self.groups) and self.group_starts[k] < stop:
            i, g, lo = self.groups[k]
            hi = self.group_starts[k + 1] if k + 1 < len(self.groups) else self.n_rows
            path = self.files[i]
            try:
                table = self._file(pq, fs, path).read_row_group(g, columns=self.columns)
            except Exception as exc:
                reason = explain_failure(exc) or f"cannot be read ({type(exc).__name__})"
                raise SourceError(
                    f"{self._show(path)}: row group {g} ({row_span(lo, hi)}): {reason}"
                ) from exc
            block = self._to_numpy(table, path, lo - self.file_offsets[i])
            parts.append(block[max(start, lo) - lo : min(stop, hi) - lo])
            k += 1
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _to_numpy(self, table: Any, path: str, first_row: int) -> np.ndarray:
        """A row group as an array; ``first_row`` is its first row's index in its file."""
        out = np.empty((table.num_rows, self.n_features), self.dtype)
        for j, name in enumerate(self.columns):
            column = table.column(name)
            if column.null_count:
                import pyarrow.compute as pc

                row = int(np.argmax(pc.is_null(column).to_numpy(zero_copy_only=False)))
                raise DataError(
                    f"{self._show(path)}: row index {first_row + row}, column {name!r} is null; "
                    "fill or drop the nulls first"
                )
            out[:, j] = column.to_numpy()
        return out


def _is_numeric(arrow_type: Any) -> bool:
    import pyarrow.types as pt

    return bool(pt.is_integer(arrow_type) or pt.is_floating(arrow_type))


def _numeric_dtype(arrow_type: Any, where: str, column: str) -> np.dtype:
    if not _is_numeric(arrow_type):
        raise DataError(
            f"{where}: column {column!r} is {arrow_type}, not numeric; choose numeric columns "
            "with columns= (CLI: --columns)"
        )
    return np.dtype(arrow_type.to_pandas_dtype())
