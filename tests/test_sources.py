"""Every Source reads the same rows as the in-memory array it was written from."""

from __future__ import annotations

import pickle

import dask.array as da
import numpy as np
import pytest
from conftest import run_cli

import streamclust as sc


@pytest.fixture()
def table():
    return np.random.default_rng(0).normal(size=(1050, 6)).astype(np.float32)


def test_zarr_store_layout(tmp_path, table):
    import zarr

    src = sc.write_zarr(table, tmp_path / "t.zarr", block_rows=100)
    arr = zarr.open_array(src.path, mode="r")
    assert arr.metadata.zarr_format == 3
    assert arr.attrs["committed_rows"] == len(table)
    assert np.isnan(arr.metadata.fill_value)
    names = [c["name"] for c in arr.metadata.to_dict()["codecs"]]
    assert names == ["bytes", "zstd", "crc32c"]
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary store was renamed


def test_write_zarr_from_blocks_and_crash_leaves_nothing(tmp_path, table):
    def blocks():
        yield table[:500]
        yield table[500:]

    src = sc.write_zarr(blocks(), tmp_path / "b.zarr", block_rows=128)
    np.testing.assert_array_equal(src.read(0, src.n_rows), table)

    def failing():
        yield table[:500]
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError):
        sc.write_zarr(failing(), tmp_path / "c.zarr")
    assert not (tmp_path / "c.zarr").exists()
    assert not list(tmp_path.glob(".c.zarr*"))


def test_zarr_group_component(tmp_path, table):
    import zarr

    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("X", data=table, chunks=(256, 6))
    group.create_array("y", data=table[:, :2], chunks=(256, 2))
    src = sc.open_source(tmp_path / "g.zarr")
    np.testing.assert_array_equal(src.read(0, 10), table[:10])
    src_y = sc.open_source(tmp_path / "g.zarr" / "y")
    assert src_y.n_features == 2


def test_zarr_v2_store(tmp_path, table):
    import zarr

    zarr.create_array(tmp_path / "v2.zarr", data=table, chunks=(300, 6), zarr_format=2)
    src = sc.open_source(tmp_path / "v2.zarr")
    np.testing.assert_array_equal(src.read(0, src.n_rows), table)


def test_csv_batches_with_and_without_header(tmp_path, table):
    d = tmp_path / "csv"
    d.mkdir()
    np.savetxt(d / "a.csv", table[:500], delimiter=",")
    np.savetxt(d / "b.csv", table[500:], delimiter=",")
    src = sc.open_source(d)
    np.testing.assert_allclose(src.read(0, src.n_rows), table, rtol=1e-6)
    h = tmp_path / "hcsv"
    h.mkdir()
    np.savetxt(h / "a.csv", table[:10], delimiter=",", header="a,b,c,d,e,f", comments="")
    with pytest.raises(sc.DataError, match="looks like a header row; pass --header"):
        sc.open_source(h)
    assert sc.open_source(h, header=True).n_rows == 10


def test_convert_cli_csv_and_npy(tmp_path, table, capsys):
    np.savetxt(tmp_path / "t.csv", table, delimiter=",")
    assert (
        run_cli(
            [
                "convert",
                str(tmp_path / "t.csv"),
                str(tmp_path / "c.zarr"),
                "--block-rows",
                "200",
                "--dtype",
                "float32",
            ]
        )[0]
        == 0
    )
    src = sc.open_source(tmp_path / "c.zarr")
    assert src.chunk_rows == 200 and src.dtype == np.float32
    np.testing.assert_allclose(src.read(0, src.n_rows), table, rtol=1e-6)
    np.save(tmp_path / "t.npy", table)
    assert run_cli(["convert", str(tmp_path / "t.npy"), str(tmp_path / "n.zarr"), "--json"])[0] == 0
    assert '"rows": 1050' in capsys.readouterr().out


def test_integer_data_computes_in_float64(tmp_path):
    ints = np.arange(40, dtype=np.int32).reshape(20, 2)
    np.save(tmp_path / "i.npy", ints)
    src = sc.open_source(tmp_path / "i.npy")
    block = src.read(0, 20)
    assert block.dtype == np.float64
    np.testing.assert_array_equal(block, ints)


def test_raw_file_with_wrong_shape(tmp_path, table):
    table.tofile(tmp_path / "t.bin")
    with pytest.raises(
        sc.DataError, match=r"has 25200 bytes but shape=\(10, 25\) of float32 needs 1000"
    ):
        sc.open_source(tmp_path / "t.bin", dtype="float32", shape=(10, 25))


def test_a_zarr_array_object_is_read_chunk_by_chunk_like_its_path(tmp_path, table):
    import zarr

    sc.write_zarr(table, tmp_path / "t.zarr", block_rows=128)
    params = dict(n_clusters=4, batch_size=100, random_state=0, progress=False)
    by_path = sc.StreamingKMeans(**params).fit(str(tmp_path / "t.zarr"))
    opened = zarr.open_array(tmp_path / "t.zarr", mode="r")
    src = sc.open_source(opened)
    assert isinstance(src, sc.ZarrSource) and src.block_rows == by_path_block_rows(tmp_path)
    assert pickle.loads(pickle.dumps(src)).path == src.path  # workers reopen it by path
    by_object = sc.StreamingKMeans(**params).fit(opened)
    np.testing.assert_array_equal(by_object.cluster_centers_, by_path.cluster_centers_)
    assert not hasattr(by_object, "labels_")  # out of core: no per-row attribute
    # An array in a group, and one in another kind of store (pickled with its store).
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("X", data=table, chunks=(128, 6))
    np.testing.assert_array_equal(sc.open_source(group["X"]).read(0, 1050), table)
    memory = zarr.create_array(zarr.storage.MemoryStore(), data=table, chunks=(128, 6))
    assert sc.open_source(memory).in_memory  # its blocks are shipped, not the whole store
    src = pickle.loads(pickle.dumps(sc.open_source(memory)))
    np.testing.assert_array_equal(src[:], table)


def by_path_block_rows(tmp_path) -> int:
    return sc.open_source(tmp_path / "t.zarr").block_rows


class SlicedOnly:
    """An array-like (an h5py.Dataset, say) that must never be converted whole."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.slices = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.slices.append(key)
        return self.data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("converted whole")


def test_a_large_array_like_is_read_by_slices_never_converted():
    big = np.random.default_rng(1).normal(size=(300_000, 8)).astype(np.float32)  # 9.6 MB
    lazy = SlicedOnly(big)
    src = sc.open_source(lazy)
    assert isinstance(src, sc.LazyArraySource) and src.in_memory
    params = dict(n_clusters=4, n_init=2, batch_size=4096, random_state=0, progress=False)
    km = sc.StreamingKMeans(**params).fit(lazy)
    assert lazy.slices and all(isinstance(k, slice) for k in lazy.slices)
    assert max(k.stop - k.start for k in lazy.slices) <= src.block_rows
    ref = sc.StreamingKMeans(**params).fit(sc.open_source(big, block_rows=src.block_rows))
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.predict(lazy).shape == (300_000,)
    # Small array-likes are converted, as scikit-learn does.
    assert isinstance(sc.open_source(big[:100].tolist()), sc.ArraySource)


RSS_SCRIPT = """
import sys, threading, time
import numpy as np, psutil, zarr
import streamclust as sc

params = dict(n_clusters=8, n_init=3, batch_size=4096, random_state=0, progress=False)
params["cache_mb"] = float(sys.argv[2])
sc.StreamingKMeans(**params).fit(np.random.default_rng(0).random((20_000, 32), np.float32))
path = sys.argv[1]
data = zarr.open_array(path, mode="r") if path.endswith(".zarr") else path
proc = psutil.Process()
base = peak = proc.memory_info().rss
done = threading.Event()

def watch():
    global peak
    while not done.wait(0.005):
        peak = max(peak, proc.memory_info().rss)

thread = threading.Thread(target=watch)
thread.start()
km = sc.StreamingKMeans(**params).fit(data)
done.set()
thread.join()
print((peak - base) / 2**20, km.inertia_)
"""


def fit_rss_growth_mib(path, cache_mb: float = 0) -> float:
    """RSS growth (MiB) of a fresh process fitting ``path`` (a zarr.Array for a store)
    with a block cache of ``cache_mb``."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path), str(cache_mb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    growth, inertia = (float(v) for v in done.stdout.split())
    assert np.isfinite(inertia)
    return growth


@pytest.mark.slow
def test_fitting_a_1_gib_npy_on_threads_keeps_memory_flat(tmp_path):
    """A memory-mapped .npy kept every page it had read resident: a threaded fit of a
    3 GiB file reached 3.2 GiB of RSS. Its rows are now read with plain reads."""
    from streamclust.datasets import BlobSpec, blob_blocks

    out = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.float32, (2**23, 32))
    spec = BlobSpec.make(16, 32, seed=1)
    for i, block in enumerate(blob_blocks(spec, 2**23, block_rows=2**20)):
        out[i * 2**20 : (i + 1) * 2**20] = block
    assert out.nbytes == 2**30
    out.flush()
    del out
    assert fit_rss_growth_mib(tmp_path / "big.npy") < 150


@pytest.mark.slow
def test_fitting_a_1_gib_zarr_array_object_keeps_memory_flat(tmp_path):
    """RSS grows by less than 150 MiB while a 1 GiB ``zarr.Array`` object is fitted."""
    from streamclust.datasets import write_blobs_zarr

    src = write_blobs_zarr(tmp_path / "big.zarr", 2**23, n_centers=16, n_features=32, seed=1)
    assert src.n_rows * src.n_features * 4 == 2**30
    assert fit_rss_growth_mib(tmp_path / "big.zarr") < 150
    # The block cache adds its budget, and no more.
    assert fit_rss_growth_mib(tmp_path / "big.zarr", cache_mb=256) < 150 + 256


@pytest.mark.parametrize("n", [0, 1, 99, 100, 101, 1050, 1999, 2000])
@pytest.mark.parametrize("min_rows", [1, 50, 100, 250, 1000, 5000])
def test_block_ranges_are_computed_as_they_were_listed(n, min_rows):
    blocks = sc.open_source(np.zeros((n, 2)), block_rows=100).blocks(min_rows=min_rows)
    # A dask array's chunks are listed blocks: the same rule, applied to a list.
    listed = sc.open_source(da.from_array(np.zeros((n, 2)), chunks=(100, 2)))
    want = list(listed.blocks(min_rows=min_rows)) if n else []
    assert list(blocks) == want and len(blocks) == len(want)
    assert list(blocks[1:]) == want[1:] and list(blocks[::2]) == want[::2]


def test_a_source_of_10_to_the_12_rows_plans_at_once():
    huge = sc.open_source(np.broadcast_to(np.arange(8.0), (10**12, 8)))  # no memory behind it
    blocks = huge.blocks(min_rows=4096)
    assert blocks[-1][1] == 10**12 and len(blocks) == -(-(10**12) // huge.block_rows)
    np.testing.assert_array_equal(huge[10**12 - 1], np.arange(8.0))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_store_that_claims_more_rows_than_it_holds(tmp_path, zarr_format, capsys):
    """A shape of 10**15 rows with chunks for 100: every command stops in one line at
    once (it used to pass 4 GiB in 10 s planning the blocks)."""
    import zarr

    path = tmp_path / "huge.zarr"
    arr = zarr.create_array(
        str(path), shape=(10**15, 8), chunks=(1000, 8), dtype="f4", zarr_format=zarr_format
    )
    arr[:100] = 1.0
    with pytest.raises(sc.SourceError, match=r"its shape says 1000000000000000 rows, but its "):
        sc.open_source(path)
    for args in (
        ["fit", path, "--k", "2", "--out", tmp_path / "m"],
        ["convert", path, tmp_path / "c.zarr"],
    ):
        assert run_cli([str(a) for a in args])[0] == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "its chunks stop at row 1000" in err
    # A store cut short (chunks for 2,000 of its 3,000 rows) says where it stops.
    short = zarr.create_array(
        str(tmp_path / "short.zarr"), shape=(3000, 2), chunks=(1000, 2), dtype="f8"
    )
    short[:2000] = 1.0
    with pytest.raises(sc.SourceError, match="chunks stop at row 2000"):
        sc.open_source(tmp_path / "short.zarr")
