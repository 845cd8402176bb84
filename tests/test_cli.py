"""The command line gives the same models and numbers as the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from conftest import cli_json

import streamclust as sc
from streamclust.datasets import make_chapter_mixture


@pytest.fixture(scope="module")
def mixture_zarr(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli") / "mix.zarr"
    sc.write_zarr(make_chapter_mixture()[0], path, block_rows=300)
    return str(path)


def test_gmm_fit_score_predict(mixture_zarr, tmp_path, capsys):
    model = tmp_path / "m"
    fit = cli_json(
        ["fit", mixture_zarr, "--model gmm --k 3 --covariance diag --n-init 4", "--out", model],
        capsys,
    )
    ref = sc.StreamingGaussianMixture(
        3, covariance_type="diag", n_init=4, random_state=0, client="sync", progress=False
    ).fit(mixture_zarr)
    saved = sc.load(model)
    assert isinstance(saved, sc.StreamingGaussianMixture)
    np.testing.assert_array_equal(saved.means_, ref.means_)
    np.testing.assert_array_equal(saved.covariances_, ref.covariances_)
    assert fit["lower_bound"] == ref.lower_bound_ and fit["n_iter"] == ref.n_iter_
    assert fit["covariance_type"] == "diag" and len(fit["weights"]) == 3

    score = cli_json(["score", mixture_zarr, "--model-dir", model], capsys)
    assert score["score"] == pytest.approx(ref.score(mixture_zarr), rel=1e-12)
    assert score["bic"] == pytest.approx(ref.bic(mixture_zarr), rel=1e-12)
    assert score["aic"] == pytest.approx(ref.aic(mixture_zarr), rel=1e-12)

    out = tmp_path / "scores.zarr"
    written = cli_json(
        ["score", mixture_zarr, "--model-dir", model, "--out", out], capsys, scheduler="threads"
    )
    np.testing.assert_allclose(zarr.open_array(out)[:], ref.score_samples(mixture_zarr), rtol=1e-12)
    assert written["bic"] == pytest.approx(score["bic"], rel=1e-12)

    labels = tmp_path / "labels.npy"
    cli_json(["predict", mixture_zarr, "--model-dir", model, "--out", labels], capsys)
    np.testing.assert_array_equal(np.load(labels), ref.predict(mixture_zarr))


def test_kmeans_fit_and_score(mixture_zarr, tmp_path, capsys):
    fit = cli_json(
        ["fit", mixture_zarr, "--k 3 --batch-size 100 --max-steps 30", "--out", tmp_path / "km"],
        capsys,
    )
    ref = sc.StreamingKMeans(
        3, batch_size=100, max_steps=30, random_state=0, client="sync", progress=False
    ).fit(mixture_zarr)
    np.testing.assert_array_equal(sc.load(tmp_path / "km").cluster_centers_, ref.cluster_centers_)
    assert fit["inertia"] == ref.inertia_ and fit["n_steps"] == 30
    score = cli_json(["score", mixture_zarr, "--model-dir", tmp_path / "km"], capsys)
    assert score["inertia"] == pytest.approx(ref.inertia_, rel=1e-12)


def test_select(mixture_zarr, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    res = cli_json(
        ["select", mixture_zarr, "--model gmm --k 1..5 --plot", tmp_path / "bic.png"], capsys
    )
    assert res["best"] == {"k": 3, "covariance_type": "full"} and len(res["table"]) == 20
    assert (tmp_path / "bic.png").stat().st_size > 1000
    direct = sc.sweep_gmm(mixture_zarr, range(1, 6), progress=False)
    assert [r["bic"] for r in res["table"]] == [r["bic"] for r in direct.table()]
    km = cli_json(["select", mixture_zarr, "--k 2,3,4 --criterion elbow"], capsys)
    assert [r["k"] for r in km["table"]] == [2, 3, 4] and km["criterion"] == "elbow"


def test_bgmm_fit_score_predict(mixture_zarr, tmp_path, capsys):
    model = tmp_path / "bg"
    args = "--model bgmm --k 8 --covariance tied --weight-prior 0.01 --max-iter 400"
    fit = cli_json(["fit", mixture_zarr, args, "--out", model], capsys)
    ref = sc.StreamingBayesianGaussianMixture(
        8,
        covariance_type="tied",
        weight_concentration_prior=0.01,
        max_iter=400,
        random_state=0,
        client="sync",
        progress=False,
    ).fit(mixture_zarr)
    saved = sc.load(model)
    assert isinstance(saved, sc.StreamingBayesianGaussianMixture)
    np.testing.assert_array_equal(saved.weights_, ref.weights_)
    assert fit["components_used"] == int(np.sum(ref.weights_ > 0.01)) < 8
    assert fit["lower_bound"] == ref.lower_bound_ and fit["converged"]
    score = cli_json(["score", mixture_zarr, "--model-dir", model], capsys)
    assert score["score"] == pytest.approx(ref.score(mixture_zarr), rel=1e-12)
    labels = tmp_path / "labels.npy"
    cli_json(["predict", mixture_zarr, "--model-dir", model, "--out", labels], capsys)
    np.testing.assert_array_equal(np.load(labels), ref.predict(mixture_zarr))


def test_init_reaches_a_mixture_as_init_params(mixture_zarr, tmp_path, capsys):
    cli_json(
        ["fit", mixture_zarr, "--model gmm --k 3 --init random", "--out", tmp_path / "m"], capsys
    )
    ref = sc.StreamingGaussianMixture(
        3, init_params="random", random_state=0, client="sync", progress=False
    ).fit(mixture_zarr)
    np.testing.assert_array_equal(sc.load(tmp_path / "m").means_, ref.means_)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["fit", "--model", "gmm", "--weight-prior", "0.1"],
            "--weight-prior applies to --model bgmm",
        ),
        (["fit", "--model", "bgmm", "--step-decay", "0.7"], "--step-decay applies to --model gmm"),
        (["fit", "--model", "bgmm", "--half-life", "5"], "--half-life does not apply"),
        (["fit", "--model", "bgmm", "--prior-type", "beta"], "weight_concentration_prior_type"),
        (["select", "--model", "bgmm", "--k", "1..3"], "chooses its components itself"),
    ],
)
def test_bgmm_options_are_refused_in_one_line(mixture_zarr, tmp_path, capsys, args, message):
    from conftest import run_cli

    extra = ["--out", tmp_path / "m"] if args[0] == "fit" else []
    code, _, err = run_cli([args[0], mixture_zarr, *args[1:], *extra], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


def test_a_warning_is_one_line(mixture_zarr, tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "streamclust", "fit", mixture_zarr, "--model", "gmm"]
    cmd += ["--k", "3", "--max-iter", "2", "--out", str(tmp_path / "m")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert res.stderr.splitlines() == [
        line for line in res.stderr.splitlines() if line.startswith("streamclust: warning: ")
    ]
    assert "did not converge" in res.stderr and res.stderr.count("\n") == 1
