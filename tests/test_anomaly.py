"""DensityAnomalyDetector: exact and sketched thresholds, in and out of core."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture

import streamclust as sc
from streamclust.datasets import make_chapter_mixture
from streamclust.kernels import quantile as Q

QUIET = {"progress": False}


class FirstColumn(BaseEstimator):
    """A fitted 'model' whose score is the first column: lets tests choose the scores."""

    def __init__(self):
        self.n_features_in_ = 1

    def fit(self, X, y=None):
        return self

    def score_samples(self, X):
        return np.asarray(X, dtype=np.float64)[:, 0]


def _blocks_pass(values: np.ndarray, n_blocks: int):
    parts = np.array_split(values, n_blocks)

    def run_pass(brackets):
        return (Q.summarize(p, brackets) for p in parts)

    return run_pass


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_exact_percentile_is_numpys_bit_for_bit(n):
    rng = np.random.default_rng(n)
    kinds = {
        "continuous": rng.standard_t(3, n) * 7 - 60,
        "ties": rng.integers(-5, 5, n).astype(np.float64),
        "duplicated": np.repeat(rng.normal(size=n // 10 + 1), 10)[:n],
        "tiny and signed zeros": rng.normal(size=n) * 1e-310,
    }
    for name, values in kinds.items():
        for q in (0.0, 1.0, 4.0, 37.5, 50.0, 99.0, 100.0):
            got, passes = Q.exact_percentile(_blocks_pass(values, 13), n, q)
            assert got == np.percentile(values, q), (name, q)
            assert passes <= 4
    # A tiny collect limit forces the search through all 64 bits: still exact.
    got, passes = Q.exact_percentile(_blocks_pass(kinds["continuous"], 5), n, 4.0, collect=0)
    assert got == np.percentile(kinds["continuous"], 4.0) and passes == 4


def test_exact_threshold_from_zarr_equals_numpy_and_memory_is_flat(tmp_path):
    peaks = []
    for n in (200_000, 2_000_000):
        values = np.random.default_rng(0).standard_cauchy((n, 1))
        path = tmp_path / f"s{n}.zarr"
        sc.write_zarr(values, path, block_rows=50_000)
        source = sc.ZarrSource(path, block_rows=50_000)
        tracemalloc.start()
        det = sc.DensityAnomalyDetector(FirstColumn(), client="sync", **QUIET).fit(source)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert det.threshold_ == np.percentile(values[:, 0], 4.0)
        assert det.n_passes_ == 2
    # 10x the rows, not 10x the memory: the blocks in flight and the histograms.
    assert peaks[1] < 1.2 * peaks[0], peaks


def test_gmm_threshold_out_of_core_equals_in_memory(blobs32, blobs_zarr):
    gm = sc.StreamingGaussianMixture(4, random_state=0, **QUIET).fit(blobs32)
    for client in ("sync", "threads"):
        det = sc.DensityAnomalyDetector(gm, percentile=2.5, client=client, **QUIET)
        det.fit(blobs_zarr)
        assert det.threshold_ == np.percentile(gm.score_samples(blobs32), 2.5)


def test_chapter_anomalies_are_four_percent():
    X = make_chapter_mixture()[0]
    gm = sc.StreamingGaussianMixture(3, n_init=10, random_state=42, **QUIET).fit(X)
    det = sc.DensityAnomalyDetector(gm, percentile=4).fit(X)
    densities = gm.score_samples(X)
    flags = det.predict(X)
    np.testing.assert_array_equal(flags == -1, densities < np.percentile(densities, 4))
    assert (flags == -1).sum() == 50  # 4% of 1,250
    assert np.all(det.decision_function(X)[flags == -1] < 0)


def test_any_model_with_score_samples(chapter_X, tmp_path):
    km = sc.StreamingKMeans(5, random_state=0, client="sync", **QUIET).fit(chapter_X)
    det = sc.DensityAnomalyDetector(km, percentile=10, **QUIET).fit(chapter_X)
    d2 = ((chapter_X[:, None] - km.cluster_centers_[None]) ** 2).sum(-1).min(1)
    np.testing.assert_allclose(det.score_samples(chapter_X), -d2, rtol=1e-12)
    assert (det.predict(chapter_X) == -1).mean() == pytest.approx(0.10, abs=0.001)
    # scikit-learn's own mixture: fitted by the detector on an array, or prefit and
    # scored out of core.
    det = sc.DensityAnomalyDetector(GaussianMixture(5, random_state=0), **QUIET).fit(chapter_X)
    assert det.threshold_ == np.percentile(det.model_.score_samples(chapter_X), 4.0)
    path = tmp_path / "c.zarr"
    sc.write_zarr(chapter_X, path, block_rows=300)
    prefit = sc.DensityAnomalyDetector(det.model_, client="sync", **QUIET).fit(str(path))
    assert prefit.threshold_ == det.threshold_
    with pytest.raises(sc.ParameterError, match="not fitted"):
        sc.DensityAnomalyDetector(GaussianMixture(5), **QUIET).fit(str(path))


def test_sketch_rank_error_and_merging():
    rng = np.random.default_rng(7)
    values = rng.standard_t(2, 1_000_000) * 5  # heavy tails on both sides
    whole = sc.QuantileSketch().update(values)
    merged = sc.QuantileSketch()
    for part in np.array_split(values, 50):
        merged.merge(sc.QuantileSketch.from_bytes(sc.QuantileSketch().update(part).to_bytes()))
    assert merged.n == whole.n == len(values)
    for sketch in (whole, merged):
        rank = (values < sketch.percentile(4.0)).mean() * 100
        assert abs(rank - 4.0) < 0.1


def test_sketch_threshold_out_of_core(tmp_path):
    values = np.random.default_rng(3).lognormal(size=(300_000, 1)) * -1
    path = tmp_path / "s.zarr"
    sc.write_zarr(values, path, block_rows=20_000)
    det = sc.DensityAnomalyDetector(FirstColumn(), method="sketch", client="threads", **QUIET)
    det.fit(str(path))
    assert abs((values[:, 0] < det.threshold_).mean() * 100 - 4.0) < 0.1
    assert det.n_passes_ == 1


def test_detect_writes_flags_and_scores(blobs32, blobs_zarr, tmp_path):
    gm = sc.StreamingGaussianMixture(4, random_state=0, **QUIET).fit(blobs32)
    det = sc.DensityAnomalyDetector(gm, client="sync", **QUIET).fit(blobs_zarr)
    summary = det.detect(blobs_zarr, out=tmp_path / "f.zarr", scores_out=tmp_path / "s.npy")
    flags = zarr.open_array(tmp_path / "f.zarr", mode="r")[:]
    np.testing.assert_array_equal(flags, det.predict(blobs32))
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), gm.score_samples(blobs32))
    assert summary["anomalies"] == (flags == -1).sum() == 800  # 4% of 20,000
    assert summary["rate"] == 0.04


def test_streaming_windows():
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, size=(500, 1)) for i in range(6)]
    exact = sc.DensityAnomalyDetector(FirstColumn(), window=2, **QUIET)
    sketch = sc.DensityAnomalyDetector(FirstColumn(), method="sketch", window=2, **QUIET)
    for b in batches:
        exact.partial_fit(b)
        sketch.partial_fit(b)
    recent = np.concatenate(batches[-2:])[:, 0]
    assert exact.threshold_ == np.percentile(recent, 4.0)
    assert abs((recent < sketch.threshold_).mean() * 100 - 4.0) < 0.5
    # An unfitted model is fitted online by the detector itself.
    X = make_chapter_mixture()[0]
    det = sc.DensityAnomalyDetector(
        sc.StreamingGaussianMixture(3, random_state=0, **QUIET), window=3, **QUIET
    )
    for lo in range(0, 1000, 250):
        det.partial_fit(X[lo : lo + 250])
    assert det.model_.n_iter_ == 4


@pytest.mark.parametrize("method", ["exact", "sketch"])
def test_a_saved_detector_loads_and_goes_on_bit_identically(tmp_path, method):
    """A detector saves its model, threshold and stream window (no pickle): the loaded
    one flags the same rows and, given the same next batches, ends the same."""
    X = make_chapter_mixture()[0]
    det = sc.DensityAnomalyDetector(
        sc.StreamingGaussianMixture(3, random_state=0, **QUIET), method=method, window=3, **QUIET
    )
    for lo in range(0, 1000, 250):
        det.partial_fit(X[lo : lo + 250])
    det.save(tmp_path / "det")
    got = sc.load(tmp_path / "det")
    assert isinstance(got, sc.DensityAnomalyDetector) and got.threshold_ == det.threshold_
    np.testing.assert_array_equal(got.predict(X), det.predict(X))
    for lo in range(1000, len(X), 250):
        det.partial_fit(X[lo : lo + 250])
        got.partial_fit(X[lo : lo + 250])
    assert got.threshold_ == det.threshold_
    np.testing.assert_array_equal(got.model_.means_, det.model_.means_)
    # A fitted (not streaming) detector over a precomputed score column, too.
    scores = np.random.default_rng(1).normal(size=(2_000, 1))
    pre = sc.DensityAnomalyDetector("precomputed", **QUIET).fit(scores)
    pre.save(tmp_path / "pre")
    back = sc.load(tmp_path / "pre")
    assert back.threshold_ == pre.threshold_ == np.percentile(scores[:, 0], 4.0)
    np.testing.assert_array_equal(back.predict(scores), pre.predict(scores))


def test_bad_input(tmp_path, blobs32):
    with pytest.raises(sc.ParameterError, match="percentile=120"):
        sc.DensityAnomalyDetector(FirstColumn(), percentile=120).fit(blobs32)
    with pytest.raises(sc.ParameterError, match="method='mean'"):
        sc.DensityAnomalyDetector(FirstColumn(), method="mean").fit(blobs32)
    with pytest.raises(sc.ParameterError, match="has no score_samples"):
        sc.DensityAnomalyDetector(object()).fit(blobs32)
    with pytest.raises(sc.ParameterError, match="window=N"):
        sc.DensityAnomalyDetector(FirstColumn()).partial_fit(blobs32)
    gm = sc.StreamingGaussianMixture(2, random_state=0, **QUIET).fit(blobs32)
    det = sc.DensityAnomalyDetector(gm, **QUIET).fit(blobs32)
    with pytest.raises(sc.DataError, match="features"):
        det.predict(np.ones((3, 2)))
    sc.write_zarr(blobs32[:1000], tmp_path / "bad.zarr", block_rows=100)
    zarr.open_array(tmp_path / "bad.zarr", mode="r+")[500, 3] = np.nan
    with pytest.raises(sc.DataError):
        det.detect(str(tmp_path / "bad.zarr"), out=tmp_path / "flags.zarr")
    assert not (tmp_path / "flags.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zarr"]
