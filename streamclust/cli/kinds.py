"""The kinds of model the commands fit (``--model``): how each is built from the
options, and how each reports a fit, a score and a sweep."""

from __future__ import annotations

from typing import Any, ClassVar

import click
import numpy as np

from .. import gmm, kmeans, sample_clusterer
from ..exceptions import ParameterError
from ..gmm import StreamingGaussianMixture
from ..kmeans import StreamingKMeans
from ..sample_clusterer import ESTIMATORS, SampleClusterer
from ..selection import sweep_gmm, sweep_kmeans
from ..sources import Source

__all__ = [
    "KINDS",
    "GMMKind",
    "KMeansKind",
    "ModelKind",
    "SampleKind",
    "build_estimator",
    "estimator_options",
    "kind_of",
    "model_option",
]


class ModelKind:
    """What the commands need to know about one kind of model."""

    name: str
    estimator: type
    #: Options that belong to this kind only (estimator parameter -> option).
    only: ClassVar[dict[str, str]]

    def build(self, params: dict[str, Any], client: Any, progress: bool) -> Any:
        k = params.pop("k")
        return self.estimator(k, **params, client=client, progress=progress)

    def validate(self, model: Any) -> None:
        """Check the model's parameters as its ``fit`` would, before any I/O."""
        raise NotImplementedError

    def fit_summary(self, model: Any) -> tuple[dict[str, Any], str]:
        """What a fit found: JSON fields and one line."""
        raise NotImplementedError

    def check_score_output(self, out: str | None) -> None:
        """Refuse a ``score --out`` this kind cannot write."""

    def score(
        self, model: Any, source: Source, out: str | None, overwrite: bool
    ) -> tuple[dict[str, Any], list[str]]:
        """The model's score on ``source`` (and per-row scores written to ``out``):
        JSON fields and lines."""
        raise NotImplementedError

    def sweep(
        self,
        source: Source,
        ks: list[int],
        criterion: str | None,
        options: dict[str, Any],
        common: dict[str, Any],
    ) -> tuple[Any, dict[str, Any], list[str]]:
        """Fit every k in shared passes: the sweep, its best choice and its table."""
        raise NotImplementedError


class KMeansKind(ModelKind):
    name = "kmeans"
    estimator = StreamingKMeans
    only: ClassVar[dict[str, str]] = {
        "init_size": "--init-size",
        "max_passes": "--max-passes",
        "max_steps": "--max-steps",
        "last_n": "--last-n",
        "selection": "--selection",
        "refine": "--refine",
        "reassignment_ratio": "--reassignment-ratio",
        "shuffle": "--shuffle/--no-shuffle",
        "max_no_improvement": "--max-no-improvement",
        "time_unit": "--time-unit",
    }

    def validate(self, model: Any) -> None:
        kmeans.validate_params(model)

    def fit_summary(self, model: Any) -> tuple[dict[str, Any], str]:
        summary = {
            "n_clusters": model.n_clusters,
            "inertia": model.inertia_,
            "best_init": model.best_init_,
            "n_steps": model.n_steps_,
            "n_passes": model.n_passes_,
        }
        n = len(model.init_scores_)
        line = (
            f"inertia {model.inertia_:.6g} (candidate {model.best_init_} of {n}, "
            f"{model.n_steps_} steps in {model.n_passes_} passes)"
        )
        return summary, line

    def check_score_output(self, out: str | None) -> None:
        if out is not None:
            raise ParameterError(
                "--out writes per-row log-densities, which only a gmm model has; "
                "use `streamclust predict` for K-Means labels"
            )

    def score(
        self, model: Any, source: Source, out: str | None, overwrite: bool
    ) -> tuple[dict[str, Any], list[str]]:
        self.check_score_output(out)
        value = model.score(source)
        summary = {"rows": source.n_rows, "score": value, "inertia": -value}
        return summary, [f"score {value:.10g} (inertia {-value:.10g}) on {source.n_rows} rows"]

    def sweep(
        self,
        source: Source,
        ks: list[int],
        criterion: str | None,
        options: dict[str, Any],
        common: dict[str, Any],
    ) -> tuple[Any, dict[str, Any], list[str]]:
        res = sweep_kmeans(
            source,
            ks,
            criterion=criterion or "silhouette",
            max_passes=options["max_passes"],
            silhouette_sample=options["silhouette_sample"],
            **common,
        )
        lines = ["k  inertia  silhouette (+- 1.96 se)"] + [
            f"{r['k']:<3d}{r['inertia']:.6g}  "
            + (
                f"{r['silhouette']:.4f} (+- {1.96 * r['silhouette_se']:.4f})"
                if np.isfinite(r["silhouette"])
                else "- (undefined)"
            )
            for r in res.table()
        ]
        lines.append(f"best k={res.best_k} ({res.criterion}); elbow at k={res.knee_k}")
        return res, {"k": res.best_k, "knee_k": res.knee_k}, lines


class GMMKind(ModelKind):
    name = "gmm"
    estimator = StreamingGaussianMixture
    only: ClassVar[dict[str, str]] = {
        "covariance_type": "--covariance",
        "tol": "--tol",
        "reg_covar": "--reg-covar",
        "max_iter": "--max-iter",
        "step_offset": "--step-offset",
        "step_decay": "--step-decay",
    }

    def validate(self, model: Any) -> None:
        gmm.validate_params(model)

    def fit_summary(self, model: Any) -> tuple[dict[str, Any], str]:
        summary = {
            "n_components": model.n_components,
            "covariance_type": model.covariance_type,
            "lower_bound": model.lower_bound_,
            "converged": model.converged_,
            "n_iter": model.n_iter_,
            "weights": model.weights_.tolist(),
        }
        line = (
            f"{model.covariance_type} covariances, mean log-likelihood {model.lower_bound_:.6g} "
            f"after {model.n_iter_} EM iterations"
            + ("" if model.converged_ else " (not converged: raise --max-iter or --tol)")
        )
        return summary, line

    def score(
        self, model: Any, source: Source, out: str | None, overwrite: bool
    ) -> tuple[dict[str, Any], list[str]]:
        if out is None:
            ic = model.information_criteria(source)
        else:
            model.score_samples(source, out=out, overwrite=overwrite)
            ic = gmm.criteria(model, *_sum_written(out))
        n = ic["n_samples"]
        summary = {"rows": n, "score": ic["score"], "bic": ic["bic"], "aic": ic["aic"]}
        lines = [
            f"mean log-likelihood {ic['score']:.10g}, BIC {ic['bic']:.10g}, "
            f"AIC {ic['aic']:.10g} on {n} rows"
        ]
        if out is not None:
            lines.append(f"wrote {n} log-densities to {out}")
        return summary | {"out": out}, lines

    def sweep(
        self,
        source: Source,
        ks: list[int],
        criterion: str | None,
        options: dict[str, Any],
        common: dict[str, Any],
    ) -> tuple[Any, dict[str, Any], list[str]]:
        cts = [c.strip() for c in options["covariances"].split(",") if c.strip()]
        res = sweep_gmm(
            source, ks, cts, criterion=criterion or "bic", max_iter=options["max_iter"], **common
        )
        k_best, ct_best = res.best
        lines = ["k  covariance  BIC  AIC"] + [
            f"{r['k']:<3d}{r['covariance_type']:<11s} {r['bic']:.6g}  {r['aic']:.6g}"
            for r in res.table()
        ]
        lines.append(f"best: k={k_best}, covariance {ct_best} ({res.criterion})")
        return res, {"k": k_best, "covariance_type": ct_best}, lines


class SampleKind(ModelKind):
    """A scikit-learn clusterer fitted on a sample (:class:`SampleClusterer`)."""

    name = "sample"
    estimator = SampleClusterer
    only: ClassVar[dict[str, str]] = {
        "estimator": "--estimator",
        "eps": "--eps",
        "min_samples": "--min-samples",
        "sample_size": "--sample-size",
        "labeler": "--labeler",
        "n_neighbors": "--n-neighbors",
    }
    #: What --k means for each estimator (the others do not take a number of clusters).
    K_PARAM: ClassVar[dict[str, str]] = {
        "agglomerative": "n_clusters",
        "spectral": "n_clusters",
        "birch": "n_clusters",
        "hdbscan": "min_cluster_size",
    }

    def build(self, params: dict[str, Any], client: Any, progress: bool) -> Any:
        k = params.pop("k")
        name = params.pop("estimator", "dbscan")
        est_params: dict[str, Any] = {}
        for key in ("eps", "min_samples"):
            if key in params:
                est_params[key] = params.pop(key)
        if name in self.K_PARAM:
            est_params[self.K_PARAM[name]] = k
        for key in ("init", "n_init", "batch_size", "half_life", "time_unit", "checkpoint"):
            if key in params:
                raise ParameterError(
                    f"--{key.replace('_', '-')} does not apply to --model sample; drop it"
                )
        return SampleClusterer(name, estimator_params=est_params, **params, progress=progress)

    def validate(self, model: Any) -> None:
        sample_clusterer.validate_params(model)

    def fit_summary(self, model: Any) -> tuple[dict[str, Any], str]:
        labels = model.sample_labels_
        found = sorted(int(v) for v in np.unique(labels) if v >= 0)
        summary: dict[str, Any] = {
            "estimator": type(model.estimator_).__name__,
            "sample_size": len(labels),
            "clusters": len(found),
            "sample_noise": float(np.mean(labels < 0)),
        }
        line = (
            f"{summary['estimator']} on a {len(labels)}-row sample: {len(found)} clusters, "
            f"{100 * summary['sample_noise']:.1f}% of the sample noise"
        )
        return summary, line

    def check_score_output(self, out: str | None) -> None:
        raise ParameterError("a sample model has no score; use `streamclust predict`")

    def sweep(self, *args: Any) -> Any:
        raise ParameterError("select compares kmeans or gmm models; pass --model kmeans or gmm")


KINDS: dict[str, ModelKind] = {"kmeans": KMeansKind(), "gmm": GMMKind(), "sample": SampleKind()}

model_option = click.option(
    "--model",
    "model_kind",
    type=click.Choice(list(KINDS)),
    default="kmeans",
    show_default=True,
    help="StreamingKMeans, StreamingGaussianMixture, or a scikit-learn clusterer on a "
    "sample (SampleClusterer).",
)


def estimator_options(fn: Any) -> Any:
    """The options of the estimators (--model picks which; the others keep its defaults)."""
    fn = click.option(
        "--n-neighbors", type=int, default=None, help="sample: neighbours of --labeler knn [5]."
    )(fn)
    fn = click.option(
        "--labeler", default=None, help="sample: nearest (default) or knn: how rows are labelled."
    )(fn)
    fn = click.option(
        "--sample-size", type=int, default=None, help="sample: rows the estimator sees [100000]."
    )(fn)
    fn = click.option("--min-samples", type=int, default=None, help="sample: dbscan [5].")(fn)
    fn = click.option("--eps", type=float, default=None, help="sample: dbscan's radius [0.5].")(fn)
    fn = click.option(
        "--estimator",
        type=click.Choice(sorted(ESTIMATORS)),
        default=None,
        help="sample: the scikit-learn clusterer [dbscan] (--k sets its clusters).",
    )(fn)
    fn = click.option(
        "--step-decay", type=float, default=None, help="gmm: online EM step decay [0.6]."
    )(fn)
    fn = click.option(
        "--step-offset", type=float, default=None, help="gmm: online EM step offset [1]."
    )(fn)
    fn = click.option("--max-iter", type=int, default=None, help="gmm: EM passes [100].")(fn)
    fn = click.option(
        "--reg-covar", type=float, default=None, help="gmm: added to variances [1e-6]."
    )(fn)
    fn = click.option(
        "--tol", type=float, default=None, help="gmm: lower-bound change to stop [1e-3]."
    )(fn)
    fn = click.option(
        "--covariance",
        "--covariance-type",
        "covariance_type",
        default=None,
        help="gmm: full (default), tied, diag or spherical.",
    )(fn)
    fn = click.option(
        "--shuffle/--no-shuffle", default=None, help="kmeans: shuffle within blocks [on]."
    )(fn)
    fn = click.option("--reassignment-ratio", type=float, default=None, help="kmeans [0.01].")(fn)
    fn = click.option("--refine", type=int, default=None, help="kmeans: Lloyd passes after [0].")(
        fn
    )
    fn = click.option(
        "--selection", default=None, help="kmeans: last_n (default) or full (one exact pass)."
    )(fn)
    fn = click.option(
        "--last-n", type=int, default=None, help="kmeans: batches in the selection [10]."
    )(fn)
    fn = click.option("--max-steps", type=int, default=None, help="kmeans: mini-batch steps.")(fn)
    fn = click.option(
        "--half-life",
        type=float,
        default=None,
        help="Old batches weigh half after N batches (kmeans: or rows): follow a drift [off].",
    )(fn)
    fn = click.option(
        "--time-unit", default=None, help="kmeans: what --half-life counts, batches or rows."
    )(fn)
    fn = click.option(
        "--max-no-improvement",
        type=int,
        default=None,
        help="kmeans: stop a candidate after N steps without improvement [off].",
    )(fn)
    fn = click.option("--max-passes", type=int, default=None, help="kmeans: passes over DATA [1].")(
        fn
    )
    fn = click.option(
        "--init-size", type=int, default=None, help="kmeans: rows sampled to initialize."
    )(fn)
    fn = click.option("--random-state", type=int, default=0, show_default=True)(fn)
    fn = click.option(
        "--batch-size", type=int, default=None, help="Rows per mini-batch [4096 gmm, 1024]."
    )(fn)
    fn = click.option(
        "--n-init",
        type=_N_INIT,
        default=None,
        help="Initializations, or auto for kmeans (1 for k-means++) [kmeans: 3, gmm: 1].",
    )(fn)
    fn = click.option(
        "--init",
        default=None,
        help="kmeans: k-means++ (default) or random; gmm: kmeans (default), k-means++ or random.",
    )(fn)
    fn = click.option(
        "--k",
        "--n-clusters",
        "--n-components",
        "k",
        type=int,
        default=8,
        show_default=True,
        help="Clusters (kmeans) or mixture components (gmm).",
    )(fn)
    return model_option(fn)


class _NInit(click.ParamType):
    """An int, or ``auto`` (scikit-learn's rule, for K-Means)."""

    name = "INTEGER|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is not an integer or auto", param, ctx)


_N_INIT = _NInit()


def kind_of(model: Any) -> ModelKind:
    """The kind of a fitted model (e.g. one loaded with --model-dir)."""
    return next(kind for kind in KINDS.values() if isinstance(model, kind.estimator))


def build_estimator(model_kind: str, params: dict[str, Any], client: Any, progress: bool) -> Any:
    """The estimator of ``--model`` from the options given (the others keep its defaults);
    an option of the other kind is refused in one line."""
    kind = KINDS[model_kind]
    for other in KINDS.values():
        if other is kind:
            continue
        for name, option in other.only.items():
            if params.get(name) is not None:
                raise ParameterError(
                    f"{option} applies to --model {other.name}; drop it or pass "
                    f"--model {other.name}"
                )
    given = {k: v for k, v in params.items() if v is not None}  # the other kinds' are None
    return kind.build(given, client, progress)


def _sum_written(path: str) -> tuple[float, int]:
    """Sum and length of a 1-D result written to a .npy file or Zarr store, read in chunks."""
    import zarr

    arr: Any = np.load(path, mmap_mode="r") if path.endswith(".npy") else zarr.open_array(path)
    step = 1 << 20
    total = sum(float(np.sum(arr[i : i + step])) for i in range(0, arr.shape[0], step))
    return total, int(arr.shape[0])
