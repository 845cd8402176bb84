"""SampleClusterer: a scikit-learn clusterer on a sample, every row labelled by it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import DBSCAN, AgglomerativeClustering, Birch
from sklearn.datasets import make_moons
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

import streamclust as sc
from streamclust import SampleClusterer

DB = dict(estimator_params={"eps": 0.1, "min_samples": 5}, sample_size=2_000, random_state=0)


@pytest.fixture(scope="module")
def moons() -> np.ndarray:
    return make_moons(20_000, noise=0.06, random_state=0)[0]


def reference(X, model, knn, fitted=True):
    """The labels scikit-learn gives the same rows: DBSCAN's core samples label the
    rest (nearest core, or a 5-NN vote), noise beyond eps, and (``fitted``: ``X`` is
    the fitted data) the sampled rows as DBSCAN did."""
    est = model.estimator_
    sample = model.sample_
    core = sample[est.core_sample_indices_]
    core_labels = est.labels_[est.core_sample_indices_]
    dist, ind = NearestNeighbors(n_neighbors=1).fit(core).kneighbors(X)
    if knn:
        labels = KNeighborsClassifier(n_neighbors=5).fit(core, core_labels).predict(X)
    else:
        labels = core_labels[ind[:, 0]]
    labels[dist[:, 0] > est.eps] = -1
    if fitted:
        labels[model.sample_indices_] = est.labels_
    return labels


@pytest.mark.parametrize("labeler", ["nearest", "knn"])
def test_dbscan_on_a_sample_labels_every_row_as_scikit_learn_would(moons, labeler):
    model = SampleClusterer("dbscan", labeler=labeler, progress=False, **DB).fit(moons)
    assert isinstance(model.estimator_, DBSCAN)
    np.testing.assert_array_equal(model.labels_[model.sample_indices_], model.estimator_.labels_)
    np.testing.assert_array_equal(model.labels_, reference(moons, model, labeler == "knn"))
    assert set(np.unique(model.labels_)) == {-1, 0, 1}
    assert (model.labels_ == -1).mean() < 0.05


def test_out_of_core_labels_equal_the_in_memory_ones(moons, tmp_path):
    path = sc.write_zarr(moons, tmp_path / "moons.zarr", block_rows=3_000)
    ref = SampleClusterer("dbscan", labeler="knn", progress=False, **DB).fit(moons)
    model = SampleClusterer("dbscan", labeler="knn", progress=False, **DB)
    out = model.fit_predict(path, out=tmp_path / "labels.zarr")
    labels = np.asarray(sc.open_source(out, column=True))[:, 0]
    np.testing.assert_array_equal(labels, ref.labels_)
    assert not hasattr(model, "labels_")
    np.testing.assert_array_equal(model.predict(moons[:500]), ref.predict(moons[:500]))


@pytest.mark.parametrize(
    "estimator", [AgglomerativeClustering(n_clusters=2, linkage="single"), Birch(n_clusters=2)]
)
def test_any_clusterer_object(moons, estimator):
    model = SampleClusterer(estimator, sample_size=1_500, random_state=1, progress=False)
    model.fit(moons)
    assert model.estimator_ is not estimator  # a clone is fitted
    np.testing.assert_array_equal(model.labels_[model.sample_indices_], model.estimator_.labels_)
    assert set(np.unique(model.labels_)) == {0, 1}  # no noise notion: every row labelled


def test_saved_model_labels_new_rows_the_same(moons, tmp_path):
    model = SampleClusterer("dbscan", labeler="knn", progress=False, **DB).fit(moons)
    model.save(tmp_path / "m")
    back = sc.load(tmp_path / "m")
    new = make_moons(3_000, noise=0.06, random_state=5)[0]
    np.testing.assert_array_equal(back.predict(new), model.predict(new))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"estimator": "kmeanz"}, "estimator='kmeanz' is not one of"),
        ({"estimator_params": {"epsilon": 1}}, "estimator_params for dbscan"),
        ({"labeler": "vote"}, "labeler='vote'"),
        ({"sample_size": 0}, "sample_size=0"),
        ({"estimator_params": {"eps": 1e-6, "min_samples": 50}}, "labelled no point"),
        ({"estimator_params": {"eps": -1}}, "DBSCAN could not be fitted .* 'eps' parameter"),
    ],
)
def test_bad_input_is_one_line(moons, params, match):
    with pytest.raises(sc.StreamclustError, match=match) as err:
        SampleClusterer(**{"progress": False, "sample_size": 500, **params}).fit(moons)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_two_million_rows_from_zarr(tmp_path):
    X = make_moons(2_000_000, noise=0.06, random_state=3)[0].astype(np.float32)
    path = sc.write_zarr(X, tmp_path / "moons.zarr")
    model = SampleClusterer("dbscan", progress=False, **{**DB, "sample_size": 20_000})
    out = model.fit_predict(path, out=tmp_path / "labels.zarr")
    labels = np.asarray(sc.open_source(out, column=True))[:, 0]
    np.testing.assert_array_equal(labels[model.sample_indices_], model.estimator_.labels_)
    others = np.setdiff1d(np.arange(len(X)), model.sample_indices_)
    rest = np.random.default_rng(0).choice(others, size=20_000, replace=False)
    X64 = X.astype(np.float64)
    np.testing.assert_array_equal(labels[rest], reference(X64[rest], model, False, False))
    assert set(np.unique(labels)) == {-1, 0, 1} and (labels == -1).mean() < 0.01


def test_cli_fit_and_predict_a_sample_model(moons, tmp_path, capsys):
    from conftest import cli_json, run_cli

    path = str(tmp_path / "moons.zarr")
    sc.write_zarr(moons, path)
    got = cli_json(
        [
            "fit",
            path,
            "--model sample --estimator dbscan --eps 0.1 --min-samples 5",
            "--sample-size 2000 --out",
            tmp_path / "m",
        ],
        capsys,
    )
    assert got["estimator"] == "DBSCAN" and got["clusters"] == 2
    run_cli(
        [
            "predict",
            path,
            "--model-dir",
            tmp_path / "m",
            "--out",
            tmp_path / "l.npy",
            "--no-progress",
        ],
        capsys,
    )
    ref = SampleClusterer("dbscan", progress=False, **DB).fit_predict(path, out=tmp_path / "r.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), np.load(ref))
    for extra, words in [
        (["--n-init", 3], "--n-init does not apply to --model sample"),
        (["--estimator", "kmeanz"], "Invalid value for '--estimator'"),
    ]:
        code, _, err = run_cli(
            ["fit", path, "--model", "sample", *extra, "--out", tmp_path / "x"], capsys
        )
        assert code == 2 and words in err
    code, _, err = run_cli(
        ["stream", tmp_path, "--model", "sample", "--state", tmp_path / "s", "--once"], capsys
    )
    assert code == 2 and "cannot learn batch by batch" in err
