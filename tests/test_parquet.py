"""Parquet datasets as sources: columns, nulls and types, the same model as from
Zarr, and the command line (fit, convert), on disk and in an S3 bucket."""

from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import cli_json, run_cli

import streamclust as sc
from streamclust.exceptions import DataError, DependencyError, SourceError

KM = {"n_clusters": 16, "n_init": 3, "batch_size": 1024, "random_state": 0, "progress": False}


def write_parts(directory, X, parts=3, row_group_size=2_500, extra=None):
    """``X`` as ``parts`` Parquet files with columns f0.. (and ``extra`` columns)."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(X), parts + 1).astype(int)
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        cols = {f"f{j}": X[lo:hi, j] for j in range(X.shape[1])}
        for name, values in (extra or {}).items():
            cols[name] = values[lo:hi]
        pq.write_table(
            pa.table(cols), directory / f"part-{i:03d}.parquet", row_group_size=row_group_size
        )
    return directory


def test_a_fit_from_parquet_equals_the_fit_from_zarr(tmp_path, blobs32, blobs_zarr, s3_bucket):
    local = write_parts(tmp_path / "pq", blobs32)
    from_zarr = sc.StreamingKMeans(**KM).fit(blobs_zarr)
    from_dir = sc.StreamingKMeans(**KM).fit(str(local))
    np.testing.assert_array_equal(from_dir.cluster_centers_, from_zarr.cluster_centers_)
    one_file = sc.StreamingKMeans(**KM).fit(str(local / "part-001.parquet"))
    assert one_file.n_features_in_ == 8
    url = s3_bucket.put(local, "landing")
    from_s3 = sc.StreamingKMeans(**KM).fit(url + "/", storage_options=s3_bucket.options)
    np.testing.assert_array_equal(from_s3.cluster_centers_, from_zarr.cluster_centers_)
    assert from_s3.inertia_ == from_zarr.inertia_


def test_columns_default_to_the_numeric_ones_and_can_be_chosen(tmp_path, blobs32):
    n = len(blobs32)
    extra = {"site": np.array(["north", "south"] * (n // 2)), "ts": np.arange(n, dtype=np.int64)}
    path = write_parts(tmp_path / "pq", blobs32, extra=extra)
    source = sc.open_source(path)
    assert source.columns == [*(f"f{j}" for j in range(8)), "ts"]
    assert source.dtype == np.float64  # an int64 column joins float32 ones
    chosen = sc.open_source(path, columns=["f2", "f0"])
    assert chosen.shape == (n, 2) and chosen.dtype == np.float32
    np.testing.assert_array_equal(chosen[:], blobs32[:, [2, 0]])
    with pytest.raises(DataError, match=r"part-000\.parquet: column 'site' is string, not numeric"):
        sc.open_source(path, columns=["f0", "site"])
    with pytest.raises(DataError, match=r"has no column 'nope'; its columns are \['f0'"):
        sc.open_source(path, columns=["nope"])


def test_nulls_and_bad_files_are_one_line(tmp_path, blobs32):
    values = pa.array([1.0, 2.0, None, 4.0])
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"a": pa.array([1.0, 2.0, 3.0, 4.0]), "b": values}), path)
    source = sc.open_source(path)
    with pytest.raises(DataError, match=r"nulls\.parquet: row index 2, column 'b' is null") as info:
        source.read(0, 4)
    assert "\n" not in str(info.value)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SourceError, match=r"junk\.parquet: not a readable Parquet file"):
        sc.open_source(tmp_path / "junk.parquet")
    write_parts(tmp_path / "mixed", blobs32[:100])
    pq.write_table(pa.table({"g0": blobs32[:10, 0]}), tmp_path / "mixed" / "part-999.parquet")
    with pytest.raises(DataError, match=r"part-999\.parquet: has no column 'f0'"):
        sc.open_source(tmp_path / "mixed")
    with pytest.raises(SourceError, match="no such file, directory or prefix"):
        sc.open_source(tmp_path / "missing.parquet")


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch, blobs32):
    path = write_parts(tmp_path / "pq", blobs32[:100], parts=1)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    with pytest.raises(DependencyError, match=r"pip install 'streamclust\[parquet\]'"):
        sc.open_source(path)


def test_cli_fit_and_convert_parquet(tmp_path, blobs32, blobs_zarr, s3_bucket, capsys):
    n = len(blobs32)
    path = write_parts(tmp_path / "pq", blobs32, extra={"site": np.array(["x"] * n)})
    summary = cli_json(
        ["fit", path, "--k 16 --n-init 3 --batch-size 1024 --out", tmp_path / "m"], capsys
    )
    assert summary["columns"] == [f"f{j}" for j in range(8)]
    reference = sc.StreamingKMeans(**KM).fit(blobs_zarr)
    np.testing.assert_array_equal(
        sc.load(tmp_path / "m").cluster_centers_, reference.cluster_centers_
    )
    # Parquet -> Zarr, on disk and into the bucket; a string column chosen is one line.
    code, out, err = run_cli(
        ["convert", path, tmp_path / "c.zarr", "--columns", "f0,f1", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["features"] == 2
    np.testing.assert_array_equal(sc.open_source(tmp_path / "c.zarr")[:], blobs32[:, :2])
    url = s3_bucket.url("from-parquet.zarr")
    code, _, err = run_cli(["convert", path, url, *s3_bucket.cli_options()], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(
        sc.open_source(url, storage_options=s3_bucket.options)[:], blobs32
    )
    code, _, err = run_cli(
        ["fit", path, "--columns", "f0,site", "--k", "2", "--out", tmp_path / "bad"], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "column 'site' is string" in err
    assert not (tmp_path / "bad").exists()


def test_many_threads_read_one_source_at_once(tmp_path):
    """Each thread reads through its own file handle: a shared one crashed the process."""
    from concurrent.futures import ThreadPoolExecutor

    X = np.random.default_rng(0).normal(size=(200_000, 8)).astype(np.float32)
    (tmp_path / "pq").mkdir()
    table = pa.table({f"x{j}": X[:, j] for j in range(8)})
    pq.write_table(table, tmp_path / "pq" / "a.parquet", row_group_size=5_000)
    source = sc.open_source(tmp_path / "pq")
    bounds = list(source.blocks())
    with ThreadPoolExecutor(8) as pool:
        for _ in range(5):
            parts = list(pool.map(lambda b: source.read(*b), bounds * 2))
            np.testing.assert_array_equal(np.concatenate(parts[: len(bounds)]), X)
