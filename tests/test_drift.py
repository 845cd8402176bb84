"""Streams that drift: StreamingKMeans forgets old rows (decay / half_life)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

import streamclust as sc
from streamclust import StreamingKMeans

KW = dict(n_clusters=3, batch_size=400, random_state=0, progress=False, client="sync")
START = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
END = START + np.array([6.0, 6.0])  # every center moves by (6, 6) over the stream


def batches(n=60, rows=400, seed=0):
    rng = np.random.default_rng(seed)
    for t in range(n):
        centers = START + (END - START) * t / (n - 1)
        yield centers[rng.integers(3, size=rows)] + rng.normal(scale=0.5, size=(rows, 2))


def error(centers: np.ndarray, truth: np.ndarray) -> float:
    cost = ((centers[:, None] - truth[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols]).max())


def test_a_half_life_follows_centers_that_move():
    plain, follow = StreamingKMeans(**KW), StreamingKMeans(half_life=3, **KW)
    for batch in batches():
        plain.partial_fit(batch)
        follow.partial_fit(batch)
    # Following lags by about the distance moved in a few batches (0.14 a batch);
    # never forgetting averages the whole path (half of its 8.5).
    lag, plain_lag = error(follow.cluster_centers_, END), error(plain.cluster_centers_, END)
    assert lag < 1.0 and plain_lag > 3.0


def test_half_life_in_rows_is_half_life_in_batches_of_those_rows():
    a, b = (
        StreamingKMeans(half_life=3, **KW),
        StreamingKMeans(half_life=1200, time_unit="rows", **KW),
    )
    for batch in batches(20):
        a.partial_fit(batch)
        b.partial_fit(batch)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-9)


def test_without_forgetting_nothing_changes_bit_for_bit():
    ref, one = StreamingKMeans(**KW), StreamingKMeans(decay=1.0, **KW)
    for batch in batches(10):
        ref.partial_fit(batch)
        one.partial_fit(batch)
    np.testing.assert_array_equal(one.cluster_centers_, ref.cluster_centers_)
    X = np.concatenate(list(batches(10)))
    a = StreamingKMeans(**KW).fit(X)
    b = StreamingKMeans(decay=1.0, **KW).fit(X)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


def test_decay_is_spark_s_factor_and_survives_save_load(tmp_path):
    km = StreamingKMeans(decay=0.5, **KW)
    stream = list(batches(6))
    km.partial_fit(stream[0])
    km.save(tmp_path / "m")
    back = sc.load(tmp_path / "m")
    before = km._state.counts[km.best_init_].sum()
    km.partial_fit(stream[1])
    back.partial_fit(stream[1])
    np.testing.assert_array_equal(back.cluster_centers_, km.cluster_centers_)
    # Counts: halved, then the new batch's rows added.
    assert km._state.counts[km.best_init_].sum() == pytest.approx(0.5 * before + 400)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"decay": 1.5}, "decay=1.5"),
        ({"decay": 0.0}, "decay=0 forgets"),
        ({"half_life": -2}, "half_life=-2"),
        ({"half_life": 3, "decay": 0.9}, "not given with decay"),
        ({"half_life": 3, "time_unit": "days"}, "time_unit='days'"),
    ],
)
def test_bad_forgetting_parameters(params, match):
    with pytest.raises(sc.ParameterError, match=match):
        StreamingKMeans(**KW, **params).partial_fit(np.zeros((10, 2)))


def test_cli_stream_takes_a_half_life(tmp_path, capsys):
    from conftest import run_cli

    incoming = tmp_path / "in"
    incoming.mkdir()
    for i, batch in enumerate(batches()):
        np.save(incoming / f"b{i:03d}.npy", batch)
    code, _, err = run_cli(
        [
            "stream",
            incoming,
            "--state",
            tmp_path / "state",
            "--k",
            3,
            "--batch-size",
            400,
            "--half-life",
            3,
            "--once",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    state = tmp_path / "state"
    model = sc.load(state / "checkpoints" / (state / "LATEST").read_text().strip() / "model")
    assert model.half_life == 3
    assert error(model.cluster_centers_, END) < 1.0


def test_the_mixture_s_online_em_follows_with_a_half_life():
    kw = dict(n_components=3, random_state=0, progress=False, client="sync", batch_size=400)
    plain = sc.StreamingGaussianMixture(**kw)
    follow = sc.StreamingGaussianMixture(half_life=3, **kw)
    for batch in batches():
        plain.partial_fit(batch)
        follow.partial_fit(batch)
    # The default schedule (step_decay=0.6) forgets slowly; the half-life's floor keeps up.
    lag, plain_lag = error(follow.means_, END), error(plain.means_, END)
    assert lag < 1.0 and plain_lag > 2 * lag
    with pytest.raises(sc.ParameterError, match="half_life=0 forgets"):
        sc.StreamingGaussianMixture(half_life=0, **kw).partial_fit(np.zeros((10, 2)))


def shifted_stream(incoming, n=80, change=40, rows=300, seed=2):
    """Three blobs; at batch ``change`` they all move by (3, 3) (six standard deviations)."""
    incoming.mkdir()
    rng = np.random.default_rng(seed)
    for t in range(n):
        centers = START + (3.0 if t >= change else 0.0)
        batch = centers[rng.integers(3, size=rows)] + rng.normal(scale=0.5, size=(rows, 2))
        np.save(incoming / f"b{t:03d}.npy", batch)


def stream_args(incoming, state, *extra):
    return [
        "stream",
        incoming,
        "--state",
        state,
        "--k",
        3,
        "--batch-size",
        300,
        "--once",
        "--no-progress",
        *extra,
    ]


def test_a_change_is_flagged_within_a_few_batches_and_logged_once(tmp_path, capsys):
    from conftest import run_cli

    shifted_stream(tmp_path / "in")
    code, _, err = run_cli(stream_args(tmp_path / "in", tmp_path / "state"), capsys)
    assert code == 0, err
    lines = (tmp_path / "state" / "metrics.jsonl").read_text().splitlines()
    metrics = [__import__("json").loads(x) for x in lines]
    assert [m["batch"] for m in metrics] == [f"b{t:03d}.npy" for t in range(80)]
    assert metrics[0]["score"] is None and all(m["score"] > 0 for m in metrics[1:])
    # Cluster sizes after every batch: three shares, about a third each (equal blobs).
    assert all(len(m["sizes"]) == 3 and abs(sum(m["sizes"]) - 1) < 1e-5 for m in metrics)
    assert all(0.25 < share < 0.42 for share in metrics[-1]["sizes"])
    flagged = [t for t, m in enumerate(metrics) if m["drift"]]
    assert flagged and 40 <= flagged[0] <= 43  # within three batches of the change
    assert "drift at batch b04" in err
    # Running again applies nothing and keeps the same lines.
    run_cli(stream_args(tmp_path / "in", tmp_path / "state"), capsys)
    assert (tmp_path / "state" / "metrics.jsonl").read_text().splitlines() == lines


def test_on_drift_reset_starts_a_new_model_that_learns_the_new_regime(tmp_path, capsys):
    from conftest import run_cli

    shifted_stream(tmp_path / "in")
    state = tmp_path / "state"
    code, out, err = run_cli(
        [*stream_args(tmp_path / "in", state, "--on-drift", "reset"), "--json"], capsys
    )
    assert code == 0, err
    summary = __import__("json").loads(out)
    first = int(summary["drifts"][0][1:4])
    assert 40 <= first <= 43
    model = sc.load(state / "checkpoints" / (state / "LATEST").read_text().strip() / "model")
    assert model.n_steps_ == 79 - first  # learnt only the batches after the alarm
    assert error(model.cluster_centers_, START + 3.0) < 0.2
    # The state resumes (its model counts from the reset).
    np.save(tmp_path / "in" / "b080.npy", np.load(tmp_path / "in" / "b079.npy"))
    code, _, err = run_cli(stream_args(tmp_path / "in", state, "--on-drift", "reset"), capsys)
    assert code == 0, err


def test_page_hinkley_says_where_the_change_began():
    from streamclust.drift import PageHinkley

    rng = np.random.default_rng(0)
    test = PageHinkley()
    scores = np.r_[rng.normal(size=60), rng.normal(size=20) + 4.0]
    alarms = [t for t, x in enumerate(scores) if test.update(float(x))]
    assert alarms and 60 <= alarms[0] <= 63
    assert 60 - 2 <= alarms[0] + 1 - test.window <= 60 + 1  # the window starts at the change


def _latest(state):
    return state / "checkpoints" / (state / "LATEST").read_text().strip()


def _latest_model(state):
    return sc.load(_latest(state) / "model")


def _latest_ledger(state):
    return __import__("json").loads((_latest(state) / "ledger.json").read_text())


def test_on_drift_refit_learns_the_batches_since_the_change(tmp_path, capsys):
    from conftest import run_cli

    shifted_stream(tmp_path / "in")
    state = tmp_path / "state"
    # First up to shortly after the change, then the rest: as one run would.
    for name in [f"b{t:03d}.npy" for t in range(46, 80)]:
        (tmp_path / "in" / name).rename(tmp_path / name)
    code, out, err = run_cli(
        [*stream_args(tmp_path / "in", state, "--on-drift", "refit"), "--json"], capsys
    )
    assert code == 0, err
    first = int(__import__("json").loads(out)["drifts"][0][1:4])
    assert 40 <= first <= 43 and "learnt the batches since the change" in err
    start = _latest_ledger(state)["model_since"]
    assert 39 <= start <= 41  # where the change began (batch 40), not after the alarm
    model = _latest_model(state)
    assert model.n_steps_ == 46 - start
    assert error(model.cluster_centers_, START + 3.0) < 0.2  # the new regime, at once
    for name in [f"b{t:03d}.npy" for t in range(46, 80)]:
        (tmp_path / name).rename(tmp_path / "in" / name)
    assert run_cli(stream_args(tmp_path / "in", state, "--on-drift", "refit"), capsys)[0] == 0
    whole = tmp_path / "whole"
    assert run_cli(stream_args(tmp_path / "in", whole, "--on-drift", "refit"), capsys)[0] == 0
    np.testing.assert_array_equal(
        _latest_model(state).cluster_centers_, _latest_model(whole).cluster_centers_
    )
    assert (state / "metrics.jsonl").read_text().count("\n") == 80


def test_refit_without_its_batches_falls_back_to_a_reset(tmp_path, capsys):
    """A landing cleaned of applied batches: those since the change began are gone when
    the alarm comes, so the stream starts its new model from the next batch instead."""
    from conftest import run_cli

    # Centers that start moving at batch 40 by 0.05 per batch: flagged some batches later.
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(2)
    for t in range(60):
        centers = START + max(0, t - 39) * 0.05
        batch = centers[rng.integers(3, size=300)] + rng.normal(scale=0.5, size=(300, 2))
        np.save(tmp_path / ("in" if t < 40 else "") / f"b{t:03d}.npy", batch)
    state = tmp_path / "state"
    args = stream_args(tmp_path / "in", state, "--on-drift", "refit")
    assert run_cli(args, capsys)[0] == 0
    for t in range(40, 60):
        name = f"b{t:03d}.npy"
        (tmp_path / name).rename(tmp_path / "in" / name)
        assert run_cli(args, capsys)[0] == 0
        (tmp_path / "in" / name).unlink()  # applied: cleaned away
        ledger = _latest_ledger(state)
        if ledger["model_since"]:
            break
    assert ledger["drift"]["window"] >= 2  # the change began before this batch
    assert ledger["model_since"] == t + 1  # reset: the model starts after the alarm
    assert not (_latest(state) / "model").exists()


@pytest.mark.parametrize("on_drift", ["reset", "refit"])
def test_a_detecting_stream_resumes_after_its_model_restarted(tmp_path, capsys, on_drift):
    """The detector's window counts the batches of the current model, so a state whose
    model restarted at a drift loads again."""
    from conftest import run_cli

    shifted_stream(tmp_path / "in")
    for t in range(46, 80):
        (tmp_path / "in" / f"b{t:03d}.npy").rename(tmp_path / f"b{t:03d}.npy")
    state = tmp_path / "state"
    args = [*stream_args(tmp_path / "in", state, "--on-drift", on_drift), "--detect"]
    assert run_cli(args, capsys)[0] == 0
    assert _latest_ledger(state)["model_since"] >= 39
    for t in range(46, 80):
        (tmp_path / f"b{t:03d}.npy").rename(tmp_path / "in" / f"b{t:03d}.npy")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert len(_latest_ledger(state)["batches"]) == 80


def test_report_is_a_self_contained_page_with_its_figures(tmp_path, capsys):
    import base64
    from html.parser import HTMLParser

    from conftest import run_cli

    shifted_stream(tmp_path / "in")
    state = tmp_path / "state"
    assert run_cli([*stream_args(tmp_path / "in", state), "--detect"], capsys)[0] == 0
    code, _, err = run_cli(["report", state, "--no-progress"], capsys)
    assert code == 0, err
    page = state / "report" / "report.html"
    assert (state / "report" / "stream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    class Page(HTMLParser):
        def __init__(self):
            super().__init__()
            self.images, self.text = [], []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.images.append(dict(attrs)["src"])

        def handle_data(self, data):
            self.text.append(data)

    parsed = Page()
    parsed.feed(page.read_text())
    (src,) = parsed.images
    assert src.startswith("data:image/png;base64,")
    png = base64.b64decode(src.split(",", 1)[1])
    assert png == (state / "report" / "stream.png").read_bytes()
    from PIL import Image

    width, height = Image.open(__import__("io").BytesIO(png)).size
    assert width > 3 * height  # three panels side by side: scores, anomalies, sizes
    text = " ".join(parsed.text)
    assert "drift alarms" in text and "b04" in text and "80" in text
    code, _, err = run_cli(["report", tmp_path / "nowhere"], capsys)
    assert code == 2 and "no metrics.jsonl here" in err
