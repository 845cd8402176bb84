"""Data generators: the chapter's example data and large synthetic blob sets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .sources import ZarrSource, write_zarr

__all__ = [
    "CHAPTER_LOOP",
    "BlobSpec",
    "blob_blocks",
    "make_chapter_blobs",
    "make_chapter_mixture",
    "mixture_blocks",
    "write_blobs_zarr",
    "write_mixture_zarr",
]

#: The chapter's five blobs (centers, standard deviations, seed).
CHAPTER_CENTERS = np.array([[0.2, 2.3], [-1.5, 2.3], [-2.8, 1.8], [-2.8, 2.8], [-2.8, 1.3]])
CHAPTER_STDS = np.array([0.4, 0.3, 0.1, 0.1, 0.1])

#: The chapter's manual mini-batch loop, as StreamingKMeans parameters: 10 inits, 100 steps
#: of 100 rows after a 500-row initialization, best by the sum of the last 10 batch inertias.
CHAPTER_LOOP = {
    "n_clusters": 5,
    "n_init": 10,
    "batch_size": 100,
    "init_size": 500,
    "max_steps": 100,
    "last_n": 10,
    "random_state": 42,
}


def make_chapter_blobs(
    n_samples: int = 2000, random_state: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """The chapter's 5-blob, 2-D data set (``make_blobs`` with its centers, stds and seed)."""
    from sklearn.datasets import make_blobs

    X, y = make_blobs(
        n_samples=n_samples,
        centers=CHAPTER_CENTERS,
        cluster_std=CHAPTER_STDS,
        random_state=random_state,
    )
    return X, y


def make_chapter_mixture() -> tuple[np.ndarray, np.ndarray]:
    """The chapter's Gaussian-mixture data: two sheared blobs (1,000 rows) and a round
    one (250 rows) shifted to (6, -8), made with ``make_blobs`` as the chapter does."""
    from sklearn.datasets import make_blobs

    X1, y1 = make_blobs(n_samples=1000, centers=((4, -4), (0, 0)), random_state=42)
    X1 = X1 @ np.array([[0.374, 0.95], [0.732, 0.598]])
    X2, y2 = make_blobs(n_samples=250, centers=1, random_state=42)
    X2 = X2 + np.array([6.0, -8.0])
    return np.r_[X1, X2], np.r_[y1, y2]


@dataclass(frozen=True)
class BlobSpec:
    """Overlapping Gaussian blobs: centers uniform in [-4, 4]^d, per-blob isotropic std
    uniform in [0.5, 2.5], mixing weights uniform in [0.5, 1.5] then normalised."""

    centers: np.ndarray
    stds: np.ndarray
    weights: np.ndarray
    seed: int

    @classmethod
    def make(cls, n_centers: int = 64, n_features: int = 32, seed: int = 0) -> BlobSpec:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
        centers = rng.uniform(-4, 4, size=(n_centers, n_features))
        stds = rng.uniform(0.5, 2.5, size=n_centers)
        weights = rng.uniform(0.5, 1.5, size=n_centers)
        return cls(centers, stds, weights / weights.sum(), seed)


def blob_blocks(
    spec: BlobSpec, n_rows: int, block_rows: int = 65536, dtype: type = np.float32
) -> Iterator[np.ndarray]:
    """Rows i.i.d. from ``spec``, generated block by block; block ``i`` has its own seed."""
    n_centers, d = spec.centers.shape
    for i, lo in enumerate(range(0, n_rows, block_rows)):
        n = min(block_rows, n_rows - lo)
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(1, i)))
        labels = rng.choice(n_centers, size=n, p=spec.weights)
        noise = rng.standard_normal((n, d), dtype=np.float32)
        noise *= spec.stds[labels, None].astype(np.float32)
        noise += spec.centers[labels].astype(np.float32)
        yield noise.astype(dtype, copy=False)


def write_blobs_zarr(
    path: str | os.PathLike,
    n_rows: int,
    *,
    n_centers: int = 64,
    n_features: int = 32,
    seed: int = 0,
    block_rows: int = 65536,
    overwrite: bool = False,
) -> ZarrSource:
    """Write ``n_rows`` of overlapping blobs (float32) as a Zarr store, block by block."""
    spec = BlobSpec.make(n_centers, n_features, seed)
    return write_zarr(
        blob_blocks(spec, n_rows, block_rows),
        path,
        block_rows=block_rows,
        overwrite=overwrite,
        attributes={
            "generator": "streamclust.datasets.blob_blocks",
            "seed": seed,
            "n_centers": n_centers,
        },
    )


def mixture_blocks(n_rows: int, block_rows: int = 65536, seed: int = 0) -> Iterator[np.ndarray]:
    """Rows (float32) drawn from the three Gaussians the chapter's mixture data come
    from (a ``GaussianMixture`` fitted to :func:`make_chapter_mixture`), block by
    block; block ``i`` has its own seed."""
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(3, random_state=42).fit(make_chapter_mixture()[0])
    chol = np.linalg.cholesky(gm.covariances_)
    for i, lo in enumerate(range(0, n_rows, block_rows)):
        n = min(block_rows, n_rows - lo)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, i)))
        labels = rng.choice(3, size=n, p=gm.weights_)
        z = rng.standard_normal((n, 2))
        rows = gm.means_[labels] + np.einsum("nij,nj->ni", chol[labels], z)
        yield rows.astype(np.float32)


def write_mixture_zarr(
    path: str | os.PathLike,
    n_rows: int,
    *,
    seed: int = 0,
    block_rows: int = 65536,
    overwrite: bool = False,
) -> ZarrSource:
    """Write ``n_rows`` of :func:`mixture_blocks` as a Zarr store, block by block."""
    return write_zarr(
        mixture_blocks(n_rows, block_rows, seed),
        path,
        block_rows=block_rows,
        overwrite=overwrite,
        attributes={"generator": "streamclust.datasets.mixture_blocks", "seed": seed},
    )
