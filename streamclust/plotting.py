"""Figures for model selection, clusters, densities and anomalies (the ``plot`` extra).

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot (no global state, no display needed); save it with
``fig.savefig("name.png")``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .exceptions import DependencyError, ParameterError

__all__ = [
    "plot_anomaly_histogram",
    "plot_decision_boundaries",
    "plot_gmm_density",
    "plot_gmm_sweep",
    "plot_kmeans_sweep",
    "plot_silhouette_diagram",
    "plot_stream_metrics",
    "require_matplotlib",
]


def require_matplotlib() -> Any:
    """matplotlib's ``Figure`` class, or a one-line :class:`DependencyError` saying how to
    install it (called before any work whose result is a figure)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DependencyError(
            f"plotting needs matplotlib ({exc}): pip install 'streamclust[plot]'"
        ) from exc
    return Figure


def _figure(ncols: int = 1, width: float = 5.0, height: float = 4.0) -> tuple[Any, Any]:
    Figure = require_matplotlib()
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def plot_kmeans_sweep(res: Any) -> Any:
    """Inertia (elbow, knee marked) and silhouette (with 95% intervals) against k."""
    fig, (ax1, ax2) = _figure(2)
    ax1.plot(res.k, res.inertia, "o-")
    ax1.axvline(res.knee_k, color="tab:red", linestyle="--", label=f"knee: k={res.knee_k}")
    ax1.set(xlabel="k", ylabel="inertia", title="Elbow")
    ax1.legend()
    ax2.errorbar(res.k, res.silhouette, yerr=1.96 * res.silhouette_se, fmt="o-", capsize=3)
    ax2.axvline(res.best_k, color="tab:red", linestyle="--", label=f"best: k={res.best_k}")
    sample = "all rows" if res.sample_size >= res.n_rows else f"{res.sample_size:,} sampled rows"
    ax2.set(xlabel="k", ylabel="silhouette score", title=f"Silhouette ({sample})")
    ax2.legend()
    return fig


def plot_gmm_sweep(res: Any) -> Any:
    """BIC and AIC against k, one line per covariance type, the best marked."""
    fig, axes = _figure(2)
    best_k, best_ct = res.best
    for ax, values, name in ((axes[0], res.bic, "BIC"), (axes[1], res.aic, "AIC")):
        for row, ct in zip(values, res.covariance_types, strict=True):
            ax.plot(res.k, row, "o-", label=ct)
        ax.set(xlabel="number of components", ylabel=name, title=name)
        ax.legend(title="covariance")
    i, j = res.covariance_types.index(best_ct), list(res.k).index(best_k)
    crit = 0 if res.criterion == "bic" else 1
    value = (res.bic if crit == 0 else res.aic)[i, j]
    axes[crit].plot(best_k, value, "*", color="tab:red", markersize=16, label="best")
    return fig


def plot_silhouette_diagram(X: Any, labels: Any) -> Any:
    """The silhouette coefficient of every row, sorted within each cluster (knife plot)."""
    from sklearn.metrics import silhouette_samples

    X = np.asarray(X)
    labels = np.asarray(labels)
    values = silhouette_samples(X, labels)
    fig, (ax,) = _figure(1, 5, 5)
    pos = 0
    ticks = []
    for c in np.unique(labels):
        coeffs = np.sort(values[labels == c])
        ax.fill_betweenx(np.arange(pos, pos + len(coeffs)), 0, coeffs, alpha=0.7)
        ticks.append(pos + len(coeffs) / 2)
        pos += len(coeffs) + max(2, len(X) // 100)
    ax.axvline(values.mean(), color="tab:red", linestyle="--", label=f"mean {values.mean():.3f}")
    ax.set_yticks(ticks, [str(c) for c in np.unique(labels)])
    ax.set(xlabel="silhouette coefficient", ylabel="cluster", title=f"k={len(ticks)}")
    ax.legend()
    return fig


def _grid(X: np.ndarray, features: tuple[int, int], resolution: int) -> tuple[Any, ...]:
    a, b = features
    pad_a = 0.1 * (X[:, a].max() - X[:, a].min()) or 1.0
    pad_b = 0.1 * (X[:, b].max() - X[:, b].min()) or 1.0
    xs = np.linspace(X[:, a].min() - pad_a, X[:, a].max() + pad_a, resolution)
    ys = np.linspace(X[:, b].min() - pad_b, X[:, b].max() + pad_b, resolution)
    xx, yy = np.meshgrid(xs, ys)
    grid = np.tile(X.mean(axis=0), (xx.size, 1))  # other features at their mean
    grid[:, a], grid[:, b] = xx.ravel(), yy.ravel()
    return xx, yy, grid


def _check_features(X: np.ndarray, features: tuple[int, int]) -> None:
    d = X.shape[1]
    if len(features) != 2 or not all(0 <= f < d for f in features) or features[0] == features[1]:
        raise ParameterError(
            f"features={features!r} must name two different columns of the {d} features"
        )


def plot_decision_boundaries(
    model: Any,
    X: Any,
    features: tuple[int, int] = (0, 1),
    resolution: int = 400,
    max_points: int = 20_000,
) -> Any:
    """Regions of each cluster (Voronoi cells for K-Means), the rows and the centers.

    For more than two features the other features are held at their mean.
    """
    X = np.asarray(X, dtype=np.float64)
    _check_features(X, features)
    a, b = features
    xx, yy, grid = _grid(X, features, resolution)
    regions = np.asarray(model.predict(grid)).reshape(xx.shape)
    fig, (ax,) = _figure(1, 6, 5)
    ax.contourf(xx, yy, regions, levels=np.arange(regions.max() + 2) - 0.5, cmap="Pastel2")
    ax.contour(
        xx, yy, regions, levels=np.arange(regions.max() + 1) + 0.5, colors="k", linewidths=0.8
    )
    shown = X[:: max(1, len(X) // max_points)]
    ax.scatter(shown[:, a], shown[:, b], s=2, color="k", alpha=0.5)
    centers = getattr(model, "cluster_centers_", getattr(model, "means_", None))
    if centers is not None:
        ax.scatter(centers[:, a], centers[:, b], marker="x", s=80, color="tab:red", label="centers")
        ax.legend()
    ax.set(xlabel=f"x{a}", ylabel=f"x{b}", title="Decision boundaries")
    return fig


def plot_gmm_density(
    model: Any,
    X: Any,
    features: tuple[int, int] = (0, 1),
    threshold: float | None = None,
    resolution: int = 300,
    max_points: int = 20_000,
) -> Any:
    """Contours of the mixture's negative log-density, its means, and (with
    ``threshold``) the rows scoring below it marked as anomalies."""
    from matplotlib.colors import LogNorm

    X = np.asarray(X, dtype=np.float64)
    _check_features(X, features)
    a, b = features
    xx, yy, grid = _grid(X, features, resolution)
    z = -np.asarray(model.score_samples(grid)).reshape(xx.shape)
    fig, (ax,) = _figure(1, 6, 5)
    levels = np.logspace(np.log10(max(z.min(), 1e-3)), np.log10(z.max()), 12)
    ax.contourf(xx, yy, z, levels=levels, norm=LogNorm(), cmap="viridis_r", alpha=0.6)
    ax.contour(xx, yy, z, levels=levels, norm=LogNorm(), colors="k", linewidths=0.5)
    shown = X[:: max(1, len(X) // max_points)]
    ax.scatter(shown[:, a], shown[:, b], s=2, color="k", alpha=0.5)
    means = model.means_
    ax.scatter(means[:, a], means[:, b], marker="x", s=80, color="tab:red", label="means")
    if threshold is not None:
        scores = np.asarray(model.score_samples(X))
        odd = X[scores < threshold]
        ax.scatter(
            odd[:, a], odd[:, b], marker="*", s=60, color="tab:red", label=f"anomalies ({len(odd)})"
        )
    ax.legend()
    ax.set(xlabel=f"x{a}", ylabel=f"x{b}", title="Mixture density (-log p)")
    return fig


def plot_anomaly_histogram(scores: Any, threshold: float, bins: int = 100) -> Any:
    """Histogram of the scores with the threshold and the share of rows below it."""
    scores = np.asarray(scores, dtype=np.float64)
    fig, (ax,) = _figure(1, 6, 4)
    ax.hist(scores, bins=bins, color="tab:blue", alpha=0.8)
    rate = float((scores < threshold).mean())
    ax.axvline(
        threshold,
        color="tab:red",
        linestyle="--",
        label=f"threshold {threshold:.4g} ({rate:.1%} below)",
    )
    ax.set(xlabel="score (log-density)", ylabel="rows", title="Anomaly threshold")
    ax.legend()
    return fig


def plot_stream_metrics(metrics: list[dict[str, Any]], sizes: Any = None) -> Any:
    """A stream over time: every batch's score (drift alarms marked), its anomaly
    rate and the threshold when it was detecting, and the model's cluster sizes
    after every batch (from the metrics' ``sizes``; else the current model's
    ``sizes``, weights or counts, when given)."""
    over_time = [m.get("sizes") for m in metrics]
    if any(s is not None for s in over_time):
        sizes = None
    else:
        over_time = []
    panels = (
        1
        + any(m.get("anomaly_rate") is not None for m in metrics)
        + (sizes is not None or bool(over_time))
    )
    fig, axes = _figure(panels, width=5.5)
    t = np.arange(len(metrics))
    score = np.array([np.nan if m["score"] is None else m["score"] for m in metrics], float)
    ax = axes[0]
    ax.plot(t, score, ".-", linewidth=1, label="batch score")
    drifts = [i for i, m in enumerate(metrics) if m.get("drift")]
    for i in drifts:
        ax.axvline(i, color="tab:red", linestyle="--")
    if drifts:
        ax.plot([], [], color="tab:red", linestyle="--", label=f"drift ({len(drifts)})")
    ax.set(xlabel="batch", ylabel="score (lower fits better)", title="Batch scores")
    ax.legend()
    k = 1
    if panels > 1 and any(m.get("anomaly_rate") is not None for m in metrics):
        rate = [np.nan if m["anomaly_rate"] is None else m["anomaly_rate"] for m in metrics]
        axes[k].plot(t, 100 * np.array(rate, float), ".-", linewidth=1, label="anomaly rate %")
        thr = [np.nan if m.get("threshold") is None else m["threshold"] for m in metrics]
        twin = axes[k].twinx()
        twin.plot(t, thr, color="tab:orange", label="threshold")
        twin.set_ylabel("threshold")
        axes[k].set(xlabel="batch", ylabel="anomalies (%)", title="Anomaly rate and threshold")
        k += 1
    if over_time:
        k_max = max(len(s) for s in over_time if s is not None)
        shares = np.full((len(metrics), k_max), np.nan)
        for i, s in enumerate(over_time):
            if s is not None:
                shares[i, : len(s)] = s
        axes[k].stackplot(t, np.nan_to_num(shares).T)
        axes[k].set(xlabel="batch", ylabel="share", title="Cluster sizes over time")
    elif sizes is not None:
        sizes = np.asarray(sizes, float)
        axes[k].bar(np.arange(len(sizes)), sizes / max(sizes.sum(), 1e-300))
        axes[k].set(xlabel="cluster", ylabel="share", title="Cluster sizes (current model)")
    return fig
