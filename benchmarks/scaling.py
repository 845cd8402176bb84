"""StreamingKMeans on 1 and 2 cluster workers and on threads, and the cost of a worker kill.

    python benchmarks/scaling.py [--rows 2000000] [--data-dir benchmarks/data] [--repeat 2]

The same fit (k=64, n_init=10, batch_size=4096, one pass, exact final inertia
included) on 64-blob, 32-feature float32 Zarr data, each run in a fresh
subprocess:

- threads: streamclust's default, its thread pool in the calling process (no cluster);
- streamclust's LocalCluster (``runtime.local_cluster``: single-threaded worker
  processes on 127.0.0.1, forked from a server with the kernels imported)
  with 1 and with 2 workers;
- the 2-worker cluster again, with one worker SIGKILLed halfway through the
  fit (at half the undisturbed run's wall time); its nanny restarts it.

Wall time excludes interpreter and cluster start-up (reported apart). The
efficiency is the 2-worker speed-up over 1 worker, divided by 2. "same model"
compares every run's centers with the threads run, bit for bit. With
``--repeat N`` the four runs are repeated N times, in turn; the table shows
the fastest of each (the killed run: the median), and the cost of a kill is
the median over rounds of each killed run against the undisturbed run just
before it, which shares its machine load.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
from _harness import add_child_arguments, ensure_data, machine, run_child, write_result

K, N_INIT, BATCH = 64, 10, 4096
METHODS = ["threads", "cluster-1", "cluster-2", "cluster-2-kill"]


def run_method(method: str, path: Path, kill_after: float | None) -> dict:
    """Runs in the child process."""
    import streamclust as sc

    info: dict = {}
    client: object = None  # the default: threads in this process
    if method.startswith("cluster"):
        from distributed import Client

        from streamclust import runtime

        t = time.perf_counter()
        cluster = runtime.local_cluster(int(method.split("-")[1]))  # as `--scheduler local`
        client = Client(cluster)
        info["startup_seconds"] = time.perf_counter() - t
    if method.endswith("-kill"):
        pids = sorted(client.run(os.getpid).values())

        def kill() -> None:
            os.kill(pids[-1], signal.SIGKILL)
            info["killed_at"] = time.perf_counter() - t0

    km = sc.StreamingKMeans(
        n_clusters=K, n_init=N_INIT, batch_size=BATCH, random_state=0, client=client, progress=False
    )
    t0 = time.perf_counter()
    if method.endswith("-kill"):
        threading.Timer(kill_after, kill).start()
    km.fit(str(path))
    seconds = time.perf_counter() - t0
    if method.endswith("-kill"):
        assert "killed_at" in info, "the fit ended before the kill"
        info["workers_after"] = len(client.scheduler_info()["workers"])
    return {
        "seconds": seconds,
        "inertia": km.inertia_,
        "centers": km.cluster_centers_.tolist(),
        **info,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--kill-after", type=float)
    add_child_arguments(ap, Path(__file__).parent / "data")
    args = ap.parse_args()
    if args.child:
        os.environ["STREAMCLUST_QUIET"] = "1"
        write_result(args.out, run_method(args.child, args.path, args.kill_after))
        return
    path = ensure_data(args.data_dir, args.rows)
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    for _ in range(args.repeat):
        for m in METHODS:
            extra = []
            if m.endswith("-kill"):
                undisturbed = runs["cluster-2"][-1]["seconds"]  # this round's
                extra = ["--kill-after", f"{undisturbed / 2:.3f}"]
            print(f"running {m} ...", file=sys.stderr, flush=True)
            runs[m].append(run_child(__file__, m, path, args.rows, extra))
    print_table(runs, args.rows)


def print_table(runs: dict[str, list[dict]], rows: int) -> None:
    def pick(m: str) -> dict:
        done = [r for r in runs[m] if "skipped" not in r]
        if not done:
            return runs[m][0]
        if m.endswith("-kill"):
            return sorted(done, key=lambda r: r["seconds"])[len(done) // 2]  # the median run
        return min(done, key=lambda r: r["seconds"])

    best = {m: pick(m) for m in METHODS}
    ref = np.asarray(best["threads"].get("centers", []))
    print(f"\n{rows:,} rows x 32 float32, k={K}, n_init={N_INIT}, one pass; {machine()}\n")
    print("| run | wall s | rows/s | efficiency | same model | notes |")
    print("|---|---:|---:|---:|---|---|")
    names = {
        "threads": "threads (the default; no cluster)",
        "cluster-1": "LocalCluster, 1 worker",
        "cluster-2": "LocalCluster, 2 workers",
        "cluster-2-kill": "LocalCluster, 2 workers, one killed",
    }
    for m, r in best.items():
        if "skipped" in r:
            print(f"| {names[m]} | - | - | - | - | {r['skipped']} |")
            continue
        eff = "-"
        if m == "cluster-2" and "seconds" in best["cluster-1"]:
            eff = f"{best['cluster-1']['seconds'] / r['seconds'] / 2:.2f}"
        same = "yes" if np.array_equal(np.asarray(r["centers"]), ref) else "NO"
        notes = []
        if "startup_seconds" in r:
            notes.append(f"start-up {r['startup_seconds']:.1f} s excluded")
        if "killed_at" in r:
            notes.append(
                f"killed at {r['killed_at']:.1f} s; {r['workers_after']} workers at the end"
            )
        if len(runs[m]) > 1:
            each = ", ".join(f"{x['seconds']:.2f}" for x in runs[m] if "seconds" in x)
            notes.append(f"runs: {each} s")
        print(
            f"| {names[m]} | {r['seconds']:.2f} | {rows / r['seconds']:,.0f} | {eff} | {same} | "
            f"{'; '.join(notes)} |"
        )
    # Each killed run against the undisturbed run of the same round (run just before it).
    pairs = [
        k["seconds"] / u["seconds"] - 1
        for u, k in zip(runs["cluster-2"], runs["cluster-2-kill"], strict=True)
        if "seconds" in u and "seconds" in k
    ]
    if pairs:
        each = ", ".join(f"{x:+.0%}" for x in pairs)
        print(
            f"\nA worker kill cost {statistics.median(pairs):+.1%} wall time: the median over "
            f"{len(pairs)} rounds of killed / undisturbed run ({each}); target: under +20%."
        )


if __name__ == "__main__":
    main()
