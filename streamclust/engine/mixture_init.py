"""How the candidates of a mixture start: scikit-learn's initial responsibilities
(K-Means labels, k-means++ or random rows, random responsibilities) as summed
statistics over the data, and the user's ``*_init`` overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import runtime
from ..exceptions import DataError, ParameterError
from ..kernels import gmm as G
from ..kernels.seeding import kmeans_plusplus, random_rows
from ..persistence import fingerprint
from ..sources import Source
from .chains import ChainSpec, KMeansCheckpoint, fit_kmeans_chains, init_pool
from .em import sum_stats
from .plan import BatchPlan, block_ranges

__all__ = ["MixtureInit", "initial_candidates", "initial_stats"]


@dataclass(frozen=True)
class MixtureInit:
    """How the candidates of one mixture start (see ``StreamingGaussianMixture``):
    ``init_params`` for every candidate, then the user's ``*_init`` overrides."""

    n_components: int
    covariance_type: str
    n_init: int
    init_params: str  # "kmeans", "k-means++" or "random"
    reg_covar: float
    batch_size: int
    weights_init: Any = None
    means_init: Any = None
    precisions_init: Any = None

    def check(self, d: int) -> None:
        """The overrides fit ``n_components`` components of ``d`` features, and are
        valid as scikit-learn's ``GaussianMixture`` checks them (its message fragments
        kept: "should be normalized", "should be positive"...)."""
        K, ct = self.n_components, self.covariance_type
        if self.weights_init is not None:
            w = _init_array("weights", self.weights_init, (K,), "weights_init")
            if np.any(w < 0.0) or np.any(w > 1.0):
                raise ParameterError(
                    f"The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{w.max():.5f}, min value {w.min():.5f} (weights_init)"
                )
            atol = 1e-6 if np.asarray(self.weights_init).dtype == np.float32 else 1e-8
            if not np.allclose(np.abs(1.0 - w.sum()), 0.0, atol=atol):
                raise ParameterError(
                    f"The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{w.sum():.5f} (weights_init)"
                )
        if self.means_init is not None:
            _init_array("means", self.means_init, (K, d), "means_init")
        if self.precisions_init is not None:
            want = {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}[ct]
            prec = _init_array(f"{ct} precision", self.precisions_init, want, "precisions_init")
            if ct in ("diag", "spherical"):
                if np.any(prec <= 0.0):
                    raise ParameterError(
                        f"'{ct} precision' should be positive (precisions_init); pass "
                        "positive precisions"
                    )
            else:
                for matrix in prec if ct == "full" else [prec]:
                    if not (
                        np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0)
                    ):
                        raise ParameterError(
                            f"'{ct} precision' should be symmetric, positive-definite "
                            "(precisions_init)"
                        )

    def apply(self, p: G.Params) -> G.Params:
        """``p`` with the user's overrides."""
        log_w, means, pc = p.log_weights, p.means, p.prec_chol
        if self.weights_init is not None:
            log_w = np.log(np.asarray(self.weights_init, dtype=np.float64))
        if self.means_init is not None:
            means = np.asarray(self.means_init, dtype=np.float64).copy()
        if self.precisions_init is not None:
            prec = np.asarray(self.precisions_init, dtype=np.float64)
            pc = G.prec_chol_from_precisions(prec, p.cov_type)
        return G.Params(log_w, means, pc, p.cov_type)


def _init_array(what: str, value: Any, shape: tuple[int, ...], param: str) -> np.ndarray:
    """The parameter ``param`` as a finite float array of ``shape`` (scikit-learn's words)."""
    array = np.asarray(value, dtype=np.float64)
    if array.shape != shape:
        raise ParameterError(
            f"The parameter '{what}' should have the shape of {shape}, but got {array.shape} "
            f"({param})"
        )
    if not np.isfinite(array).all():
        raise ParameterError(f"{param} contains NaN or inf; pass finite values")
    return array


def initial_candidates(
    init: MixtureInit,
    source: Source,
    runner: runtime.Runner,
    seed: int,
    *,
    checkpoint_dir: Any = None,
    progress: bool = True,
) -> list[G.Params]:
    """The starting parameters of every candidate, with the user's overrides: the
    M-step of :func:`initial_stats`."""
    stats, refs = initial_stats(
        init, source, runner, seed, checkpoint_dir=checkpoint_dir, progress=progress
    )
    ct = init.covariance_type
    return [
        init.apply(G.m_step(st, ref, ct, init.reg_covar, initial=True))
        for st, ref in zip(stats, refs, strict=True)
    ]


def initial_stats(
    init: MixtureInit,
    source: Source,
    runner: runtime.Runner,
    seed: int,
    *,
    checkpoint_dir: Any = None,
    progress: bool = True,
) -> tuple[list[G.Stats], np.ndarray]:
    """The statistics every candidate starts from (as scikit-learn's initial
    responsibilities give them), and the means (n_init, K, d) they are taken around.

    ``"kmeans"`` runs one K-Means pass (its candidates give one start each; with
    ``checkpoint_dir`` that pass saves and resumes its own progress there) and one
    pass of hard assignments.
    """
    K, ct, n, n_init = init.n_components, init.covariance_type, source.n_rows, init.n_init
    if K > n:
        raise DataError(
            f"n_components={K} exceeds the {n} rows of the data; pass more rows or "
            "lower n_components"
        )
    root = np.random.SeedSequence(seed)
    spec = ChainSpec(n_clusters=K, n_init=n_init)
    if init.init_params == "kmeans":
        checkpoint = None
        if checkpoint_dir is not None:
            params = {"n_clusters": K, "n_init": n_init, "batch_size": init.batch_size}
            checkpoint = KMeansCheckpoint(
                checkpoint_dir,
                fingerprint("StreamingGaussianMixture.init", {**params, "seed": seed}, source),
            )
        fitted = fit_kmeans_chains(
            [spec],
            BatchPlan(init.batch_size),
            source,
            runner,
            root,
            checkpoint=checkpoint,
            progress=progress,
        )
        centers = fitted.chains[0].centers
        stats = sum_stats(
            G.block_hard_stats,
            source,
            centers,
            (ct,),
            runner=runner,
            batch_size=init.batch_size,
            desc="init",
            progress=progress,
        )
        refs = centers.astype(np.float64)
    elif init.init_params in ("k-means++", "random_from_data"):
        # Means on rows of a sample (k-means++ rows, or rows drawn at random), and
        # reg_covar covariances, as scikit-learn starts them.
        size = spec.init_rows(init.batch_size, n)
        pool = init_pool(source, block_ranges(source, init.batch_size), runner, root, size)
        seeds = [int(s.generate_state(1)[0]) for s in root.spawn(n_init)]
        if init.init_params == "k-means++":
            refs = kmeans_plusplus(pool, K, seeds).astype(np.float64)
        else:
            refs = np.stack([random_rows(pool, K, np.random.default_rng(s)) for s in seeds]).astype(
                np.float64
            )
        d = source.n_features
        stats = [G.Stats(np.ones(K), np.zeros((K, d)), G.zero_s2(K, d, ct), 0.0, n) for _ in refs]
    else:
        size = spec.init_rows(init.batch_size, n)
        pool = init_pool(source, block_ranges(source, init.batch_size), runner, root, size)
        center = pool.astype(np.float64).mean(axis=0)
        ref = np.repeat(center[None], K, axis=0)
        seeds = [seed + c for c in range(n_init)]
        stats = sum_stats(
            G.block_random_stats,
            source,
            ref,
            seeds,
            ct,
            runner=runner,
            batch_size=init.batch_size,
            desc="init",
            progress=progress,
        )
        refs = np.repeat(ref[None], n_init, axis=0)
    return stats, refs
