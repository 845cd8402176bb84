"""Shared fixtures: the chapter's data, Zarr stores on disk, a real 2-worker LocalCluster."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

import streamclust as sc
from streamclust.datasets import BlobSpec, blob_blocks, make_chapter_blobs

os.environ.setdefault("STREAMCLUST_QUIET", "1")


@pytest.fixture(scope="session")
def chapter_X() -> np.ndarray:
    X, _ = make_chapter_blobs()
    return X


@pytest.fixture(scope="session")
def blobs32() -> np.ndarray:
    """20,000 rows of the benchmark's overlapping 16-blob, 8-feature float32 data."""
    spec = BlobSpec.make(n_centers=16, n_features=8, seed=3)
    return np.concatenate(list(blob_blocks(spec, 20_000, block_rows=5_000)))


@pytest.fixture(scope="session")
def blobs_zarr(tmp_path_factory, blobs32) -> str:
    path = tmp_path_factory.mktemp("data") / "blobs.zarr"
    sc.write_zarr(blobs32, path, block_rows=3_000)
    return str(path)


@pytest.fixture(scope="session")
def blobs_npy(tmp_path_factory, blobs32) -> str:
    path = tmp_path_factory.mktemp("data") / "blobs.npy"
    np.save(path, blobs32)
    return str(path)


@contextlib.contextmanager
def local_cluster_client():
    """A real LocalCluster: 2 worker processes (nannies restart them), one thread each,
    on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def cluster_client():
    with local_cluster_client() as client:
        yield client
