"""The ``streamclust`` command line.

Every estimator parameter is an option of the same name in kebab case. Bad
arguments, paths or files print one line on stderr and exit with code 2;
nothing is written.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from . import gmm, kmeans
from .anomaly import DensityAnomalyDetector, validate_stream_params
from .datasets import CHAPTER_LOOP, make_chapter_blobs, write_blobs_zarr
from .exceptions import ParameterError, SourceError, StreamclustError, one_line
from .gmm import StreamingGaussianMixture, criteria
from .ingest import Ingest
from .kmeans import StreamingKMeans
from .persistence import check_model_output, load
from .plotting import require_matplotlib
from .runtime import get_client, make_security
from .selection import sweep_gmm, sweep_kmeans
from .sources import check_output, check_writable, iter_csv_blocks, open_source, write_zarr
from .version import __version__

_SCHEDULER_HELP = (
    "Where to run: a scheduler address (tcp://host:8786, tls://...), 'local' (start a local "
    "cluster of worker processes), 'threads' or 'sync' (in this process). Default: "
    "DASK_SCHEDULER_ADDRESS if set, else threads."
)


def _parse_shape(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        rows, cols = (int(v) for v in value.split(","))
    except ValueError as exc:
        raise ParameterError(f"--shape {value!r} must be ROWS,COLS (ROWS may be -1)") from exc
    return rows, cols


def data_options(fn: Any) -> Any:
    """Options that say how to read DATA."""
    fn = click.option("--header", is_flag=True, help="CSV batch files start with a header row.")(fn)
    fn = click.option("--component", default=None, help="Array inside a Zarr group.")(fn)
    fn = click.option(
        "--shape", default=None, help="ROWS,COLS of a raw binary file (ROWS=-1 infers)."
    )(fn)
    fn = click.option("--dtype", default=None, help="dtype of a raw binary file, e.g. float32.")(fn)
    return fn


def cluster_options(fn: Any) -> Any:
    """Options that say which Dask scheduler the work runs on."""
    fn = click.option(
        "--tls-key", default=None, type=click.Path(dir_okay=False), help="Client TLS key."
    )(fn)
    fn = click.option(
        "--tls-cert", default=None, type=click.Path(dir_okay=False), help="Client TLS certificate."
    )(fn)
    fn = click.option(
        "--tls-ca",
        default=None,
        type=click.Path(dir_okay=False),
        help="CA certificate for tls:// schedulers.",
    )(fn)
    fn = click.option("--scheduler", default=None, envvar=None, help=_SCHEDULER_HELP)(fn)
    return fn


def run_options(fn: Any) -> Any:
    """Options that say where the work runs, and how it reports."""
    fn = cluster_options(fn)
    fn = click.option("--progress/--no-progress", default=True, help="Progress bars on terminals.")(
        fn
    )
    fn = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")(fn)
    return fn


def _open(
    data: str, dtype: str | None, shape: str | None, component: str | None, header: bool
) -> Any:

    return open_source(
        data, dtype=dtype, shape=_parse_shape(shape), component=component, header=header
    )


def _client(
    scheduler: str | None, tls_ca: str | None, tls_cert: str | None, tls_key: str | None
) -> Any:
    if not (tls_ca or tls_cert or tls_key):
        return scheduler

    if not scheduler or not scheduler.startswith("tls://"):
        raise ParameterError("--tls-ca/--tls-cert/--tls-key need --scheduler tls://HOST:PORT")
    return get_client(scheduler, security=make_security(tls_ca, tls_cert, tls_key))


def _check_new_output(path: str, overwrite: bool) -> None:
    """A path to write to: new, or replaced with --overwrite (see ``check_output``)."""

    check_output(path, overwrite, "--overwrite")


def _check_array_output(path: str, overwrite: bool) -> None:
    """A ``.zarr`` or ``.npy`` path for per-row results."""
    if Path(path).suffix.lower() not in (".zarr", ".npy"):
        raise SourceError(f"{path}: an output of per-row results must end in .zarr or .npy")
    _check_new_output(path, overwrite)


def overwrite_option(fn: Any) -> Any:
    """--overwrite: replace an output that exists (refused without it)."""
    return click.option(
        "--overwrite", is_flag=True, help="Replace the output if it exists (refused without)."
    )(fn)


def _emit(as_json: bool, summary: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamclust")
def cli() -> None:
    """Clustering for data that does not fit in memory or never stops arriving."""


#: Options that belong to one kind of model only (estimator parameter -> option).
_KMEANS_ONLY = {
    "init_size": "--init-size",
    "max_passes": "--max-passes",
    "max_steps": "--max-steps",
    "last_n": "--last-n",
    "selection": "--selection",
    "refine": "--refine",
    "reassignment_ratio": "--reassignment-ratio",
    "shuffle": "--shuffle/--no-shuffle",
}
_GMM_ONLY = {
    "covariance_type": "--covariance",
    "tol": "--tol",
    "reg_covar": "--reg-covar",
    "max_iter": "--max-iter",
    "step_offset": "--step-offset",
    "step_decay": "--step-decay",
}


def _validate_params(model: Any) -> None:
    """Check a K-Means or mixture model's parameters as its ``fit`` would."""

    module = kmeans if isinstance(model, kmeans.StreamingKMeans) else gmm
    module.validate_params(model)


def _estimator(model_kind: str, params: dict[str, Any], client: Any, progress: bool) -> Any:
    """The estimator of ``--model``, from the options given (the others keep its defaults)."""

    other = _GMM_ONLY if model_kind == "kmeans" else _KMEANS_ONLY
    for name, option in other.items():
        if params.get(name) is not None:
            want = "gmm" if model_kind == "kmeans" else "kmeans"
            raise ParameterError(
                f"{option} applies to --model {want}; drop it or pass --model {want}"
            )
    given = {k: v for k, v in params.items() if v is not None and k not in other}
    k = given.pop("k")
    if model_kind == "kmeans":
        return StreamingKMeans(k, **given, client=client, progress=progress)
    return StreamingGaussianMixture(k, **given, client=client, progress=progress)


def estimator_options(fn: Any) -> Any:
    """The options of the estimators (--model picks which; the others keep its defaults)."""
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
        "--n-init", type=int, default=None, help="Initializations [kmeans: 3, gmm: 1]."
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
    fn = click.option(
        "--model",
        "model_kind",
        type=click.Choice(["kmeans", "gmm"]),
        default="kmeans",
        show_default=True,
        help="StreamingKMeans or StreamingGaussianMixture.",
    )(fn)
    return fn


@cli.command()
@click.argument("data")
@estimator_options
@click.option("--out", required=True, help="Directory to save the fitted model in.")
@overwrite_option
@click.option(
    "--checkpoint",
    default=None,
    help="Save progress to this directory after every block; running the same "
    "command again resumes from it.",
)
@data_options
@run_options
def fit(
    data: str,
    model_kind: str,
    out: str,
    overwrite: bool,
    dtype: str | None,
    shape: str | None,
    component: str | None,
    header: bool,
    scheduler: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    as_json: bool,
    progress: bool,
    **params: Any,
) -> None:
    """Fit a model on DATA and save it to --out."""

    check_model_output(out, overwrite)
    if not Path(out).resolve().parent.is_dir():
        raise SourceError(f"{Path(out).parent}: no such directory for --out")

    check_writable(Path(out).resolve().parent)  # before the fit, not after it
    model = _estimator(model_kind, params, None, progress)
    source = _open(data, dtype, shape, component, header)
    model.set_params(client=_client(scheduler, tls_ca, tls_cert, tls_key))
    t0 = time.perf_counter()
    model.fit(source)
    seconds = time.perf_counter() - t0
    model.set_params(client=None, checkpoint=None)
    model.save(out, overwrite=overwrite)
    summary = {
        "model": model_kind,
        "data": data,
        "rows": source.n_rows,
        "features": source.n_features,
        "seconds": seconds,
        "out": out,
    }
    head = (
        f"fitted {model_kind} k={params['k']} on {source.n_rows} rows x "
        f"{source.n_features} features in {seconds:.2f} s"
    )
    if model_kind == "kmeans":
        summary |= {
            "n_clusters": model.n_clusters,
            "inertia": model.inertia_,
            "best_init": model.best_init_,
            "n_steps": model.n_steps_,
            "n_passes": model.n_passes_,
        }
        result = (
            f"inertia {model.inertia_:.6g} (candidate {model.best_init_} of {model.n_init}, "
            f"{model.n_steps_} steps)"
        )
    else:
        summary |= {
            "n_components": model.n_components,
            "covariance_type": model.covariance_type,
            "lower_bound": model.lower_bound_,
            "converged": model.converged_,
            "n_iter": model.n_iter_,
            "weights": model.weights_.tolist(),
        }
        result = (
            f"{model.covariance_type} covariances, mean log-likelihood {model.lower_bound_:.6g} "
            f"after {model.n_iter_} EM iterations"
            + ("" if model.converged_ else " (not converged: raise --max-iter or --tol)")
        )
    _emit(as_json, summary, [head, result, f"saved to {out}"])


def _load(model_dir: str) -> Any:

    return load(model_dir)


@cli.command()
@click.argument("data")
@click.option("--model-dir", required=True, help="Directory of a saved model.")
@click.option("--out", required=True, help="Where labels go: a .zarr store or .npy file.")
@overwrite_option
@data_options
@run_options
def predict(
    data: str,
    model_dir: str,
    out: str,
    overwrite: bool,
    dtype: str | None,
    shape: str | None,
    component: str | None,
    header: bool,
    scheduler: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Write the label of every row of DATA to --out (nearest center, or most likely
    mixture component)."""
    _check_array_output(out, overwrite)
    model = _load(model_dir)
    source = _open(data, dtype, shape, component, header)
    model.set_params(client=_client(scheduler, tls_ca, tls_cert, tls_key), progress=progress)
    t0 = time.perf_counter()
    model.predict(source, out=out, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    summary = {"data": data, "rows": source.n_rows, "out": out, "seconds": seconds}
    _emit(as_json, summary, [f"wrote {source.n_rows} labels to {out} in {seconds:.2f} s"])


@cli.command()
@click.argument("data")
@click.option("--model-dir", required=True, help="Directory of a saved model.")
@click.option(
    "--out",
    default=None,
    help="gmm: also write every row's log-density to this .zarr store or .npy file.",
)
@overwrite_option
@data_options
@run_options
def score(
    data: str,
    model_dir: str,
    out: str | None,
    overwrite: bool,
    dtype: str | None,
    shape: str | None,
    component: str | None,
    header: bool,
    scheduler: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Print the model's score on DATA: negative inertia (kmeans), or the mean
    log-likelihood with BIC and AIC (gmm)."""

    if out is not None:
        _check_array_output(out, overwrite)
    model = _load(model_dir)
    gmm = isinstance(model, StreamingGaussianMixture)
    if out is not None and not gmm:
        raise ParameterError(
            "--out writes per-row log-densities, which only a gmm model has; "
            "use `streamclust predict` for K-Means labels"
        )
    source = _open(data, dtype, shape, component, header)
    model.set_params(client=_client(scheduler, tls_ca, tls_cert, tls_key), progress=progress)
    if not gmm:
        value = model.score(source)
        summary = {"data": data, "rows": source.n_rows, "score": value, "inertia": -value}
        lines = [f"score {value:.10g} (inertia {-value:.10g}) on {source.n_rows} rows"]
        _emit(as_json, summary, lines)
        return
    if out is None:
        ic = model.information_criteria(source)
        total, n = ic["log_likelihood"], ic["n_samples"]
    else:
        model.score_samples(source, out=out, overwrite=overwrite)
        total, n = _sum_written(out)
    ic = criteria(model, total, n)
    value, bic, aic = ic["score"], ic["bic"], ic["aic"]
    summary = {"data": data, "rows": n, "score": value, "bic": bic, "aic": aic, "out": out}
    lines = [f"mean log-likelihood {value:.10g}, BIC {bic:.10g}, AIC {aic:.10g} on {n} rows"]
    if out is not None:
        lines.append(f"wrote {n} log-densities to {out}")
    _emit(as_json, summary, lines)


@cli.command()
@click.argument("data")
@click.option("--model-dir", required=True, help="Directory of a saved model.")
@click.option("--percentile", type=float, default=4.0, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["exact", "sketch"]),
    default="exact",
    show_default=True,
    help="exact: np.percentile bit for bit (usually 2 passes); sketch: t-digest, 1 pass.",
)
@click.option("--out", default=None, help="Flags (-1 anomaly / 1 normal): a .zarr or .npy path.")
@click.option("--scores-out", default=None, help="Scores: a .zarr or .npy path.")
@overwrite_option
@data_options
@run_options
def detect(
    data: str,
    model_dir: str,
    percentile: float,
    method: str,
    out: str | None,
    scores_out: str | None,
    overwrite: bool,
    dtype: str | None,
    shape: str | None,
    component: str | None,
    header: bool,
    scheduler: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Flag the rows of DATA whose score falls below the --percentile of all scores."""

    for path in (out, scores_out):
        if path is not None:
            _check_array_output(path, overwrite)
    model = _load(model_dir)
    source = _open(data, dtype, shape, component, header)
    client = _client(scheduler, tls_ca, tls_cert, tls_key)
    model.set_params(client=client, progress=progress)
    det = DensityAnomalyDetector(
        model, percentile=percentile, method=method, client=client, progress=progress
    )
    t0 = time.perf_counter()
    det.fit(source)
    summary = det.detect(source, out=out, scores_out=scores_out, overwrite=overwrite)
    summary |= {"data": data, "passes": det.n_passes_ + 1, "seconds": time.perf_counter() - t0}
    lines = [
        f"threshold {det.threshold_:.10g} ({percentile:g}th percentile, {method}): "
        f"{summary['anomalies']} anomalies in {summary['rows']} rows ({summary['rate']:.2%})"
    ]
    lines += [f"wrote {p}" for p in (summary["out"], summary["scores_out"]) if p]
    _emit(as_json, summary, lines)


@cli.command()
@click.argument("incoming")
@estimator_options
@click.option("--state", required=True, help="Directory for checkpoints, flags and rejects.")
@click.option("--detect", "detect_", is_flag=True, help="Score and flag every batch.")
@click.option("--percentile", type=float, default=4.0, show_default=True)
@click.option(
    "--method",
    type=click.Choice(["exact", "sketch"]),
    default="sketch",
    show_default=True,
    help="Threshold over the window: exact (needs --window) or a t-digest.",
)
@click.option("--window", type=int, default=None, help="Threshold over the last N batches.")
@click.option("--checkpoint-every", type=int, default=1, show_default=True)
@click.option("--once", is_flag=True, help="Apply what is there, then exit.")
@click.option(
    "--poll-interval", type=float, default=1.0, show_default=True, help="Seconds between looks."
)
@click.option("--header", is_flag=True, help="CSV batch files start with a header row.")
@click.option(
    "--reconnect-timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for a lost scheduler before checkpointing and exiting.",
)
@click.option(
    "--wait-lock",
    is_flag=True,
    help="If another stream uses --state, wait for it to finish (default: exit at once).",
)
@cluster_options
@click.option("--progress/--no-progress", default=True, help="A status line on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def stream(
    incoming: str,
    model_kind: str,
    state: str,
    detect_: bool,
    percentile: float,
    method: str,
    window: int | None,
    checkpoint_every: int,
    once: bool,
    poll_interval: float,
    header: bool,
    reconnect_timeout: float,
    wait_lock: bool,
    scheduler: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    progress: bool,
    as_json: bool,
    **params: Any,
) -> None:
    """Apply the batch files landing in INCOMING to a model, exactly once.

    Producers write NAME.tmp and rename it to NAME.npy, .csv or .parquet;
    batches are applied in name order. Killed at any point, the same command
    resumes from the last checkpoint in --state with the same result.

    Batches are applied in this process unless --scheduler (or DASK_SCHEDULER_ADDRESS)
    names a cluster: then each update runs on a worker, and a lost scheduler is waited
    for (--reconnect-timeout) before the stream exits.
    """

    config = {
        "model": model_kind,
        "params": {k: v for k, v in sorted(params.items()) if v is not None},
        "percentile": percentile if detect_ else None,
        "method": method if detect_ else None,
        "window": window if detect_ else None,
    }
    # Bad options fail here, before the state directory is touched.
    probe = _estimator(model_kind, params, "sync", False)
    _validate_params(probe)
    if detect_:
        validate_stream_params(
            DensityAnomalyDetector(probe, percentile=percentile, method=method, window=window)
        )
    job = Ingest(
        incoming,
        state,
        lambda: _estimator(model_kind, params, "sync", False),
        config,
        checkpoint_every=checkpoint_every,
        header=header,
        client=_client(scheduler, tls_ca, tls_cert, tls_key),
        reconnect_timeout=reconnect_timeout,
        wait_lock=wait_lock,
    )
    for note in job.state.notes:  # what resuming had to work around, a line each
        click.echo(f"streamclust: {note}", err=True)
    t0 = time.perf_counter()
    seen = {"batches": 0, "rows": 0, "rejected": 0, "last": 0.0}
    last_reject: list[str] = []
    tty = sys.stderr.isatty()

    def report(result: Any, job: Any) -> None:
        seen["batches"] += 1
        seen["rows"] += result.rows
        seen["rejected"] += result.rejected is not None
        if result.rejected is not None:
            last_reject[:] = [result.rejected]
        now = time.perf_counter()
        if not progress or now - seen["last"] < 1.0:
            return
        seen["last"] = now
        elapsed = max(now - t0, 1e-9)
        led = job.ledger
        line = (
            f"{seen['batches'] / elapsed:.1f} batches/s, {seen['rows'] / elapsed:,.0f} rows/s, "
            f"{len(led.batches)} applied, {seen['rejected']} rejected"
        )
        if led.threshold is not None:
            line += f", threshold {led.threshold:.6g}, anomaly rate {led.anomalies / led.rows:.2%}"
        click.echo(("\r" if tty else "") + line, err=True, nl=not tty)

    with job:
        ledger = job.run(once=once, poll_interval=poll_interval, report=report)
    seconds = time.perf_counter() - t0
    if progress and tty:
        click.echo("", err=True)
    summary = {
        "state": state,
        "batches_total": len(ledger.batches),
        "batches": seen["batches"] - seen["rejected"],
        "rejected": seen["rejected"],
        "rows": seen["rows"],
        "rows_total": ledger.rows,
        "anomalies_total": ledger.anomalies,
        "threshold": ledger.threshold,
        "seconds": seconds,
        "rows_per_s": seen["rows"] / seconds if seconds else 0.0,
    }
    rejected = f"{summary['rejected']} rejected"
    if last_reject:
        where = os.path.join(state, "rejected", "")
        rejected += f" (reasons in {where}; the last: {last_reject[0]})"
    lines = [
        f"applied {summary['batches']} batches ({seen['rows']} rows) in {seconds:.2f} s, "
        f"{rejected}; {len(ledger.batches)} batches in {state}"
    ]
    if ledger.threshold is not None:
        lines.append(f"threshold {ledger.threshold:.6g}, {ledger.anomalies} anomalies so far")
    _emit(as_json, summary, lines)


def _parse_ks(value: str) -> list[int]:
    """``2..20`` (inclusive) or ``2,4,8``."""
    try:
        if ".." in value:
            lo, hi = (int(v) for v in value.split(".."))
            ks = list(range(lo, hi + 1))
        else:
            ks = [int(v) for v in value.split(",")]
    except ValueError as exc:
        raise ParameterError(f"--k {value!r} must be LO..HI or a list like 2,4,8") from exc
    if ".." in value and lo > hi:
        raise ParameterError(
            f"--k {value!r} counts down; pass LO..HI with LO <= HI, e.g. {hi}..{lo}"
        )
    if not ks or min(ks) < 1:
        raise ParameterError(f"--k {value!r} must name values >= 1, e.g. 2..20")
    return ks


@cli.command()
@click.argument("data")
@click.option(
    "--model",
    "model_kind",
    type=click.Choice(["kmeans", "gmm"]),
    default="kmeans",
    show_default=True,
)
@click.option("--k", "k_values", default="2..10", show_default=True, help="LO..HI or 2,4,8.")
@click.option(
    "--criterion",
    default=None,
    help="kmeans: silhouette (default) or elbow; gmm: bic (default) or aic.",
)
@click.option(
    "--covariance",
    "covariances",
    default="full,tied,diag,spherical",
    show_default=True,
    help="gmm: covariance types to compare.",
)
@click.option("--n-init", type=int, default=None, help="Initializations per model [3 / 1].")
@click.option("--batch-size", type=int, default=None, help="Mini-batch rows [1024 / 4096].")
@click.option("--max-passes", type=int, default=1, show_default=True, help="kmeans passes.")
@click.option("--max-iter", type=int, default=100, show_default=True, help="gmm EM passes.")
@click.option(
    "--silhouette-sample", type=int, default=10_000, show_default=True, help="kmeans rows."
)
@click.option("--random-state", type=int, default=0, show_default=True)
@click.option("--plot", "plot_path", default=None, help="Save the curves as this PNG file.")
@overwrite_option
@data_options
@run_options
def select(
    data: str,
    model_kind: str,
    k_values: str,
    criterion: str | None,
    covariances: str,
    n_init: int | None,
    batch_size: int | None,
    max_passes: int,
    max_iter: int,
    silhouette_sample: int,
    random_state: int,
    plot_path: str | None,
    overwrite: bool,
    dtype: str | None,
    shape: str | None,
    component: str | None,
    header: bool,
    scheduler: str | None,
    tls_ca: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    as_json: bool,
    progress: bool,
) -> None:
    """Fit every k (and covariance type) in shared passes over DATA; print the table."""

    ks = _parse_ks(k_values)
    if model_kind == "kmeans" and min(ks) < 2 and (criterion or "silhouette") == "silhouette":
        raise ParameterError(
            f"--k {k_values!r} includes k={min(ks)}, where the silhouette is undefined (one "
            f"cluster); pass --k 2..{max(max(ks), 2)}, or --criterion elbow to start at 1"
        )
    if plot_path is not None:
        if not plot_path.lower().endswith(".png"):
            raise SourceError(f"{plot_path}: --plot must end in .png")
        _check_new_output(plot_path, overwrite)

        require_matplotlib()  # before any computing
    source = _open(data, dtype, shape, component, header)
    client = _client(scheduler, tls_ca, tls_cert, tls_key)
    common: dict[str, Any] = {"random_state": random_state, "client": client}
    common |= {"progress": progress}
    if n_init is not None:
        common["n_init"] = n_init
    if batch_size is not None:
        common["batch_size"] = batch_size
    t0 = time.perf_counter()
    if model_kind == "kmeans":
        res: Any = sweep_kmeans(
            source,
            ks,
            criterion=criterion or "silhouette",
            max_passes=max_passes,
            silhouette_sample=silhouette_sample,
            **common,
        )
        best: dict[str, Any] = {"k": res.best_k, "knee_k": res.knee_k}
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
    else:
        cts = [c.strip() for c in covariances.split(",") if c.strip()]
        res = sweep_gmm(source, ks, cts, criterion=criterion or "bic", max_iter=max_iter, **common)
        k_best, ct_best = res.best
        best = {"k": k_best, "covariance_type": ct_best}
        lines = ["k  covariance  BIC  AIC"] + [
            f"{r['k']:<3d}{r['covariance_type']:<11s} {r['bic']:.6g}  {r['aic']:.6g}"
            for r in res.table()
        ]
        lines.append(f"best: k={k_best}, covariance {ct_best} ({res.criterion})")
    seconds = time.perf_counter() - t0
    if plot_path is not None:
        _save_figure(res.plot(), plot_path)
        lines.append(f"saved {plot_path}")
    summary = {
        "model": model_kind,
        "data": data,
        "rows": source.n_rows,
        "table": res.table(),
        "best": best,
        "criterion": res.criterion,
        "seconds": seconds,
        "plot": plot_path,
    }
    _emit(as_json, summary, lines)


def _save_figure(fig: Any, path: str) -> None:
    """``fig`` as a PNG at ``path``, written under a temporary name and renamed."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _sum_written(path: str) -> tuple[float, int]:
    """Sum and length of a 1-D result written to a .npy file or Zarr store, read in chunks."""
    import zarr

    arr: Any = np.load(path, mmap_mode="r") if path.endswith(".npy") else zarr.open_array(path)
    step = 1 << 20
    total = sum(float(np.sum(arr[i : i + step])) for i in range(0, arr.shape[0], step))
    return total, int(arr.shape[0])


@cli.command()
@click.argument("src")
@click.argument("dst")
@click.option(
    "--block-rows", type=int, default=None, help="Rows per Zarr chunk (default: about 8 MiB)."
)
@click.option("--header", is_flag=True, help="The CSV file starts with a header row.")
@click.option(
    "--dtype", default=None, help="Output dtype (default: float32 stays, others float64)."
)
@overwrite_option
@click.option("--json", "as_json", is_flag=True)
def convert(
    src: str,
    dst: str,
    block_rows: int | None,
    header: bool,
    dtype: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Convert SRC (.npy, .csv, a batch directory, a Zarr store) to the Zarr store DST."""

    if block_rows is not None and block_rows < 1:
        raise ParameterError(f"--block-rows {block_rows} must be >= 1")
    if not dst.endswith(".zarr"):
        raise SourceError(f"{dst}: the output store's name must end in .zarr")
    _check_new_output(dst, overwrite)
    if dtype is not None:
        try:
            np.dtype(dtype)
        except TypeError as exc:
            raise ParameterError(f"--dtype {dtype!r} is not a NumPy dtype; try float32") from exc
    t0 = time.perf_counter()
    if src.lower().endswith(".csv"):
        if not os.path.isfile(src):
            raise SourceError(f"{src}: no such file; check the path")
        data: Any = iter_csv_blocks(src, block_rows or 65536, header=header)
    else:
        data = open_source(src, header=header)
    out = write_zarr(data, dst, block_rows=block_rows, dtype=dtype, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    summary = {
        "src": src,
        "dst": dst,
        "rows": out.n_rows,
        "features": out.n_features,
        "dtype": str(out.dtype),
        "seconds": seconds,
    }
    _emit(
        as_json,
        summary,
        [f"wrote {out.n_rows} rows x {out.n_features} {out.dtype} to {dst} in {seconds:.2f} s"],
    )


@cli.command()
@click.option(
    "--rows",
    type=int,
    default=2_000_000,
    show_default=True,
    help="Rows of the synthetic 64-blob, 32-feature set.",
)
@click.option(
    "--dir",
    "workdir",
    default=None,
    help="Keep the data here (default: a temporary directory, removed after).",
)
@click.option("--scheduler", default=None, help=_SCHEDULER_HELP)
@click.option("--progress/--no-progress", default=True)
@click.option("--json", "as_json", is_flag=True)
def demo(
    rows: int, workdir: str | None, scheduler: str | None, progress: bool, as_json: bool
) -> None:
    """Write the chapter's 5-blob data and a synthetic set as Zarr, cluster both, print a table."""
    from sklearn.cluster import KMeans

    if rows < 1000:
        raise ParameterError(f"--rows {rows} is too small for the demo; pass at least 1000")
    tmp = workdir is None
    root = (
        Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="streamclust-demo-"))
    )
    results = []
    try:
        root.mkdir(parents=True, exist_ok=True)
        X, _ = make_chapter_blobs()
        blobs = root / "chapter_blobs.zarr"
        if not blobs.exists():
            write_zarr(X, blobs)
        ref = KMeans(n_clusters=5, n_init=10, random_state=42).fit(X)
        results.append(
            _timed_fit(str(blobs), CHAPTER_LOOP, scheduler, progress, "chapter 5 blobs")
            | {"reference": "KMeans(n_init=10)", "reference_inertia": ref.inertia_}
        )
        synth = root / f"blobs_{rows}.zarr"
        if not synth.exists():
            write_blobs_zarr(synth, rows)
        big = {"n_clusters": 64, "n_init": 10, "batch_size": 4096, "random_state": 0}
        results.append(
            _timed_fit(str(synth), big, scheduler, progress, "64 overlapping blobs")
            | {"reference": "", "reference_inertia": None}
        )
    finally:
        if tmp:
            shutil.rmtree(root, ignore_errors=True)
    lines = [
        "| data | rows x features | k | fit seconds | rows/s | exact inertia | reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ref_txt = (
            f"{r['reference']}: {r['reference_inertia']:.6g}" if r["reference_inertia"] else "-"
        )
        lines.append(
            f"| {r['data']} | {r['rows']:,} x {r['features']} | {r['k']} | {r['seconds']:.2f} | "
            f"{r['rows'] / r['seconds']:,.0f} | {r['inertia']:.6g} | {ref_txt} |"
        )
    if not tmp:
        lines.append(f"data kept in {root}")
    _emit(as_json, {"results": results}, lines)


def _timed_fit(
    path: str, params: dict[str, Any], scheduler: str | None, progress: bool, name: str
) -> dict[str, Any]:

    source = open_source(path)
    t0 = time.perf_counter()
    km = StreamingKMeans(**params, client=scheduler, progress=progress).fit(source)
    seconds = time.perf_counter() - t0
    return {
        "data": name,
        "rows": source.n_rows,
        "features": km.n_features_in_,
        "k": km.n_clusters,
        "seconds": seconds,
        "inertia": km.inertia_,
    }


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwind (every writer removes what it had not
    finished) and exit with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every user error into one line and exit code 2.

    SIGINT and SIGTERM stop it the same way: the work in flight is abandoned,
    temporary files are removed as their writers unwind (a stream keeps its
    last checkpoint), one line says so, and the exit code is 128 + the signal.
    """
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        return _main(argv)
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        click.echo(
            f"streamclust: stopped by {name}; unfinished outputs were removed (a stream "
            "resumes from its last checkpoint)",
            err=True,
        )
        return 128 + exc.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="streamclust", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:  # end of input at a prompt
        click.echo("streamclust: aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"streamclust: error: {exc.format_message()}", err=True)
        return 2
    except StreamclustError as exc:
        click.echo(f"streamclust: error: {one_line(str(exc))}", err=True)
        return 2
    except OSError as exc:
        click.echo(f"streamclust: error: {one_line(str(exc))}", err=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
