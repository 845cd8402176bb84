"""Anomaly thresholds out of core, and streaming ingest throughput.

    python benchmarks/anomaly.py [--rows 20000000] [--files 1000] [--data-dir ...]

Part 1, thresholds: the 4th percentile of ``--rows`` float64 scores stored in
Zarr (heavy-tailed, with ties), found by
- numpy: the store loaded into memory, then ``np.percentile`` (load included);
- exact: ``DensityAnomalyDetector(model="precomputed", method="exact")``, read
  block by block (threads), equal to numpy's bit for bit;
- sketch: the same with ``method="sketch"`` (t-digest, one pass).

Part 2, ingest: ``streamclust stream --once`` (StreamingKMeans k=16, a
checkpoint after every batch and every 10th) over ``--files`` .npy batches of
10,000 x 32 float32 rows, against a plain loop of scikit-learn
``MiniBatchKMeans.partial_fit`` over the same files (no checkpoints). Times
include interpreter start-up for the command.

Each method runs in its own subprocess; peak memory is sampled over it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _harness import add_child_arguments, machine, run_child, write_result

Q = 4.0
BATCH_ROWS, FEATURES = 10_000, 32


def ensure_scores(data_dir: Path, rows: int) -> Path:
    import streamclust as sc

    path = data_dir / f"scores_{rows}_1mib.zarr"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)

        def blocks():
            rng = np.random.default_rng(0)
            for lo in range(0, rows, 1_000_000):
                n = min(1_000_000, rows - lo)
                # log-density-like: heavy lower tail, rounded so that values repeat
                yield np.round(-60 - np.abs(rng.standard_t(3, (n, 1))) * 8, 4)

        sc.write_zarr(blocks(), path, block_rows=1 << 17)  # 1 MiB chunks
    return path


def ensure_batches(data_dir: Path, files: int) -> Path:
    from streamclust.datasets import BlobSpec, blob_blocks

    path = data_dir / f"batches_{files}"
    if not path.exists():
        tmp = data_dir / f".batches_{files}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        spec = BlobSpec.make(n_centers=16, n_features=FEATURES, seed=5)
        for i, block in enumerate(blob_blocks(spec, files * BATCH_ROWS, block_rows=BATCH_ROWS)):
            np.save(tmp / f"batch_{i:06d}.npy", block)
        os.replace(tmp, path)
    return path


def run_method(method: str, path: Path) -> dict:
    import streamclust as sc
    from streamclust import cli  # noqa: F401  (every method pays the same imports)

    if method == "baseline":  # the interpreter with everything imported, for reference
        import zarr

        return {"seconds": 0.0}
    if method == "numpy":
        import zarr

        t = time.perf_counter()
        scores = zarr.open_array(str(path), mode="r")[:, 0]
        load = time.perf_counter() - t
        value = float(np.percentile(scores, Q))
        return {"seconds": time.perf_counter() - t, "load_seconds": load, "threshold": value}
    if method in ("exact", "sketch"):
        det = sc.DensityAnomalyDetector(
            "precomputed", percentile=Q, method=method, client="threads", progress=False
        )
        t = time.perf_counter()
        det.fit(str(path))
        return {
            "seconds": time.perf_counter() - t,
            "threshold": det.threshold_,
            "passes": det.n_passes_,
        }
    if method == "sketch-error":  # rank error of the merged block sketches at 1-5%
        import zarr

        src = sc.open_source(str(path))
        sketch = sc.QuantileSketch()
        for _, block in src.iter_blocks():
            sketch.merge(sc.QuantileSketch().update(block[:, 0]))
        scores = zarr.open_array(str(path), mode="r")[:, 0]
        errors = {}
        for q in (1, 2, 3, 4, 5):
            est = sketch.percentile(q)
            # the rank interval the estimate covers (ties make it an interval)
            lo, hi = (scores < est).mean() * 100, (scores <= est).mean() * 100
            errors[str(q)] = 0.0 if lo <= q <= hi else min(abs(lo - q), abs(hi - q))
        return {"seconds": 0.0, "rank_errors": errors}
    if method.startswith("stream"):
        every = method.split("-")[1]
        state = path.parent / f".state-{every}"
        shutil.rmtree(state, ignore_errors=True)
        cmd = [sys.executable, "-m", "streamclust.cli", "stream", str(path), "--k", "16"]
        cmd += ["--state", str(state), "--once", "--no-progress", "--checkpoint-every", every]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        shutil.rmtree(state, ignore_errors=True)
        files = sorted(path.glob("*.npy"))
        return {"seconds": seconds, "rows": len(files) * BATCH_ROWS}
    if method == "sklearn-loop":
        from sklearn.cluster import MiniBatchKMeans

        files = sorted(path.glob("*.npy"))
        t = time.perf_counter()
        mb = MiniBatchKMeans(n_clusters=16, random_state=0, n_init=3)
        for f in files:
            mb.partial_fit(np.load(f))
        return {"seconds": time.perf_counter() - t, "rows": len(files) * BATCH_ROWS}
    raise SystemExit(f"unknown method {method}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--files", type=int, default=1000)
    add_child_arguments(ap, Path(__file__).parent / "data")
    args = ap.parse_args()
    if args.child:
        os.environ["STREAMCLUST_QUIET"] = "1"
        write_result(args.out, run_method(args.child, args.path))
        return
    scores = ensure_scores(args.data_dir, args.rows)
    batches = ensure_batches(args.data_dir, args.files)
    res = {}
    for m in ("baseline", "numpy", "exact", "sketch", "sketch-error"):
        print(f"running {m} ...", file=sys.stderr, flush=True)
        res[m] = run_child(__file__, m, scores, args.rows)
    for m in ("stream-1", "stream-10", "sklearn-loop"):
        print(f"running {m} ...", file=sys.stderr, flush=True)
        res[m] = run_child(__file__, m, batches, args.files)
    print_tables(res, args.rows, args.files)


def print_tables(res: dict, rows: int, files: int) -> None:
    print(f"\n{machine()}\n")
    print(f"4th percentile of {rows:,} float64 scores in Zarr:\n")
    print("| method | wall s | passes | peak MiB | threshold | notes |")
    print("|---|---:|---:|---:|---:|---|")
    ref = res["numpy"].get("threshold")
    for m, name in (
        ("numpy", "load + np.percentile (in memory)"),
        ("exact", 'DensityAnomalyDetector("precomputed", method="exact")'),
        ("sketch", 'DensityAnomalyDetector("precomputed", method="sketch")'),
    ):
        r = res[m]
        if "seconds" not in r:
            print(f"| {name} | - | - | - | - | {r.get('skipped')} |")
            continue
        note = f"load {r['load_seconds']:.2f} s" if "load_seconds" in r else ""
        if m == "exact":
            note = "equal to numpy bit for bit" if r["threshold"] == ref else "DIFFERS from numpy"
        print(
            f"| {name} | {r['seconds']:.2f} | {r.get('passes', 1)} | {r['peak_mib']:.0f} | "
            f"{r['threshold']:.6f} | {note} |"
        )
    n, e, b = res["numpy"], res["exact"], res["baseline"]
    if "seconds" in n and "seconds" in e:
        base = b.get("peak_mib", 0.0)
        print(
            f"\nexact / numpy: {e['seconds'] / n['seconds']:.2f}x the time; memory above the "
            f"{base:.0f} MiB of a process with the libraries imported: "
            f"{e['peak_mib'] - base:.0f} MiB vs {n['peak_mib'] - base:.0f} MiB "
            f"({(e['peak_mib'] - base) / (n['peak_mib'] - base):.0%})"
        )
    errs = res["sketch-error"].get("rank_errors")
    if errs:
        print(
            "\nsketch rank error (percentage points) at the "
            + ", ".join(f"{q}%: {e:.4f}" for q, e in errs.items())
        )
    print(f"\nIngest of {files:,} files of {BATCH_ROWS:,} x {FEATURES} float32, k=16:\n")
    print("| method | wall s | rows/s | peak MiB |")
    print("|---|---:|---:|---:|")
    for m, name in (
        ("stream-1", "streamclust stream --once (checkpoint every batch)"),
        ("stream-10", "streamclust stream --once --checkpoint-every 10"),
        ("sklearn-loop", "np.load + MiniBatchKMeans.partial_fit loop, no checkpoints"),
    ):
        r = res[m]
        if "seconds" not in r:
            print(f"| {name} | - | - | {r.get('skipped')} |")
            continue
        print(
            f"| {name} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} | "
            f"{r['peak_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
