"""StreamingKMeans against scikit-learn, across schedulers, in and out of core."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import numpy as np
import pytest
import zarr
from conftest import logical_blocks_of
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import streamclust as sc
from streamclust.datasets import CHAPTER_LOOP

CHAPTER = {**CHAPTER_LOOP, "progress": False}


def test_matches_minibatchkmeans_partial_fit(blobs32):
    """n_init=1, same initial centers, same batches, no reassignment: same centers."""
    X = blobs32[:5000].astype(np.float64)
    init = X[:16].copy()
    ref = MiniBatchKMeans(
        n_clusters=16, init=init, n_init=1, batch_size=100, reassignment_ratio=0.0
    )
    for lo in range(0, len(X), 100):
        ref.partial_fit(X[lo : lo + 100])
    ours = sc.StreamingKMeans(
        n_clusters=16,
        init=init,
        n_init=1,
        batch_size=100,
        reassignment_ratio=0.0,
        shuffle=False,
        client="sync",
        progress=False,
    ).fit(X)
    assert ours.n_steps_ == 50
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-5)

    stream = sc.StreamingKMeans(
        n_clusters=16, init=init, n_init=1, batch_size=100, reassignment_ratio=0.0, progress=False
    )
    for lo in range(0, len(X), 100):
        stream.partial_fit(X[lo : lo + 100])
    np.testing.assert_allclose(stream.cluster_centers_, ref.cluster_centers_, rtol=1e-5)
    # scikit-learn's partial_fit inertia_: the last batch with the updated centers.
    assert stream.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


@pytest.mark.parametrize("ref_seed", [0, 42])
def test_chapter_loop_matches_full_kmeans(chapter_X, ref_seed):
    km = sc.StreamingKMeans(**CHAPTER).fit(chapter_X)
    ref = KMeans(n_clusters=5, n_init=10, random_state=ref_seed).fit(chapter_X)
    assert km.n_steps_ == 100 and km.n_passes_ == 5
    assert km.inertia_ <= 1.01 * ref.inertia_
    # inertia_ is the exact inertia over all rows, as scikit-learn computes it.
    exact = ((chapter_X - km.cluster_centers_[km.labels_]) ** 2).sum()
    assert km.inertia_ == pytest.approx(exact, rel=1e-12)
    assert km.score(chapter_X) == pytest.approx(-exact, rel=1e-12)
    assert km.init_scores_.shape == (10,)
    assert km.best_init_ == int(np.argmin(km.init_scores_))


def test_selection_full_and_refine(blobs32):
    km = sc.StreamingKMeans(
        n_clusters=16,
        n_init=4,
        batch_size=512,
        selection="full",
        random_state=1,
        client="sync",
        progress=False,
    ).fit(blobs32)
    assert km.init_inertias_.shape == (4,)
    assert km.best_init_ == int(np.argmin(km.init_inertias_))
    assert km.inertia_ == km.init_inertias_[km.best_init_]
    refined = sc.StreamingKMeans(
        n_clusters=16,
        n_init=4,
        batch_size=512,
        selection="full",
        refine=3,
        random_state=1,
        client="sync",
        progress=False,
    ).fit(blobs32)
    assert refined.inertia_ < km.inertia_
    # One more Lloyd step from the refined centers, done by scikit-learn.
    ref = KMeans(n_clusters=16, init=refined.cluster_centers_, n_init=1, max_iter=1).fit(blobs32)
    assert ref.inertia_ <= refined.inertia_ * (1 + 1e-6)


def test_max_steps_wins_over_max_passes(chapter_X):
    km = sc.StreamingKMeans(
        n_clusters=5, batch_size=300, max_passes=1, max_steps=15, random_state=0, progress=False
    ).fit(chapter_X)
    assert km.n_steps_ == 15 and km.n_passes_ == 3
    km = sc.StreamingKMeans(
        n_clusters=5, batch_size=300, max_passes=2, random_state=0, progress=False
    ).fit(chapter_X)
    assert km.n_steps_ == 14 and km.n_passes_ == 2


def test_last_n_longer_than_fit_uses_all_steps(chapter_X):
    km = sc.StreamingKMeans(
        n_clusters=5, batch_size=1000, last_n=50, random_state=0, progress=False
    ).fit(chapter_X)
    assert km.n_steps_ == 2
    assert np.all(km.init_scores_ > 0)


def test_no_center_dies(blobs32):
    """Low-count centers are reassigned: every center ends up owning rows."""
    init = np.repeat(blobs32[:1], 16, axis=0) + np.arange(16)[:, None] * 1e-3
    km = sc.StreamingKMeans(
        n_clusters=16, init=init, n_init=1, batch_size=256, random_state=0, progress=False
    ).fit(blobs32)
    assert len(np.unique(km.labels_)) == 16


@pytest.mark.parametrize("client", ["sync", "threads"])
def test_zarr_and_memmap_give_identical_centers(blobs_zarr, blobs_npy, blobs32, client):
    params = dict(
        n_clusters=16, n_init=3, batch_size=1000, random_state=7, client=client, progress=False
    )
    # The model depends on the data and its block partition; give both the same blocks.
    a = sc.StreamingKMeans(**params).fit(sc.ZarrSource(blobs_zarr, block_rows=3000))
    b = sc.StreamingKMeans(**params).fit(sc.NpySource(blobs_npy, block_rows=3000))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    assert not hasattr(a, "labels_")
    # The in-memory twin with the same blocks gives the same model too.
    c = sc.StreamingKMeans(**params).fit(sc.ArraySource(blobs32, block_rows=3000))
    np.testing.assert_array_equal(a.cluster_centers_, c.cluster_centers_)


def test_same_model_on_sync_threads_and_local_cluster(blobs_zarr, cluster_client):
    from distributed import get_task_stream

    params = dict(
        n_clusters=16,
        n_init=4,
        batch_size=1000,
        selection="full",
        refine=1,
        random_state=3,
        progress=False,
    )
    sync = sc.StreamingKMeans(**params, client="sync").fit(blobs_zarr)
    threads = sc.StreamingKMeans(**params, client="threads").fit(blobs_zarr)
    with get_task_stream(cluster_client) as ts:
        dist = sc.StreamingKMeans(**params, client=cluster_client).fit(blobs_zarr)
    for other in (threads, dist):
        np.testing.assert_array_equal(sync.cluster_centers_, other.cluster_centers_)
        np.testing.assert_array_equal(sync.init_scores_, other.init_scores_)
        assert sync.inertia_ == other.inertia_
    # The work ran on both worker processes, not on the driver.
    workers = {t["worker"] for t in ts.data}
    assert workers == set(cluster_client.scheduler_info()["workers"])
    assert any(t["key"].startswith("_scan_task") for t in ts.data)
    assert any(t["key"].startswith("_read_task") for t in ts.data)


def test_in_memory_on_cluster_matches_sync(blobs32, cluster_client):
    params = dict(n_clusters=8, n_init=2, batch_size=2000, random_state=5, progress=False)
    a = sc.StreamingKMeans(**params, client="sync").fit(blobs32)
    b = sc.StreamingKMeans(**params, client=cluster_client).fit(blobs32)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    np.testing.assert_array_equal(a.labels_, b.labels_)


@pytest.mark.slow  # 8-9 s: keeps the default run under 3 minutes
def test_fit_memory_does_not_grow_with_rows(tmp_path, monkeypatch):
    """Peak Python-heap memory of a fit over 8x more rows stays the same."""
    from streamclust.datasets import write_blobs_zarr

    # Blocks of 10,000 rows: the data then hold many blocks at a size a test can afford.
    logical_blocks_of(monkeypatch, 10_000, batch_size=1000, n_features=16)

    peaks = {}
    # Each size twice, keeping the lower peak: zarr's I/O thread sometimes still holds
    # the buffers of a block or two when the peak is taken. The very first run warms
    # caches and is not counted.
    for i, rows in enumerate((60_000, 60_000, 960_000, 60_000, 960_000)):
        if not (tmp_path / f"b{rows}.zarr").exists():
            write_blobs_zarr(
                tmp_path / f"b{rows}.zarr", rows, n_centers=8, n_features=16, block_rows=10_000
            )
        # Memory is bounded by the block, so fix the block and vary the rows.
        src = sc.ZarrSource(tmp_path / f"b{rows}.zarr", block_rows=10_000)
        km = sc.StreamingKMeans(
            n_clusters=8, n_init=3, batch_size=1000, random_state=0, client="sync", progress=False
        ).set_params(cache_mb=0)  # the block cache holds data by design: off here
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        km.fit(src)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        if i > 0:
            peaks[rows] = min(peaks.get(rows, peak), peak)
    data_bytes = 960_000 * 16 * 4
    block_bytes = 10_000 * 16 * 4
    # 16x the rows: keeping even one int32 per row would add 3.6 MB; allow three blocks.
    assert peaks[960_000] < peaks[60_000] + 3 * block_bytes, peaks
    assert peaks[960_000] < data_bytes / 10, peaks


def test_predict_transform_score_on_every_input_kind(blobs32, blobs_zarr, tmp_path):
    import dask.array as da

    km = sc.StreamingKMeans(
        n_clusters=8, n_init=2, batch_size=1000, random_state=0, client="sync", progress=False
    ).fit(blobs32)
    labels = km.predict(blobs32)
    dist = km.transform(blobs32)
    ref = np.sqrt(
        ((blobs32[:, None, :].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(-1)
    )
    np.testing.assert_allclose(dist, ref, rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(labels, ref.argmin(1))
    np.testing.assert_array_equal(km.predict(blobs_zarr), labels)
    lazy = km.predict(da.from_array(blobs32, chunks=(3000, 8)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), labels)
    lazy_t = km.transform(da.from_array(blobs32, chunks=(3000, 8)))
    np.testing.assert_array_equal(lazy_t.compute(), dist)
    out = km.predict(blobs_zarr, out=tmp_path / "labels.zarr")
    stored = zarr.open_array(out, mode="r")
    assert stored.attrs["committed_rows"] == len(labels)
    np.testing.assert_array_equal(stored[:], labels)
    km.predict(blobs_zarr, out=tmp_path / "labels.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "labels.npy"), labels)
    assert km.score(blobs_zarr) == pytest.approx(km.score(blobs32), rel=1e-12)
    assert km.score(da.from_array(blobs32, chunks=(5000, 8))) == pytest.approx(
        km.score(blobs32), rel=1e-12
    )


def test_fit_on_dask_array_equals_in_memory(blobs32):
    import dask.array as da

    params = dict(
        n_clusters=8, n_init=2, batch_size=1000, random_state=0, client="sync", progress=False
    )
    a = sc.StreamingKMeans(**params).fit(da.from_array(blobs32, chunks=(4000, 8)))
    b = sc.StreamingKMeans(**params).fit(sc.ArraySource(blobs32, block_rows=4000))
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_save_load_predict_and_continue_bit_identical(blobs32, tmp_path):
    km = sc.StreamingKMeans(
        n_clusters=8, n_init=3, batch_size=500, random_state=0, progress=False
    ).fit(blobs32[:10_000])
    km.save(tmp_path / "model")
    loaded = sc.load(tmp_path / "model")
    assert isinstance(loaded, sc.StreamingKMeans)
    assert loaded.get_params() == km.get_params()
    np.testing.assert_array_equal(loaded.predict(blobs32), km.predict(blobs32))
    for lo in range(10_000, 20_000, 500):
        km.partial_fit(blobs32[lo : lo + 500])
        loaded.partial_fit(blobs32[lo : lo + 500])
    np.testing.assert_array_equal(loaded.cluster_centers_, km.cluster_centers_)
    np.testing.assert_array_equal(loaded.init_scores_, km.init_scores_)
    assert loaded.n_steps_ == km.n_steps_


def test_partial_fit_stream_selects_by_last_n(chapter_X):
    """The chapter's loop, one partial_fit per batch, all candidates in lockstep."""
    rng = np.random.default_rng(42)
    km = sc.StreamingKMeans(
        n_clusters=5, n_init=10, init_size=500, last_n=10, random_state=42, progress=False
    )
    km.partial_fit(chapter_X[rng.choice(len(chapter_X), 500, replace=False)])
    for _ in range(100):
        km.partial_fit(chapter_X[rng.choice(len(chapter_X), 100, replace=False)])
    assert km.n_steps_ == 101
    assert km.best_init_ == int(np.argmin(km.init_scores_))
    ref = KMeans(n_clusters=5, n_init=10, random_state=0).fit(chapter_X)
    assert -km.score(chapter_X) <= 1.02 * ref.inertia_


def test_partial_fit_on_a_source(blobs_zarr, blobs32):
    km = sc.StreamingKMeans(
        n_clusters=8, n_init=2, batch_size=1000, random_state=0, client="sync", progress=False
    )
    km.partial_fit(blobs_zarr)
    assert km.n_steps_ == sum(
        -(-(hi - lo) // 1000) for lo, hi in sc.open_source(blobs_zarr).blocks(1000)
    )
    assert km.inertia_ == pytest.approx(-km.score(blobs32), rel=1e-12)


def test_pipeline_and_grid_search(blobs32):
    pipe = make_pipeline(
        StandardScaler(),
        sc.StreamingKMeans(n_init=1, batch_size=500, random_state=0, progress=False),
    )
    grid = GridSearchCV(pipe, {"streamingkmeans__n_clusters": [4, 16]}, cv=2)
    grid.fit(blobs32[:4000])
    assert grid.best_params_["streamingkmeans__n_clusters"] == 16
    assert pipe.fit_transform(blobs32[:2000]).shape == (2000, 8)


def test_same_random_state_same_model_different_state_different(chapter_X):
    a = sc.StreamingKMeans(n_clusters=5, random_state=1, progress=False).fit(chapter_X)
    b = sc.StreamingKMeans(n_clusters=5, random_state=1, progress=False).fit(chapter_X)
    c = sc.StreamingKMeans(n_clusters=5, random_state=2, batch_size=100, progress=False).fit(
        chapter_X
    )
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_fewer_distinct_points_than_clusters_warns_as_scikit_learn_does(tmp_path):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    X = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), 10, axis=0)
    with pytest.warns(ConvergenceWarning) as theirs:
        KMeans(n_clusters=5, n_init=1, random_state=0).fit(X)
    for data in (X, sc.write_zarr(X, tmp_path / "x.zarr")):
        with pytest.warns(ConvergenceWarning) as ours:
            km = sc.StreamingKMeans(n_clusters=5, random_state=0, progress=False).fit(data)
        assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
        assert len(np.unique(km.predict(X))) == 3


class CountingNpy(sc.NpySource):
    """A .npy source that counts how often each of its rows is read."""

    def __init__(self, path, block_rows):
        super().__init__(path, block_rows=block_rows)
        self.reads = np.zeros(self.n_rows, np.int64)
        self.lock = threading.Lock()

    def _read(self, start, stop):
        with self.lock:
            self.reads[start:stop] += 1
        return super()._read(start, stop)


@pytest.mark.parametrize("selection", ["last_n", "full"])
def test_a_fit_reads_the_data_twice_whatever_the_selection(blobs_npy, selection, monkeypatch):
    """Without the block cache: one pass of steps, one exact pass (every candidate's
    inertia for "full", which also gives the chosen one's); the initialization sample
    reads up to 8 blocks more. With it, every row is read from storage once."""
    logical_blocks_of(monkeypatch, 1_000, batch_size=500, n_features=8)
    params = dict(n_clusters=8, n_init=4, batch_size=500, selection=selection, random_state=0)
    src = CountingNpy(blobs_npy, block_rows=1_000)
    km = sc.StreamingKMeans(**params, progress=False, cache_mb=0).fit(src)
    assert src.reads.min() == 2 and src.reads.max() == 3
    assert (src.reads == 3).sum() <= 8 * 1_000
    assert km.read_stats_ == {
        "blocks_read": src.reads.sum() // 1_000,
        "rows_read": src.reads.sum(),
        "cache_hits": 0,
        "cached_bytes": 0,
    }
    if selection == "full":
        assert km.inertia_ == km.init_inertias_[km.best_init_]
    cached = CountingNpy(blobs_npy, block_rows=1_000)
    again = sc.StreamingKMeans(**params, progress=False, refine=0).fit(cached)
    assert cached.reads.min() == cached.reads.max() == 1
    stats = again.read_stats_
    assert stats["rows_read"] == 20_000 and stats["cached_bytes"] == 20_000 * 8 * 4
    assert stats["blocks_read"] + stats["cache_hits"] == km.read_stats_["blocks_read"]
    np.testing.assert_array_equal(again.cluster_centers_, km.cluster_centers_)
    assert again.inertia_ == km.inertia_


def test_data_larger_than_the_cache_keep_what_fits(blobs_npy, monkeypatch):
    """A budget of 5 of the 20 blocks: those 5 are read once, the others every pass;
    the model is the one an uncached fit gives."""
    logical_blocks_of(monkeypatch, 1_000, batch_size=500, n_features=8)
    params = dict(n_clusters=8, n_init=2, batch_size=500, max_passes=3, refine=1, random_state=3)
    ref = sc.StreamingKMeans(**params, progress=False, cache_mb=0).fit(blobs_npy)
    src = CountingNpy(blobs_npy, block_rows=1_000)
    km = sc.StreamingKMeans(**params, progress=False, cache_mb=5 * 32_000 / 2**20).fit(src)
    per_block = src.reads.reshape(20, 1_000)[:, 0]
    assert (per_block == 1).sum() == 5 and per_block.max() >= 5  # 3 passes, inertia, refine
    assert km.read_stats_["cached_bytes"] == 5 * 32_000
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    assert km.inertia_ == ref.inertia_


@pytest.mark.parametrize("bad", [-1, "lots", float("nan"), float("inf"), True])
def test_a_bad_cache_budget_is_one_line(bad, monkeypatch):
    with pytest.raises(sc.ParameterError, match=r"cache_mb=.* must be a number of MiB >= 0"):
        sc.StreamingKMeans(2, cache_mb=bad).fit(np.zeros((10, 2)))
    monkeypatch.setenv("STREAMCLUST_CACHE_MB", "-3")
    with pytest.raises(sc.ParameterError, match="STREAMCLUST_CACHE_MB='-3' must be"):
        sc.StreamingGaussianMixture(2).fit(np.zeros((10, 2)))


@pytest.mark.slow  # (subprocesses or a cluster: with the long tests)
def test_threads_hold_only_the_blocks_in_flight(tmp_path, monkeypatch):
    """On the default threads, a fit keeps no block alive after its use, even with
    Python's cyclic garbage collector off (blocks are freed by reference counting)."""
    from streamclust.datasets import write_blobs_zarr

    logical_blocks_of(monkeypatch, 10_000, batch_size=1000, n_features=16)

    write_blobs_zarr(tmp_path / "b.zarr", 960_000, n_centers=8, n_features=16, block_rows=10_000)
    src = sc.ZarrSource(tmp_path / "b.zarr", block_rows=10_000)
    km = sc.StreamingKMeans(
        n_clusters=8, n_init=2, batch_size=1000, random_state=0, progress=False, cache_mb=0
    )
    km.fit(src)  # warm-up: thread pools, caches
    gc.collect()
    gc.disable()
    try:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        km.fit(src)  # a pass of steps and the exact-inertia pass
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    finally:
        gc.enable()
    data_bytes = 960_000 * 16 * 4
    assert peak < data_bytes / 5, (peak, data_bytes)


@pytest.mark.parametrize(("init", "candidates"), [("k-means++", 1), ("random", 3)])
def test_n_init_auto_means_what_it_means_in_scikit_learn(blobs32, init, candidates):
    """MiniBatchKMeans' n_init="auto": one candidate for k-means++ (or an array), 3 for
    random; the same model as that n_init given as a number."""
    params = {"n_clusters": 8, "init": init, "batch_size": 1024, "random_state": 0}
    auto = sc.StreamingKMeans(n_init="auto", progress=False, **params).fit(blobs32)
    same = sc.StreamingKMeans(n_init=candidates, progress=False, **params).fit(blobs32)
    assert len(auto.init_scores_) == candidates
    np.testing.assert_array_equal(auto.cluster_centers_, same.cluster_centers_)
    centers = blobs32[:8]
    one = sc.StreamingKMeans(8, init=centers, n_init="auto", progress=False).fit(blobs32)
    assert len(one.init_scores_) == 1  # and no warning about n_init
    with pytest.raises(sc.ParameterError, match="n_init='many' must be an int >= 1 or 'auto'"):
        sc.StreamingKMeans(8, n_init="many").fit(blobs32)
