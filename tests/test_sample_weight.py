"""StreamingKMeans with sample weights: in memory, out of core, and bad weights."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
from sklearn.pipeline import Pipeline

import streamclust as sc
from streamclust import StreamingKMeans

KW = dict(batch_size=200, max_passes=2, random_state=4, progress=False, client="sync")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(8)
    centers = rng.normal(scale=6, size=(6, 5))
    X = (centers[rng.integers(6, size=3000)] + rng.normal(size=(3000, 5))).astype(np.float32)
    w = rng.integers(0, 4, size=3000).astype(np.float64)
    return X, w


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_unit_weights_are_bit_identical_to_no_weights(data, init):
    X, _ = data
    plain = StreamingKMeans(6, init=init, **KW).fit(X)
    unit = StreamingKMeans(6, init=init, **KW).fit(X, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(plain.cluster_centers_, unit.cluster_centers_)
    assert plain.inertia_ == unit.inertia_
    np.testing.assert_array_equal(plain.labels_, unit.labels_)


def test_scaled_weights_scale_the_inertia_only(data):
    X, w = data
    a = StreamingKMeans(6, **KW).fit(X, sample_weight=w)
    b = StreamingKMeans(6, **KW).fit(X, sample_weight=0.5 * w)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-5)
    assert b.inertia_ == pytest.approx(0.5 * a.inertia_, rel=1e-6)


def test_integer_weights_act_as_repeated_rows(data):
    X, w = data
    init = X[:6].astype(np.float64)
    repeated = np.repeat(X, w.astype(int), axis=0)
    one_step = dict(init=init, n_init=1, max_steps=1, shuffle=False, reassignment_ratio=0.0)
    kw = dict(KW, batch_size=len(repeated), **one_step)
    weighted = StreamingKMeans(6, **kw).fit(X, sample_weight=w)
    plain = StreamingKMeans(6, **kw).fit(repeated)
    # One full-batch step from the same centers: each center is the (weighted) mean.
    np.testing.assert_allclose(weighted.cluster_centers_, plain.cluster_centers_, rtol=1e-5)
    assert weighted.inertia_ == pytest.approx(plain.inertia_, rel=1e-6)
    assert weighted.score(X, sample_weight=w) == pytest.approx(-plain.inertia_, rel=1e-6)


def test_weighted_inertia_and_score_match_numpy(data):
    X, w = data
    km = StreamingKMeans(6, **KW).fit(X, sample_weight=w)
    sq = ((X[:, None, :].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(-1).min(1)
    assert km.inertia_ == pytest.approx(float(sq @ w), rel=1e-9)
    assert km.score(X, sample_weight=w) == pytest.approx(-float(sq @ w), rel=1e-9)
    assert km.score(X) == pytest.approx(-float(sq.sum()), rel=1e-9)


def test_zero_weight_rows_are_never_centers(data):
    X, w = data
    w = np.where(np.arange(len(X)) < 2000, 0.0, 1.0)
    for init in ("k-means++", "random"):
        km = StreamingKMeans(6, init=init, max_steps=1, **{**KW, "max_passes": 1})
        # One step of 200 rows moves only the centers that took weight; so the others
        # are still initial rows, which must come from the weighted rows.
        km.set_params(batch_size=len(X), init_size=len(X), reassignment_ratio=0.0)
        km.fit(X, sample_weight=w)
        moved = km._state.counts[km.best_init_] > 0
        for c in km.cluster_centers_[~moved]:
            assert (X[2000:] == c).all(axis=1).any()


def test_out_of_core_weights_give_the_in_memory_model(data, tmp_path):
    X, w = data
    ref = StreamingKMeans(6, **KW).fit(X, sample_weight=w)
    sc.write_zarr(X, tmp_path / "x.zarr", block_rows=700)
    np.save(tmp_path / "w.npy", w)
    sc.write_zarr(w[:, None], tmp_path / "w2.zarr", block_rows=300)
    for weights in (w, str(tmp_path / "w.npy"), str(tmp_path / "w2.zarr")):
        km = StreamingKMeans(6, **KW).fit(str(tmp_path / "x.zarr"), sample_weight=weights)
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
        assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-12)


def test_weights_from_a_one_dimensional_zarr_and_dask(data, tmp_path):
    import dask.array as da
    import zarr

    X, w = data
    ref = StreamingKMeans(6, **KW).fit(X, sample_weight=w)
    z = zarr.create_array(tmp_path / "w1.zarr", shape=w.shape, chunks=(512,), dtype="f8")
    z[:] = w
    for weights in (str(tmp_path / "w1.zarr"), da.from_array(w, chunks=700)):
        km = StreamingKMeans(6, **KW).fit(X, sample_weight=weights)
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)


def test_partial_fit_and_fit_predict_take_weights(data):
    X, w = data
    km = StreamingKMeans(6, **KW)
    for lo in range(0, 3000, 1000):
        km.partial_fit(X[lo : lo + 1000], sample_weight=w[lo : lo + 1000])
    sq = ((X[2000:, None, :].astype(np.float64) - km.cluster_centers_[None]) ** 2).sum(-1)
    assert km.inertia_ == pytest.approx(float(sq.min(1) @ w[2000:]), rel=1e-6)
    labels = StreamingKMeans(6, **KW).fit_predict(X, sample_weight=w)
    ref = StreamingKMeans(6, **KW).fit(X, sample_weight=w)
    np.testing.assert_array_equal(labels, ref.labels_)
    dist = StreamingKMeans(6, **KW).fit_transform(X, sample_weight=w)
    np.testing.assert_allclose(dist, ref.transform(X))


def test_weights_are_routed_through_a_pipeline(data):
    X, w = data
    with sklearn.config_context(enable_metadata_routing=True):
        km = StreamingKMeans(6, **KW).set_fit_request(sample_weight=True)
        pipe = Pipeline([("km", km)]).fit(X, sample_weight=w)
    ref = StreamingKMeans(6, **KW).fit(X, sample_weight=w)
    np.testing.assert_array_equal(pipe.named_steps["km"].cluster_centers_, ref.cluster_centers_)


@pytest.mark.parametrize(
    "weights, match",
    [
        (np.ones(10), r"sample_weight.shape == \(10,\), expected \(3000,\)"),
        (np.ones((3000, 2)), r"sample_weight.shape == \(3000, 2\)"),
        (-np.ones(3000), r"row 0 has weight -1; weights should be non-negative"),
        (np.zeros(3000), r"only 0 rows of the initialization sample have a non-zero weight"),
        (np.r_[np.ones(2999), np.nan], r"sample_weight contains NaN: row index 2999"),
    ],
)
def test_bad_weights_are_one_line_errors(data, weights, match):
    X, _ = data
    with pytest.raises(sc.DataError, match=match) as err:
        StreamingKMeans(6, **KW).fit(X, sample_weight=weights)
    assert "\n" not in str(err.value)


def test_callable_init_is_called_per_candidate_on_the_sample(data):
    X, _ = data
    calls = []

    def init(sample, k, random_state):
        calls.append(sample.shape)
        return sample[random_state.choice(len(sample), size=k, replace=False)]

    km = StreamingKMeans(6, init=init, n_init="auto", init_size=900, **KW).fit(X)
    assert calls == [(900, 5)] * 3 and km._n_init == 3
    with pytest.raises(sc.DataError, match="does not match the number of clusters 6"):
        StreamingKMeans(6, init=lambda s, k, random_state: s[:2], **KW).fit(X)


def test_init_size_below_n_clusters_warns_and_uses_three_times(data):
    X, _ = data
    with pytest.warns(RuntimeWarning, match="init_size=4 should be larger than n_clusters=6"):
        km = StreamingKMeans(6, init_size=4, **KW).fit(X)
    assert km._init_size == 18
    assert StreamingKMeans(6, **{**KW, "batch_size": 5}).fit(X)._init_size == 15
    assert StreamingKMeans(6, **{**KW, "batch_size": 1}).partial_fit(X)._init_size == 18


def test_feature_names_out_and_pandas_output(data):
    pd = pytest.importorskip("pandas")
    X, _ = data
    km = StreamingKMeans(6, **KW).set_output(transform="pandas").fit(X)
    names = [f"streamingkmeans{i}" for i in range(6)]
    assert km.get_feature_names_out().tolist() == names
    out = km.transform(X)
    assert isinstance(out, pd.DataFrame) and out.columns.tolist() == names


def test_cli_fit_takes_weights_and_early_stopping(data, tmp_path, capsys):
    from conftest import cli_json, run_cli

    X, w = data
    sc.write_zarr(X, tmp_path / "x.zarr")
    np.save(tmp_path / "w.npy", w)
    got = cli_json(
        [
            "fit",
            tmp_path / "x.zarr",
            "--k 6 --batch-size 200 --random-state 4",
            "--sample-weight",
            tmp_path / "w.npy",
            "--out",
            tmp_path / "m",
        ],
        capsys,
    )
    ref = StreamingKMeans(6, **{**KW, "max_passes": 1}).fit(X, sample_weight=w)
    assert got["inertia"] == pytest.approx(ref.inertia_, rel=1e-9)
    np.save(tmp_path / "neg.npy", -w)
    code, _, err = run_cli(
        [
            "fit",
            tmp_path / "x.zarr",
            "--k",
            6,
            "--sample-weight",
            tmp_path / "neg.npy",
            "--out",
            tmp_path / "m2",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 2 and "weights should be non-negative" in err and err.count("\n") == 1
    assert not (tmp_path / "m2").exists()
    code, _, err = run_cli(
        [
            "fit",
            tmp_path / "x.zarr",
            "--model",
            "gmm",
            "--k",
            2,
            "--out",
            tmp_path / "m3",
            "--sample-weight",
            tmp_path / "w.npy",
        ],
        capsys,
    )
    assert code == 2 and "--sample-weight applies to --model kmeans" in err
