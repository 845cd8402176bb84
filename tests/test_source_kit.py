"""Conformance kit for Source implementations (after zarr's ``StoreTests``).

Every Source subclasses :class:`SourceTests` and says how to hold a table
(``make``); the kit checks what the engine relies on: shape and dtype, blocks
that cover the rows without gap or overlap, reads across block boundaries,
errors that name the rows, pickling as a description, and non-finite values
named by row and column.
"""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import ClassVar

import dask.array as da
import numpy as np
import pytest

import streamclust as sc
from streamclust.exceptions import DataError, SourceError
from streamclust.sources.cache import BlockCache, CachedSource

N_ROWS, N_FEATURES = 1_050, 6


class SourceTests:
    """Subclass it, set ``make`` (and ``in_memory`` for sources that hold the data)."""

    in_memory = False

    def make(self, path: Path, table: np.ndarray) -> sc.Source:
        raise NotImplementedError

    @pytest.fixture()
    def table(self) -> np.ndarray:
        return np.random.default_rng(0).normal(size=(N_ROWS, N_FEATURES)).astype(np.float32)

    @pytest.fixture()
    def source(self, tmp_path, table) -> sc.Source:
        return self.make(tmp_path, table)

    def test_shape_and_dtype(self, source, table):
        assert source.shape == table.shape == (source.n_rows, source.n_features)
        assert len(source) == N_ROWS
        assert source.compute_dtype == np.float32
        assert source.in_memory is self.in_memory

    @pytest.mark.parametrize("min_rows", [1, 100, 333, 5_000])
    def test_blocks_cover_the_rows_without_gap_or_overlap(self, source, min_rows):
        ranges = list(source.blocks(min_rows))
        assert ranges[0][0] == 0 and ranges[-1][1] == N_ROWS
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert all(hi - lo >= min(min_rows, N_ROWS) for lo, hi in ranges)

    def test_blocks_read_back_the_table(self, source, table):
        pieces = [block for _, block in source.iter_blocks()]
        np.testing.assert_array_equal(np.concatenate(pieces), table)
        np.testing.assert_array_equal(source.to_dask().compute(), table)

    @pytest.mark.parametrize(
        "key",
        [
            slice(None, 500),
            slice(100, 900, 7),
            slice(None, None, -3),
            slice(2000, 3000),
            5,
            -1,
            [1049, 0, 128, 128, 5],
            np.arange(N_ROWS) % 3 == 0,
            (slice(10, 20), slice(None, 2)),
            (-3, 4),
        ],
        ids=repr,
    )
    def test_rows_by_numpy_indexing(self, source, table, key):
        np.testing.assert_array_equal(source[key], table[key])

    def test_asarray_iteration_and_bad_indices(self, source, table):
        np.testing.assert_array_equal(np.asarray(source), table)
        assert sum(1 for _ in source) == N_ROWS
        with pytest.raises(IndexError, match="row index 1050 is out of bounds for 1050 rows"):
            source[1050]
        with pytest.raises(IndexError, match="indexed by an int, a slice or a 1-D array"):
            source[1.5]

    @pytest.mark.parametrize("span", [(0, N_ROWS), (17, 555), (99, 101), (1_049, 1_050), (5, 5)])
    def test_reads_across_block_boundaries(self, source, table, span):
        lo, hi = span
        block = source.read(lo, hi)
        assert block.shape == (hi - lo, N_FEATURES) and block.dtype == np.float32
        np.testing.assert_array_equal(block, table[lo:hi])

    @pytest.mark.parametrize("span", [(1_049, 1_051), (-1, 3), (10, 5)])
    def test_a_read_outside_the_rows_names_them(self, source, span):
        lo, hi = span
        with pytest.raises(SourceError, match=rf"rows {lo}:{hi} are outside its 1050 rows"):
            source.read(lo, hi)

    def test_pickles_as_a_description(self, source, table):
        payload = pickle.dumps(source)
        if not self.in_memory:
            assert len(payload) < table.nbytes / 2  # a description, never the data
        clone = pickle.loads(payload)
        np.testing.assert_array_equal(clone.read(500, 700), table[500:700])

    def test_non_finite_values_are_named_by_row_and_column(self, tmp_path, table):
        bad = table.copy()
        bad[537, 2] = np.inf
        source = self.make(tmp_path / "bad", bad)
        np.testing.assert_array_equal(source.read(0, 500), table[:500])
        with pytest.raises(DataError, match="infinity: row index 537, column index 2") as info:
            source.read(500, 600)
        assert "\n" not in str(info.value)


def _zarr(path: Path, table: np.ndarray, chunk_rows: int) -> str:
    import zarr

    path.mkdir(parents=True, exist_ok=True)
    zarr.create_array(path / "t.zarr", data=table, chunks=(chunk_rows, table.shape[1]))
    return str(path / "t.zarr")


class TestZarrSource(SourceTests):
    def make(self, path, table):
        return sc.ZarrSource(_zarr(path, table, 128))


class TestZarrArrayObject(SourceTests):
    def make(self, path, table):
        import zarr

        return sc.open_source(zarr.open_array(_zarr(path, table, 300), mode="r"))


class TestNpySource(SourceTests):
    def make(self, path, table):
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "t.npy", table)
        return sc.NpySource(path / "t.npy", block_rows=128)


class TestRawSource(SourceTests):
    def make(self, path, table):
        path.mkdir(parents=True, exist_ok=True)
        table.tofile(path / "t.bin")
        return sc.RawSource(path / "t.bin", dtype="float32", shape=(-1, N_FEATURES))


class TestBatchDirSource(SourceTests):
    def make(self, path, table):
        path.mkdir(parents=True, exist_ok=True)
        for i, (lo, hi) in enumerate(itertools.pairwise([0, 200, 201, 640, N_ROWS])):
            np.save(path / f"b{i:03d}.npy", table[lo:hi])
        return sc.BatchDirSource(path)


class TestArraySource(SourceTests):
    in_memory = True

    def make(self, path, table):
        return sc.ArraySource(table, block_rows=100)


class TestDaskSource(SourceTests):
    """A dask array over a store (a graph of reads, no data), rechunked across columns."""

    def make(self, path, table):
        return sc.open_source(da.from_zarr(_zarr(path, table, 128)).rechunk((300, 3)))


class TestLazyArraySource(SourceTests):
    """An array-like read by slices (here a memory map): the driver ships its blocks."""

    in_memory = True

    def make(self, path, table):
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "t.npy", table)
        return sc.LazyArraySource(np.load(path / "t.npy", mmap_mode="r"), block_rows=128)


class TestCachedSource(SourceTests):
    """A fit's cache in front of a store: a second read is served from memory."""

    def make(self, path, table):
        return CachedSource(sc.ZarrSource(_zarr(path, table, 128)), BlockCache(2**20))

    def test_pickles_as_a_description(self, source, table):
        with pytest.raises(TypeError, match="stays in the process of its fit"):
            pickle.dumps(source)

    def test_a_second_read_is_served_from_memory(self, source, table):
        first = source.read(100, 300)
        again = source.read(100, 300)
        assert again is first and not again.flags.writeable
        assert source.cache.stats() == {
            "blocks_read": 1,
            "rows_read": 200,
            "cache_hits": 1,
            "cached_bytes": 200 * N_FEATURES * 4,
        }


class RemoteSourceTests(SourceTests):
    """A store put once per table and class on a server (uploads are the slow part)."""

    uploaded: ClassVar[dict[bytes, str]]

    def publish(self, local: str) -> str:
        raise NotImplementedError

    def url_for(self, path: Path, table: np.ndarray) -> str:
        import hashlib

        digest = hashlib.sha256(table.tobytes()).digest()
        if digest not in self.uploaded:
            self.uploaded[digest] = self.publish(_zarr(path, table, 128))
        return self.uploaded[digest]


class TestZarrOnS3(RemoteSourceTests):
    """A Zarr store in a bucket of the test S3 server, opened by URL with its options."""

    uploaded: ClassVar[dict[bytes, str]] = {}

    @pytest.fixture(autouse=True)
    def _bucket(self, s3_kit_bucket):
        self.bucket = s3_kit_bucket

    def publish(self, local):
        import uuid

        return self.bucket.put(local, f"{uuid.uuid4().hex}/t.zarr")

    def make(self, path, table):
        return sc.open_source(self.url_for(path, table), storage_options=self.bucket.options)


class TestZarrOverHTTP(RemoteSourceTests):
    """A Zarr store served read-only over HTTP."""

    uploaded: ClassVar[dict[bytes, str]] = {}

    @pytest.fixture(autouse=True)
    def _server(self, http_root):
        self.root, self.base = http_root

    def publish(self, local):
        import shutil
        import uuid

        name = f"{uuid.uuid4().hex}/t.zarr"
        shutil.copytree(local, self.root / name)
        return f"{self.base}/{name}"

    def make(self, path, table):
        return sc.open_source(self.url_for(path, table))


class TestZarrInMemoryStore(SourceTests):
    """A Zarr store at a ``memory://`` URL: in this process only, so read on the driver."""

    in_memory = True

    def make(self, path, table):
        import uuid

        import zarr

        url = f"memory://{uuid.uuid4().hex}/t.zarr"
        zarr.create_array(url, data=table, chunks=(128, table.shape[1]))
        return sc.open_source(url)


def _parquet_dir(path: Path, table: np.ndarray) -> Path:
    """The table in three Parquet files of several row groups, with a string column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.mkdir(parents=True, exist_ok=True)
    for i, (lo, hi) in enumerate(itertools.pairwise([0, 400, 401, N_ROWS])):
        columns = {f"x{j}": table[lo:hi, j] for j in range(table.shape[1])}
        columns["site"] = np.array(["a"] * (hi - lo))
        pq.write_table(pa.table(columns), path / f"part-{i}.parquet", row_group_size=150)
    (path / "_SUCCESS").write_text("")
    return path


class TestParquetSource(SourceTests):
    """A directory of Parquet files: row groups are the blocks, string columns left out."""

    def make(self, path, table):
        source = sc.open_source(_parquet_dir(path / "pq", table))
        assert isinstance(source, sc.ParquetSource)
        assert source.columns == [f"x{j}" for j in range(N_FEATURES)]
        return source


class TestParquetOnS3(RemoteSourceTests):
    """The same files under a prefix of the test S3 server."""

    uploaded: ClassVar[dict[bytes, str]] = {}

    @pytest.fixture(autouse=True)
    def _bucket(self, s3_kit_bucket):
        self.bucket = s3_kit_bucket

    def url_for(self, path, table):
        import hashlib
        import uuid

        digest = hashlib.sha256(table.tobytes()).digest()
        if digest not in self.uploaded:
            local = _parquet_dir(path / "pq", table)
            self.uploaded[digest] = self.bucket.put(local, f"{uuid.uuid4().hex}/landing")
        return self.uploaded[digest]

    def make(self, path, table):
        return sc.open_source(self.url_for(path, table) + "/", storage_options=self.bucket.options)


def _xarray(path: Path, table: np.ndarray, chunks: object) -> object:
    """The table as variable X of a Zarr dataset written by xarray, opened again."""
    xr = pytest.importorskip("xarray")
    path.mkdir(parents=True, exist_ok=True)
    xr.Dataset({"X": (("row", "feature"), table)}).to_zarr(
        path / "ds.zarr", mode="w", consolidated=False, encoding={"X": {"chunks": (300, 6)}}
    )
    return xr.open_zarr(path / "ds.zarr", chunks=chunks, consolidated=False)["X"]


class TestXarrayOverDask(SourceTests):
    """A DataArray backed by dask (xarray's default for Zarr): read through its dask array."""

    def make(self, path, table):
        source = sc.open_source(_xarray(path, table, {}))
        assert isinstance(source, sc.DaskSource)
        return source


class TestXarrayLazy(SourceTests):
    """A DataArray without dask (``chunks=None``): read by row slices, never loaded whole."""

    in_memory = True

    def make(self, path, table):
        array = _xarray(path, table, None)
        source = sc.open_source(array)
        assert isinstance(source, sc.LazyArraySource) and not array.variable._in_memory
        return source
