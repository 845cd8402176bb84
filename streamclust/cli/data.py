"""Commands on data: ``convert`` files to Zarr, and the ``demo``."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from sklearn.cluster import KMeans

from ..datasets import CHAPTER_LOOP, make_chapter_blobs, write_blobs_zarr
from ..exceptions import ParameterError, SourceError
from ..kmeans import StreamingKMeans
from ..sources import (
    is_url,
    iter_csv_blocks,
    open_source,
    parse_storage_options,
    redact_url,
    storage_options_for_outputs,
    write_zarr,
)
from .group import cli
from .options import (
    SCHEDULER_HELP,
    check_new_output,
    columns_option,
    emit,
    json_option,
    overwrite_option,
    storage_option_option,
)

__all__ = ["convert", "demo"]


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
@storage_option_option
@columns_option
@overwrite_option
@json_option
def convert(
    src: str,
    dst: str,
    block_rows: int | None,
    header: bool,
    dtype: str | None,
    storage_option: tuple[str, ...],
    columns: str | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Convert SRC (.npy, .csv, Parquet, a batch directory, a Zarr store; a path or URL) to
    the Zarr store DST (a path or URL)."""
    options = parse_storage_options(storage_option) if storage_option else None
    chosen = None if columns is None else columns.split(",")
    with storage_options_for_outputs(options):
        _convert(src, dst, block_rows, header, dtype, options, chosen, overwrite, as_json)


def _convert(
    src: str,
    dst: str,
    block_rows: int | None,
    header: bool,
    dtype: str | None,
    options: dict[str, Any] | None,
    columns: list[str] | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    if block_rows is not None and block_rows < 1:
        raise ParameterError(f"--block-rows {block_rows} must be >= 1")
    if not dst.rstrip("/").endswith(".zarr"):
        raise SourceError(f"{redact_url(dst)}: the output store's name must end in .zarr")
    check_new_output(dst, overwrite)
    if dtype is not None:
        try:
            np.dtype(dtype)
        except TypeError as exc:
            raise ParameterError(f"--dtype {dtype!r} is not a NumPy dtype; try float32") from exc
    t0 = time.perf_counter()
    if src.lower().endswith(".csv"):
        if not is_url(src) and not os.path.isfile(src):
            raise SourceError(f"{src}: no such file; check the path")
        data: Any = iter_csv_blocks(
            src, block_rows or 65536, header=header, storage_options=options
        )
    else:
        data = open_source(src, header=header, storage_options=options, columns=columns)
    out = write_zarr(
        data, dst, block_rows=block_rows, dtype=dtype, overwrite=overwrite, storage_options=options
    )
    seconds = time.perf_counter() - t0
    summary = {
        "src": redact_url(src),
        "dst": redact_url(dst),
        "rows": out.n_rows,
        "features": out.n_features,
        "dtype": str(out.dtype),
        "seconds": seconds,
    }
    emit(
        as_json,
        summary,
        [f"wrote {out.n_rows} x {out.n_features} {out.dtype} to {out.name} in {seconds:.2f} s"],
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
@click.option("--scheduler", default=None, help=SCHEDULER_HELP)
@click.option("--progress/--no-progress", default=True)
@json_option
def demo(
    rows: int, workdir: str | None, scheduler: str | None, progress: bool, as_json: bool
) -> None:
    """Write the chapter's 5-blob data and a synthetic set as Zarr, cluster both, print a table."""
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
    emit(as_json, {"results": results}, lines)


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
