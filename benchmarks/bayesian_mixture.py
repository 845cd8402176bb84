"""StreamingBayesianGaussianMixture versus scikit-learn's BayesianGaussianMixture on
rows of the chapter's three Gaussians (2 features, float32) in Zarr.

    python benchmarks/bayesian_mixture.py [--rows 2000000] [--data-dir ...]

Every method runs in a fresh subprocess, so its peak memory (sampled every
10 ms over the process tree) is its own. All fits offer n_components=10 with
full covariances, random_state=0; "components used" counts weights above 0.01
(three are needed). The mean log-likelihood of every fitted model is computed
afterwards over all rows by the same float64 pass. Printed as a markdown table.

Methods:
- sklearn, defaults: ``BayesianGaussianMixture(10)`` (K-Means start, max_iter=100,
  tol=1e-3) on all rows loaded into memory (load time included).
- streamclust, defaults: ``StreamingBayesianGaussianMixture(10)`` with the same
  parameters, on the Zarr path (threads): the same algorithm out of core.
- sklearn, sample start: the recipe by hand in scikit-learn: a fit on a uniform
  20,000-row sample (up to 2,000 iterations, as ``init_sample_size`` allows),
  then ``warm_start`` on all rows in memory with ``tol=1e-6 * rows``.
- streamclust, sample start: ``init_sample_size=20_000, tol=1e-6 * rows`` on the
  Zarr path.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _harness import add_child_arguments, machine, run_child, write_result

K, SAMPLE = 10, 20_000
METHODS = ["sklearn", "ours", "sklearn-sample", "ours-sample"]
NAMES = {
    "sklearn": "sklearn BayesianGaussianMixture, defaults (in memory)",
    "ours": "StreamingBayesianGaussianMixture, defaults (Zarr, threads)",
    "sklearn-sample": "sklearn, sample start by hand, then all rows (in memory)",
    "ours-sample": "StreamingBayesianGaussianMixture, init_sample_size (Zarr, threads)",
}


def ensure_mixture(data_dir: Path, rows: int) -> Path:
    from streamclust.datasets import write_mixture_zarr

    path = data_dir / f"mixture3x2_{rows}.zarr"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_mixture_zarr(path, rows)
    return path


def child(method: str, path: Path, out: Path) -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    import streamclust as sc

    warnings.simplefilter("ignore", ConvergenceWarning)
    rows = sc.open_source(str(path)).n_rows
    t = time.perf_counter()
    if method.startswith("sklearn"):
        X = sc.open_source(str(path))[:]
        model = BayesianGaussianMixture(n_components=K, random_state=0)
        if method == "sklearn-sample":  # as init_sample_size does it
            rng = np.random.default_rng(0)
            model.set_params(max_iter=2000)
            model.fit(X[np.sort(rng.choice(rows, size=SAMPLE, replace=False))])
            model.set_params(warm_start=True, tol=1e-6 * rows, max_iter=100)
        model.fit(X)
        del X
    else:
        extra = {"init_sample_size": SAMPLE, "tol": 1e-6 * rows} if method == "ours-sample" else {}
        model = sc.StreamingBayesianGaussianMixture(
            n_components=K, random_state=0, client="threads", progress=False, **extra
        ).fit(str(path))
    seconds = time.perf_counter() - t
    ours = (
        model
        if method.startswith("ours")
        else sc.StreamingBayesianGaussianMixture.from_sklearn(model)
    )
    ours.set_params(client="threads", progress=False)
    write_result(
        out,
        {
            "seconds": seconds,
            "n_iter": int(model.n_iter_),
            "converged": bool(model.converged_),
            "used": int(np.sum(model.weights_ > 0.01)),
            "largest_extra": float(np.sort(model.weights_)[::-1][3]),
            "score": ours.score(str(path)),
        },
    )


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--methods", default=",".join(METHODS))
    add_child_arguments(ap, here / "data")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path, args.out)
        return
    path = ensure_mixture(args.data_dir, args.rows)
    print(f"\n{machine()}; {args.rows:,} rows x 2 features (float32, Zarr), k=10 offered\n")
    head = "| method | s | passes | converged | used | 4th weight | mean log-lik | peak MiB |"
    print(head)
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for method in args.methods.split(","):
        res = run_child(__file__, method, path, args.rows)
        if "skipped" in res:
            print(f"| {NAMES[method]} | skipped ({res['skipped']}) |||||||")
            continue
        print(
            f"| {NAMES[method]} | {res['seconds']:.1f} | {res['n_iter']} | {res['converged']} | "
            f"{res['used']} | {res['largest_extra']:.1e} | {res['score']:.6f} | "
            f"{res['peak_mib']:.0f} |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
