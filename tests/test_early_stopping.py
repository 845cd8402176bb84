"""StreamingKMeans early stopping (tol, max_no_improvement), per candidate in lockstep."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import logical_blocks_of

import streamclust as sc
from streamclust import StreamingKMeans

KW = dict(n_clusters=8, n_init=4, batch_size=250, random_state=3, progress=False)


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(5)
    centers = rng.normal(scale=5, size=(8, 6))
    return (centers[rng.integers(8, size=20_000)] + rng.normal(size=(20_000, 6))).astype(np.float32)


def test_a_long_fit_stops_early_and_reads_less(X, monkeypatch):
    logical_blocks_of(monkeypatch, 2_000, 250, 6)
    full = StreamingKMeans(max_passes=20, client="sync", **KW).fit(X)
    early = StreamingKMeans(max_passes=20, max_no_improvement=10, client="sync", **KW).fit(X)
    assert full.n_iter_ == 20 and full.n_steps_ == 20 * 80
    assert early.n_iter_ < 20 and early.n_steps_ < full.n_steps_
    assert early.n_iter_ == early.n_passes_
    # Every candidate stopped, each at its own step; the fit ended in the block after
    # the last one stopped, a block being 8 steps here.
    stopped_at = early._state.stopped_at
    assert (stopped_at > 0).all()
    assert early.n_steps_ == -(-stopped_at.max() // 8) * 8
    assert early.inertia_ < 1.02 * full.inertia_


def test_stopping_does_not_depend_on_where_candidates_run(X, tmp_path, monkeypatch):
    logical_blocks_of(monkeypatch, 2_000, 250, 6)
    kw = dict(KW, max_passes=20, max_no_improvement=5, tol=1e-4)
    ref = StreamingKMeans(client="sync", **kw).fit(X)
    threads = StreamingKMeans(client="threads", **kw).fit(X)
    stored = StreamingKMeans(client="threads", **kw).fit(sc.write_zarr(X, tmp_path / "x.zarr"))
    for other in (threads, stored):
        np.testing.assert_array_equal(other.cluster_centers_, ref.cluster_centers_)
        np.testing.assert_array_equal(other._state.stopped_at, ref._state.stopped_at)
        assert other.n_steps_ == ref.n_steps_ and other.inertia_ == ref.inertia_


def test_a_stopped_candidate_keeps_its_centers_and_is_still_scored(X, monkeypatch):
    logical_blocks_of(monkeypatch, 2_000, 250, 6)
    km = StreamingKMeans(max_passes=3, max_no_improvement=2, client="sync", **KW).fit(X)
    state = km._state
    assert (state.stopped_at > 0).any()
    # Scored on the same batches as the others: every candidate has a full window.
    assert state.n_recorded == km.n_steps_
    assert np.isfinite(km.init_scores_).all()


def test_verbose_prints_scikit_learn_lines(X, capsys):
    km = StreamingKMeans(
        max_passes=5, tol=1e-2, verbose=1, client="sync", **{**KW, "n_init": 1}
    ).fit(X)
    out = capsys.readouterr().out
    assert "Minibatch step 1/400: mean batch inertia: " in out
    assert "Minibatch step 2/400: mean batch inertia: " in out and "ewa inertia: " in out
    assert f"Converged (small centers change) at step {km._state.stopped_at[0]}/400" in out


def test_partial_fit_after_an_early_stop_keeps_learning(X):
    km = StreamingKMeans(max_passes=5, max_no_improvement=1, client="sync", **KW).fit(X)
    assert km._state.stopped.all()
    before = km.cluster_centers_.copy()
    km.partial_fit(X[:500] + 3)
    assert not np.array_equal(km.cluster_centers_, before)
    assert not km._state.stopped.any()


def test_saved_model_keeps_the_stop_state(X, tmp_path):
    km = StreamingKMeans(max_passes=4, max_no_improvement=3, client="sync", **KW).fit(X)
    km.save(tmp_path / "m")
    back = sc.load(tmp_path / "m")
    np.testing.assert_array_equal(back._state.stopped_at, km._state.stopped_at)
    assert back._state.stop == km._state.stop and back.n_iter_ == km.n_iter_


@pytest.mark.parametrize(
    "params, match",
    [
        ({"tol": -1.0}, r"tol=-1.0"),
        ({"max_no_improvement": -2}, r"max_no_improvement=-2"),
        ({"verbose": "loud"}, r"verbose='loud'"),
    ],
)
def test_bad_stopping_parameters(X, params, match):
    with pytest.raises(sc.ParameterError, match=match):
        StreamingKMeans(**KW, **params).fit(X)


def test_cli_max_no_improvement(X, tmp_path, capsys):
    from conftest import cli_json

    sc.write_zarr(X, tmp_path / "x.zarr")
    got = cli_json(
        [
            "fit",
            tmp_path / "x.zarr",
            "--k 8 --batch-size 250 --max-passes 20",
            "--max-no-improvement 5 --out",
            tmp_path / "m",
        ],
        capsys,
    )
    assert got["n_passes"] < 20


def test_cli_n_init_auto(X, tmp_path, capsys):
    from conftest import run_cli

    sc.write_zarr(X, tmp_path / "x.zarr")
    args = ["fit", tmp_path / "x.zarr", "--k", 8, "--no-progress", "--scheduler", "sync"]
    code, out, _ = run_cli([*args, "--n-init", "auto", "--out", tmp_path / "a"], capsys)
    assert code == 0 and "candidate 0 of 1," in out
    code, _, err = run_cli([*args, "--n-init", "few", "--out", tmp_path / "b"], capsys)
    assert code == 2 and "'few' is not an integer or auto" in err
