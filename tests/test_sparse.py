"""StreamingKMeans on scipy.sparse input: the dense model, and scikit-learn's numbers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import pairwise_distances_argmin
from sklearn.metrics.pairwise import euclidean_distances

import streamclust as sc
from streamclust import StreamingKMeans

KW = dict(batch_size=256, max_passes=2, random_state=0, progress=False, client="sync")


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=4, size=(5, 12))
    X = centers[rng.integers(5, size=3000)] + rng.normal(size=(3000, 12))
    X[np.abs(X) < 2.0] = 0.0  # about half the values are zero
    return X


@pytest.mark.parametrize("fmt", [sp.csr_matrix, sp.csc_matrix, sp.csr_array])
@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_sparse_fit_is_the_dense_fit(X, fmt, init):
    dense = StreamingKMeans(5, init=init, **KW).fit(X)
    sparse = StreamingKMeans(5, init=init, **KW).fit(fmt(X))
    np.testing.assert_allclose(sparse.cluster_centers_, dense.cluster_centers_, rtol=1e-10)
    np.testing.assert_array_equal(sparse.labels_, dense.labels_)
    assert sparse.inertia_ == pytest.approx(dense.inertia_, rel=1e-10)


def test_sparse_outputs_match_scikit_learn(X):
    Xs = sp.csr_matrix(X)
    km = StreamingKMeans(5, **KW).fit(Xs)
    C = km.cluster_centers_
    np.testing.assert_array_equal(km.predict(Xs), pairwise_distances_argmin(X, C))
    np.testing.assert_allclose(km.transform(Xs), euclidean_distances(X, C), rtol=1e-7)
    sq = euclidean_distances(X, C, squared=True).min(axis=1)
    assert km.score(Xs) == pytest.approx(-sq.sum(), rel=1e-9)
    np.testing.assert_allclose(km.score_samples(Xs), -sq, rtol=1e-7, atol=1e-9)


def test_sparse_weights_refine_selection_and_partial_fit(X):
    Xs = sp.csr_matrix(X)
    w = np.random.default_rng(1).integers(0, 3, size=len(X)).astype(float)
    kw = dict(KW, refine=1, selection="full", max_no_improvement=5)
    dense = StreamingKMeans(5, **kw).fit(X, sample_weight=w)
    sparse = StreamingKMeans(5, **kw).fit(Xs, sample_weight=w)
    np.testing.assert_allclose(sparse.cluster_centers_, dense.cluster_centers_, rtol=1e-9)
    a, b = StreamingKMeans(5, **KW), StreamingKMeans(5, **KW)
    for lo in range(0, 3000, 500):
        a.partial_fit(X[lo : lo + 500])
        b.partial_fit(Xs[lo : lo + 500])
    np.testing.assert_allclose(b.cluster_centers_, a.cluster_centers_, rtol=1e-9)


def test_one_full_batch_step_is_the_mean_of_each_cluster(X):
    Xs = sp.csr_matrix(X)
    init = X[:5].copy()
    km = StreamingKMeans(
        5,
        init=init,
        n_init=1,
        batch_size=3000,
        max_steps=1,
        reassignment_ratio=0.0,
        **{k: v for k, v in KW.items() if k not in ("batch_size", "max_passes")},
    ).fit(Xs)
    labels = pairwise_distances_argmin(X, init)
    expected = np.array([X[labels == j].mean(axis=0) for j in range(5)])
    np.testing.assert_allclose(km.cluster_centers_, expected, rtol=1e-10)


def test_sparse_nan_is_named_and_the_mixture_refuses_sparse(X):
    Xs = sp.csr_matrix(X)
    bad = Xs.copy()
    bad.data[7] = np.nan
    row, col = bad.tocoo().row[7], bad.tocoo().col[7]
    with pytest.raises(sc.DataError, match=f"NaN: row index {row}, column index {col}"):
        StreamingKMeans(5, **KW).fit(bad)
    with pytest.raises(sc.DataError, match="dense data is required") as err:
        sc.StreamingGaussianMixture(2, progress=False).fit(Xs)
    assert "\n" not in str(err.value)
