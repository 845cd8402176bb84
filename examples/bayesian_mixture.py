"""The chapter's Bayesian Gaussian mixture at scale: ten components offered, three used.

    python examples/bayesian_mixture.py [--out DIR]           # 200,000 rows
    python examples/bayesian_mixture.py --full [--out DIR]    # 2,000,000 rows

Rows are drawn from the three Gaussians of the chapter's mixture data and
written to a Zarr store. ``StreamingBayesianGaussianMixture`` with ten
components starts from a fit on a 20,000-row sample (where variational EM
empties the unneeded components in seconds) and refines it with passes over
every row; the weights of the seven extra components fall below 0.01, as on the
chapter's 1,250 rows with scikit-learn's ``BayesianGaussianMixture``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

import streamclust as sc
from streamclust.datasets import make_chapter_mixture, write_mixture_zarr

SAMPLE = 20_000


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="2,000,000 rows")
    ap.add_argument("--out", type=Path, default=None, help="where to save the figure")
    args = ap.parse_args(argv)
    n = 2_000_000 if args.full else 200_000
    # The chapter's own fit, in memory.
    chapter = BayesianGaussianMixture(n_components=10, n_init=10, random_state=42)
    with warnings.catch_warnings():  # (it stops at max_iter there too)
        warnings.simplefilter("ignore", ConvergenceWarning)
        chapter.fit(make_chapter_mixture()[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_mixture_zarr(Path(tmp) / "mixture.zarr", n).path
        model = sc.StreamingBayesianGaussianMixture(
            n_components=10,
            n_init=3,
            init_sample_size=SAMPLE,
            tol=1e-6 * n,  # the bound is a sum over rows
            batch_size=65_536,
            random_state=42,
            progress=False,
        )
        t = time.perf_counter()
        model.fit(path)
        seconds = time.perf_counter() - t
        sizes = np.bincount(model.predict(path), minlength=10) / n
    weights = np.sort(model.weights_)[::-1]
    print(f"{n:,} rows from Zarr: fitted in {seconds:.1f} s, {model.n_iter_} passes over all rows")
    print(f"weights       {np.round(weights, 3)}")
    print(f"chapter (1,250 rows, scikit-learn) {np.round(np.sort(chapter.weights_)[::-1], 3)}")
    print(f"extra components weigh at most {weights[3:].max():.2e}")
    if args.out is not None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7, 3), layout="constrained")
        ax = fig.subplots()
        k = np.arange(1, 11)
        ax.bar(k - 0.2, np.sort(chapter.weights_)[::-1], 0.4, label="chapter, 1,250 rows")
        ax.bar(k + 0.2, weights, 0.4, label=f"streamclust, {n:,} rows from Zarr")
        ax.set(xlabel="component (by weight)", ylabel="weight", xticks=k)
        ax.set_title("Bayesian mixture: 10 components offered, 3 used")
        ax.legend()
        args.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out / "bayesian_mixture.png", dpi=90)
    return {
        "rows": n,
        "weights": weights,
        "sizes": np.sort(sizes)[::-1],
        "converged": model.converged_,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
