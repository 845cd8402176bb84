"""The same rows give a bit-identical model whatever holds them: the engine's passes walk
logical blocks of the row index, never storage chunks."""

from __future__ import annotations

import itertools
import warnings

import dask.array as da
import numpy as np
import pytest
from conftest import logical_blocks_of
from sklearn.exceptions import ConvergenceWarning

import streamclust as sc
from streamclust.engine import plan
from streamclust.exceptions import ModelFileError
from streamclust.persistence import load_checkpoint, save_checkpoint

N_ROWS, N_FEATURES = 9_100, 6


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(5)
    centers = rng.uniform(-5, 5, size=(6, N_FEATURES))
    labels = rng.integers(0, 6, size=N_ROWS)
    return (centers[labels] + rng.normal(size=(N_ROWS, N_FEATURES))).astype(np.float32)


@pytest.fixture(scope="module")
def holders(tmp_path_factory, rows):
    """The same rows in every format: Zarr with three chunkings, .npy, raw, ndarray,
    dask arrays with two chunkings, and a directory of uneven batch files."""
    tmp = tmp_path_factory.mktemp("holders")
    np.save(tmp / "t.npy", rows)
    rows.tofile(tmp / "t.bin")
    batches = tmp / "batches"
    batches.mkdir()
    cuts = [0, 700, 2_950, 3_000, 6_100, N_ROWS]
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        np.save(batches / f"b{i:03d}.npy", rows[lo:hi])
    return {
        "zarr-1000": sc.write_zarr(rows, tmp / "a.zarr", block_rows=1_000),
        "zarr-777": sc.write_zarr(rows, tmp / "b.zarr", block_rows=777),
        "zarr-4096": sc.write_zarr(rows, tmp / "c.zarr", block_rows=4_096),
        "npy": str(tmp / "t.npy"),
        "raw": sc.open_source(tmp / "t.bin", dtype="float32", shape=(-1, N_FEATURES)),
        "ndarray": rows,
        "dask-500": da.from_array(rows, chunks=(500, N_FEATURES)),
        "dask-3333x3": da.from_array(rows, chunks=(3_333, 3)),
        "batches": str(batches),
    }


def test_logical_blocks_depend_on_batch_size_and_width_only(tmp_path, monkeypatch):
    assert plan.logical_block_rows(4096, 32) == 65_536  # 8 MiB of float32
    assert plan.logical_block_rows(1000, 16) == 131_000
    assert plan.logical_block_rows(10**7, 32) == 10**7  # at least one batch
    logical_blocks_of(monkeypatch, 3_000, batch_size=100, n_features=4)
    want = [(0, 3_000), (3_000, 6_000), (6_000, 9_000), (9_000, 10_050)]
    table = np.zeros((10_050, 4), np.float32)
    for source in (
        sc.open_source(table, block_rows=333),
        sc.write_zarr(table, tmp_path / "t.zarr", block_rows=4_000),
    ):
        assert list(plan.block_ranges(source, 100)) == want  # 50 rows join the last block


@pytest.mark.parametrize("selection", ["last_n", "full"])
def test_kmeans_is_bit_identical_from_every_format(holders, monkeypatch, selection):
    logical_blocks_of(monkeypatch, 2_000, batch_size=250, n_features=N_FEATURES)
    params = dict(n_clusters=6, n_init=3, batch_size=250, max_passes=2, random_state=7)
    params |= dict(selection=selection, refine=1, client="threads", progress=False)
    fits = {name: sc.StreamingKMeans(**params).fit(data) for name, data in holders.items()}
    ref = fits["npy"]
    for name, km in fits.items():
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_, err_msg=name)
        np.testing.assert_array_equal(km.init_scores_, ref.init_scores_, err_msg=name)
        assert km.inertia_ == ref.inertia_, name
        assert km.n_steps_ == ref.n_steps_, name


def test_kmeans_partial_fit_is_bit_identical_from_every_format(holders, monkeypatch):
    logical_blocks_of(monkeypatch, 2_000, batch_size=250, n_features=N_FEATURES)
    params = dict(n_clusters=6, n_init=2, batch_size=250, random_state=1, progress=False)
    ref = None
    for name, data in holders.items():
        if name == "ndarray":  # in memory, partial_fit is one mini-batch by definition
            continue
        km = sc.StreamingKMeans(**params).partial_fit(data).partial_fit(data)
        ref = ref or km
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_, err_msg=name)


def test_gmm_is_bit_identical_from_every_format(holders, monkeypatch):
    logical_blocks_of(monkeypatch, 1_500, batch_size=500, n_features=N_FEATURES)
    params = dict(n_components=4, covariance_type="full", n_init=2, max_iter=5)
    params |= dict(batch_size=500, random_state=2, client="threads", progress=False)
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, data in holders.items():
            gm = sc.StreamingGaussianMixture(**params).fit(data)
            fits[name] = (gm, gm.bic(data))
    ref, ref_bic = fits["npy"]
    for name, (gm, bic) in fits.items():
        for attr in ("weights_", "means_", "covariances_", "init_lower_bounds_"):
            np.testing.assert_array_equal(getattr(gm, attr), getattr(ref, attr), err_msg=name)
        assert bic == ref_bic, name


def test_a_checkpoint_of_another_format_version_is_refused(tmp_path, rows):
    params = dict(n_clusters=4, n_init=2, batch_size=500, max_passes=2, random_state=0)
    ckpt = tmp_path / "ckpt"
    sc.StreamingKMeans(**params, progress=False, checkpoint=ckpt).fit(rows)
    meta, arrays = load_checkpoint(ckpt / "kmeans-fit.npz")
    assert meta["format_version"] == 2
    save_checkpoint(ckpt / "kmeans-fit.npz", {**meta, "format_version": 1}, arrays)
    with pytest.raises(ModelFileError, match="checkpoint format version 1 is not 2") as info:
        sc.StreamingKMeans(**params, progress=False, checkpoint=ckpt).fit(rows)
    assert "\n" not in str(info.value) and "remove it" in str(info.value)
