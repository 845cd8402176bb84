"""Every example runs in its small mode and reproduces what it claims."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(name: str, *args: str) -> dict:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(list(args))


def test_blobs_minibatch(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("blobs_minibatch", "--out", str(tmp_path))
    assert res["streamclust"] == pytest.approx(-211.71, abs=0.5)
    assert res["chapter_loop"] == pytest.approx(-211.71, abs=1.0)
    assert res["best_k"] == 4
    for name in ("kmeans_sweep", "voronoi", "silhouette_diagram"):
        assert (tmp_path / f"{name}.png").exists()


def test_gmm_anomalies(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("gmm_anomalies", "--out", str(tmp_path))
    assert res["rate"] == 0.04 and res["best"] == (3, "full")
    assert res["weights"] == pytest.approx([0.21, 0.39, 0.40], abs=0.02)
    assert (tmp_path / "gmm_anomalies.png").exists() and (tmp_path / "gmm_bic_aic.png").exists()


def test_color_segmentation(tmp_path):
    pytest.importorskip("matplotlib")
    inertia = run("color_segmentation", "--out", str(tmp_path))["inertia"]
    assert [inertia[k] for k in (2, 4, 6, 8, 10)] == sorted(inertia.values(), reverse=True)
    assert (tmp_path / "color_segmentation.png").stat().st_size > 10_000


def test_semi_supervised_digits():
    rows = run("semi_supervised_digits")
    assert rows["first 50 labelled"] == pytest.approx(0.8333, abs=1e-4)
    assert rows["50 representatives"] > rows["first 50 labelled"] + 0.05


@pytest.mark.slow
def test_preprocessing_digits():
    res = run("preprocessing_digits")
    assert res["raw"] == pytest.approx(0.9689, abs=1e-4)
    assert res["k50"] > res["raw"]


def test_out_of_core_zarr():
    res = run("out_of_core_zarr")
    # Fitting and predicting hold blocks, not the data: far less than data + imports.
    assert res["fit"] < res["write"] + 2 * res["data_mib"]


def test_sensor_stream(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("sensor_stream", "--out", str(tmp_path))
    assert len(res["rejected"]) == 2 and res["summary"]["batches"] == 58
    assert res["spikes"] > 2 * res["calm"]
    assert (tmp_path / "sensor_stream.png").exists()


def test_drift_stream(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("drift_stream", "--out", str(tmp_path))
    late, end = res["late"], res["end"]
    # A half-life follows the slow drift; only a reset recovers from the jump.
    assert late["half_life=10"] < 0.5 * late["no half-life"]
    assert end["half-life + reset on drift"] < 0.2 < min(end["no half-life"], end["half_life=10"])
    assert res["alarms"] == [res["jump"]]  # flagged at the change, and only there
    for name in ("drift_stream.png", "stream.png", "report.html"):
        assert (tmp_path / name).exists()


def test_dbscan_at_scale(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("dbscan_at_scale", "--out", str(tmp_path))
    assert res["rows"] == 200_000 and res["sampled_same"]
    assert res["ari"] > 0.99 and res["noise"] < 0.01
    assert (tmp_path / "dbscan_at_scale.png").exists()


@pytest.mark.slow
def test_bayesian_mixture(tmp_path):
    pytest.importorskip("matplotlib")
    res = run("bayesian_mixture", "--out", str(tmp_path))
    assert res["rows"] == 200_000 and res["converged"]
    assert (res["weights"][3:] < 0.01).all() and (res["sizes"][3:] < 0.01).all()
    assert (tmp_path / "bayesian_mixture.png").exists()
