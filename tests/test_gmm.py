"""StreamingGaussianMixture against scikit-learn, in and out of core, across schedulers."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

import streamclust as sc
from streamclust.datasets import make_chapter_mixture

QUIET = {"progress": False}
PRECISIONS = {
    "full": np.repeat(np.eye(2)[None], 3, axis=0),
    "tied": np.eye(2),
    "diag": np.ones((3, 2)),
    "spherical": np.ones(3),
}


@pytest.fixture(scope="module")
def mixture_X() -> np.ndarray:
    return make_chapter_mixture()[0]


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_fit_matches_sklearn_from_the_same_start(mixture_X, cov):
    X = mixture_X
    init = dict(
        weights_init=np.array([0.3, 0.3, 0.4]),
        means_init=X[[0, 500, 1100]],
        precisions_init=PRECISIONS[cov],
        covariance_type=cov,
        tol=1e-6,
        max_iter=500,
    )
    ref = GaussianMixture(3, **init).fit(X)
    ours = sc.StreamingGaussianMixture(3, **init, client="sync", **QUIET).fit(X)
    assert ours.n_iter_ == ref.n_iter_ and ours.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        assert _rel(getattr(ours, name), getattr(ref, name)) < 1e-6, name
    assert _rel(ours.lower_bound_, ref.lower_bound_) < 1e-6
    # Scoring on the same parameters equals scikit-learn's.
    same = sc.StreamingGaussianMixture.from_sklearn(ref, client="sync", **QUIET)
    assert _rel(same.score_samples(X), ref.score_samples(X)) < 1e-9
    assert _rel(same.bic(X), ref.bic(X)) < 1e-9
    assert _rel(same.aic(X), ref.aic(X)) < 1e-9
    assert _rel(same.predict_proba(X), ref.predict_proba(X)) < 1e-9
    np.testing.assert_array_equal(same.predict(X), ref.predict(X))
    assert _rel(ours.to_sklearn().score_samples(X), ours.score_samples(X)) < 1e-12


def test_chapter_mixture(mixture_X):
    gm = sc.StreamingGaussianMixture(n_components=3, n_init=10, random_state=42, **QUIET)
    gm.fit(mixture_X)
    np.testing.assert_allclose(np.sort(gm.weights_), np.sort([0.39, 0.21, 0.40]), atol=0.02)
    ref = GaussianMixture(n_components=3, n_init=10, random_state=42).fit(mixture_X)
    assert abs(gm.bic(mixture_X) / ref.bic(mixture_X) - 1) < 0.005
    assert gm.init_lower_bounds_.shape == (10,)
    assert gm.lower_bound_ == gm.init_lower_bounds_.max()


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random"])
def test_every_init_is_as_good_as_sklearns(mixture_X, init):
    """Each initialization reaches what scikit-learn's same initialization reaches
    (uniform random responsibilities end in a poorer optimum for both)."""
    for seed in (1, 2):
        params = dict(init_params=init, n_init=3, random_state=seed, max_iter=300)
        gm = sc.StreamingGaussianMixture(3, **params, **QUIET).fit(mixture_X)
        ref = GaussianMixture(3, **params).fit(mixture_X)
        assert gm.converged_
        assert gm.score(mixture_X) > ref.score(mixture_X) - 0.01
        if init != "random":
            assert gm.score(mixture_X) > -3.23


def test_density_integrates_to_one(mixture_X):
    gm = sc.StreamingGaussianMixture(3, random_state=42, **QUIET).fit(mixture_X)
    xs = np.linspace(-10, 14, 400)
    ys = np.linspace(-14, 8, 400)
    grid = np.array(np.meshgrid(xs, ys)).reshape(2, -1).T
    mass = np.exp(gm.score_samples(grid)).sum() * (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(mass - 1) < 1e-3


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_zarr_equals_in_memory(blobs32, blobs_zarr, cov, tmp_path):
    params = dict(n_components=4, covariance_type=cov, n_init=2, max_iter=5, random_state=1)
    with pytest.warns(sc.gmm.ConvergenceWarning):
        a = sc.StreamingGaussianMixture(**params, **QUIET).fit(
            sc.ZarrSource(blobs_zarr, block_rows=3000)
        )
    with pytest.warns(sc.gmm.ConvergenceWarning):
        b = sc.StreamingGaussianMixture(**params, **QUIET).fit(
            sc.ArraySource(blobs32, block_rows=3000)
        )
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert a.lower_bound_ == b.lower_bound_
    src = sc.ZarrSource(blobs_zarr, block_rows=3000)
    assert a.bic(src) == a.bic(sc.ArraySource(blobs32, block_rows=3000))
    assert _rel(a.bic(src), a.bic(blobs32)) < 1e-12
    # Per-row outputs from a path stream to disk; a dask array gives a lazy result.
    out = a.score_samples(blobs_zarr, out=tmp_path / "scores.zarr")
    import zarr

    np.testing.assert_allclose(zarr.open_array(out, mode="r")[:], a.score_samples(blobs32))
    import dask.array as da

    lazy = a.predict_proba(da.from_array(blobs32, chunks=(5000, 8)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), a.predict_proba(blobs32))
    assert _rel(a.score(da.from_array(blobs32, chunks=(5000, 8))), a.score(blobs32)) < 1e-12


def test_same_model_on_sync_threads_and_local_cluster(blobs_zarr, cluster_client):
    params = dict(n_components=4, n_init=2, max_iter=3, random_state=2, tol=0.0, **QUIET)
    models = []
    for client in ("sync", "threads", cluster_client):
        with pytest.warns(sc.gmm.ConvergenceWarning):
            models.append(sc.StreamingGaussianMixture(**params, client=client).fit(blobs_zarr))
    for other in models[1:]:
        np.testing.assert_array_equal(models[0].means_, other.means_)
        np.testing.assert_array_equal(models[0].covariances_, other.covariances_)
        assert models[0].lower_bound_ == other.lower_bound_


def test_save_load_predicts_identically(mixture_X, tmp_path):
    gm = sc.StreamingGaussianMixture(3, covariance_type="tied", random_state=0, **QUIET)
    gm.fit(mixture_X)
    gm.save(tmp_path / "m")
    back = sc.load(tmp_path / "m")
    assert isinstance(back, sc.StreamingGaussianMixture)
    np.testing.assert_array_equal(back.score_samples(mixture_X), gm.score_samples(mixture_X))
    np.testing.assert_array_equal(back.covariances_, gm.covariances_)
    assert back.bic(mixture_X) == gm.bic(mixture_X)
    X, labels = gm.sample(500)
    assert X.shape == (500, 2) and labels.shape == (500,)


def test_bad_input(mixture_X):
    with pytest.raises(sc.ParameterError, match="covariance_type"):
        sc.StreamingGaussianMixture(2, covariance_type="round").fit(mixture_X)
    with pytest.raises(sc.DataError, match="n_components=5"):
        sc.StreamingGaussianMixture(5, **QUIET).fit(mixture_X[:3])
    bad = mixture_X.copy()
    bad[7, 1] = np.nan
    with pytest.raises(sc.DataError):
        sc.StreamingGaussianMixture(2, **QUIET).fit(bad)
    gm = sc.StreamingGaussianMixture(2, random_state=0, **QUIET).fit(mixture_X)
    with pytest.raises(sc.DataError, match="features"):
        gm.score_samples(np.ones((4, 3)))
    # Duplicated rows and no regularization: a covariance collapses.
    dup = np.repeat(mixture_X[:3], 50, axis=0)
    with pytest.raises(sc.DataError, match="reg_covar"):
        sc.StreamingGaussianMixture(3, reg_covar=0.0, random_state=0, **QUIET).fit(dup)
    with pytest.raises(sc.ParameterError, match="means_init"):
        sc.StreamingGaussianMixture(2, means_init=np.zeros((3, 2)), **QUIET).fit(mixture_X)
