"""Streams from a prefix in object storage (an S3 server the tests start): objects
applied exactly once, across kills; uploads again under an applied name refused;
rejected objects recorded, left in the bucket or moved."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, stream_ledger

import streamclust as sc
from streamclust.datasets import make_chapter_mixture

STREAM = ["--model", "gmm", "--k", "3", "--random-state", "0", "--detect", "--window", "20"]


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _upload_batches(bucket, prefix: str, n: int, rows: int, seed: int = 0) -> list[str]:
    X = make_chapter_mixture()[0]
    rng = np.random.default_rng(seed)
    names = [f"b{i:05d}.npy" for i in range(n)]
    bucket.fs.pipe(
        {f"{bucket.name}/{prefix}/{name}": _npy(X[rng.integers(0, len(X), rows)]) for name in names}
    )
    return names


def _latest(state: Path) -> Path:
    return state / "checkpoints" / (state / "LATEST").read_text().strip()


def _stream(bucket, prefix: str, state: Path, *extra: str, capsys=None):
    args = [
        "stream",
        bucket.url(prefix) + "/",
        *STREAM,
        "--state",
        state,
        "--once",
        "--json",
        "--no-progress",
        *bucket.cli_options(),
        *extra,
    ]
    code, out, err = run_cli(args, capsys)
    return code, (json.loads(out) if code == 0 and out else None), err


def test_a_prefix_stream_equals_the_directory_stream(tmp_path, s3_bucket, capsys):
    names = _upload_batches(s3_bucket, "in", 12, 80)
    s3_bucket.fs.pipe(f"{s3_bucket.name}/in/late.npy.tmp", b"half an upload")
    s3_bucket.fs.pipe(f"{s3_bucket.name}/in/notes.txt", b"not a batch")
    code, summary, err = _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)
    assert code == 0, err
    assert summary["batches"] == 12 and summary["rejected"] == 0
    # The same batches from a local directory give the same checkpoint, bit for bit.
    local = tmp_path / "local"
    s3_bucket.fs.get(f"{s3_bucket.name}/in/", str(local), recursive=True)
    args = ["stream", local, *STREAM, "--state", tmp_path / "ref", "--once", "--no-progress"]
    assert run_cli(args, capsys)[0] == 0
    got, want = _latest(tmp_path / "st"), _latest(tmp_path / "ref")
    np.testing.assert_array_equal(sc.load(got / "model").means_, sc.load(want / "model").means_)
    ledger = json.loads((got / "ledger.json").read_text())
    assert ledger["batches"] == names
    assert set(ledger["objects"]) == set(names)
    info = s3_bucket.fs.info(f"{s3_bucket.name}/in/{names[0]}")
    assert ledger["objects"][names[0]] == {"size": info["size"], "etag": info["ETag"]}
    # Nothing new: nothing applied again.
    code, again, err = _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)
    assert code == 0 and again["batches"] == 0 and again["batches_total"] == 12


def test_an_object_uploaded_again_under_an_applied_name_is_refused(tmp_path, s3_bucket, capsys):
    names = _upload_batches(s3_bucket, "in", 4, 50)
    assert _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)[0] == 0
    before = (_latest(tmp_path / "st") / "ledger.json").read_text()
    key = f"{s3_bucket.name}/in/{names[1]}"
    s3_bucket.fs.pipe(key, _npy(np.zeros((50, 2))))  # same name, new content: a new ETag
    code, summary, err = _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)
    assert code == 0, err
    assert summary["batches"] == 0 and summary["rejected"] == 1
    reasons = list((tmp_path / "st" / "rejected").glob(f"{names[1]}.reupload-*.reason"))
    assert len(reasons) == 1 and "uploaded again" in reasons[0].read_text()
    assert (_latest(tmp_path / "st") / "ledger.json").read_text() == before
    assert s3_bucket.fs.exists(key)  # never deleted
    # Said once, not at every look.
    code, summary, err = _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)
    assert code == 0 and summary["rejected"] == 0


def test_rejected_objects_stay_in_the_bucket_unless_moved(tmp_path, s3_bucket, capsys):
    _upload_batches(s3_bucket, "in", 3, 50)
    bad = f"{s3_bucket.name}/in/b00001x.npy"
    s3_bucket.fs.pipe(bad, _npy(np.full((5, 2), np.nan)))
    code, summary, err = _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)
    assert code == 0 and summary["rejected"] == 1 and summary["batches"] == 3, err
    rejected = tmp_path / "st" / "rejected"
    assert "NaN" in (rejected / "b00001x.npy.reason").read_text()
    assert s3_bucket.fs.exists(bad) and not (rejected / "b00001x.npy").exists()
    code, summary, err = _stream(s3_bucket, "in", tmp_path / "st", capsys=capsys)
    assert summary["rejected"] == 0  # not tried again while it is the same object
    # Moved out of the bucket on request.
    code, summary, err = _stream(
        s3_bucket, "in", tmp_path / "st2", "--move-rejected", capsys=capsys
    )
    assert code == 0 and summary["rejected"] == 1
    assert not s3_bucket.fs.exists(bad) and (tmp_path / "st2" / "rejected" / "b00001x.npy").exists()


def test_bad_stream_arguments_are_one_line(tmp_path, s3_bucket, capsys):
    _upload_batches(s3_bucket, "in", 1, 50)
    for extra, message in (
        (["--state", "s3://bucket/state"], "the state must be a local directory"),
        (["--state", tmp_path / "st", "--storage-option", "oops"], "KEY=VALUE"),
    ):
        args = ["stream", s3_bucket.url("in/"), *STREAM, "--once", *s3_bucket.cli_options(), *extra]
        code, _, err = run_cli(args, capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "st").exists()
    code, _, err = run_cli(
        ["stream", tmp_path, *STREAM, "--state", tmp_path / "s", "--once", "--move-rejected"],
        capsys,
    )
    assert code == 2 and "applies to a prefix in object storage" in err


@pytest.mark.slow
def test_a_prefix_stream_killed_twice_applies_every_object_once(tmp_path, s3_bucket):
    names = _upload_batches(s3_bucket, "in", 120, 60, seed=1)
    s3_bucket.fs.pipe(f"{s3_bucket.name}/in/b00060.npy", _npy(np.full((5, 2), np.inf)))
    cmd = [
        sys.executable,
        "-m",
        "streamclust.cli",
        "stream",
        s3_bucket.url("in/"),
        *STREAM,
        "--once",
        "--no-progress",
        *s3_bucket.cli_options(),
    ]

    def run(state: Path) -> subprocess.Popen:
        with open(tmp_path / f"{state.name}.log", "ab") as log:
            return subprocess.Popen(
                [*cmd, "--state", str(state)], stdout=subprocess.DEVNULL, stderr=log
            )

    assert run(tmp_path / "clean").wait(timeout=300) == 0
    state, killed = tmp_path / "killed", 0
    for target in (30, 80):
        proc = run(state)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            latest = (state / "LATEST").read_text().strip() if (state / "LATEST").exists() else ""
            if latest and int(latest.split("-")[1]) >= target:
                time.sleep(0.01)
                break
            time.sleep(0.002)
        killed += proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert killed == 2
    assert run(state).wait(timeout=300) == 0, (tmp_path / "killed.log").read_text()
    want, got = _latest(tmp_path / "clean"), _latest(state)
    ledger = json.loads((got / "ledger.json").read_text())
    good = [n for n in names if n != "b00060.npy"]
    assert ledger["batches"] == good  # every object once, in order
    assert stream_ledger(got) == stream_ledger(want)
    a, b = sc.load(want / "model"), sc.load(got / "model")
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    assert (state / "rejected" / "b00060.npy.reason").exists()
