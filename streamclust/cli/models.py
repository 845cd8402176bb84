"""Commands on one model: ``fit`` it, then ``predict``, ``score`` and ``detect`` with it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from ..anomaly import DensityAnomalyDetector
from ..exceptions import ParameterError, SourceError
from ..persistence import check_model_output, load
from ..sources import ParquetSource, check_writable, redact_url
from .estimator_options import estimator_options
from .group import cli
from .kinds import KINDS, build_estimator, kind_of
from .options import (
    DataOptions,
    RunOptions,
    check_array_output,
    data_options,
    overwrite_option,
    run_options,
)

__all__ = ["detect", "fit", "predict", "score"]

model_dir_option = click.option("--model-dir", required=True, help="Directory of a saved model.")


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
@click.option(
    "--sample-weight",
    default=None,
    help="kmeans: a .npy or Zarr store (path or URL) of one weight per row of DATA.",
)
@data_options
@run_options
def fit(
    data: str,
    model_kind: str,
    out: str,
    overwrite: bool,
    sample_weight: str | None,
    data_opts: DataOptions,
    run: RunOptions,
    **params: Any,
) -> None:
    """Fit a model on DATA and save it to --out."""
    if sample_weight is not None and model_kind != "kmeans":
        raise ParameterError("--sample-weight applies to --model kmeans; drop it")
    check_model_output(out, overwrite)
    if not Path(out).resolve().parent.is_dir():
        raise SourceError(f"{Path(out).parent}: no such directory for --out")
    check_writable(Path(out).resolve().parent)  # before the fit, not after it
    k = params["k"]
    model = build_estimator(model_kind, params, None, run.progress)
    source = data_opts.open(data)
    weights = None if sample_weight is None else data_opts.open_column(sample_weight)
    model.set_params(client=run.client())
    t0 = time.perf_counter()
    if weights is None:
        model.fit(source)
    else:
        model.fit(source, sample_weight=weights)
    seconds = time.perf_counter() - t0
    model.set_params(client=None)
    if "checkpoint" in model.get_params():
        model.set_params(checkpoint=None)
    model.save(out, overwrite=overwrite)
    summary = {
        "model": model_kind,
        "data": redact_url(data),
        "rows": source.n_rows,
        "features": source.n_features,
        "seconds": seconds,
        "out": out,
    }
    lines = [
        f"fitted {model_kind} k={k} on {source.n_rows} rows x "
        f"{source.n_features} features in {seconds:.2f} s"
    ]
    found, line = KINDS[model_kind].fit_summary(model)
    summary |= found
    lines.append(line)
    if isinstance(source, ParquetSource):  # the columns chosen (all numeric by default)
        summary["columns"] = source.columns
        lines.append(f"features: the columns {', '.join(source.columns)}")
    reads = getattr(model, "read_stats_", None)
    if reads is not None:
        summary["reads"] = reads
        lines.append(
            f"read {reads['rows_read']} rows from storage ({_blocks(reads['blocks_read'])}); "
            f"{_blocks(reads['cache_hits'])} from the fit's cache "
            f"({reads['cached_bytes'] / 2**20:.1f} MiB kept)"
        )
    run.emit(summary, [*lines, f"saved to {out}"])


def _blocks(n: int) -> str:
    return f"{n} block" if n == 1 else f"{n} blocks"


@cli.command()
@click.argument("data")
@model_dir_option
@click.option("--out", required=True, help="Where labels go: a .zarr store or .npy file.")
@overwrite_option
@data_options
@run_options
def predict(
    data: str, model_dir: str, out: str, overwrite: bool, data_opts: DataOptions, run: RunOptions
) -> None:
    """Write the label of every row of DATA to --out (nearest center, or most likely
    mixture component)."""
    check_array_output(out, overwrite)
    model = load(model_dir)
    source = data_opts.open(data)
    model.set_params(client=run.client(), progress=run.progress)
    t0 = time.perf_counter()
    model.predict(source, out=out, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    summary = {
        "data": redact_url(data),
        "rows": source.n_rows,
        "out": redact_url(out),
        "seconds": seconds,
    }
    run.emit(summary, [f"wrote {source.n_rows} labels to {redact_url(out)} in {seconds:.2f} s"])


@cli.command()
@click.argument("data")
@model_dir_option
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
    data_opts: DataOptions,
    run: RunOptions,
) -> None:
    """Print the model's score on DATA: negative inertia (kmeans), or the mean
    log-likelihood with BIC and AIC (gmm)."""
    if out is not None:
        check_array_output(out, overwrite)
    model = load(model_dir)
    kind = kind_of(model)
    kind.check_score_output(out)  # before any reading
    source = data_opts.open(data)
    model.set_params(client=run.client(), progress=run.progress)
    summary, lines = kind.score(model, source, out, overwrite)
    run.emit({"data": redact_url(data), **summary}, lines)


@cli.command()
@click.argument("data")
@model_dir_option
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
    data_opts: DataOptions,
    run: RunOptions,
) -> None:
    """Flag the rows of DATA whose score falls below the --percentile of all scores."""
    for path in (out, scores_out):
        if path is not None:
            check_array_output(path, overwrite)
    model = load(model_dir)
    source = data_opts.open(data)
    client = run.client()
    model.set_params(client=client, progress=run.progress)
    det = DensityAnomalyDetector(
        model, percentile=percentile, method=method, client=client, progress=run.progress
    )
    t0 = time.perf_counter()
    det.fit(source)
    summary = det.detect(source, out=out, scores_out=scores_out, overwrite=overwrite)
    summary |= {
        "data": redact_url(data),
        "passes": det.n_passes_ + 1,
        "seconds": time.perf_counter() - t0,
    }
    lines = [
        f"threshold {det.threshold_:.10g} ({percentile:g}th percentile, {method}): "
        f"{summary['anomalies']} anomalies in {summary['rows']} rows ({summary['rate']:.2%})"
    ]
    lines += [f"wrote {p}" for p in (summary["out"], summary["scores_out"]) if p]
    run.emit(summary, lines)
