"""Choosing the number of clusters on data larger than memory.

:func:`sweep_kmeans` fits one :class:`StreamingKMeans` per value of k in the
same passes over the data (each block is read once for all of them, as the
``n_init`` candidates of one model already are), then takes one more pass for
the exact inertia of every k and a uniform sample of rows for the silhouette.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import pairwise_distances

from . import gmm, runtime
from .engine.caching import fit_cache
from .engine.chains import ChainSpec, fit_kmeans_chains
from .engine.em import EMResult, EMSettings, run_em, sum_stats
from .engine.plan import BatchPlan, logical_pass
from .engine.seeds import draw_seed, root_seed
from .exceptions import ParameterError
from .gmm import StreamingGaussianMixture
from .inputs import as_source, with_storage_options
from .kernels import gmm as G
from .kernels import kmeans as K
from .kmeans import StreamingKMeans, set_fitted_chain, validate_params
from .kmeans_params import batch_plan, chain_spec
from .plotting import plot_gmm_sweep, plot_kmeans_sweep
from .validation import check_int, check_option

__all__ = ["GMMSweep", "KMeansSweep", "knee", "sweep_gmm", "sweep_kmeans"]


def knee(x: np.ndarray, y: np.ndarray) -> int:
    """Index of the knee of a decreasing convex curve (Kneedle, Satopaa et al. 2011).

    Both axes are scaled to [0, 1]; the knee is the point farthest below the
    straight line from the first point to the last (``(1 - x) - y`` largest).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if len(x) < 3:
        return 0
    xs = (x - x[0]) / (x[-1] - x[0])
    span = y.max() - y.min()
    ys = (y - y.min()) / span if span > 0 else np.zeros_like(y)
    return int(np.argmax((1 - xs) - ys))


@dataclass
class KMeansSweep:
    """What :func:`sweep_kmeans` measured, one entry per k."""

    k: np.ndarray
    inertia: np.ndarray
    silhouette: np.ndarray
    silhouette_se: np.ndarray  # standard error of the sampled silhouette (0: whole data)
    sample_size: int
    n_rows: int
    criterion: str
    models: dict[int, Any] = field(repr=False)

    @property
    def knee_k(self) -> int:
        """The elbow of the inertia curve (see :func:`knee`)."""
        return int(self.k[knee(self.k, self.inertia)])

    @property
    def best_k(self) -> int:
        """Highest silhouette (``criterion="silhouette"``) or the elbow (``"elbow"``)."""
        if self.criterion == "elbow":
            return self.knee_k
        return int(self.k[int(np.nanargmax(self.silhouette))])

    @property
    def best_model(self) -> Any:
        return self.models[self.best_k]

    def table(self) -> list[dict[str, float]]:
        return [
            {"k": int(k), "inertia": float(i), "silhouette": float(s), "silhouette_se": float(e)}
            for k, i, s, e in zip(
                self.k, self.inertia, self.silhouette, self.silhouette_se, strict=True
            )
        ]

    def plot(self) -> Any:
        """Elbow and silhouette curves (needs the ``plot`` extra)."""
        return plot_kmeans_sweep(self)


def _check_ks(k: Any, low: int = 1) -> list[int]:
    """The distinct values of ``k``, sorted; each must be an integer >= ``low``."""
    ks = sorted({int(v) for v in np.atleast_1d(np.asarray(list(k)))})
    if not ks or ks[0] < 1:
        raise ParameterError(f"k={list(k)!r} must hold integers >= 1; pass e.g. range(2, 11)")
    if ks[0] < low:
        raise ParameterError(
            f"k={list(k)!r} includes k={ks[0]}, where the silhouette is undefined (one "
            "cluster); start at 2, or pass criterion='elbow' to start at 1"
        )
    return ks


def _sample_plan(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted global row indices of a uniform sample without replacement."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def block_sweep_stats(
    block: np.ndarray, start: int, centers: list[np.ndarray], sample: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Task: exact inertia of each model's centers on one block, and the block's rows
    among the sorted global indices ``sample``."""
    inertia = np.array(
        [K.block_labels_inertia(block, start, c[None], False)[1][0] for c in centers]
    )
    lo, hi = np.searchsorted(sample, [start, start + block.shape[0]])
    return inertia, block[sample[lo:hi] - start]


#: Bytes of one chunk of the sample's distance matrix in :func:`_silhouette_samples_many`.
SILHOUETTE_CHUNK_BYTES = 64 * 2**20


def _silhouette_samples_many(X: np.ndarray, label_sets: list[np.ndarray]) -> list[np.ndarray]:
    """``sklearn.metrics.silhouette_samples(X, labels)`` for several labelings of X.

    The same algorithm (mean distance to the own cluster without the row itself,
    the lowest mean distance to another cluster, 0 in singleton clusters), but
    each chunk of the Euclidean distance matrix is computed once for every
    labeling, instead of once per labeling: the sweep's dominant fixed cost.
    """
    n = X.shape[0]
    onehots = [np.eye(lab.max() + 1)[lab] for lab in label_sets]
    freqs = [oh.sum(axis=0) for oh in onehots]
    out = [np.empty(n) for _ in label_sets]
    step = max(1, SILHOUETTE_CHUNK_BYTES // (8 * n))
    for lo in range(0, n, step):
        D = pairwise_distances(X[lo : lo + step], X)
        rows = np.arange(D.shape[0])
        for lab, oh, freq, s in zip(label_sets, onehots, freqs, out, strict=True):
            own = lab[lo : lo + step]
            sums = D @ oh
            with np.errstate(divide="ignore", invalid="ignore"):
                intra = sums[rows, own] / (freq[own] - 1)
                sums[rows, own] = np.inf
                inter = (sums / freq).min(axis=1)
                s[lo : lo + step] = np.nan_to_num((inter - intra) / np.maximum(intra, inter))
    return out


def sweep_kmeans(
    X: Any,
    k: Any = range(2, 11),
    *,
    n_init: int = 3,
    batch_size: int = 1024,
    max_passes: int = 1,
    max_steps: int | None = None,
    random_state: Any = 0,
    criterion: str = "silhouette",
    silhouette_sample: int = 10_000,
    client: Any = None,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    **params: Any,
) -> KMeansSweep:
    """Fit StreamingKMeans for every k in ``k`` in shared passes; inertia and silhouette.

    Every model gets exactly what ``StreamingKMeans(n_clusters=k, ...)`` would
    get alone. The silhouette of each k is computed on the same uniform seeded
    sample of ``silhouette_sample`` rows (the whole data when it is smaller, and
    then equal to ``sklearn.metrics.silhouette_score`` up to summation order),
    with the standard error of its mean. ``criterion``: ``"silhouette"``
    (highest; every k must be >= 2) or ``"elbow"`` (the knee of the inertia
    curve; k may start at 1, whose silhouette is NaN) picks ``best_k``.
    """
    X = with_storage_options(X, storage_options)
    check_option("criterion", criterion, ("silhouette", "elbow"))
    ks = _check_ks(k, low=2 if criterion == "silhouette" else 1)
    check_int("silhouette_sample", silhouette_sample, low=2)
    models = [
        StreamingKMeans(
            n_clusters=kk,
            n_init=n_init,
            batch_size=batch_size,
            max_passes=max_passes,
            max_steps=max_steps,
            random_state=random_state,
            client=client,
            progress=progress,
            **params,
        )
        for kk in ks
    ]
    n_inits = [validate_params(m) for m in models]  # effective: 1 for an array init
    source = as_source(models[0], X, reset=True)
    runner = runtime.resolve_runner(client, source)
    source, _ = fit_cache(source, runner, None)  # every pass after the first hits memory
    root = root_seed(random_state)
    specs = [chain_spec(m, n) for m, n in zip(models, n_inits, strict=True)]
    plan = batch_plan(models[0])  # the data plan every model shares
    fitted = fit_kmeans_chains(specs, plan, source, runner, root, progress=progress)
    for m, chain in zip(models, fitted.chains, strict=True):
        set_fitted_chain(m, chain, fitted.n_steps, fitted.n_passes, source.n_features)

    # One pass: exact inertia of every k, and the silhouette sample.
    seed = int(root.generate_state(1)[0])
    sample_idx = _sample_plan(source.n_rows, silhouette_sample, seed)
    centers = [m.cluster_centers_ for m in models]
    inertia = np.zeros(len(models))
    sample = []
    for part_inertia, rows in logical_pass(
        block_sweep_stats,
        source,
        centers,
        sample_idx,
        runner=runner,
        batch_size=batch_size,
        desc="inertia",
        progress=progress,
    ):
        inertia += part_inertia
        sample.append(rows)
    Xs = np.concatenate(sample).astype(np.float64)
    for m, value in zip(models, inertia, strict=True):
        m.inertia_ = float(value)
    m_rows, n = Xs.shape[0], source.n_rows
    fpc = math.sqrt((n - m_rows) / (n - 1)) if n > 1 else 0.0
    sil, se = np.full(len(ks), np.nan), np.full(len(ks), np.nan)
    labels = [m.predict(Xs) for m in models]
    valid = [i for i, lab in enumerate(labels) if 1 < len(np.unique(lab)) < m_rows]
    for i, s in zip(valid, _silhouette_samples_many(Xs, [labels[i] for i in valid]), strict=True):
        sil[i], se[i] = s.mean(), s.std(ddof=1) / math.sqrt(m_rows) * fpc
    return KMeansSweep(
        k=np.array(ks),
        inertia=inertia,
        silhouette=sil,
        silhouette_se=se,
        sample_size=m_rows,
        n_rows=n,
        criterion=criterion,
        models={kk: m for kk, m in zip(ks, models, strict=True)},
    )


@dataclass
class GMMSweep:
    """What :func:`sweep_gmm` measured: BIC and AIC per covariance type (rows) and k."""

    k: np.ndarray
    covariance_types: tuple[str, ...]
    bic: np.ndarray  # (n_covariance_types, n_k)
    aic: np.ndarray
    criterion: str
    models: dict[tuple[int, str], Any] = field(repr=False)

    @property
    def best(self) -> tuple[int, str]:
        """``(k, covariance_type)`` with the lowest criterion."""
        values = self.bic if self.criterion == "bic" else self.aic
        row, col = np.unravel_index(int(np.argmin(values)), values.shape)
        return int(self.k[col]), self.covariance_types[row]

    @property
    def best_model(self) -> Any:
        return self.models[self.best]

    def table(self) -> list[dict[str, Any]]:
        return [
            {"k": int(k), "covariance_type": ct, "bic": float(b), "aic": float(a)}
            for i, ct in enumerate(self.covariance_types)
            for k, b, a in zip(self.k, self.bic[i], self.aic[i], strict=True)
        ]

    def plot(self) -> Any:
        """BIC and AIC curves (needs the ``plot`` extra)."""
        return plot_gmm_sweep(self)


def _block_hard_stats_many(
    block: np.ndarray, start: int, jobs: list[tuple[np.ndarray, tuple[str, ...]]]
) -> list[Any]:
    """Task: hard-assignment statistics of every job (one k's centers and the
    covariance types to start from them), flattened in job order."""
    return [st for centers, cts in jobs for st in G.block_hard_stats(block, start, centers, cts)]


def _block_score_sums(block: np.ndarray, start: int, params: list[Any]) -> np.ndarray:
    """Task: the sum of log p(x) over one block for every mixture."""
    return np.array([G.block_score_sum(block, start, p) for p in params])


def sweep_gmm(
    X: Any,
    k: Any = range(1, 11),
    covariance_type: Any = ("full", "tied", "diag", "spherical"),
    *,
    n_init: int = 1,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    max_iter: int = 100,
    batch_size: int = 4096,
    random_state: Any = 0,
    criterion: str = "bic",
    client: Any = None,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> GMMSweep:
    """Fit a StreamingGaussianMixture for every k and covariance type in shared passes.

    One StreamingKMeans pass initializes every k (``init_params="kmeans"``), one
    pass of hard assignments starts every (k, covariance type), and each EM
    pass serves every mixture still iterating. A last pass gives the exact BIC
    and AIC of each (equal to its ``bic(X)`` / ``aic(X)``).
    """
    X = with_storage_options(X, storage_options)
    ks = _check_ks(k)
    covs = (covariance_type,) if isinstance(covariance_type, str) else tuple(covariance_type)
    for ct in covs:
        check_option("covariance_type", ct, G.COVARIANCE_TYPES)
    check_option("criterion", criterion, ("bic", "aic"))
    models = {
        (kk, ct): StreamingGaussianMixture(
            kk,
            covariance_type=ct,
            n_init=n_init,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            batch_size=batch_size,
            random_state=random_state,
            client=client,
            progress=progress,
        )
        for ct in covs
        for kk in ks
    }
    lead = next(iter(models.values()))
    gmm.validate_params(lead)
    source = as_source(lead, X, reset=True)
    if ks[-1] > source.n_rows:
        raise ParameterError(
            f"k={ks[-1]} exceeds the {source.n_rows} rows of the data; lower the largest k"
        )
    runner = runtime.resolve_runner(client, source)
    source, _ = fit_cache(source, runner, None)  # every pass after the first hits memory
    seed = draw_seed(random_state)  # what each model would draw alone
    fitted = fit_kmeans_chains(
        [ChainSpec(kk, n_init) for kk in ks],
        BatchPlan(batch_size),
        source,
        runner,
        np.random.SeedSequence(seed),
        progress=progress,
    )
    centers = {
        kk: chain.centers.astype(np.float64) for kk, chain in zip(ks, fitted.chains, strict=True)
    }
    keys = list(models)
    # One job per k: its rows are assigned once for every covariance type.
    flat = sum_stats(
        _block_hard_stats_many,
        source,
        [(centers[kk], covs) for kk in ks],
        runner=runner,
        batch_size=batch_size,
        desc="init",
        progress=progress,
    )
    candidates, owner = [], []
    for j, (kk, ct) in enumerate(keys):
        first = (ks.index(kk) * len(covs) + covs.index(ct)) * n_init
        for c in range(n_init):
            st, ref = flat[first + c], centers[kk][c]
            candidates.append(G.m_step(st, ref, ct, reg_covar, initial=True))
            owner.append(j)
    settings = EMSettings(tol, max_iter, reg_covar, batch_size, progress)
    result = run_em(candidates, source, runner, settings)
    owner_arr = np.array(owner)
    finals = []
    for j, key in enumerate(keys):
        idx = np.flatnonzero(owner_arr == j)
        best = int(idx[np.argmax(result.lower[idx])])
        model = models[key]
        model.n_features_in_ = source.n_features
        own = EMResult(
            [result.params[i] for i in idx],
            result.lower[idx],
            result.n_iter[idx],
            result.converged[idx],
            [result.history[i] for i in idx],
        )
        gmm.set_fitted(model, own, best - int(idx[0]), source.compute_dtype)
        finals.append(result.params[best])
    totals = sum(
        logical_pass(
            _block_score_sums,
            source,
            finals,
            runner=runner,
            batch_size=batch_size,
            desc="BIC",
            progress=progress,
        )
    )
    bic = np.empty((len(covs), len(ks)))
    aic = np.empty_like(bic)
    for (kk, ct), total in zip(keys, totals, strict=True):
        ic = gmm.criteria(models[(kk, ct)], float(total), source.n_rows)
        i, j = covs.index(ct), ks.index(kk)
        bic[i, j], aic[i, j] = ic["bic"], ic["aic"]
    return GMMSweep(np.array(ks), covs, bic, aic, criterion, models)
