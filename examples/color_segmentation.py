"""Colour segmentation: every pixel replaced by the center of its colour cluster.

    python examples/color_segmentation.py [--out DIR]          # a quarter-size image
    python examples/color_segmentation.py --full [--out DIR]   # every pixel

The chapter segments a photo into 10, 8, 6, 4 and 2 colours with K-Means on
the RGB values of its pixels. Here the photo is scikit-learn's bundled
``china.jpg`` (no download), and every k is fitted in shared passes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_sample_image

import streamclust as sc

COLOURS = (10, 8, 6, 4, 2)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="every pixel of the image")
    ap.add_argument("--out", type=Path, default=None, help="where to save the figure grid")
    args = ap.parse_args(argv)
    image = load_sample_image("china.jpg").astype(np.float32) / 255
    if not args.full:
        image = image[::2, ::2]
    pixels = image.reshape(-1, 3)
    sweep = sc.sweep_kmeans(
        pixels,
        COLOURS,
        n_init=3,
        batch_size=4096,
        max_passes=3,
        silhouette_sample=2000,
        random_state=42,
        progress=False,
    )
    print(f"{len(pixels):,} pixels")
    print("colours  inertia   silhouette (2,000 sampled pixels)")
    for row in sorted(sweep.table(), key=lambda r: -r["k"]):
        print(f"  {row['k']:>3d}   {row['inertia']:9.2f}   {row['silhouette']:.3f}")
    segmented = {
        k: sweep.models[k].cluster_centers_[sweep.models[k].predict(pixels)].reshape(image.shape)
        for k in COLOURS
    }
    if args.out is not None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(12, 5), layout="constrained")
        axes = fig.subplots(2, 3).ravel()
        axes[0].imshow(image)
        axes[0].set_title("original")
        for ax, k in zip(axes[1:], COLOURS, strict=True):
            ax.imshow(np.clip(segmented[k], 0, 1))
            ax.set_title(f"{k} colours")
        for ax in axes:
            ax.axis("off")
        args.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out / "color_segmentation.png", dpi=80)
    return {"inertia": dict(zip(sweep.k.tolist(), sweep.inertia.tolist(), strict=True))}


if __name__ == "__main__":
    main()
