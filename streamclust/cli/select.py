"""The ``select`` command: every k (and covariance type) in shared passes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from ..exceptions import ParameterError, SourceError
from ..plotting import require_matplotlib
from ..sources import redact_url
from .estimator_options import model_option
from .group import cli
from .kinds import KINDS
from .options import (
    DataOptions,
    RunOptions,
    check_new_output,
    data_options,
    overwrite_option,
    run_options,
)

__all__ = ["parse_ks", "select"]


def parse_ks(value: str) -> list[int]:
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
@model_option
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
    data_opts: DataOptions,
    run: RunOptions,
) -> None:
    """Fit every k (and covariance type) in shared passes over DATA; print the table."""
    ks = parse_ks(k_values)
    if model_kind == "kmeans" and min(ks) < 2 and (criterion or "silhouette") == "silhouette":
        raise ParameterError(
            f"--k {k_values!r} includes k={min(ks)}, where the silhouette is undefined (one "
            f"cluster); pass --k 2..{max(max(ks), 2)}, or --criterion elbow to start at 1"
        )
    if plot_path is not None:
        if not plot_path.lower().endswith(".png"):
            raise SourceError(f"{plot_path}: --plot must end in .png")
        check_new_output(plot_path, overwrite)
        require_matplotlib()  # before any computing
    source = data_opts.open(data)
    common: dict[str, Any] = {"random_state": random_state, "client": run.client()}
    common |= {"progress": run.progress}
    if n_init is not None:
        common["n_init"] = n_init
    if batch_size is not None:
        common["batch_size"] = batch_size
    options = {
        "covariances": covariances,
        "max_passes": max_passes,
        "max_iter": max_iter,
        "silhouette_sample": silhouette_sample,
    }
    t0 = time.perf_counter()
    res, best, lines = KINDS[model_kind].sweep(source, ks, criterion, options, common)
    seconds = time.perf_counter() - t0
    if plot_path is not None:
        _save_figure(res.plot(), plot_path)
        lines.append(f"saved {plot_path}")
    summary = {
        "model": model_kind,
        "data": redact_url(data),
        "rows": source.n_rows,
        "table": res.table(),
        "best": best,
        "criterion": res.criterion,
        "seconds": seconds,
        "plot": plot_path,
    }
    run.emit(summary, lines)


def _save_figure(fig: Any, path: str) -> None:
    """``fig`` as a PNG at ``path``, written under a temporary name and renamed."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
