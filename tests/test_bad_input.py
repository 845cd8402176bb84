"""Bad input fails fast with one line naming the value and the fix, and writes nothing."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import zarr
from conftest import run_cli

import streamclust as sc


@pytest.fixture()
def data_dir(tmp_path, blobs32):
    np.save(tmp_path / "x.npy", blobs32[:3000])
    sc.write_zarr(blobs32[:3000], tmp_path / "x.zarr", block_rows=1000)
    return tmp_path


def snapshot(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


# ---------------------------------------------------------------- library errors


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_clusters": 0}, "n_clusters=0 must be >= 1"),
        ({"n_init": 0}, "n_init=0 must be >= 1"),
        ({"batch_size": 1.5}, "batch_size=1.5 must be an integer"),
        ({"last_n": 0}, "last_n=0 must be >= 1"),
        ({"selection": "best"}, "selection='best' is not one of"),
        ({"reassignment_ratio": 2.0}, r"reassignment_ratio=2.0 is outside \[0.0, 1.0\]"),
        ({"init": "kmeans||"}, "init='kmeans||' is not one of"),
        (
            {"init": np.zeros((3, 8)), "n_clusters": 5, "n_init": 1},
            r"initial centers \(3, 8\) does not match the number of clusters 5",
        ),
        ({"client": "nonsense"}, "client/--scheduler 'nonsense' is not an address"),
    ],
)
def test_bad_parameters(params, match, blobs32):
    with pytest.raises(sc.ParameterError, match=match):
        sc.StreamingKMeans(progress=False, **params).fit(blobs32)


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.zeros(10), "Reshape your data"),
        (np.zeros(5000), "Reshape your data"),
        (np.zeros((2, 3, 4)), "dim 3"),
        (np.zeros((0, 3)), "0 sample"),
        (
            np.array([[1.0, 2.0]] * 20 + [[1.0, np.nan]]),
            "contains NaN: row index 20, column index 1",
        ),
        (np.array([[1.0, np.inf]] * 20), "contains infinity: row index 0, column index 1"),
        ([["a", "b"]] * 3, "could not convert string to float"),
    ],
)
def test_bad_arrays_are_one_line(X, match):
    """scikit-learn's phrases, on one line, without the array printed into them."""
    with pytest.raises(sc.DataError, match=match) as err:
        sc.StreamingKMeans(n_clusters=2, progress=False).fit(X)
    assert "\n" not in str(err.value) and "array=" not in str(err.value)


def test_predict_names_bad_rows_of_in_memory_and_dask_input(blobs32):
    import dask.array as da

    km = sc.StreamingKMeans(n_clusters=4, progress=False).fit(blobs32[:2000])
    bad = blobs32[:3000].copy()
    bad[2345, 1] = np.inf
    with pytest.raises(sc.DataError, match="contains infinity: row index 2345, column index 1"):
        km.predict(bad)
    with pytest.raises(sc.DataError, match="contains infinity: row index 2345, column index 1"):
        km.predict(da.from_array(bad, chunks=(1000, 8))).compute()


def test_more_clusters_than_rows():
    with pytest.raises(sc.DataError, match="n_samples=10 should be >= n_clusters=12"):
        sc.StreamingKMeans(n_clusters=12, progress=False).fit(
            np.random.default_rng(0).random((10, 2))
        )


def test_nan_rows_in_a_zarr_store_name_the_row(tmp_path, blobs32):
    bad = blobs32[:3000].copy()
    bad[1234, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(sc.DataError, match="contains NaN: row index 1234, column index 3 is nan"):
        sc.StreamingKMeans(n_clusters=4, client="sync", progress=False).fit(
            str(tmp_path / "bad.npy")
        )


def test_predict_with_wrong_width(blobs32, data_dir):
    km = sc.StreamingKMeans(n_clusters=4, progress=False).fit(blobs32[:2000])
    with pytest.raises(sc.DataError, match="X has 3 features, but StreamingKMeans is expecting 8"):
        km.predict(blobs32[:10, :3])
    np.save(data_dir / "narrow.npy", blobs32[:100, :5])
    with pytest.raises(sc.DataError, match="X has 5 features"):
        km.predict(str(data_dir / "narrow.npy"))


def test_missing_and_corrupt_zarr_chunks(tmp_path, blobs32):
    src = sc.write_zarr(blobs32[:3000], tmp_path / "x.zarr", block_rows=1000)
    shutil.copytree(tmp_path / "x.zarr", tmp_path / "missing.zarr")
    os.remove(tmp_path / "missing.zarr" / "c" / "1" / "0")
    with pytest.raises(sc.SourceError, match=r"chunk 1 \(rows 1000:2000\) reads as all NaN"):
        sc.open_source(tmp_path / "missing.zarr").read(0, 3000)
    chunk = tmp_path / "x.zarr" / "c" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(sc.SourceError, match=r"chunk 2 \(rows 2000:3000\) cannot be read"):
        sc.StreamingKMeans(n_clusters=4, client="sync", progress=False).fit(src)


def test_rows_past_committed_rows(tmp_path, blobs32):
    sc.write_zarr(blobs32[:3000], tmp_path / "x.zarr", block_rows=1000)
    arr = zarr.open_array(tmp_path / "x.zarr", mode="r+")
    arr.attrs["committed_rows"] = 2000  # as if the writer died after two chunks
    with pytest.raises(sc.SourceError, match="past committed_rows=2000"):
        sc.open_source(tmp_path / "x.zarr").read(0, 3000)


@pytest.fixture()
def short_connect(monkeypatch):
    """Nothing listens at tcp://127.0.0.1:1: distributed retries it until the connect
    timeout, 8 s; 1 s is as good a test of the message."""
    from streamclust import runtime

    monkeypatch.setattr(runtime.cluster, "CONNECT_TIMEOUT", 1)


def test_unreachable_scheduler_fails_fast(blobs32, tmp_path, short_connect):
    np.save(tmp_path / "x.npy", blobs32[:100])
    with pytest.raises(sc.SchedulerError, match="cannot reach the Dask scheduler"):
        sc.StreamingKMeans(n_clusters=2, client="tcp://127.0.0.1:1", progress=False).fit(
            str(tmp_path / "x.npy")
        )


# ---------------------------------------------------------------- model files


def test_model_directory_errors(tmp_path, blobs32):
    km = sc.StreamingKMeans(n_clusters=4, progress=False).fit(blobs32[:2000])
    with pytest.raises(sc.ModelFileError, match="no saved model here"):
        sc.load(tmp_path / "nothing")
    km.save(tmp_path / "m")
    arrays = tmp_path / "m" / "arrays.npz"
    good = arrays.read_bytes()
    arrays.write_bytes(good[: len(good) // 2])
    with pytest.raises(sc.ModelFileError, match="checksum does not match"):
        sc.load(tmp_path / "m")
    arrays.write_bytes(good)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["class"] = "os.system"
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sc.ModelFileError, match=r"unknown model class 'os\.system'"):
        sc.load(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    with pytest.raises(sc.ModelFileError, match="unreadable manifest"):
        sc.load(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(sc.ModelFileError, match="not a streamclust model"):
        sc.load(tmp_path / "m")


def test_pickled_arrays_are_refused(tmp_path, blobs32):
    """An arrays file with an object array (which would need pickle) is rejected."""
    import hashlib

    km = sc.StreamingKMeans(n_clusters=4, progress=False).fit(blobs32[:2000])
    km.save(tmp_path / "m")
    arrays = tmp_path / "m" / "arrays.npz"
    with np.load(arrays) as npz:
        content = {k: npz[k] for k in npz.files}
    content["cluster_centers_"] = np.array([{"evil": 1}], dtype=object)
    np.savez(arrays, **content)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    manifest["arrays"]["sha256"] = hashlib.sha256(arrays.read_bytes()).hexdigest()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sc.ModelFileError, match="unreadable"):
        sc.load(tmp_path / "m")


# ---------------------------------------------------------------- command line

CLI_CASES = [
    (["fit", "{d}/nope.zarr", "--k", "3", "--out", "{d}/m"], "no such file or directory"),
    (["fit", "{d}/x.npy", "--k", "0", "--out", "{d}/m"], "n_clusters=0"),
    (["fit", "{d}/x.npy", "--k", "3", "--n-init", "-1", "--out", "{d}/m"], "n_init=-1"),
    (["fit", "{d}/x.npy", "--k", "3", "--batch-size", "abc", "--out", "{d}/m"], "abc"),
    (["fit", "{d}/x.npy", "--k", "3"], "Missing option '--out'"),
    (
        ["fit", "{d}/x.npy", "--k", "5000", "--out", "{d}/m"],
        "n_samples=3000 should be >= n_clusters=5000",
    ),
    (["fit", "{d}/x.npy", "--k", "3", "--selection", "x", "--out", "{d}/m"], "'x' is not one of"),
    (["fit", "{d}/bad.csv", "--k", "3", "--out", "{d}/m"], "convert it first"),
    (["fit", "{d}/raw.bin", "--k", "3", "--out", "{d}/m"], "pass dtype= and shape="),
    (
        [
            "fit",
            "{d}/raw.bin",
            "--dtype",
            "float32",
            "--shape",
            "-1,7",
            "--k",
            "3",
            "--out",
            "{d}/m",
        ],
        "not a whole number of 7-feature",
    ),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--scheduler", "tcp://127.0.0.1:1", "--out", "{d}/m"],
        "cannot reach the Dask scheduler",
    ),
    (["fit", "{d}/x.npy", "--k", "3", "--out", "{d}/x.zarr"], "exists and is not a saved model"),
    (
        [
            "fit",
            "{d}/x.npy",
            "--k",
            "3",
            "--tls-ca",
            "{d}/ca.pem",
            "--scheduler",
            "tls://127.0.0.1:1",
            "--out",
            "{d}/m",
        ],
        "--tls-cert is missing",
    ),
    (
        ["predict", "{d}/x.npy", "--model-dir", "{d}/nomodel", "--out", "{d}/l.zarr"],
        "no saved model here",
    ),
    (
        ["predict", "{d}/x.npy", "--model-dir", "{d}/model", "--out", "{d}/l.txt"],
        "must end in .zarr or .npy",
    ),
    (
        ["predict", "{d}/narrow.npy", "--model-dir", "{d}/model", "--out", "{d}/l.npy"],
        "X has 5 features",
    ),
    (["score", "{d}/x.npy", "--model-dir", "{d}/x.zarr"], "no saved model here"),
    (
        ["convert", "{d}/bad.csv", "{d}/c.zarr"],
        "row index 1, column index 1 holds 'abc', not a number",
    ),
    (["convert", "{d}/nan.csv", "{d}/c.zarr"], "is nan"),
    (["convert", "{d}/x.npy", "{d}/c.txt"], "must end in .zarr"),
    (["convert", "{d}/missing.csv", "{d}/c.zarr"], "no such file"),
    (["convert", "{d}/x.npy", "{d}/c.zarr", "--block-rows", "0"], "--block-rows 0"),
    (["demo", "--rows", "10"], "--rows 10 is too small"),
    (["select", "{d}/x.npy", "--k", "0..3"], "must name values >= 1"),
    (
        ["stream", "{d}", "--state", "{d}/st", "--detect", "--method", "exact", "--once"],
        "needs window=N",
    ),
    (
        ["stream", "{d}", "--state", "{d}/st", "--reconnect-timeout", "-1", "--once"],
        "reconnect_timeout=-1 must be >= 0",
    ),
    (["detect", "{d}/x.npy", "--model-dir", "{d}/model", "--out", "{d}/f.txt"], "must end in"),
    (["select", "{d}/x.npy", "--k", "a..b"], "must be LO..HI"),
    (["select", "{d}/x.npy", "--k", "2..3", "--plot", "{d}/p.svg"], "must end in .png"),
    (["select", "{d}/x.npy", "--model", "gmm", "--covariance", "round"], "covariance_type="),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--covariance", "diag", "--out", "{d}/m"],
        "--covariance applies to --model gmm",
    ),
    (
        ["fit", "{d}/x.npy", "--model", "gmm", "--refine", "2", "--out", "{d}/m"],
        "--refine applies to --model kmeans",
    ),
    (
        ["fit", "{d}/x.npy", "--model", "gmm", "--checkpoint", "{d}/x.npy", "--out", "{d}/m"],
        "/x.npy' is a file; pass a directory",
    ),
    (
        ["fit", "{d}/x.npy", "--model", "gmm", "--covariance", "round", "--out", "{d}/m"],
        "covariance_type='round' is not one of",
    ),
    (
        ["fit", "{d}/x.npy", "--model", "gmm", "--step-decay", "0.3", "--out", "{d}/m"],
        "step_decay=0.3 is outside",
    ),
    (
        ["fit", "{d}/x.npy", "--model", "gmm", "--k", "4000", "--out", "{d}/m"],
        "n_components=4000 exceeds",
    ),
    (
        ["score", "{d}/x.npy", "--model-dir", "{d}/model", "--out", "{d}/s.zarr"],
        "only a gmm model has",
    ),
    (
        ["score", "{d}/x.npy", "--model-dir", "{d}/model", "--out", "{d}/s.txt"],
        "must end in .zarr or .npy",
    ),
    (["nosuchcommand"], "No such command"),
    # Bad input on the default (threads) path, and where it runs.
    (["fit", "{d}/empty.npy", "--k", "3", "--out", "{d}/m"], "empty.npy: not a readable .npy"),
    (["fit", "{d}/zero.npy", "--k", "3", "--out", "{d}/m"], "zero.npy: has 0 rows"),
    (
        ["fit", "{d}/nan.npy", "--k", "3", "--out", "{d}/m"],
        "nan.npy contains NaN: row index 1234, column index 3 is nan",
    ),
    (
        ["fit", "{d}/inf.npy", "--k", "3", "--out", "{d}/m"],
        "inf.npy contains infinity: row index 7, column index 0 is inf",
    ),
    (
        ["predict", "{d}/nan.npy", "--model-dir", "{d}/model", "--out", "{d}/l2.npy"],
        "contains NaN: row index 1234",
    ),
    (
        ["detect", "{d}/inf.npy", "--model-dir", "{d}/model"],
        "contains infinity: row index 7",
    ),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--scheduler", "garbage://x", "--out", "{d}/m"],
        "unknown scheme 'garbage://'",
    ),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--scheduler", "tcp://127.0.0.1:port", "--out", "{d}/m"],
        "is not HOST:PORT",
    ),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--scheduler", "tcp//127.0.0.1:8786", "--out", "{d}/m"],
        "a host name has no '/'",
    ),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--scheduler", "tcp://127.0.0.1:", "--out", "{d}/m"],
        "is not HOST:PORT",
    ),
    (["select", "{d}/x.npy", "--k", "10..2"], "counts down; pass LO..HI with LO <= HI, e.g. 2..10"),
    (["select", "{d}/x.npy", "--k", "1..3"], "where the silhouette is undefined"),
    (["select", "{d}/x.npy", "--k", "1,2", "--criterion", "silhouette"], "pass --k 2..2"),
    # Outputs that exist are refused without --overwrite, by every command that writes.
    (["fit", "{d}/x.npy", "--k", "3", "--out", "{d}/model"], "already saved here; pass"),
    (
        ["fit", "{d}/x.npy", "--k", "3", "--out", "{d}/x.zarr", "--overwrite"],
        "exists and is not a saved model",
    ),
    (
        ["predict", "{d}/x.npy", "--model-dir", "{d}/model", "--out", "{d}/labels.npy"],
        "already exists; pass --overwrite",
    ),
    (
        ["predict", "{d}/x.npy", "--model-dir", "{d}/model", "--out", "{d}", "--overwrite"],
        "must end in .zarr or .npy",
    ),
    (
        ["detect", "{d}/x.npy", "--model-dir", "{d}/model", "--scores-out", "{d}/labels.npy"],
        "already exists; pass --overwrite",
    ),
    (["convert", "{d}/x.npy", "{d}/x.zarr"], "x.zarr: already exists; pass --overwrite"),
    (
        ["convert", "{d}/x.npy", "{d}/plain.zarr", "--overwrite"],
        "is a directory that is not a Zarr store",
    ),
    (["select", "{d}/x.npy", "--k", "2..3", "--plot", "{d}/p.png"], "already exists; pass"),
    # Tracebacks seen by the adversarial probe (issue 15), now one line each.
    (["fit", "{d}/x.npy", "--k", "3", "--random-state", "-1", "--out", "{d}/m"], "random_state=-1"),
    (
        ["stream", "{d}/in", "--state", "{d}/st", "--random-state", "-1", "--once"],
        "random_state=-1 must be an int from 0 to 2**32 - 1",
    ),
    (
        ["predict", "{d}/x.npy", "--model-dir", "{d}/badparams", "--out", "{d}/l3.npy"],
        "its 'params' is not a mapping",
    ),
    (
        ["predict", "{d}/x.npy", "--model-dir", "{d}/misshaped", "--out", "{d}/l3.npy"],
        "inconsistent model contents",
    ),
    # CSV problems count rows and columns from 0, like NumPy, and say so.
    (["convert", "{d}/header.csv", "{d}/c.zarr"], "looks like a header row; pass --header"),
    (["convert", "{d}/ragged.csv", "{d}/c.zarr"], "row index 2 has 2 columns, the rows before"),
]


@pytest.fixture()
def cli_dir(data_dir, blobs32, capsys):
    (data_dir / "bad.csv").write_text("1,2,3\n4,abc,6\n")
    (data_dir / "nan.csv").write_text("1,2,3\n4,nan,6\n")
    (data_dir / "raw.bin").write_bytes(b"\0" * 100)
    np.save(data_dir / "narrow.npy", blobs32[:100, :5])
    (data_dir / "ca.pem").write_text("")
    (data_dir / "empty.npy").write_bytes(b"")
    np.save(data_dir / "zero.npy", np.zeros((0, 8), np.float32))
    bad = blobs32[:3000].copy()
    bad[1234, 3] = np.nan
    np.save(data_dir / "nan.npy", bad)
    bad = blobs32[:3000].copy()
    bad[7, 0] = np.inf
    np.save(data_dir / "inf.npy", bad)
    np.save(data_dir / "labels.npy", np.zeros(3, np.int32))
    (data_dir / "p.png").write_bytes(b"")
    (data_dir / "plain.zarr").mkdir()
    (data_dir / "plain.zarr" / "notes.txt").write_text("not a store\n")
    (data_dir / "header.csv").write_text("a,b,c\n1,2,3\n")
    (data_dir / "in").mkdir()
    shutil.copy(data_dir / "x.npy", data_dir / "in" / "x.npy")
    (data_dir / "ragged.csv").write_text("1,2,3\n4,5,6\n7,8\n")
    assert (
        run_cli(
            [
                "fit",
                str(data_dir / "x.npy"),
                "--k",
                "3",
                "--scheduler",
                "sync",
                "--out",
                str(data_dir / "model"),
                "--no-progress",
            ]
        )[0]
        == 0
    )
    capsys.readouterr()
    # A model whose manifest has params of the wrong type, one with mis-shaped arrays
    # (its checksum fixed so that the arrays are read).
    for name in ("badparams", "misshaped"):
        shutil.copytree(data_dir / "model", data_dir / name)
    manifest = json.loads((data_dir / "badparams" / "manifest.json").read_text())
    manifest["params"] = [1]
    (data_dir / "badparams" / "manifest.json").write_text(json.dumps(manifest))
    arrays = dict(np.load(data_dir / "misshaped" / "arrays.npz"))
    arrays["cluster_centers_"] = arrays["cluster_centers_"][:, :2]
    np.savez(data_dir / "misshaped" / "arrays.npz", **arrays)
    manifest = json.loads((data_dir / "misshaped" / "manifest.json").read_text())
    raw = (data_dir / "misshaped" / "arrays.npz").read_bytes()
    manifest["arrays"]["sha256"] = __import__("hashlib").sha256(raw).hexdigest()
    (data_dir / "misshaped" / "manifest.json").write_text(json.dumps(manifest))
    return data_dir


@pytest.mark.parametrize(
    ("args", "match"),
    CLI_CASES,
    ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CLI_CASES)],
)
def test_cli_bad_input_is_one_line_exit_2_nothing_written(
    args, match, cli_dir, capsys, short_connect
):
    before = snapshot(cli_dir)
    code, _out, err = run_cli([a.replace("{d}", str(cli_dir)) for a in args], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("streamclust: error: "), err
    assert match in err
    assert "Traceback" not in err
    assert snapshot(cli_dir) == before


def test_overwrite_replaces_what_it_is_asked_to(cli_dir, blobs32, capsys):
    args = ["fit", cli_dir / "x.npy", "--k", "4", "--scheduler", "sync", "--no-progress"]
    code, _, err = run_cli([*args, "--out", cli_dir / "model", "--overwrite"], capsys)
    assert code == 0, err
    assert sc.load(cli_dir / "model").n_clusters == 4
    out = ["--model-dir", cli_dir / "model", "--out", cli_dir / "labels.npy", "--no-progress"]
    code, _, err = run_cli(["predict", cli_dir / "x.npy", *out, "--overwrite"], capsys)
    assert code == 0, err
    assert np.load(cli_dir / "labels.npy").shape == (3000,)
    # The Python API refuses the same way.
    km = sc.load(cli_dir / "model")
    with pytest.raises(sc.ModelFileError, match="already saved here; pass overwrite=True"):
        km.save(cli_dir / "model")
    with pytest.raises(sc.SourceError, match="already exists; pass overwrite=True"):
        km.predict(blobs32[:10], out=cli_dir / "labels.npy")
    km.predict(blobs32[:10], out=cli_dir / "labels.npy", overwrite=True)
    assert np.load(cli_dir / "labels.npy").shape == (10,)


def test_select_plot_without_matplotlib_fails_before_computing(cli_dir, capsys, monkeypatch):
    import sys

    import streamclust.selection

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)

    def no_computing(*args, **kwargs):
        raise AssertionError("the sweep ran before the missing matplotlib was reported")

    monkeypatch.setattr(streamclust.selection, "sweep_kmeans", no_computing)
    before = snapshot(cli_dir)
    code, _, err = run_cli(["select", cli_dir / "x.npy", "--plot", cli_dir / "new.png"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "pip install 'streamclust[plot]'" in err
    assert snapshot(cli_dir) == before


@pytest.mark.slow  # 8-9 s: keeps the default run under 3 minutes
def test_errors_inside_worker_processes_are_the_same_one_line(tmp_path, blobs32):
    """On a cluster of worker processes, a NaN or a corrupt chunk read by a worker
    reaches the user as the one line it is in-process: no remote traceback, no log."""
    import subprocess
    import sys

    bad = blobs32[:3000].copy()
    bad[1234, 3] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    sc.write_zarr(blobs32[:3000], tmp_path / "c.zarr", block_rows=1000)
    chunk = tmp_path / "c.zarr" / "c" / "2" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    cases = [
        ("nan.npy", "nan.npy contains NaN: row index 1234, column index 3 is nan"),
        ("c.zarr", r"chunk 2 (rows 2000:3000) cannot be read"),
    ]
    command = [sys.executable, "-m", "streamclust", "fit", "--k", "3", "--no-progress"]
    for data, match in cases:
        done = subprocess.run(
            [*command, str(tmp_path / data), "--out", str(tmp_path / "m"), "--scheduler", "local"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "STREAMCLUST_QUIET": "1"},
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("streamclust: error: "), done.stderr
        assert match in lines[0]
        assert not (tmp_path / "m").exists()


def test_a_k_larger_than_the_first_batch_stops_the_stream_not_its_batches(tmp_path, capsys):
    """Every batch used to be moved to rejected/ for a --k no batch could satisfy."""
    (tmp_path / "in").mkdir()
    for i in range(3):
        np.save(tmp_path / "in" / f"b{i}.npy", np.random.default_rng(i).random((2000, 2)))
    args = ["stream", str(tmp_path / "in"), "--state", str(tmp_path / "st"), "--once"]
    code, _out, err = run_cli([*args, "--k", "10000000", "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "k=10000000 is more than the 2000 rows of the first batch b0.npy" in err
    assert sorted(os.listdir(tmp_path / "in")) == ["b0.npy", "b1.npy", "b2.npy"]
    assert not list((tmp_path / "st").glob("rejected/*"))
    # Its options were not recorded: the same state takes a sensible --k.
    code, _out, err = run_cli([*args, "--k", "3", "--no-progress"], capsys)
    assert code == 0, err
