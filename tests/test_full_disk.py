"""Full and read-only disks: one line, before the work where possible, nothing left behind.

Each test mounts a small tmpfs of its own (skipped where mounting is not
allowed). Commands that could die of SIGBUS run as subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest
from conftest import run_cli

import streamclust as sc


@pytest.fixture()
def tmpfs(tmp_path):
    """Mount a tmpfs: ``tmpfs(kib, read_only=False)`` gives its path."""
    mounted = []

    def mount(kib: int, read_only: bool = False):
        point = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        point.mkdir()
        options = f"size={kib}k" + (",ro" if read_only else "")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture()
def data(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20_000, 8)))
    assert run_cli(["fit", str(tmp_path / "x.npy"), "--k", "8", "--out", str(tmp_path / "m"),
                 "--no-progress"])[0] == 0  # fmt: skip
    return tmp_path


def run(*args: str) -> subprocess.CompletedProcess:
    quiet = [] if args[0] == "convert" else ["--no-progress"]
    return subprocess.run(
        [sys.executable, "-m", "streamclust", *args, *quiet],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(data, tmpfs):
    """predict to a .npy on a full disk died of SIGBUS (a write into a memory map),
    leaving a temporary file that kept the disk full."""
    full = tmpfs(64)
    done = run("predict", str(data / "x.npy"), "--model-dir", str(data / "m"),
               "--out", str(full / "labels.npy"))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"streamclust: error: {full / 'labels.npy'}: no room for its 80128 bytes (No space "
        "left on device); free some space or write it elsewhere"
    ]
    assert os.listdir(full) == []
    # A Zarr output too (chunks of random floats do not compress).
    done = run("score", str(data / "x.npy"), "--model-dir", str(data / "m"),
               "--out", str(full / "s.zarr"))  # fmt: skip
    assert done.returncode in (0, 2), done.stderr
    done = run("convert", str(data / "x.npy"), str(full / "c.zarr"))
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "No space left on device" in done.stderr
    assert not [p for p in os.listdir(full) if p.startswith(".")]


def test_a_read_only_output_is_refused_before_the_work(data, tmpfs, capsys, monkeypatch):
    ro = tmpfs(64, read_only=True)

    def no_fit(self, *args, **kwargs):
        raise AssertionError("fitted before finding out that the output cannot be written")

    monkeypatch.setattr(sc.StreamingKMeans, "fit", no_fit)
    code = run_cli(
        ["fit", str(data / "x.npy"), "--k", "2", "--out", str(ro / "m"), "--no-progress"]
    )[0]
    err = capsys.readouterr().err
    assert code == 2 and err == (
        f"streamclust: error: {ro}: cannot write here (Read-only file system); choose a "
        "writable place for the output\n"
    )
    for args in (
        [
            "predict",
            str(data / "x.npy"),
            "--model-dir",
            str(data / "m"),
            "--out",
            str(ro / "l.npy"),
        ],
        ["convert", str(data / "x.npy"), str(ro / "c.zarr")],
        ["stream", str(data), "--state", str(ro / "st"), "--once"],
    ):
        assert run_cli([*args, "--no-progress"] if args[0] != "convert" else args)[0] == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Read-only file system" in err, err
