"""The kinds of model the commands fit (``--model``): how each is built from the
options, and how each reports a fit, a score and a sweep."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .. import bayesian_mixture, gmm, kmeans, sample_clusterer
from ..bayesian_mixture import StreamingBayesianGaussianMixture
from ..exceptions import ParameterError
from ..gmm import StreamingGaussianMixture
from ..kmeans import StreamingKMeans
from ..sample_clusterer import SampleClusterer
from ..selection import sweep_gmm, sweep_kmeans
from ..sources import Source

__all__ = [
    "KINDS",
    "BayesianKind",
    "GMMKind",
    "KMeansKind",
    "ModelKind",
    "SampleKind",
    "build_estimator",
    "kind_of",
]


class ModelKind:
    """What the commands need to know about one kind of model."""

    name: str
    estimator: type
    #: Options that belong to this kind only (estimator parameter -> option).
    only: ClassVar[dict[str, str]]
    #: Options of another kind that this kind takes too.
    shares: ClassVar[tuple[str, ...]] = ()

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
    estimator: type = StreamingGaussianMixture
    only: ClassVar[dict[str, str]] = {
        "covariance_type": "--covariance",
        "tol": "--tol",
        "reg_covar": "--reg-covar",
        "max_iter": "--max-iter",
        "step_offset": "--step-offset",
        "step_decay": "--step-decay",
    }

    def build(self, params: dict[str, Any], client: Any, progress: bool) -> Any:
        if "init" in params:  # scikit-learn's mixtures call it init_params
            params["init_params"] = params.pop("init")
        return super().build(params, client, progress)

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
        ic = gmm.criteria(model, *_log_likelihood(model, source, out, overwrite))
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


class BayesianKind(GMMKind):
    """A variational Bayesian mixture (:class:`StreamingBayesianGaussianMixture`)."""

    name = "bgmm"
    estimator = StreamingBayesianGaussianMixture
    only: ClassVar[dict[str, str]] = {
        "weight_concentration_prior_type": "--prior-type",
        "weight_concentration_prior": "--weight-prior",
        "init_sample_size": "--init-sample-size",
    }
    shares = ("covariance_type", "tol", "reg_covar", "max_iter")

    def build(self, params: dict[str, Any], client: Any, progress: bool) -> Any:
        if "half_life" in params:
            raise ParameterError("--half-life does not apply to --model bgmm; drop it")
        return super().build(params, client, progress)

    def validate(self, model: Any) -> None:
        bayesian_mixture.validate_params(model)

    def fit_summary(self, model: Any) -> tuple[dict[str, Any], str]:
        summary, _ = super().fit_summary(model)
        used = int(np.sum(model.weights_ > 0.01))
        summary["components_used"] = used
        line = (
            f"{used} of {model.n_components} components weigh over 1%; lower bound "
            f"{model.lower_bound_:.6g} after {model.n_iter_} iterations"
            + ("" if model.converged_ else " (not converged: raise --max-iter or --tol)")
        )
        return summary, line

    def score(
        self, model: Any, source: Source, out: str | None, overwrite: bool
    ) -> tuple[dict[str, Any], list[str]]:
        total, n = _log_likelihood(model, source, out, overwrite)
        lines = [f"mean log-likelihood {total / n:.10g} on {n} rows"]
        if out is not None:
            lines.append(f"wrote {n} log-densities to {out}")
        return {"rows": n, "score": total / n, "out": out}, lines

    def sweep(self, *args: Any) -> Any:
        raise ParameterError(
            "select compares kmeans or gmm models; a bgmm chooses its components itself"
        )


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


KINDS: dict[str, ModelKind] = {
    "kmeans": KMeansKind(),
    "gmm": GMMKind(),
    "bgmm": BayesianKind(),
    "sample": SampleKind(),
}


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
            if params.get(name) is not None and name not in kind.shares:
                raise ParameterError(
                    f"{option} applies to --model {other.name}; drop it or pass "
                    f"--model {other.name}"
                )
    given = {k: v for k, v in params.items() if v is not None}  # the other kinds' are None
    return kind.build(given, client, progress)


def _log_likelihood(
    model: Any, source: Source, out: str | None, overwrite: bool
) -> tuple[float, int]:
    """A mixture's total log-likelihood over ``source`` and its rows: in one pass with no
    per-row output, or with every row's log-density written to ``out`` and summed there."""
    if out is None:
        return model.total_log_likelihood(source)
    model.score_samples(source, out=out, overwrite=overwrite)
    return _sum_written(out)


def _sum_written(path: str) -> tuple[float, int]:
    """Sum and length of a 1-D result written to a .npy file or Zarr store, read in chunks."""
    import zarr

    arr: Any = np.load(path, mmap_mode="r") if path.endswith(".npy") else zarr.open_array(path)
    step = 1 << 20
    total = sum(float(np.sum(arr[i : i + step])) for i in range(0, arr.shape[0], step))
    return total, int(arr.shape[0])
