"""What the benchmark scripts share: the data on disk, one subprocess per method
with its peak memory sampled, and the machine line printed above each table."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def data_path(data_dir: Path, rows: int) -> Path:
    return data_dir / f"blobs64x32_{rows}.zarr"


def ensure_data(data_dir: Path, rows: int) -> Path:
    """The 64-blob, 32-feature float32 set of ``rows`` rows (written once, then reused)."""
    from streamclust.datasets import write_blobs_zarr

    path = data_path(data_dir, rows)
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        write_blobs_zarr(path, rows, n_centers=64, n_features=32, seed=0)
        print(f"wrote {path} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return path


def add_child_arguments(ap: Any, data_dir: Path) -> None:
    """The options every benchmark script takes: where its data live, and the ones
    by which :func:`run_child` starts the script again as one method's subprocess."""
    ap.add_argument("--data-dir", type=Path, default=data_dir)
    ap.add_argument("--child")
    ap.add_argument("--path", type=Path)
    ap.add_argument("--out", type=Path)


def run_child(script: str, method: str, path: Path, rows: int, extra: list[str] = ()) -> dict:
    """Run ``script --child METHOD`` in a fresh process; its JSON result plus ``peak_mib``,
    the peak RSS of its whole process tree (cluster workers included), sampled every 10 ms."""
    import psutil

    out = path.parent / f".result-{Path(script).stem}-{method}-{rows}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, script, "--child", method, "--path", str(path), "--out", str(out)]
    proc = subprocess.Popen([*cmd, *extra])
    peak, stop = 0, False
    ps = psutil.Process(proc.pid)

    def sample() -> None:
        nonlocal peak
        while not stop:
            try:
                rss = ps.memory_info().rss + sum(
                    c.memory_info().rss for c in ps.children(recursive=True)
                )
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    stop = True
    th.join()
    if rc != 0 or not out.exists():
        return {"skipped": f"exit code {rc}"}
    res = json.loads(out.read_text())
    out.unlink()
    res["peak_mib"] = peak / 2**20
    return res


def write_result(out: Path, result: dict) -> None:
    """Hand a child's result to the parent and leave at once (no orderly cluster shutdown)."""
    import os

    out.write_text(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


def machine() -> str:
    import psutil

    return (
        f"{platform.machine()} {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )
