"""Sources over files on disk: ``.npy`` files, raw binary files, and directories of
batch files (``.npy``, ``.csv``, ``.parquet``), with the parsing of one batch file."""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ..exceptions import DataError, SourceError
from ..validation import compute_dtype, row_span
from .base import Source, check_2d, default_block_rows
from .remote import explain_failure, filesystem, is_url, redact_url

__all__ = [
    "BATCH_SUFFIXES",
    "BatchDirSource",
    "NpySource",
    "RawSource",
    "iter_csv_blocks",
    "read_batch_file",
]


BATCH_SUFFIXES = (".npy", ".csv", ".parquet")


class NpySource(Source):
    """A ``.npy`` file, its rows read from the file block by block.

    Its header is read through a memory map; its rows are read with plain reads
    (``np.fromfile`` at their offset), so the pages of a large file never stay
    mapped in this process: its memory is the blocks in flight, not the file.
    A Fortran-ordered file (rows not contiguous) is read through the map.
    """

    def __init__(
        self, path: str | os.PathLike, block_rows: int | None = None, column: bool = False
    ) -> None:
        self.path = str(path)
        self.name = self.path
        try:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise SourceError(f"{self.path}: no such file; check the path") from exc
        except (ValueError, OSError, EOFError) as exc:
            raise SourceError(
                f"{self.path}: not a readable .npy array ({exc}); "
                "write it with numpy.save from a numeric array"
            ) from exc
        if column and mapped.ndim == 1:  # one column (sample weights): same layout
            mapped = mapped.reshape(-1, 1)
        check_2d(mapped, self.path)
        self.n_rows, self.n_features = mapped.shape
        self.dtype = mapped.dtype
        compute_dtype(self.dtype)
        self.offset = int(mapped.offset)
        self.fortran = bool(mapped.flags.f_contiguous and not mapped.flags.c_contiguous)
        del mapped
        self.block_rows = block_rows or default_block_rows(self.n_features, self.dtype.itemsize)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.fortran:
            mapped = np.load(self.path, mmap_mode="r", allow_pickle=False)
            return np.array(mapped[start:stop])
        return _read_rows(self.path, self.dtype, self.n_features, self.offset, start, stop)


class RawSource(Source):
    """A raw binary file (``np.memmap``) with an explicit dtype and shape.

    ``shape=(-1, n_features)`` infers the number of rows from the file size.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dtype: Any,
        shape: tuple[int, int],
        offset: int = 0,
        block_rows: int | None = None,
    ) -> None:
        self.path = str(path)
        self.name = self.path
        self.dtype = np.dtype(dtype)
        compute_dtype(self.dtype)
        self.offset = int(offset)
        if len(shape) != 2:
            raise DataError(f"{self.path}: shape={shape} must have two entries (rows, features)")
        try:
            size = os.path.getsize(self.path)
        except OSError as exc:
            raise SourceError(f"{self.path}: no such file; check the path") from exc
        rows, cols = int(shape[0]), int(shape[1])
        row_bytes = cols * self.dtype.itemsize
        if cols < 1:
            raise DataError(f"{self.path}: shape={shape} needs at least one feature")
        if rows < 0:
            rows, rest = divmod(size - self.offset, row_bytes)
            if rest:
                raise DataError(
                    f"{self.path}: {size - self.offset} bytes is not a whole number of "
                    f"{cols}-feature {self.dtype} rows; check dtype and shape"
                )
        if self.offset + rows * row_bytes != size:
            raise DataError(
                f"{self.path}: file has {size} bytes but shape={(rows, cols)} of {self.dtype} "
                f"needs {self.offset + rows * row_bytes}; check dtype and shape"
            )
        self.n_rows, self.n_features = rows, cols
        self.block_rows = block_rows or default_block_rows(cols, self.dtype.itemsize)

    def _read(self, start: int, stop: int) -> np.ndarray:
        return _read_rows(self.path, self.dtype, self.n_features, self.offset, start, stop)


def _read_rows(
    path: str, dtype: np.dtype, width: int, offset: int, start: int, stop: int
) -> np.ndarray:
    """Rows ``start:stop`` of a C-ordered table of ``dtype`` at ``offset`` in a file, by
    plain reads (the pages stay in the OS cache, not mapped into this process)."""
    count = (stop - start) * width
    rows = np.fromfile(
        path, dtype=dtype, count=count, offset=offset + start * width * dtype.itemsize
    )
    if rows.size != count:
        raise SourceError(f"{path}: {row_span(start, stop)} are cut short; the file is truncated")
    return rows.reshape(stop - start, width)


class BatchDirSource(Source):
    """A directory of batch files (``.npy``, headerless ``.csv``, ``.parquet``), in name order.

    Each file is a storage block. Files still being written (``*.tmp``) and
    hidden files are ignored. All files must have the same number of columns.
    """

    def __init__(self, path: str | os.PathLike, header: bool = False) -> None:
        self.path = str(path)
        self.name = self.path
        self.header = header
        files = sorted(
            f for f in os.listdir(self.path) if f.endswith(BATCH_SUFFIXES) and not f.startswith(".")
        )
        if not files:
            raise SourceError(
                f"{self.path}: no .npy, .csv or .parquet batch files; check the directory"
            )
        self.files = files
        rows, widths, dtypes = [], set(), []
        for f in files:
            n, d, dt = _batch_file_shape(os.path.join(self.path, f), header)
            rows.append(n)
            widths.add(d)
            dtypes.append(dt)
        if len(widths) != 1:
            raise DataError(
                f"{self.path}: batch files have different widths {sorted(widths)}; "
                "every file needs the same number of columns"
            )
        self.n_features = widths.pop()
        self.offsets = [0, *itertools.accumulate(rows)]
        self.n_rows = self.offsets[-1]
        self.dtype = np.result_type(*dtypes)
        self.block_rows = max(rows) if rows else 1

    def _storage_bounds(self) -> list[tuple[int, int]]:
        return [(lo, hi) for lo, hi in itertools.pairwise(self.offsets) if hi > lo]

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for i, (lo, hi) in enumerate(itertools.pairwise(self.offsets)):
            if hi <= start or lo >= stop or hi == lo:
                continue
            data = read_batch_file(os.path.join(self.path, self.files[i]), self.header)
            parts.append(data[max(start, lo) - lo : min(stop, hi) - lo])
        if not parts:
            return np.empty((0, self.n_features), self.dtype)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _batch_file_shape(path: str, header: bool) -> tuple[int, int, np.dtype]:
    if path.endswith(".npy"):
        try:
            # A memory map reads only the header.
            mapped: Any = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = mapped.shape, mapped.dtype
            del mapped
        except (OSError, ValueError, EOFError) as exc:
            raise SourceError(f"{path}: not a readable .npy file ({exc})") from exc
        if len(shape) != 2:
            raise DataError(f"{path}: holds a {len(shape)}-D array; batch files must be 2-D")
        return int(shape[0]), int(shape[1]), np.dtype(dtype)
    data = read_batch_file(path, header)
    return data.shape[0], data.shape[1], data.dtype


def read_batch_file(path: str, header: bool = False, data: bytes | None = None) -> np.ndarray:
    """Read one batch file (``.npy`` without pickle, ``.csv``, ``.parquet``) as a 2-D array;
    with ``data``, parse those bytes (an object fetched from storage) named ``path``."""
    content = None if data is None else io.BytesIO(data)
    try:
        if path.endswith(".npy"):
            # Mapped first: a header that claims more rows than the file holds fails
            # here, before anything of that size is allocated.
            if content is None:
                array = np.array(np.load(path, mmap_mode="r", allow_pickle=False))
            else:
                array = np.load(content, allow_pickle=False)
        elif path.endswith(".csv"):
            if content is None:
                array = _read_csv(path, header)
            else:
                lines = io.TextIOWrapper(content, encoding="utf-8")
                array = _parse_csv_lines(path, lines, header, 0)
        elif path.endswith(".parquet"):
            array = _read_parquet(path if content is None else content, path)
        else:
            raise SourceError(f"{path}: unknown batch file type; use .npy, .csv or .parquet")
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: no such file; check the path") from exc
    except (SourceError, DataError):
        raise
    except (ValueError, OSError, EOFError) as exc:
        if "objects in dtype" in str(exc):
            raise SourceError(
                f"{path}: holds Python objects, which loading would unpickle (never done); "
                "save numbers only"
            ) from exc
        if "mmap length is greater than file size" in str(exc):
            raise SourceError(
                f"{path}: its header claims more rows than the file holds; it is damaged or "
                "was cut short"
            ) from exc
        raise SourceError(f"{path}: cannot be read ({exc})") from exc
    except MemoryError as exc:
        raise SourceError(
            f"{path}: does not fit in memory ({exc}); split it into smaller batches"
        ) from exc
    if array.ndim == 1 and path.endswith(".csv"):
        array = array.reshape(-1, 1) if array.size else array.reshape(0, 0)
    if array.ndim != 2:
        raise DataError(f"{path}: holds a {array.ndim}-D array; batch files must be 2-D")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: dtype {array.dtype} is not numeric; write numbers only")
    return array


def _read_csv(path: str, header: bool) -> np.ndarray:
    with open(path) as fh:
        return _parse_csv_lines(path, fh, header, 0)


def _parse_csv_lines(path: str, lines: Iterable[str], header: bool, first_row: int) -> np.ndarray:
    """Comma-separated numbers as a 2-D float64 array (blank lines skipped, the first
    line skipped with ``header``); ``first_row`` is the row index of the first row."""
    lines = list(lines)
    if header:
        lines = lines[1:]
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return np.empty((0, 0))
    try:
        return np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataError(_csv_problem(path, lines, first_row, exc)) from exc


def _csv_problem(path: str, lines: list[str], first_row: int, exc: Exception) -> str:
    """What is wrong with CSV ``lines`` that NumPy could not parse, by row and column index."""
    width = None
    for r, line in enumerate(lines):
        cells = line.rstrip("\r\n").split(",")
        if width is not None and len(cells) != width:
            return (
                f"{path}: row index {first_row + r} has {len(cells)} columns, the rows before "
                f"it {width}; every row needs the same number of columns"
            )
        width = len(cells)
        for c, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                hint = (
                    ": it looks like a header row; pass --header"
                    if first_row + r == 0
                    else "; CSV cells must be numbers"
                )
                return (
                    f"{path}: row index {first_row + r}, column index {c} holds {cell.strip()!r}, "
                    f"not a number{hint}"
                )
    return f"{path}: not comma-separated numbers ({exc}); CSV cells must be numbers"


def _read_parquet(file: Any, path: str) -> np.ndarray:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise SourceError(
            f"{path}: reading .parquet needs pyarrow; pip install 'streamclust[parquet]' or "
            "convert to .npy"
        ) from exc
    table = pq.read_table(file)
    return (
        np.column_stack([c.to_numpy() for c in table.columns])
        if table.num_columns
        else (np.empty((table.num_rows, 0)))
    )


def iter_csv_blocks(
    path: str,
    block_rows: int,
    header: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[np.ndarray]:
    """Parse a CSV file (a path or URL) in blocks of ``block_rows`` lines (bounded memory)."""
    name = redact_url(path)
    try:
        if is_url(path):
            fs, inside = filesystem(path, storage_options)
            fh = fs.open(inside, "rt")
        else:
            fh = open(path)
    except FileNotFoundError as exc:
        raise SourceError(f"{name}: no such file; check the path") from exc
    except OSError as exc:
        reason = explain_failure(exc) or f"cannot be read ({type(exc).__name__})"
        raise SourceError(f"{name}: {reason}") from exc
    path = name
    with fh:
        if header:
            next(fh, None)
        rows = 0
        while True:
            lines = list(itertools.islice(fh, block_rows))
            if not lines:
                return
            block = _parse_csv_lines(path, lines, False, rows)
            rows += len(block)
            if block.size:
                yield block
