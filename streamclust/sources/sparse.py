"""An in-memory scipy.sparse matrix as a Source of CSR blocks (StreamingKMeans only)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..exceptions import DataError, SourceError
from ..kernels.sparse import is_sparse
from ..validation import compute_dtype, row_span
from .base import TARGET_BLOCK_BYTES, Source

__all__ = ["SparseSource", "is_sparse"]


class SparseSource(Source):
    """Rows of a scipy.sparse matrix (kept as CSR), read as CSR blocks in the compute
    dtype. Blocks hold about 8 MiB of stored values; every block is checked for NaN
    and inf among its stored values."""

    in_memory = True

    def __init__(self, matrix: Any, name: str = "sparse matrix") -> None:
        if not is_sparse(matrix) or matrix.ndim != 2:
            raise DataError(f"{name}: expected a 2-D scipy.sparse matrix")
        self.matrix = sp.csr_matrix(matrix)
        self.n_rows, self.n_features = self.matrix.shape
        self.dtype = self.matrix.dtype
        per_row = max(1.0, self.matrix.nnz / max(1, self.n_rows))
        itemsize = compute_dtype(self.dtype).itemsize + 4  # a value and its column index
        self.block_rows = max(1, int(TARGET_BLOCK_BYTES / (per_row * itemsize)))
        self.name = name

    def read(self, start: int, stop: int) -> Any:
        if not 0 <= start <= stop <= self.n_rows:
            raise SourceError(f"{self.name}: {row_span(start, stop)} are outside its rows")
        block = self.matrix[start:stop].astype(self.compute_dtype, copy=False)
        if not np.isfinite(block.data).all():
            coo = block.tocoo()
            bad = int(np.flatnonzero(~np.isfinite(coo.data))[0])
            row, col, value = int(coo.row[bad]), int(coo.col[bad]), coo.data[bad]
            kind = "NaN" if np.isnan(value) else "infinity"
            raise DataError(
                f"Input X contains {kind}: row index {start + row}, column index {col} is "
                f"{value}; drop or impute such rows before clustering"
            )
        return block

    def _read(self, start: int, stop: int) -> Any:
        return self.read(start, stop)
