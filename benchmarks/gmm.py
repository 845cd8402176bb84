"""StreamingGaussianMixture versus scikit-learn's GaussianMixture on 64-blob,
32-feature float32 data in Zarr.

    python benchmarks/gmm.py [--rows 2000000] [--sklearn-rows 2000000] [--data-dir ...]

Every method runs in a fresh subprocess, so its peak memory (sampled every
10 ms over the process tree) is its own. All fits use k=16, max_iter=20,
tol=1e-3, n_init=1, random_state=0 and k-means initialization. The mean
log-likelihood of every fitted model is computed afterwards over *all* rows by
the same float64 pass, so the column is comparable. Printed as markdown tables.

Methods:
- floor: one plain Zarr read pass + the per-component GEMM of the E-step
  (16 float64 products of every 65,536-row block with a 32 x 32 factor): what
  any exact EM iteration with full covariances must at least pay.
- streamclust full / diag: ``StreamingGaussianMixture.fit`` on the Zarr path
  (threads), then one more EM iteration timed on its own (``warm_start``: a new
  fit, so it reads storage again). The notes give the median EM pass inside the
  fit, whose blocks come from the fit's block cache after the first pass.
- streamclust full, checkpoint: the same full fit saving its progress after
  every block (``checkpoint=`` a temporary directory): what resumability costs.
- sklearn full / diag: ``GaussianMixture.fit`` on the first ``--sklearn-rows``
  rows loaded into memory (load time included; float32 as stored).
- scoring: the same fitted full-covariance model scores the same 1M in-memory
  float64 rows with scikit-learn's ``score_samples`` and with ours (best of
  3), results compared; then ours streams every row of the Zarr store.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _harness import add_child_arguments, ensure_data, machine, run_child, write_result

K, MAX_ITER, BLOCK = 16, 20, 65536
METHODS = [
    "floor",
    "ours-full",
    "ours-full-ckpt",
    "ours-diag",
    "sklearn-full",
    "sklearn-diag",
    "scoring",
]
NAMES = {
    "floor": "floor: 1 Zarr read + per-component GEMM",
    "ours-full": "StreamingGaussianMixture full (Zarr, threads)",
    "ours-full-ckpt": "StreamingGaussianMixture full, checkpoint every block",
    "ours-diag": "StreamingGaussianMixture diag (Zarr, threads)",
    "sklearn-full": "sklearn GaussianMixture full (in memory)",
    "sklearn-diag": "sklearn GaussianMixture diag (in memory)",
}
FIT = {"n_components": K, "max_iter": MAX_ITER, "tol": 1e-3, "random_state": 0}


def mean_log_lik(path: Path, model) -> float:
    """Exact mean log-likelihood over every row, by our float64 scorer."""
    import streamclust as sc

    if not isinstance(model, sc.StreamingGaussianMixture):
        model = sc.StreamingGaussianMixture.from_sklearn(model)
    model.set_params(client="threads", progress=False)
    return model.score(str(path))


def best_of(n: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_method(method: str, path: Path, sklearn_rows: int) -> dict:
    import zarr

    import streamclust as sc

    arr = zarr.open_array(str(path), mode="r")
    if method == "floor":
        factors = np.random.default_rng(0).standard_normal((K, 32, 32))
        t = time.perf_counter()
        blocks = [arr[lo : lo + BLOCK] for lo in range(0, arr.shape[0], BLOCK)]
        read = time.perf_counter() - t
        t = time.perf_counter()
        for b in blocks:
            b64 = b.astype(np.float64)
            for f in factors:
                b64 @ f
        gemm = time.perf_counter() - t
        return {"seconds": read + gemm, "read_seconds": read, "gemm_seconds": gemm}
    if method.startswith("ours"):
        import tempfile

        cov = method.split("-")[1]
        gm = sc.StreamingGaussianMixture(
            **FIT, covariance_type=cov, client="threads", progress=False
        )
        with tempfile.TemporaryDirectory(dir=path.parent) as ckpt:
            if method.endswith("ckpt"):
                gm.set_params(checkpoint=ckpt)
            passes: dict[str, list[float]] = {}

            def clock(desc: str, done: int, total: int) -> None:
                passes.setdefault(desc, []).append(time.perf_counter())

            t = time.perf_counter()
            with sc.runtime.on_block(clock):
                gm.fit(str(path))
            seconds = time.perf_counter() - t
        info = {"seconds": seconds, "n_iter": gm.n_iter_, "converged": gm.converged_}
        # Each EM pass of the fit, from the end of the pass before it to its last block
        # (blocks come from the fit's cache after the first pass).
        ends = [(times[0], times[-1]) for desc, times in passes.items() if desc.startswith("EM")]
        gaps = [b - a_end for (_, a_end), (_, b) in itertools.pairwise(ends)]
        if gaps:
            info["em_pass_in_fit_seconds"] = float(np.median(gaps))
        info["read_stats"] = gm.read_stats_
        info["mean_log_lik"] = mean_log_lik(
            path, gm
        )  # as fitted (before the timed extra iteration)
        if not method.endswith("ckpt"):
            gm.set_params(warm_start=True, max_iter=1, client="threads")
            info["em_iteration_seconds"], _ = best_of(1, lambda: gm.fit(str(path)))
        return info
    if method.startswith("sklearn"):
        from sklearn.mixture import GaussianMixture

        cov = method.split("-")[1]
        t = time.perf_counter()
        X = arr[:sklearn_rows]
        gm = GaussianMixture(**FIT, covariance_type=cov).fit(X)
        seconds = time.perf_counter() - t
        info = {"seconds": seconds, "n_iter": int(gm.n_iter_), "converged": bool(gm.converged_)}
        info["sample_rows"] = len(X)
        del X
        info["mean_log_lik"] = mean_log_lik(path, gm)
        return info
    if method == "scoring":
        from sklearn.mixture import GaussianMixture

        n = min(1_000_000, arr.shape[0])
        X = arr[:n].astype(np.float64)
        ref = GaussianMixture(**{**FIT, "max_iter": 5}, covariance_type="full").fit(X[:200_000])
        ours = sc.StreamingGaussianMixture.from_sklearn(ref, client="threads", progress=False)
        sk_s, sk = best_of(3, lambda: ref.score_samples(X))
        our_s, mine = best_of(3, lambda: ours.score_samples(X))
        zarr_s, _ = best_of(1, lambda: ours.score_samples(str(path)))
        rel = float(np.max(np.abs(mine - sk) / np.abs(sk)))
        return {
            "rows": n,
            "sklearn_rows_per_s": n / sk_s,
            "ours_rows_per_s": n / our_s,
            "zarr_rows_per_s": arr.shape[0] / zarr_s,
            "max_rel_diff": rel,
        }
    raise SystemExit(f"unknown method {method}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument(
        "--sklearn-rows",
        type=int,
        default=2_000_000,
        help="rows scikit-learn fits on in memory (capped at --rows)",
    )
    ap.add_argument("--methods", default=",".join(METHODS))
    add_child_arguments(ap, Path(__file__).parent / "data")
    args = ap.parse_args()
    sk_rows = min(args.rows, args.sklearn_rows)
    if args.child:
        os.environ["STREAMCLUST_QUIET"] = "1"
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter is part of the setup
        write_result(args.out, run_method(args.child, args.path, sk_rows))
        return
    path = ensure_data(args.data_dir, args.rows)
    results = {}
    for m in args.methods.split(","):
        print(f"running {m} ...", file=sys.stderr, flush=True)
        extra = ["--rows", str(args.rows), "--sklearn-rows", str(args.sklearn_rows)]
        results[m] = run_child(__file__, m, path, args.rows, extra)
    print_tables(results, args.rows)


def print_tables(results: dict, rows: int) -> None:
    print(f"\n{rows:,} rows x 32 float32, k={K}, max_iter={MAX_ITER}; {machine()}\n")
    print(
        "| method | rows | wall s | EM iterations | 1 EM iteration s | mean log-lik "
        "| peak MiB | notes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for m, name in NAMES.items():
        r = results.get(m)
        if r is None:
            continue
        if "skipped" in r:
            print(f"| {name} | - | - | - | - | - | - | {r['skipped']} |")
            continue
        if m == "floor":
            print(
                f"| {name} | {rows:,} | {r['seconds']:.2f} | - | - | - | {r['peak_mib']:.0f} | "
                f"read {r['read_seconds']:.2f} s + GEMM {r['gemm_seconds']:.2f} s |"
            )
            continue
        it = r.get("em_iteration_seconds")
        conv = "" if r["converged"] else " (max)"
        note = "load included" if m.startswith("sklearn") else "k-means init included"
        if "em_pass_in_fit_seconds" in r:
            st = r["read_stats"]
            note += (
                f"; an EM pass inside the fit {r['em_pass_in_fit_seconds']:.2f} s "
                f"({st['blocks_read']} blocks read, {st['cache_hits']} from the cache)"
            )
        if m.endswith("ckpt") and "seconds" in results.get("ours-full", {}):
            extra = r["seconds"] / results["ours-full"]["seconds"] - 1
            note += f"; {extra:+.1%} wall vs. no checkpoint"
        print(
            f"| {name} | {r.get('sample_rows', rows):,} | {r['seconds']:.2f} | "
            f"{r['n_iter']}{conv} | {'-' if it is None else f'{it:.2f}'} | "
            f"{r['mean_log_lik']:.5f} | {r['peak_mib']:.0f} | {note} |"
        )
    f, full = results.get("floor", {}), results.get("ours-full", {})
    if "seconds" in f and "em_pass_in_fit_seconds" in full:
        ratio = full["em_pass_in_fit_seconds"] / f["seconds"]
        print(f"\nAn EM pass (full) inside the fit, blocks from its cache / floor: {ratio:.2f}x")
    if "seconds" in f and "em_iteration_seconds" in full:
        print(
            f"\nOne EM iteration (full) / floor: {full['em_iteration_seconds'] / f['seconds']:.2f}x"
        )
    s = results.get("scoring", {})
    if "rows" in s:
        print(
            f"\nScoring, k={K} full covariances, {s['rows']:,} in-memory float64 rows:\n\n"
            "| scorer | rows/s |\n|---|---:|\n"
            f"| sklearn GaussianMixture.score_samples | {s['sklearn_rows_per_s']:,.0f} |\n"
            f"| StreamingGaussianMixture.score_samples | {s['ours_rows_per_s']:,.0f} |\n"
            f"| StreamingGaussianMixture.score_samples, all {rows:,} rows from Zarr | "
            f"{s['zarr_rows_per_s']:,.0f} |\n\n"
            f"ours / sklearn: {s['ours_rows_per_s'] / s['sklearn_rows_per_s']:.1f}x; "
            f"largest relative difference {s['max_rel_diff']:.1e}"
        )


if __name__ == "__main__":
    main()
