"""StreamingBayesianGaussianMixture against scikit-learn's BayesianGaussianMixture,
in and out of core, across schedulers."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

import streamclust as sc
from streamclust.datasets import write_mixture_zarr
from streamclust.engine.seeds import draw_seed

QUIET = {"progress": False}
SHARED = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "mean_precision_",
    "degrees_of_freedom_",
    "weight_concentration_",
    "mean_prior_",
    "covariance_prior_",
    "lower_bound_",
    "lower_bounds_",
)


@pytest.fixture(scope="module")
def three_X() -> np.ndarray:
    """Three clusters of different spreads in 3 features."""
    rng = np.random.default_rng(0)
    centers = ([0, 0, 0], [6, 6, 0], [-6, 0, 6])
    return np.vstack([rng.normal(c, 1 + 0.3 * i, size=(300, 3)) for i, c in enumerate(centers)])


def _rel(a, b) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _from_the_same_start(X, resp, **params):
    """Both models fitted from the posterior scikit-learn's ``_initialize`` gives ``resp``."""
    ref = BayesianGaussianMixture(**params)
    ref._check_parameters(X)
    ref._initialize(X, resp)
    ref.converged_, ref.lower_bound_, ref.warm_start = False, -np.inf, True
    ours = sc.StreamingBayesianGaussianMixture(**params, client="sync", **QUIET)
    ours._initialize(X, resp)
    ours.warm_start = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ref.fit(X)
        ours.fit(X)
    return ref, ours


@pytest.mark.parametrize(
    "cov, prior_type",
    list(
        itertools.product(
            ["full", "tied", "diag", "spherical"], ["dirichlet_process", "dirichlet_distribution"]
        )
    ),
)
def test_matches_sklearn_from_the_same_start(three_X, cov, prior_type):
    labels = KMeans(6, n_init=1, random_state=0).fit(three_X).labels_
    params = dict(n_components=6, covariance_type=cov, max_iter=500, tol=1e-6)
    ref, ours = _from_the_same_start(
        three_X, np.eye(6)[labels], weight_concentration_prior_type=prior_type, **params
    )
    assert (ours.n_iter_, ours.converged_) == (ref.n_iter_, ref.converged_)
    for name in SHARED:
        assert _rel(getattr(ours, name), getattr(ref, name)) < 1e-8, name
    for name in ("weight_concentration_prior_", "mean_precision_prior_"):
        assert getattr(ours, name) == pytest.approx(getattr(ref, name), rel=1e-12)
    assert ours.degrees_of_freedom_prior_ == ref.degrees_of_freedom_prior_
    assert _rel(ours.score_samples(three_X), ref.score_samples(three_X)) < 1e-8
    np.testing.assert_allclose(
        ours.predict_proba(three_X), ref.predict_proba(three_X), rtol=1e-8, atol=1e-12
    )
    np.testing.assert_array_equal(ours.predict(three_X), ref.predict(three_X))
    assert ours.score(three_X) == pytest.approx(ref.score(three_X), rel=1e-10)


@pytest.mark.parametrize("cov", ["full", "diag", "spherical"])
def test_given_priors_match_sklearn(three_X, cov):
    d = three_X.shape[1]
    covariance = {"full": np.eye(d) * 2.0, "diag": np.full(d, 2.0), "spherical": 2.0}[cov]
    params = dict(
        n_components=4,
        covariance_type=cov,
        weight_concentration_prior=0.01,
        mean_precision_prior=0.5,
        mean_prior=np.array([1.0, -1.0, 0.5]),
        degrees_of_freedom_prior=d + 2.5,
        covariance_prior=covariance,
        max_iter=300,
        tol=1e-8,
    )
    resp = np.random.default_rng(1).uniform(size=(len(three_X), 4))
    resp /= resp.sum(axis=1, keepdims=True)
    ref, ours = _from_the_same_start(three_X, resp, **params)
    for name in SHARED:
        assert _rel(getattr(ours, name), getattr(ref, name)) < 1e-8, name


def test_extra_components_fall_away(three_X):
    """The chapter's demonstration: ten components offered, three used."""
    for prior_type in ("dirichlet_process", "dirichlet_distribution"):
        bgm = sc.StreamingBayesianGaussianMixture(
            10,
            weight_concentration_prior_type=prior_type,
            weight_concentration_prior=0.01,
            n_init=3,
            max_iter=500,
            random_state=0,
            **QUIET,
        ).fit(three_X)
        weights = np.sort(bgm.weights_)[::-1]
        assert np.all(weights[:3] > 0.3), weights
        assert np.all(weights[3:] < 0.01), weights
        assert bgm.converged_
        # The winner is the candidate with the highest lower bound.
        assert bgm.init_lower_bounds_.shape == (3,)
        assert bgm.lower_bound_ == bgm.init_lower_bounds_.max()


@pytest.mark.parametrize("cov", ["full", "tied"])
def test_zarr_equals_in_memory(blobs32, blobs_zarr, cov, tmp_path):
    params = dict(n_components=6, covariance_type=cov, n_init=2, max_iter=4, random_state=1)
    with pytest.warns(ConvergenceWarning):
        a = sc.StreamingBayesianGaussianMixture(**params, **QUIET).fit(
            sc.ZarrSource(blobs_zarr, block_rows=3000)
        )
    with pytest.warns(ConvergenceWarning):
        b = sc.StreamingBayesianGaussianMixture(**params, **QUIET).fit(
            sc.ArraySource(blobs32, block_rows=3000)
        )
    for name in SHARED:
        np.testing.assert_array_equal(
            np.asarray(getattr(a, name), float), np.asarray(getattr(b, name), float), name
        )
    # The default priors are the data's mean and covariance, taken out of core.
    np.testing.assert_allclose(a.mean_prior_, blobs32.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(a.covariance_prior_, np.cov(blobs32.astype(np.float64).T))
    out = a.predict_proba(blobs_zarr, out=tmp_path / "proba.zarr")
    import zarr

    np.testing.assert_allclose(zarr.open_array(out, mode="r")[:], a.predict_proba(blobs32))
    assert abs(a.score(blobs_zarr) - a.score(blobs32)) < 1e-9 * abs(a.score(blobs32))


@pytest.mark.slow  # (the exact EM twin of this test runs by default)
def test_same_model_on_sync_threads_and_local_cluster(blobs_zarr, cluster_client):
    params = dict(n_components=5, n_init=2, max_iter=3, random_state=2, tol=0.0, **QUIET)
    models = []
    for client in ("sync", "threads", cluster_client):
        with pytest.warns(ConvergenceWarning):
            models.append(
                sc.StreamingBayesianGaussianMixture(**params, client=client).fit(blobs_zarr)
            )
    for other in models[1:]:
        np.testing.assert_array_equal(models[0].means_, other.means_)
        np.testing.assert_array_equal(models[0].weights_, other.weights_)
        assert models[0].lower_bound_ == other.lower_bound_


@pytest.mark.parametrize("cov", ["full", "tied", "spherical"])
def test_save_load_and_sklearn_round_trips(three_X, tmp_path, cov):
    bgm = sc.StreamingBayesianGaussianMixture(
        5, covariance_type=cov, random_state=0, max_iter=200, **QUIET
    ).fit(three_X)
    bgm.save(tmp_path / "m")
    back = sc.load(tmp_path / "m")
    assert isinstance(back, sc.StreamingBayesianGaussianMixture)
    for name in SHARED:
        np.testing.assert_array_equal(
            np.asarray(getattr(back, name), float), np.asarray(getattr(bgm, name), float)
        )
    np.testing.assert_array_equal(back.predict_proba(three_X), bgm.predict_proba(three_X))
    skl = bgm.to_sklearn()
    assert isinstance(skl, BayesianGaussianMixture)
    np.testing.assert_allclose(skl.score_samples(three_X), bgm.score_samples(three_X), rtol=1e-12)
    rows, labels = bgm.sample(50)
    assert rows.shape == (50, 3) and labels.shape == (50,)
    # And a model scikit-learn fitted scores the same here.
    fitted = BayesianGaussianMixture(n_components=4, covariance_type=cov, random_state=0)
    fitted.fit(three_X)
    ours = sc.StreamingBayesianGaussianMixture.from_sklearn(fitted, **QUIET)
    np.testing.assert_allclose(
        ours.score_samples(three_X), fitted.score_samples(three_X), rtol=1e-12
    )
    np.testing.assert_array_equal(ours.predict(three_X), fitted.predict(three_X))


def test_warm_start_goes_on_from_the_fitted_posterior(three_X):
    params = dict(n_components=4, random_state=0, tol=1e-8, **QUIET)
    whole = sc.StreamingBayesianGaussianMixture(**params, max_iter=20)
    with pytest.warns(ConvergenceWarning):
        whole.fit(three_X)
    part = sc.StreamingBayesianGaussianMixture(**params, max_iter=10, warm_start=True)
    for _ in range(2):
        with pytest.warns(ConvergenceWarning):
            part.fit(three_X)
    np.testing.assert_allclose(part.means_, whole.means_, rtol=1e-12)
    assert part.lower_bound_ == pytest.approx(whole.lower_bound_, rel=1e-12)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"weight_concentration_prior_type": "dirichlet"}, "weight_concentration_prior_type"),
        ({"weight_concentration_prior": -1.0}, "weight_concentration_prior"),
        ({"mean_precision_prior": 0.0}, "mean_precision_prior"),
        ({"degrees_of_freedom_prior": 1.5}, "greater than 2"),
        ({"mean_prior": [0.0, 1.0]}, r"mean_prior has shape \(2,\)"),
        ({"covariance_prior": np.ones((3, 3))}, "positive-definite"),
        ({"covariance_prior": np.eye(2)}, "covariance_prior has shape"),
        ({"covariance_prior": -1.0, "covariance_type": "spherical"}, "covariance_prior"),
        ({"covariance_prior": [1.0, -1.0, 1.0], "covariance_type": "diag"}, "positive"),
        ({"n_components": 901}, "exceeds the 900 rows"),
    ],
)
def test_bad_input_is_one_line(three_X, params, message):
    with pytest.raises(sc.StreamclustError, match=message) as info:
        sc.StreamingBayesianGaussianMixture(**params, **QUIET).fit(three_X)
    assert "\n" not in str(info.value)


def test_a_sample_starts_what_all_rows_refine(three_X, tmp_path):
    """``init_sample_size``: the first posterior is a fit on a seeded sample of rows
    (the same rows for the same seed, in or out of core), which EM then refines."""
    params = dict(n_components=8, init_sample_size=300, random_state=5, batch_size=200, **QUIET)
    path = sc.write_zarr(three_X, tmp_path / "x.zarr", block_rows=200).path
    a = sc.StreamingBayesianGaussianMixture(**params).fit(three_X)
    b = sc.StreamingBayesianGaussianMixture(**params).fit(path)
    np.testing.assert_array_equal(a.means_, b.means_)
    # Its first posterior is the sample's fit, run to convergence.
    seed = draw_seed(5)
    rows = np.sort(np.random.default_rng(seed).choice(len(three_X), size=300, replace=False))
    alone = sc.StreamingBayesianGaussianMixture(
        8, max_iter=2000, random_state=seed, batch_size=200, **QUIET
    )
    alone.fit(three_X[rows])
    start = a._initial_posteriors(sc.ArraySource(three_X), None, a._prior)[0]
    np.testing.assert_allclose(start.means, alone.means_, rtol=1e-12)
    # Refining the sample's posterior: fewer iterations than the whole fit from K-Means.
    whole = sc.StreamingBayesianGaussianMixture(8, random_state=5, max_iter=1000, **QUIET)
    whole.fit(three_X)
    assert a.n_iter_ < whole.n_iter_
    assert (a.weights_ > 0.05).sum() == (whole.weights_ > 0.05).sum() == 3


def test_lower_bound_rises_every_iteration(blobs32):
    """Variational EM never lowers its bound; out of core too (blocks of 2,500 rows)."""
    bgm = sc.StreamingBayesianGaussianMixture(
        8, covariance_type="diag", batch_size=2_500, max_iter=30, random_state=0, **QUIET
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bgm.fit(sc.ArraySource(blobs32, block_rows=2_500))
    bounds = np.asarray(bgm.lower_bounds_)
    assert len(bounds) == bgm.n_iter_ > 1
    assert np.all(np.diff(bounds) > -1e-9 * np.abs(bounds[1:]))


@pytest.mark.slow
def test_extra_components_fall_away_on_2m_rows_from_zarr(tmp_path):
    """The chapter's demonstration at scale: 2,000,000 rows of the chapter's three
    Gaussians in a Zarr store, ten components offered, the seven extra weigh < 0.01."""
    path = write_mixture_zarr(tmp_path / "three.zarr", 2_000_000).path
    bgm = sc.StreamingBayesianGaussianMixture(
        10, init_sample_size=20_000, tol=2.0, batch_size=65_536, random_state=0, **QUIET
    ).fit(path)
    weights = np.sort(bgm.weights_)[::-1]
    assert bgm.converged_
    assert np.all(weights[3:] < 0.01), weights
    assert weights[:3].sum() > 0.97
