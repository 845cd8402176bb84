"""Streaming ingest: exactly once across kill -9, poison batches, the file contract."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, stream_ledger

import streamclust as sc
from streamclust.datasets import make_chapter_mixture
from streamclust.ingest import Ingest


def _write_batches(incoming: Path, n_files: int, rows: int, seed: int = 0) -> list[str]:
    """Shuffled rows of the chapter's mixture as n_files .npy batches (written as the
    producer contract says: .tmp, then rename)."""
    X = make_chapter_mixture()[0]
    rng = np.random.default_rng(seed)
    incoming.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_files):
        name = f"b{i:05d}.npy"
        tmp = incoming / f"{name}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, X[rng.integers(0, len(X), rows)])
        os.replace(tmp, incoming / name)
        names.append(name)
    return names


def _arrays(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / "arrays.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _latest(state: Path) -> Path:
    return state / "checkpoints" / (state / "LATEST").read_text().strip()


STREAM = ["--model", "gmm", "--k", "3", "--random-state", "0", "--detect", "--window", "20"]


def test_stream_once_equals_partial_fit_in_name_order(tmp_path, capsys):
    names = _write_batches(tmp_path / "in", 30, 80)
    (tmp_path / "in" / "late.npy.tmp").write_bytes(b"half a file")  # still being written
    args = ["stream", tmp_path / "in", *STREAM, "--state", tmp_path / "st", "--once"]
    assert run_cli([*map(str, args), "--json", "--no-progress"])[0] == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batches"] == 30 and summary["rejected"] == 0
    det = sc.DensityAnomalyDetector(
        sc.StreamingGaussianMixture(3, random_state=0), method="sketch", window=20
    )
    for name in sorted(names):
        det.partial_fit(np.load(tmp_path / "in" / name))
    saved = sc.load(_latest(tmp_path / "st") / "model")
    np.testing.assert_array_equal(saved.means_, det.model_.means_)
    np.testing.assert_array_equal(saved.covariances_, det.model_.covariances_)
    assert summary["threshold"] == det.threshold_
    last = np.load(tmp_path / "in" / names[-1])
    np.testing.assert_array_equal(
        np.load(tmp_path / "st" / "flags" / "b00029.npy"), det.predict(last)
    )
    # Nothing new: a second run applies nothing and changes nothing.
    assert run_cli([*map(str, args), "--json", "--no-progress"])[0] == 0
    again = json.loads(capsys.readouterr().out)
    assert again["batches"] == 0 and again["batches_total"] == 30
    assert (tmp_path / "in" / "late.npy.tmp").exists()


def test_csv_batches_with_a_header_are_rejected_with_the_fix(tmp_path, capsys):
    incoming = tmp_path / "in"
    incoming.mkdir()
    for i in range(3):
        (incoming / f"b{i}.csv").write_text("temp,pressure\n1.5,2\n3,4.25\n")
    args = ["stream", incoming, "--k", "2", "--state", tmp_path / "st", "--once", "--no-progress"]
    assert run_cli(list(map(str, args)))[0] == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "0 batches" in out[0] and "3 rejected" in out[0]
    assert "looks like a header row; pass --header" in out[0]
    reasons = sorted((tmp_path / "st" / "rejected").glob("*.reason"))
    assert len(reasons) == 3
    for reason in reasons:
        assert (
            reason.read_text()
            .strip()
            .endswith(
                "row index 0, column index 0 holds 'temp', not a number: it looks like a header "
                "row; pass --header"
            )
        )
    # With --header the same batches are applied.
    for path in (tmp_path / "st" / "rejected").glob("*.csv"):
        os.replace(path, incoming / path.name)
    args = [*args[:4], "--state", tmp_path / "st2", "--once", "--header", "--json"]
    assert run_cli(list(map(str, args)))[0] == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batches"] == 3 and summary["rejected"] == 0 and summary["rows"] == 6


def test_poison_batches_are_rejected_and_the_stream_goes_on(tmp_path, capsys):
    incoming = tmp_path / "in"
    _write_batches(incoming, 6, 50)
    np.save(incoming / "b00002.npy", np.ones((10, 3)))  # wrong width
    bad = np.load(incoming / "b00004.npy")
    bad[3, 1] = np.nan
    np.save(incoming / "b00004.npy", bad)
    (incoming / "b00005.csv").write_text("1,2\n3,x\n")
    args = ["stream", incoming, "--k", "2", "--state", tmp_path / "st", "--once"]
    assert run_cli([*map(str, args), "--json", "--no-progress"])[0] == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batches"] == 4 and summary["rejected"] == 3
    rejected = tmp_path / "st" / "rejected"
    assert sorted(p.name for p in rejected.glob("*.reason")) == [
        "b00002.npy.reason",
        "b00004.npy.reason",
        "b00005.csv.reason",
    ]
    assert "3 columns" in (rejected / "b00002.npy.reason").read_text()
    assert "nan" in (rejected / "b00004.npy.reason").read_text()
    assert not (incoming / "b00002.npy").exists() and (rejected / "b00002.npy").exists()
    ledger = json.loads((_latest(tmp_path / "st") / "ledger.json").read_text())
    assert ledger["batches"] == ["b00000.npy", "b00001.npy", "b00003.npy", "b00005.npy"]


def test_state_of_another_model_is_refused(tmp_path, capsys):
    _write_batches(tmp_path / "in", 2, 50)
    base = ["stream", str(tmp_path / "in"), "--state", str(tmp_path / "st"), "--once"]
    assert run_cli([*base, "--k", "2", "--no-progress"])[0] == 0
    capsys.readouterr()
    assert run_cli([*base, "--k", "3", "--no-progress"])[0] == 2
    assert "was started with" in capsys.readouterr().err


def _run_stream(incoming: Path, state: Path, extra: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "streamclust.cli", "stream", str(incoming)]
    cmd += [*STREAM, "--state", str(state), "--once", "--no-progress", *extra]
    with open(state.parent / f"{state.name}.log", "ab") as log:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)


def _finish(proc: subprocess.Popen, state: Path) -> None:
    assert proc.wait(timeout=300) == 0, (state.parent / f"{state.name}.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 7])
def test_killed_five_times_gives_the_same_model(tmp_path, every):
    incoming = tmp_path / "in"
    names = _write_batches(incoming, 200, 60, seed=1)
    np.save(incoming / "b00100.npy", np.full((5, 2), np.inf))  # a poison batch
    (incoming / "b00150.npy.tmp").write_bytes(b"never read")
    extra = ["--checkpoint-every", str(every)]
    _finish(_run_stream(incoming, tmp_path / "clean", extra), tmp_path / "clean")
    # The poison file moved to clean/rejected; put it back for the killed run.
    os.replace(tmp_path / "clean" / "rejected" / "b00100.npy", incoming / "b00100.npy")

    rng = np.random.default_rng(every)
    state = tmp_path / "killed"
    kills = sorted(rng.choice(np.arange(5, 195), 5, replace=False))
    killed = 0
    for target in kills:
        proc = _run_stream(incoming, state, extra)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            latest = (state / "LATEST").read_text().strip() if (state / "LATEST").exists() else ""
            if latest and int(latest.split("-")[1]) >= target:
                time.sleep(rng.uniform(0, 0.03))  # land anywhere inside the next batches
                break
            time.sleep(0.002)
        killed += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed >= 4  # the kills landed mid-stream (a very late one may miss)
    _finish(_run_stream(incoming, state, extra), state)

    want, got = _latest(tmp_path / "clean"), _latest(state)
    a, b = _arrays(want / "model"), _arrays(got / "model")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ledger = json.loads((got / "ledger.json").read_text())
    good = [n for n in names if n != "b00100.npy"]
    assert ledger["batches"] == good  # every batch once, in order
    # metrics.jsonl: one line per batch, in order, none twice (a line's time differs).
    lines = [json.loads(x) for x in (state / "metrics.jsonl").read_text().splitlines()]
    assert [m["batch"] for m in lines] == good
    clean = json.loads((want / "ledger.json").read_text())
    for record in (ledger, clean):
        for m in record["metrics"]:
            m.pop("time")
    assert [{**m, "time": 0} for m in lines] == [{**m, "time": 0} for m in ledger["metrics"]]
    assert ledger == clean
    assert (state / "rejected" / "b00100.npy.reason").exists()
    assert (incoming / "b00150.npy.tmp").read_bytes() == b"never read"
    for name in good[-3:]:
        stem = name[:-4]
        np.testing.assert_array_equal(
            np.load(state / "flags" / f"{stem}.npy"),
            np.load(tmp_path / "clean" / "flags" / f"{stem}.npy"),
        )


def test_without_once_it_polls_for_new_batches(tmp_path):
    incoming, state = tmp_path / "in", tmp_path / "st"
    _write_batches(incoming, 3, 50)
    cmd = [sys.executable, "-m", "streamclust.cli", "stream", str(incoming), "--k", "2"]
    cmd += ["--state", str(state), "--poll-interval", "0.05", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:

        def applied() -> int:
            try:
                return int((state / "LATEST").read_text().split("-")[1])
            except (OSError, IndexError, ValueError):
                return -1

        deadline = time.monotonic() + 60
        while applied() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert applied() == 3
        # A producer drops two more batches: the running stream picks them up.
        X = make_chapter_mixture()[0]
        for name in ("c00000.npy", "c00001.npy"):
            with open(incoming / f"{name}.tmp", "wb") as fh:
                np.save(fh, X[:40])
            os.replace(incoming / f"{name}.tmp", incoming / name)
        while applied() < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert applied() == 5 and proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def _stream_ingest(incoming: Path, state: Path, **kw) -> Ingest:
    def make_model():
        return sc.StreamingGaussianMixture(3, random_state=0, client="sync", progress=False)

    config = {
        "model": "gmm",
        "params": {"k": 3, "random_state": 0},
        "percentile": 4.0,
        "method": "sketch",
        "window": 20,
        "on_drift": "warn",
        "drift_threshold": 10.0,
    }  # as `streamclust stream --model gmm --k 3 --random-state 0 --detect --window 20`
    return Ingest(incoming, state, make_model, config, **kw)


def _run_once(job: Ingest, **kw):
    with job:
        return job.run(once=True, **kw)


def _same_state(want: Path, got: Path) -> None:
    a, b = _arrays(want / "model"), _arrays(got / "model")
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert stream_ledger(got) == stream_ledger(want)


@pytest.mark.slow
def test_stream_on_a_scheduler_rides_out_its_restart(tmp_path, dask_processes):
    """The scheduler is killed while a batch's update runs on the worker, and is back a
    second later (its worker too): the stream runs the lost update again, once."""
    from distributed import Client

    names = _write_batches(tmp_path / "in", 16, 80, seed=2)
    _run_once(_stream_ingest(tmp_path / "in", tmp_path / "ref"))

    def slow_updates(seconds: float) -> None:
        """On a worker (shipped by value, being local): updates sleep ``seconds`` first."""
        import time

        import streamclust.ingest as ingest

        update = ingest._update

        def slow(*args):
            time.sleep(seconds)
            return update(*args)

        ingest._update = slow

    dask_processes.start()
    with Client(dask_processes.address, set_as_default=False) as client:
        client.run(slow_updates, 0.5)  # this worker's updates take 0.5 s more
    timers: list[threading.Timer] = []
    applied: list[int] = []

    def kill_during_batch_8(result, job) -> None:
        if len(job.ledger.batches) == 7 and not timers:

            def kill_then_restart() -> None:
                applied.append(len(job.ledger.batches))  # batch 8 is still on the worker
                dask_processes.kill_scheduler()  # its worker exits too
                time.sleep(1.0)
                dask_processes.start()  # a new worker, with plain updates

            timers.append(threading.Timer(0.2, kill_then_restart))
            timers[0].start()

    job = _stream_ingest(
        tmp_path / "in", tmp_path / "st", client=dask_processes.address, reconnect_timeout=60
    )
    try:
        with job:
            ledger = job.run(once=True, report=kill_during_batch_8)
    finally:
        for timer in timers:
            timer.join()
    assert applied == [7] and ledger.batches == names  # every batch once, in order
    _same_state(_latest(tmp_path / "ref"), _latest(tmp_path / "st"))


def test_a_batch_that_fails_half_way_leaves_no_trace(tmp_path, monkeypatch):
    """An error after the model took a batch (here, while scoring it) rejects the batch
    and leaves the model as if it had never been seen."""
    names = _write_batches(tmp_path / "in", 6, 80, seed=4)
    (tmp_path / "ref").mkdir()
    for name in names:
        if name != "b00003.npy":
            shutil.copy(tmp_path / "in" / name, tmp_path / "ref" / name)
    _run_once(_stream_ingest(tmp_path / "ref", tmp_path / "ref-st"))

    bad = np.load(tmp_path / "in" / "b00003.npy")
    score = sc.StreamingGaussianMixture.score_samples

    def failing(self, X, *args, **kwargs):
        if np.array_equal(X, bad):
            raise sc.DataError("injected failure")
        return score(self, X, *args, **kwargs)

    monkeypatch.setattr(sc.StreamingGaussianMixture, "score_samples", failing)
    ledger = _run_once(_stream_ingest(tmp_path / "in", tmp_path / "st"))
    assert ledger.batches == [n for n in names if n != "b00003.npy"]
    assert "injected" in (tmp_path / "st" / "rejected" / "b00003.npy.reason").read_text()
    want, got = _latest(tmp_path / "ref-st"), _latest(tmp_path / "st")
    a, b = _arrays(want / "model"), _arrays(got / "model")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.slow
def test_stream_exits_clearly_when_its_scheduler_stays_away_then_resumes(tmp_path, dask_processes):
    incoming, state = tmp_path / "in", tmp_path / "st"
    names = _write_batches(incoming, 150, 80, seed=3)
    _run_once(_stream_ingest(incoming, tmp_path / "ref"))
    dask_processes.start()
    cmd = [sys.executable, "-m", "streamclust", "stream", str(incoming), "--model", "gmm"]
    cmd += ["--k", "3", "--random-state", "0", "--detect", "--window", "20", "--once"]
    cmd += ["--state", str(state), "--scheduler", dask_processes.address]
    cmd += ["--reconnect-timeout", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        latest = (state / "LATEST").read_text().strip() if (state / "LATEST").exists() else ""
        if latest and int(latest.split("-")[1]) >= 30:
            break
        time.sleep(0.005)
    dask_processes.kill_scheduler()
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "lost the Dask scheduler at 'tcp://127.0.0.1:" in lines[0]
    assert "rerun the same command to resume" in lines[0]
    ledger = json.loads((_latest(state) / "ledger.json").read_text())
    assert 30 <= len(ledger["batches"]) < 150
    assert ledger["batches"] == names[: len(ledger["batches"])]

    dask_processes.start()  # the scheduler is back: the same command resumes
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _same_state(_latest(tmp_path / "ref"), _latest(state))


def _npy_claiming(path: Path, rows: int, claimed: int) -> None:
    """A .npy holding ``rows`` rows whose header claims ``claimed`` (same header length)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ones((rows, 2)))
    raw = buf.getvalue()
    end = raw.index(b"\n") + 1
    old, new = f"({rows}, 2)".encode(), f"({claimed}, 2)".encode()
    header = raw[:end].replace(old, new).replace(b" " * (len(new) - len(old)) + b"\n", b"\n")
    assert len(header) == end
    path.write_bytes(header + raw[end:])


def test_a_batch_whose_header_lies_is_rejected_and_the_stream_goes_on(tmp_path, capsys):
    """A header claiming 10**12 rows used to allocate for them: a MemoryError traceback
    on every run, the batch never moved aside."""
    names = _write_batches(tmp_path / "in", 4, 50)
    _npy_claiming(tmp_path / "in" / "b00002.npy", 100, 10**12)
    args = ["stream", tmp_path / "in", "--k", "2", "--state", tmp_path / "st", "--once"]
    for _ in range(2):  # and again: nothing is left to stop the next run
        assert run_cli([*map(str, args), "--json", "--no-progress"])[0] == 0, (
            capsys.readouterr().err
        )
    reason = (tmp_path / "st" / "rejected" / "b00002.npy.reason").read_text()
    assert "its header claims more rows than the file holds" in reason
    ledger = json.loads((_latest(tmp_path / "st") / "ledger.json").read_text())
    assert ledger["batches"] == [n for n in names if n != "b00002.npy"]
