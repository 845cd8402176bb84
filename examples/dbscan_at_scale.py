"""The chapter's DBSCAN on the moons, at scale: fitted on a sample, every row labelled.

    python examples/dbscan_at_scale.py [--out DIR]           # 200,000 rows
    python examples/dbscan_at_scale.py --full [--out DIR]    # 2,000,000 rows

The moons are written to a Zarr store. ``SampleClusterer`` draws 20,000 rows,
fits DBSCAN on them in memory (the chapter's ``eps`` scaled to the sample's
density), and labels every row of the store block by block with a 5-nearest
neighbours vote of DBSCAN's core samples, as the chapter does with a
``KNeighborsClassifier``; rows farther than ``eps`` from every core sample stay
noise. The labels are written to Zarr next to the data.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import make_moons
from sklearn.metrics import adjusted_rand_score

import streamclust as sc

SAMPLE, EPS, MIN_SAMPLES = 20_000, 0.05, 5


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="2,000,000 rows")
    ap.add_argument("--out", type=Path, default=None, help="where to save the figure")
    args = ap.parse_args(argv)
    n = 2_000_000 if args.full else 200_000
    X, truth = make_moons(n, noise=0.05, random_state=42)
    with tempfile.TemporaryDirectory() as tmp:
        data = sc.write_zarr(X.astype(np.float32), Path(tmp) / "moons.zarr")
        model = sc.SampleClusterer(
            "dbscan",
            estimator_params={"eps": EPS, "min_samples": MIN_SAMPLES},
            sample_size=SAMPLE,
            labeler="knn",
            random_state=42,
            progress=False,
        )
        t = time.perf_counter()
        out = model.fit_predict(data, out=Path(tmp) / "labels.zarr")
        seconds = time.perf_counter() - t
        labels = np.asarray(sc.open_source(out, column=True))[:, 0].astype(np.int64)
    sampled = model.sample_indices_
    same = bool(np.array_equal(labels[sampled], model.estimator_.labels_))
    ari = adjusted_rand_score(truth, labels)
    noise = float(np.mean(labels == -1))
    print(f"{n:,} rows: DBSCAN on {SAMPLE:,} sampled rows, every row labelled in {seconds:.1f} s")
    clusters = sorted(int(v) for v in set(labels) - {-1})
    print(f"clusters {clusters}, noise {noise:.2%}, ARI against the moons {ari:.4f}")
    print(f"sampled rows keep DBSCAN's own labels: {same}")
    if args.out is not None:
        from matplotlib.figure import Figure

        show = np.random.default_rng(0).choice(n, size=20_000, replace=False)
        fig = Figure(figsize=(7, 3.5), layout="constrained")
        ax = fig.subplots()
        ax.scatter(*X[show].T, c=labels[show], s=1, cmap="viridis")
        ax.set(title=f"DBSCAN on a {SAMPLE:,}-row sample, {n:,} rows labelled")
        args.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out / "dbscan_at_scale.png", dpi=90)
    return {"rows": n, "ari": ari, "noise": noise, "sampled_same": same, "seconds": seconds}


if __name__ == "__main__":
    main()
