"""The options that build an estimator on the command line (``--model`` and the
parameters of every kind; those of another kind than ``--model`` are refused)."""

from __future__ import annotations

from typing import Any

import click

from ..sample_clusterer import ESTIMATORS
from .kinds import KINDS

__all__ = ["estimator_options", "model_option"]

model_option = click.option(
    "--model",
    "model_kind",
    type=click.Choice(list(KINDS)),
    default="kmeans",
    show_default=True,
    help="StreamingKMeans, StreamingGaussianMixture, StreamingBayesianGaussianMixture, or "
    "a scikit-learn clusterer on a sample (SampleClusterer).",
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
        "--init-sample-size",
        type=int,
        default=None,
        help="bgmm: start from a fit on a sample of this many rows [off].",
    )(fn)
    fn = click.option(
        "--weight-prior",
        "weight_concentration_prior",
        type=float,
        default=None,
        help="bgmm: weight concentration prior [1/k]; smaller uses fewer components.",
    )(fn)
    fn = click.option(
        "--prior-type",
        "weight_concentration_prior_type",
        default=None,
        help="bgmm: dirichlet_process (default) or dirichlet_distribution.",
    )(fn)
    fn = click.option(
        "--step-decay", type=float, default=None, help="gmm: online EM step decay [0.6]."
    )(fn)
    fn = click.option(
        "--step-offset", type=float, default=None, help="gmm: online EM step offset [1]."
    )(fn)
    fn = click.option("--max-iter", type=int, default=None, help="gmm, bgmm: EM passes [100].")(fn)
    fn = click.option(
        "--reg-covar", type=float, default=None, help="gmm, bgmm: added to variances [1e-6]."
    )(fn)
    fn = click.option(
        "--tol", type=float, default=None, help="gmm, bgmm: lower-bound change to stop [1e-3]."
    )(fn)
    fn = click.option(
        "--covariance",
        "--covariance-type",
        "covariance_type",
        default=None,
        help="gmm, bgmm: full (default), tied, diag or spherical.",
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
        help="Clusters (kmeans) or mixture components (gmm, bgmm).",
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
