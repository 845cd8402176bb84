"""Choosing k: one shared sweep over k=2..32 versus a separate fit per k.

    python benchmarks/selection.py [--rows 2000000] [--k 2..32] [--data-dir ...]

On the 64-blob, 32-feature float32 Zarr data, every k in the range is fitted
- shared: ``sweep_kmeans`` (every k in the same passes, then one pass for the
  exact inertia of every k and a 2,000-row silhouette sample);
- separate: ``StreamingKMeans(k).fit`` once per k (each reads the data for
  its pass and its exact inertia);
- sklearn: ``MiniBatchKMeans(k).fit`` once per k on the data loaded in memory
  (load time included once).
All use n_init=3, batch_size=4096, random_state=0. The exact inertia of every
fitted model is computed by the same float64 pass, so the columns compare.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _harness import add_child_arguments, ensure_data, machine, run_child, write_result

COMMON = {"n_init": 3, "batch_size": 4096, "random_state": 0}


def exact_inertias(path: Path, centers: list[np.ndarray]) -> list[float]:
    import streamclust as sc
    from streamclust.selection import block_sweep_stats

    source = sc.open_source(str(path))
    runner = sc.runtime.resolve_runner("threads", source)
    total = np.zeros(len(centers))
    for part, _ in sc.runtime.map_blocks(
        block_sweep_stats, source, centers, np.zeros(0, np.int64), runner=runner
    ):
        total += part
    return total.tolist()


def run_method(method: str, path: Path, ks: list[int]) -> dict:
    import streamclust as sc

    t = time.perf_counter()
    if method == "shared":
        res = sc.sweep_kmeans(
            str(path), ks, silhouette_sample=2000, client="threads", progress=False, **COMMON
        )
        centers = [res.models[k].cluster_centers_ for k in ks]
    elif method == "separate":
        centers = [
            sc.StreamingKMeans(k, client="threads", progress=False, **COMMON)
            .fit(str(path))
            .cluster_centers_
            for k in ks
        ]
    elif method == "sklearn":
        import zarr
        from sklearn.cluster import MiniBatchKMeans

        X = zarr.open_array(str(path), mode="r")[:]
        centers = [MiniBatchKMeans(k, **COMMON).fit(X).cluster_centers_ for k in ks]
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "inertia": exact_inertias(path, centers)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--k", default="2..32")
    ap.add_argument("--methods", default="shared,separate,sklearn")
    add_child_arguments(ap, Path(__file__).parent / "data")
    args = ap.parse_args()
    lo, hi = (int(v) for v in args.k.split(".."))
    ks = list(range(lo, hi + 1))
    if args.child:
        os.environ["STREAMCLUST_QUIET"] = "1"
        write_result(args.out, run_method(args.child, args.path, ks))
        return
    path = ensure_data(args.data_dir, args.rows)
    res = {}
    for m in args.methods.split(","):
        print(f"running {m} ...", file=sys.stderr, flush=True)
        res[m] = run_child(__file__, m, path, args.rows, ["--k", args.k])
    print_table(res, args.rows, ks)


def print_table(res: dict, rows: int, ks: list[int]) -> None:
    print(f"\n{rows:,} rows x 32 float32, k={ks[0]}..{ks[-1]}; {machine()}\n")
    names = {
        "shared": "sweep_kmeans (all k in shared passes)",
        "separate": "StreamingKMeans.fit per k",
        "sklearn": "sklearn MiniBatchKMeans.fit per k (in memory)",
    }
    best = np.min([r["inertia"] for r in res.values() if "inertia" in r], axis=0)
    print("| method | wall s | peak MiB | inertia / best, worst k | mean |")
    print("|---|---:|---:|---:|---:|")
    for m, r in res.items():
        if "seconds" not in r:
            print(f"| {names[m]} | - | - | - | {r.get('skipped')} |")
            continue
        ratio = np.asarray(r["inertia"]) / best
        print(
            f"| {names[m]} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
            f"{ratio.max():.4f} (k={ks[int(ratio.argmax())]}) | {ratio.mean():.4f} |"
        )
    s = res.get("shared", {})
    for other in ("separate", "sklearn"):
        o = res.get(other, {})
        if "seconds" in s and "seconds" in o:
            diff = np.asarray(s["inertia"]) / np.asarray(o["inertia"])
            print(
                f"\nshared sweep vs {names[other]}: {o['seconds'] / s['seconds']:.1f}x faster; "
                f"inertia ratio per k from {diff.min():.4f} to {diff.max():.4f}"
            )


if __name__ == "__main__":
    main()
