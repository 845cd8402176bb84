"""The chapter's mini-batch loop (10 initializations by hand) versus StreamingKMeans.

    python examples/blobs_minibatch.py            # the chapter's 2,000 rows
    python examples/blobs_minibatch.py --full     # 2,000,000 rows of the same blobs, from Zarr

The chapter runs 10 MiniBatchKMeans models one after the other (k=5, an
initial batch of 500 rows, 100 batches of 100), keeps the one with the lowest
sum of its last 10 batch inertias, and scores -211.71. StreamingKMeans runs
the same 10 candidates in lockstep over one stream of batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.cluster import MiniBatchKMeans

import streamclust as sc
from streamclust.datasets import make_chapter_blobs

K, N_INIT, INIT_SIZE, BATCH, STEPS, LAST_N = 5, 10, 500, 100, 100, 10


def chapter_loop(X: np.ndarray, seed: int = 42) -> MiniBatchKMeans:
    """The chapter's loop: each model draws its own random batches."""
    rng = np.random.default_rng(seed)
    best, best_sum = None, np.inf
    for _ in range(N_INIT):
        model = MiniBatchKMeans(
            n_clusters=K, init_size=INIT_SIZE, random_state=int(rng.integers(1e9))
        )
        model.partial_fit(X[rng.integers(0, len(X), INIT_SIZE)])
        recent = 0.0
        for step in range(STEPS):
            model.partial_fit(X[rng.integers(0, len(X), BATCH)])
            if step >= STEPS - LAST_N:
                recent += model.inertia_
        if recent < best_sum:
            best, best_sum = model, recent
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="2,000,000 rows from a Zarr store")
    ap.add_argument("--out", type=Path, default=None, help="save the k sweep and cluster figures")
    args = ap.parse_args(argv)
    n = 2_000_000 if args.full else 2000
    X, _ = make_chapter_blobs(n_samples=n)
    t = time.perf_counter()
    manual = chapter_loop(X)
    manual_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        data = X
        if args.full:
            data = str(sc.write_zarr(X, f"{tmp}/blobs.zarr").path)
        km = sc.StreamingKMeans(
            n_clusters=K,
            n_init=N_INIT,
            batch_size=BATCH,
            init_size=INIT_SIZE,
            max_steps=STEPS,
            last_n=LAST_N,
            random_state=42,
            progress=False,
        )
        t = time.perf_counter()
        km.fit(data)
        stream_s = time.perf_counter() - t
    ours, theirs = -km.inertia_ / n * 2000, manual.score(X) / n * 2000
    print(f"{n:,} rows; scores scaled to the chapter's 2,000 rows (chapter: -211.71)")
    print(f"  chapter's loop, 10 models in turn: {theirs:9.2f}   {manual_s:6.2f} s")
    print(f"  StreamingKMeans, 10 in lockstep:   {ours:9.2f}   {stream_s:6.2f} s")
    result = {"chapter_loop": theirs, "streamclust": ours}
    if args.out is not None:  # choosing k, as the chapter does, on its 2,000 rows
        from streamclust import plotting

        X2, _ = make_chapter_blobs()
        sweep = sc.sweep_kmeans(
            X2,
            range(2, 9),
            n_init=10,
            batch_size=100,
            max_passes=20,
            random_state=42,
            progress=False,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        sweep.plot().savefig(args.out / "kmeans_sweep.png", dpi=90)
        best = sweep.models[sweep.best_k]
        plotting.plot_decision_boundaries(best, X2).savefig(args.out / "voronoi.png", dpi=90)
        plotting.plot_silhouette_diagram(X2, best.predict(X2)).savefig(
            args.out / "silhouette_diagram.png", dpi=90
        )
        print(
            f"k sweep: best k={sweep.best_k} by silhouette, elbow at k={sweep.knee_k} "
            "(chapter: 4 by silhouette, elbow at 4)"
        )
        result["best_k"] = sweep.best_k
    return result


if __name__ == "__main__":
    main()
