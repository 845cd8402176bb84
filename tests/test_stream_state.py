"""A stream's state: one writer at a time, checkpoints checked before use, never lost.

Each tampering below was seen to give a silently wrong model (or a traceback)
before the checkpoints carried their checksums and counts; now the damaged
checkpoint is refused in one line, moved to ``refused/``, the previous one is
resumed, and the stream ends with the model of an undisturbed run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, until

import streamclust as sc
from streamclust.stream_state import KEEP, StreamState

KMEANS = ["--model", "kmeans", "--k", "2", "--random-state", "0", "--no-progress"]


def write_batches(incoming: Path, n: int, rows: int = 40, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    incoming.mkdir(parents=True, exist_ok=True)
    names = [f"b{i:05d}.npy" for i in range(n)]
    for name in names:
        centers = np.array([[0.0, 0.0], [5.0, 5.0]])
        np.save(incoming / name, centers[rng.integers(0, 2, rows)] + rng.normal(size=(rows, 2)))
    return names


def stream(incoming: Path, state: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = run_cli(["stream", str(incoming), "--state", str(state), "--once", *KMEANS, *extra])[0]
    out, err = capsys.readouterr()
    return code, out, err


def latest(state: Path) -> Path:
    return state / "checkpoints" / (state / "LATEST").read_text().strip()


def arrays(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / "arrays.npz", allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def same_model(a: Path, b: Path) -> None:
    x, y = arrays(a / "model"), arrays(b / "model")
    assert sorted(x) == sorted(y)
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)


def rehash(checkpoint: Path) -> None:
    """Recompute a checkpoint's checksums, as a careful forger would."""
    manifest = json.loads((checkpoint / "checkpoint.json").read_text())
    for rel in list(manifest["files"]):
        data = (checkpoint / rel).read_bytes()
        manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    (checkpoint / "checkpoint.json").write_text(json.dumps(manifest))


def resave_model_arrays(model: Path, change) -> None:
    """Change the model's arrays and fix its own checksum (its loader's check passes)."""
    content = arrays(model)
    change(content)
    np.savez(model / "arrays.npz", **content)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["arrays"]["sha256"] = hashlib.sha256((model / "arrays.npz").read_bytes()).hexdigest()
    (model / "manifest.json").write_text(json.dumps(manifest))


def edit_json(path: Path, change) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """30 batches applied by one undisturbed run, and the state it left."""
    root = tmp_path_factory.mktemp("clean")
    names = write_batches(root / "in", 30)
    assert (
        run_cli(["stream", str(root / "in"), "--state", str(root / "st"), "--once", *KMEANS])[0]
        == 0
    )
    return root, names


def other_model(tmp_path: Path) -> Path:
    write_batches(tmp_path / "other-in", 30, seed=9)
    args = ["stream", str(tmp_path / "other-in"), "--state", str(tmp_path / "other"), "--once"]
    assert run_cli([*args, *KMEANS[:3], "5", *KMEANS[4:]])[0] == 0
    return latest(tmp_path / "other") / "model"


TAMPERINGS = {
    "model removed": lambda ck, tmp: shutil.rmtree(ck / "model"),
    "model of a --k 5 state": lambda ck, tmp: (
        shutil.rmtree(ck / "model"),
        shutil.copytree(other_model(tmp), ck / "model"),
    ),
    "n_clusters set to 10**12": lambda ck, tmp: edit_json(
        ck / "model" / "manifest.json", lambda m: m["params"].update(n_clusters=10**12)
    ),
    "NaN centers, model checksum fixed": lambda ck, tmp: resave_model_arrays(
        ck / "model", lambda a: a["cluster_centers_"].__setitem__((0, 0), np.nan)
    ),
    "n_features_in_ changed": lambda ck, tmp: edit_json(
        ck / "model" / "manifest.json", lambda m: m["attributes"].update(n_features_in_=3)
    ),
    "ledger lost 5 batches": lambda ck, tmp: edit_json(
        ck / "ledger.json", lambda led: led.update(batches=led["batches"][:-5])
    ),
    "ledger lost 5 batches, checksums fixed": lambda ck, tmp: (
        edit_json(ck / "ledger.json", lambda led: led.update(batches=led["batches"][:-5])),
        rehash(ck),
    ),
    "NaN centers, every checksum fixed": lambda ck, tmp: (
        resave_model_arrays(
            ck / "model", lambda a: a["cluster_centers_"].__setitem__((0, 0), np.nan)
        ),
        rehash(ck),
    ),
    "empty ledger": lambda ck, tmp: (ck / "ledger.json").write_text(""),
    "truncated ledger": lambda ck, tmp: (ck / "ledger.json").write_text(
        (ck / "ledger.json").read_text()[:40]
    ),
    "ledger of the wrong type": lambda ck, tmp: (ck / "ledger.json").write_text("[1, 2]"),
    "checkpoint.json removed": lambda ck, tmp: (ck / "checkpoint.json").unlink(),
}


@pytest.mark.parametrize("how", list(TAMPERINGS))
def test_a_damaged_checkpoint_is_refused_and_the_previous_one_resumed(clean, tmp_path, capsys, how):
    root, names = clean
    write_batches(tmp_path / "in", 30)
    assert stream(tmp_path / "in", tmp_path / "st", capsys)[0] == 0
    damaged = latest(tmp_path / "st")
    TAMPERINGS[how](damaged, tmp_path)
    capsys.readouterr()

    code, _out, err = stream(tmp_path / "in", tmp_path / "st", capsys)
    assert code == 0, err
    notes = err.strip().splitlines()
    assert any(f"{damaged.name}: refused (" in line for line in notes), err
    assert notes[-1].startswith("streamclust: ") and "resuming from checkpoint ckpt-" in notes[-1]
    assert "Traceback" not in err
    assert [p.name.rsplit("-", 1)[0] for p in (tmp_path / "st" / "refused").iterdir()] == [
        damaged.name
    ]
    # The previous checkpoint was resumed and the last batch applied again, once.
    same_model(latest(root / "st"), latest(tmp_path / "st"))
    assert json.loads((latest(tmp_path / "st") / "ledger.json").read_text())["batches"] == names


@pytest.mark.parametrize("pointer", [None, b"\xff\xfe\x00", b"../../etc", b"ckpt-000000099-abcdef"])
def test_a_missing_or_damaged_latest_resumes_the_newest_checkpoint(
    clean, tmp_path, capsys, pointer
):
    root, _names = clean
    write_batches(tmp_path / "in", 30)
    assert stream(tmp_path / "in", tmp_path / "st", capsys)[0] == 0
    newest = latest(tmp_path / "st")
    if pointer is None:
        (tmp_path / "st" / "LATEST").unlink()
    else:
        (tmp_path / "st" / "LATEST").write_bytes(pointer)
    code, _out, err = stream(tmp_path / "in", tmp_path / "st", capsys)
    assert code == 0, err
    assert f"resuming from checkpoint {newest.name}" in err and "Traceback" not in err
    assert newest.exists() and not (tmp_path / "st" / "refused").exists()  # nothing lost
    same_model(latest(root / "st"), latest(tmp_path / "st"))


def test_with_no_usable_checkpoint_it_stops_in_one_line_and_keeps_them(tmp_path, capsys):
    write_batches(tmp_path / "in", 6)
    assert stream(tmp_path / "in", tmp_path / "st", capsys)[0] == 0
    kept = StreamState(tmp_path / "st").complete()
    assert len(kept) == KEEP
    for checkpoint in kept:
        (checkpoint / "ledger.json").write_text("{")
    code, _out, err = stream(tmp_path / "in", tmp_path / "st", capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("streamclust: error: ")
    assert "no usable checkpoint" in err and "restore the state from a backup" in err
    assert len(list((tmp_path / "st" / "refused").iterdir())) == KEEP  # moved, not deleted


def test_other_options_are_refused_without_moving_anything(tmp_path, capsys):
    write_batches(tmp_path / "in", 4)
    assert stream(tmp_path / "in", tmp_path / "st", capsys)[0] == 0
    before = sorted(p.name for p in (tmp_path / "st" / "checkpoints").iterdir())
    code = run_cli(["stream", str(tmp_path / "in"), "--state", str(tmp_path / "st"), "--once"])[0]
    assert code == 2 and "was started with" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "st" / "checkpoints").iterdir()) == before
    assert not (tmp_path / "st" / "refused").exists()


def test_publishing_keeps_the_two_newest_checkpoints(tmp_path, capsys):
    write_batches(tmp_path / "in", 5)
    assert stream(tmp_path / "in", tmp_path / "st", capsys)[0] == 0
    kept = [p.name for p in StreamState(tmp_path / "st").complete()]
    assert [int(n.split("-")[1]) for n in kept] == [5, 4]
    assert kept[0] == (tmp_path / "st" / "LATEST").read_text()
    assert sorted(os.listdir(tmp_path / "st" / "checkpoints")) == sorted(kept)  # no temporaries


def test_a_second_stream_on_the_same_state_stops_at_once(tmp_path, capsys):
    write_batches(tmp_path / "in", 4)
    holder = StreamState(tmp_path / "st")
    holder.lock()
    try:
        code, _out, err = stream(tmp_path / "in", tmp_path / "st", capsys)
        assert code == 2
        assert err == (
            f"streamclust: error: {tmp_path / 'st'}: in use by another stream "
            f"(pid {os.getpid()}); stop it, or pass --wait-lock to wait for it\n"
        )
        assert sorted(os.listdir(tmp_path / "st")) == [".lock"]  # nothing else touched
        # --wait-lock waits for the holder instead.
        threading.Timer(0.5, holder.unlock).start()
        code, _out, err = stream(tmp_path / "in", tmp_path / "st", capsys, "--wait-lock")
        assert code == 0, err
    finally:
        holder.unlock()
    assert json.loads((latest(tmp_path / "st") / "ledger.json").read_text())["rows"] == 160


def test_temporaries_of_an_interrupted_run_are_swept(tmp_path, capsys):
    write_batches(tmp_path / "in", 2)
    assert stream(tmp_path / "in", tmp_path / "st", capsys, "--detect", "--window", "5")[0] == 0
    leftovers = [
        tmp_path / "st" / "checkpoints" / ".ckpt-000000003-abcdef.tmp",
        tmp_path / "st" / "scores" / ".b00002.npy.tmp-1234abcd",
        tmp_path / "st" / "flags" / ".b00002.npy.tmp-1234abcd",
        tmp_path / "st" / ".LATEST.tmp-1234abcd",
    ]
    leftovers[0].mkdir()
    for path in leftovers[1:]:
        path.write_bytes(b"half")
    assert stream(tmp_path / "in", tmp_path / "st", capsys, "--detect", "--window", "5")[0] == 0
    assert not any(path.exists() for path in leftovers)


@pytest.mark.slow
def test_two_streams_started_together_never_damage_the_state(clean, tmp_path):
    """20 times: two processes on one state at once. One stops in one line (or waits for
    the other to finish); the state always resumes to the undisturbed run's model."""
    root, names = clean
    write_batches(tmp_path / "in", 30)
    cmd = [sys.executable, "-m", "streamclust", "stream", str(tmp_path / "in"), "--once"]
    for trial in range(20):
        state = tmp_path / f"st{trial}"
        run = [*cmd, "--state", str(state), *KMEANS]
        procs = [
            subprocess.Popen(run, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        results = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
        results = [(code, err) for err, code in results]
        for code, err in results:
            assert code == 0 or (code == 2 and "in use by another stream (pid" in err), err
            assert "Traceback" not in err
        assert any(code == 0 for code, _ in results)
        done = subprocess.run(run, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        same_model(latest(root / "st"), latest(state))
        ledger = json.loads((latest(state) / "ledger.json").read_text())
        assert ledger["batches"] == names
    assert sc.load(latest(state) / "model").n_clusters == 2


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_sigterm_and_sigint_stop_in_one_line_and_leave_no_temporary_file(clean, tmp_path, sig):
    """SIGTERM used to exit 143 with no message and a scores/.batch.npy.tmp-* left for
    good; SIGINT printed a blank line first."""
    write_batches(tmp_path / "in", 300, rows=4000, seed=5)
    state = tmp_path / "st"
    cmd = [sys.executable, "-m", "streamclust", "stream", str(tmp_path / "in"), "--once"]
    cmd += ["--state", str(state), *KMEANS, "--detect", "--window", "5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        until(lambda: (state / "LATEST").exists() and batches_in(state) >= 20, timeout=120)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert err.splitlines() == [
        f"streamclust: stopped by {signal.Signals(sig).name}; unfinished outputs were removed "
        "(a stream resumes from its last checkpoint)"
    ]
    assert not [p for p in state.rglob("*") if ".tmp" in p.name]
    applied = batches_in(state)
    assert 20 <= applied < 300
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    ledger = json.loads((latest(state) / "ledger.json").read_text())
    assert ledger["batches"] == [f"b{i:05d}.npy" for i in range(300)]


def batches_in(state: Path) -> int:
    try:
        return int((state / "LATEST").read_text().split("-")[1])
    except (OSError, IndexError, ValueError):
        return -1
