"""StreamingGaussianMixture behaves as scikit-learn's GaussianMixture where a user
meets it: dtypes, max_iter=0, init_params, lower_bounds_, verbose and messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import streamclust as sc
from streamclust import StreamingGaussianMixture

KW = dict(random_state=0, progress=False, client="sync")


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(2)
    means = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0], [0.0, 7.0, 5.0]])
    return np.concatenate([m + rng.normal(size=(400, 3)) for m in means])


FITTED = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_float32_data_give_float32_parameters_and_outputs(X, tmp_path, covariance_type):
    X32 = X.astype(np.float32)
    kw = dict(KW, n_components=3, covariance_type=covariance_type)
    g32 = StreamingGaussianMixture(**kw).fit(X32)
    g64 = StreamingGaussianMixture(**kw).fit(X)
    for name in FITTED:
        assert getattr(g32, name).dtype == np.float32, name
        assert getattr(g64, name).dtype == np.float64, name
        np.testing.assert_allclose(getattr(g32, name), getattr(g64, name), rtol=2e-3, atol=1e-4)
    assert g32.score_samples(X32).dtype == np.float32
    assert g32.predict_proba(X32).dtype == np.float32
    assert g64.score_samples(X).dtype == np.float64
    # Out of core too, and a saved model keeps its dtype.
    stored = sc.write_zarr(X32, tmp_path / "x.zarr")
    g = StreamingGaussianMixture(**kw).fit(stored)
    assert g.means_.dtype == np.float32 and g.score_samples(stored).dtype == np.float32
    g.save(tmp_path / "m")
    assert sc.load(tmp_path / "m").covariances_.dtype == np.float32


def test_max_iter_zero_returns_the_initialization(X, recwarn):
    means_init = [[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 5.0, 5.0]]
    g = StreamingGaussianMixture(3, means_init=means_init, max_iter=0, **KW).fit(X)
    np.testing.assert_array_equal(g.means_, means_init)
    assert g.n_iter_ == 0 and not g.converged_ and g.lower_bounds_ == []
    assert not [w for w in recwarn if issubclass(w.category, ConvergenceWarning)]


def test_random_from_data_starts_on_distinct_rows(X):
    g = StreamingGaussianMixture(5, init_params="random_from_data", max_iter=0, **KW).fit(X)
    for m in g.means_:
        assert (X == m).all(axis=1).any()
    assert len({tuple(m) for m in g.means_}) == 5
    fitted = StreamingGaussianMixture(3, init_params="random_from_data", **KW).fit(X)
    assert fitted.converged_ and fitted.score(X) > -6


def test_lower_bounds_trace_every_iteration(X):
    g = StreamingGaussianMixture(3, n_init=2, **KW).fit(X)
    assert len(g.lower_bounds_) == g.n_iter_
    assert g.lower_bounds_[-1] == g.lower_bound_
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(g.lower_bounds_))


def test_n_parameters_and_criteria_match_scikit_learn(X):
    for ct in ("full", "tied", "diag", "spherical"):
        ours = StreamingGaussianMixture(3, covariance_type=ct, **KW).fit(X)
        theirs = GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
        assert ours._n_parameters() == theirs._n_parameters()


def test_verbose_prints_scikit_learn_lines(X, capsys):
    StreamingGaussianMixture(3, verbose=2, verbose_interval=1, **KW).fit(X)
    out = capsys.readouterr().out
    assert out.startswith("Initialization 0\n")
    assert "  Iteration 1\t time lapse " in out and "\t ll change " in out
    assert "Initialization converged. time lapse " in out and "\t lower bound " in out
    StreamingGaussianMixture(3, verbose=1, verbose_interval=2, **KW).fit(X)
    out = capsys.readouterr().out
    assert "  Iteration 2\n" in out and "  Iteration 1\n" not in out


def test_messages_carry_scikit_learn_fragments(X):
    degenerate = np.repeat(np.eye(3), 4, axis=0)
    with pytest.raises(sc.StreamclustError, match="ill-defined empirical covariance") as err:
        StreamingGaussianMixture(12, reg_covar=0, **KW).fit(degenerate)
    assert "\n" not in str(err.value)
    with pytest.warns(ConvergenceWarning, match="increase max_iter, tol, or check for degen"):
        StreamingGaussianMixture(3, max_iter=1, tol=1e-12, **KW).fit(X)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"max_iter": -1}, "max_iter=-1"),
        ({"init_params": "nope"}, "random_from_data"),
        ({"verbose": -1}, "verbose=-1"),
        ({"verbose_interval": 0}, "verbose_interval=0"),
    ],
)
def test_bad_parameters(X, params, match):
    with pytest.raises(sc.ParameterError, match=match):
        StreamingGaussianMixture(3, **KW, **params).fit(X)
