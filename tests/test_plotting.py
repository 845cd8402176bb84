"""Every figure renders without warnings and shows what it says."""

from __future__ import annotations

import warnings

import pytest

import streamclust as sc
from streamclust import plotting
from streamclust.datasets import make_chapter_mixture

pytest.importorskip("matplotlib")
QUIET = {"progress": False}


def _render(fig, tmp_path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(tmp_path / f"{name}.png", dpi=60)
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    return fig


def test_sweep_figures(chapter_X, tmp_path):
    res = sc.sweep_kmeans(chapter_X, range(2, 7), n_init=3, batch_size=100, max_passes=5, **QUIET)
    fig = _render(res.plot(), tmp_path, "kmeans")
    elbow, sil = fig.axes
    assert elbow.get_xlabel() == "k" and elbow.get_ylabel() == "inertia"
    assert sil.get_ylabel() == "silhouette score"
    assert f"k={res.knee_k}" in elbow.get_legend().get_texts()[0].get_text()
    X = make_chapter_mixture()[0]
    gres = sc.sweep_gmm(X, range(1, 5), ["full", "diag"], **QUIET)
    bic, aic = _render(gres.plot(), tmp_path, "gmm").axes
    assert bic.get_ylabel() == "BIC" and aic.get_ylabel() == "AIC"
    assert len(bic.get_lines()) == 3  # two covariance types and the best point


def test_cluster_and_density_figures(chapter_X, tmp_path):
    km = sc.StreamingKMeans(5, random_state=0, client="sync", **QUIET).fit(chapter_X)
    fig = _render(plotting.plot_silhouette_diagram(chapter_X, km.predict(chapter_X)), tmp_path, "s")
    assert fig.axes[0].get_xlabel() == "silhouette coefficient"
    assert len(fig.axes[0].get_yticks()) == 5
    fig = _render(plotting.plot_decision_boundaries(km, chapter_X), tmp_path, "voronoi")
    assert fig.axes[0].get_title() == "Decision boundaries"
    X = make_chapter_mixture()[0]
    gm = sc.StreamingGaussianMixture(3, random_state=0, **QUIET).fit(X)
    det = sc.DensityAnomalyDetector(gm).fit(X)
    fig = _render(plotting.plot_gmm_density(gm, X, threshold=det.threshold_), tmp_path, "density")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["means", "anomalies (50)"]
    fig = _render(
        plotting.plot_anomaly_histogram(gm.score_samples(X), det.threshold_), tmp_path, "hist"
    )
    assert "4.0% below" in fig.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(sc.ParameterError, match="features"):
        plotting.plot_decision_boundaries(km, chapter_X, features=(0, 0))
