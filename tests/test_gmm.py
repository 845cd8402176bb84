"""StreamingGaussianMixture against scikit-learn, in and out of core, across schedulers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
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
    with pytest.warns(ConvergenceWarning):
        a = sc.StreamingGaussianMixture(**params, **QUIET).fit(
            sc.ZarrSource(blobs_zarr, block_rows=3000)
        )
    with pytest.warns(ConvergenceWarning):
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
        with pytest.warns(ConvergenceWarning):
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


def _five_component_mixture(n: int, seed: int) -> np.ndarray:
    """Rows of a fixed 5-component, 4-feature mixture with correlated covariances."""
    rng = np.random.default_rng(0)
    K, d = 5, 4
    means = rng.uniform(-6, 6, (K, d))
    A = rng.normal(size=(K, d, d)) * 0.6
    covs = np.einsum("kij,klj->kil", A, A) + 0.3 * np.eye(d)
    weights = rng.dirichlet(np.full(K, 3.0))
    draw = np.random.default_rng(seed)
    z = draw.choice(K, size=n, p=weights)
    X = np.empty((n, d))
    for k in range(K):
        X[z == k] = draw.multivariate_normal(means[k], covs[k], size=int((z == k).sum()))
    return X


def test_online_em_one_pass_is_within_one_percent_of_exact_em(tmp_path):
    X, held_out = _five_component_mixture(200_000, 1), _five_component_mixture(50_000, 2)
    exact = sc.StreamingGaussianMixture(5, n_init=3, random_state=0, **QUIET).fit(X)
    online = sc.StreamingGaussianMixture(5, n_init=5, batch_size=1000, random_state=0, **QUIET)
    for lo in range(0, len(X), 1000):
        online.partial_fit(X[lo : lo + 1000])
    assert online.n_iter_ == 200 and not online.converged_
    ref = exact.score(held_out)
    assert abs(online.score(held_out) - ref) < 0.01 * abs(ref)
    # One partial_fit call on a Zarr store runs the same steps as the in-memory batches.
    store = sc.write_zarr(X, tmp_path / "mix.zarr", block_rows=4000)
    streamed = sc.StreamingGaussianMixture(5, n_init=5, batch_size=1000, random_state=0, **QUIET)
    streamed.partial_fit(store)
    np.testing.assert_array_equal(streamed.means_, online.means_)
    np.testing.assert_array_equal(streamed.covariances_, online.covariances_)
    assert streamed.lower_bound_ == online.lower_bound_


@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
def test_partial_fit_save_load_continues_bit_identically(mixture_X, cov, tmp_path):
    X = mixture_X[np.random.default_rng(0).permutation(len(mixture_X))]
    gm = sc.StreamingGaussianMixture(3, covariance_type=cov, random_state=0, **QUIET)
    for lo in range(0, 600, 200):
        gm.partial_fit(X[lo : lo + 200])
    gm.save(tmp_path / "m")
    back = sc.load(tmp_path / "m")
    for est in (gm, back):
        for lo in range(600, len(X), 200):
            est.partial_fit(X[lo : lo + 200])
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gm, name))
    assert back.lower_bound_ == gm.lower_bound_ and back.n_iter_ == gm.n_iter_ == 7


def test_partial_fit_continues_a_fitted_model(mixture_X):
    X = mixture_X[np.random.default_rng(1).permutation(len(mixture_X))]
    gm = sc.StreamingGaussianMixture(3, batch_size=250, random_state=42, **QUIET).fit(X)
    before = gm.score(X)
    for lo in range(0, len(X), 250):
        gm.partial_fit(X[lo : lo + 250])
    # Stepwise EM from an optimum stays near it (the batches are the same data);
    # the fit counts as the 5 steps of 250 rows it read.
    assert abs(gm.score(X) - before) < 0.01
    assert gm.n_iter_ == 10 and not gm.converged_
    # A model from scikit-learn starts a fresh count.
    ref = GaussianMixture(3, random_state=0).fit(X)
    fresh = sc.StreamingGaussianMixture.from_sklearn(ref, **QUIET).partial_fit(X[:250])
    assert fresh.n_iter_ == 1


def test_partial_fit_on_sync_threads_and_local_cluster(blobs_zarr, cluster_client):
    params = dict(n_components=4, batch_size=500, random_state=3, **QUIET)
    models = [
        sc.StreamingGaussianMixture(**params, client=c).partial_fit(blobs_zarr)
        for c in ("sync", "threads", cluster_client)
    ]
    for other in models[1:]:
        np.testing.assert_array_equal(models[0].means_, other.means_)
        np.testing.assert_array_equal(models[0].covariances_, other.covariances_)


def test_partial_fit_bad_input(mixture_X, tmp_path):
    with pytest.raises(sc.ParameterError, match=r"step_decay=0\.4"):
        sc.StreamingGaussianMixture(2, step_decay=0.4, **QUIET).partial_fit(mixture_X)
    with pytest.raises(sc.ParameterError, match=r"step_decay=0\.5"):
        sc.StreamingGaussianMixture(2, step_decay=0.5, **QUIET).partial_fit(mixture_X)
    with pytest.raises(sc.ParameterError, match=r"step_decay=1\.5"):
        sc.StreamingGaussianMixture(2, step_decay=1.5, **QUIET).partial_fit(mixture_X)
    with pytest.raises(sc.DataError, match="1 row"):
        sc.StreamingGaussianMixture(2, **QUIET).partial_fit(mixture_X[:1])
    with pytest.raises(sc.DataError, match="n_components=4"):
        sc.StreamingGaussianMixture(4, **QUIET).partial_fit(mixture_X[:3])
    # A bad batch leaves a fitted model as it was.
    gm = sc.StreamingGaussianMixture(3, random_state=0, **QUIET).partial_fit(mixture_X[:500])
    means = gm.means_.copy()
    bad = mixture_X[500:1000].copy()
    bad[3, 0] = np.inf
    with pytest.raises(sc.DataError):
        gm.partial_fit(bad)
    with pytest.raises(sc.DataError, match="features"):
        gm.partial_fit(np.ones((10, 3)))
    import zarr

    sc.write_zarr(mixture_X[:1000], tmp_path / "bad.zarr", block_rows=200)
    zarr.open_array(tmp_path / "bad.zarr", mode="r+")[900, 1] = np.nan
    with pytest.raises(sc.DataError, match=r"bad\.zarr"):
        gm.partial_fit(str(tmp_path / "bad.zarr"))
    np.testing.assert_array_equal(gm.means_, means)
    assert gm.n_iter_ == 1


# ---------------------------------------------------------------- scikit-learn parity


@pytest.mark.parametrize(
    ("covariance_type", "precisions", "message"),
    [
        ("diag", -np.ones((2, 2)), "'diag precision' should be positive"),
        ("spherical", np.array([1.0, -1.0]), "'spherical precision' should be positive"),
        ("full", np.array([[[1.0, 2.0], [0.0, 1.0]]] * 2), "should be symmetric, positive-def"),
        ("full", -np.stack([np.eye(2)] * 2), "'full precision' should be symmetric, positive"),
        ("tied", np.array([[1.0, 0.0], [0.0, -1.0]]), "'tied precision' should be symmetric"),
    ],
)
def test_invalid_precisions_init_are_refused_as_scikit_learn_does(
    mixture_X, covariance_type, precisions, message
):
    """They used to give all-NaN means with only a RuntimeWarning."""
    X = mixture_X[:, :2]
    gm = sc.StreamingGaussianMixture(
        2, covariance_type=covariance_type, precisions_init=precisions, **QUIET
    )
    with pytest.raises(sc.ParameterError, match=message) as info:
        gm.fit(X)
    assert "\n" not in str(info.value)
    # scikit-learn refuses the same, with the same words.
    ref = GaussianMixture(2, covariance_type=covariance_type, precisions_init=precisions)
    with pytest.raises(ValueError, match=message.split("'")[-1].strip() or message):
        ref.fit(X)


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ([0.5, 0.6], "should be normalized, but got sum"),
        ([1.5, -0.5], r"should be in the range \[0, 1\]"),
        ([1.0], r"should have the shape of \(2,\), but got \(1,\)"),
    ],
)
def test_invalid_weights_init_use_scikit_learns_words(mixture_X, weights, message):
    gm = sc.StreamingGaussianMixture(2, weights_init=weights, **QUIET)
    with pytest.raises(sc.ParameterError, match=message):
        gm.fit(mixture_X)
    with pytest.raises(ValueError, match=message):
        GaussianMixture(2, weights_init=weights).fit(mixture_X)


def test_warm_start_with_one_iteration_converges_as_scikit_learn_does():
    """Each warm-started fit of max_iter=1 is compared with the lower bound of the fit
    before it: the fits converge after a few calls, and the bound never goes down."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(6, 1, (200, 2))])
    ours = sc.StreamingGaussianMixture(2, warm_start=True, max_iter=1, random_state=0, **QUIET)
    ref = GaussianMixture(2, warm_start=True, max_iter=1, random_state=0)
    fits: dict[str, int] = {}
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, model in (("ours", ours), ("sklearn", ref)):
            for i in range(1, 201):
                model.fit(X)
                if name == "ours":
                    bounds.append(model.lower_bound_)
                if model.converged_:
                    fits[name] = i
                    break
    assert "ours" in fits and fits["ours"] <= fits["sklearn"] + 2, fits
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(bounds))
