"""Datasets read block by block.

A :class:`Source` is a 2-D table of ``n_rows x n_features`` numbers that is
read in row ranges (:mod:`.base`); one module per family of formats: arrays in
memory or behind an array API (:mod:`.arrays`), files on disk (:mod:`.files`),
Zarr stores on disk or at a URL (:mod:`.zarr_store`; URLs and their options:
:mod:`.remote`); :func:`open_source` opens any of them (:mod:`.opening`), and
:mod:`.writers` writes new stores and files atomically.

Every block is validated as it is read: it must be finite, and a Zarr store
must have committed the rows and have intact chunks.
"""

from .arrays import (
    ArraySource,
    DaskSource,
    LazyArraySource,
    is_dask_array,
    is_lazy_array,
    is_xarray,
)
from .base import TARGET_BLOCK_BYTES, BlockRanges, Source
from .files import (
    BATCH_SUFFIXES,
    BatchDirSource,
    NpySource,
    RawSource,
    iter_csv_blocks,
    read_batch_file,
)
from .opening import open_source
from .parquet import ParquetSource
from .remote import (
    is_url,
    parse_storage_options,
    redact_options,
    redact_url,
    storage_options_for_outputs,
)
from .sparse import SparseSource, is_sparse
from .weighted import WeightedSource, with_weights
from .writers import ArrayWriter, check_output, check_writable, write_array, write_zarr
from .zarr_store import ZarrSource, is_zarr_array, is_zarr_group

__all__ = [
    "BATCH_SUFFIXES",
    "TARGET_BLOCK_BYTES",
    "ArraySource",
    "ArrayWriter",
    "BatchDirSource",
    "BlockRanges",
    "DaskSource",
    "LazyArraySource",
    "NpySource",
    "ParquetSource",
    "RawSource",
    "Source",
    "SparseSource",
    "WeightedSource",
    "ZarrSource",
    "check_output",
    "check_writable",
    "is_dask_array",
    "is_lazy_array",
    "is_sparse",
    "is_url",
    "is_xarray",
    "is_zarr_array",
    "is_zarr_group",
    "iter_csv_blocks",
    "open_source",
    "parse_storage_options",
    "read_batch_file",
    "redact_options",
    "redact_url",
    "storage_options_for_outputs",
    "with_weights",
    "write_array",
    "write_zarr",
]
