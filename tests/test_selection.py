"""Choosing k: all values of k fitted in the same passes, against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

import streamclust as sc
from streamclust.selection import knee


class CountingSource(sc.ArraySource):
    """A source that counts the blocks read from it (treated as out of core)."""

    reads = 0
    in_memory = False

    def _read(self, start, stop):
        CountingSource.reads += 1
        return super()._read(start, stop)


def test_sweep_matches_kmeans_and_picks_the_chapters_k(chapter_X):
    res = sc.sweep_kmeans(
        chapter_X, range(2, 9), n_init=10, batch_size=100, max_passes=20, progress=False
    )
    for row in res.table():
        ref = KMeans(row["k"], n_init=10, random_state=0).fit(chapter_X)
        assert row["inertia"] == pytest.approx(ref.inertia_, rel=0.01), row["k"]
    # The whole data set is the sample: the silhouette is scikit-learn's (up to summation order).
    assert res.sample_size == len(chapter_X)
    for kk, value in zip(res.k, res.silhouette, strict=True):
        labels = res.models[kk].predict(chapter_X)
        assert value == pytest.approx(silhouette_score(chapter_X, labels), rel=1e-10)
    assert np.all(res.silhouette_se == 0)
    assert res.best_k in (4, 5) and res.knee_k == 4
    # Each model is the one StreamingKMeans fits alone.
    alone = sc.StreamingKMeans(
        6, n_init=10, batch_size=100, max_passes=20, random_state=0, progress=False
    ).fit(chapter_X)
    np.testing.assert_array_equal(res.models[6].cluster_centers_, alone.cluster_centers_)
    assert res.models[6].inertia_ == pytest.approx(alone.inertia_, rel=1e-12)


def test_one_pass_serves_every_k(blobs32):
    params = dict(n_init=3, batch_size=500, random_state=1, client="sync", progress=False)
    CountingSource.reads = 0
    sc.StreamingKMeans(4, **params).fit(CountingSource(blobs32, block_rows=2000))
    single = CountingSource.reads
    CountingSource.reads = 0
    res = sc.sweep_kmeans(
        CountingSource(blobs32, block_rows=2000), range(2, 12), silhouette_sample=500, **params
    )
    assert CountingSource.reads == single  # 10 values of k, the reads of one fit
    assert len(res.k) == 10 and np.all(np.diff(res.inertia) < 0)


def test_sampled_silhouette_and_its_error(blobs32, tmp_path):
    X = blobs32[:6000]
    sc.write_zarr(X, tmp_path / "x.zarr", block_rows=1000)
    res = sc.sweep_kmeans(
        str(tmp_path / "x.zarr"), [8, 16], silhouette_sample=1500, random_state=0, progress=False
    )
    assert res.sample_size == 1500
    full = [silhouette_score(X, res.models[k].predict(X)) for k in (8, 16)]
    for value, se, exact in zip(res.silhouette, res.silhouette_se, full, strict=True):
        assert 0 < se < 0.03
        assert abs(value - exact) < 4 * se + 1e-3


def test_knee_and_bad_input(chapter_X):
    assert knee([1, 2, 3, 4, 5], [100, 30, 20, 15, 12]) == 1
    with pytest.raises(sc.ParameterError, match="k="):
        sc.sweep_kmeans(chapter_X, [0, 3], progress=False)
    with pytest.raises(sc.ParameterError, match="criterion"):
        sc.sweep_kmeans(chapter_X, [2, 3], criterion="gap", progress=False)


def test_gmm_sweep_picks_the_chapters_mixture():
    from streamclust.datasets import make_chapter_mixture

    X = make_chapter_mixture()[0]
    res = sc.sweep_gmm(X, range(1, 7), n_init=3, progress=False)
    assert res.best == (3, "full")
    best = res.best_model
    assert res.bic[0, 2] == best.bic(X) and res.aic[0, 2] == best.aic(X)
    alone = sc.StreamingGaussianMixture(3, n_init=3, random_state=0, progress=False).fit(X)
    np.testing.assert_array_equal(best.means_, alone.means_)
    np.testing.assert_array_equal(best.covariances_, alone.covariances_)
    assert len(res.table()) == 24


def test_gmm_sweep_shares_its_passes(blobs32):
    src = CountingSource(blobs32, block_rows=2000)
    CountingSource.reads = 0
    res = sc.sweep_gmm(src, [2, 4, 8], ["full", "diag"], max_iter=10, client="sync", progress=False)
    longest = max(m.n_iter_ for m in res.models.values())
    n_blocks = len(src.blocks())
    # k-means pass + hard statistics + the EM passes + the BIC pass, plus the
    # k-means initialization sample (at most 8 blocks): not 6 models' worth.
    assert CountingSource.reads <= n_blocks * (3 + longest) + 8
