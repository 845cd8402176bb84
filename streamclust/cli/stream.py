"""The ``stream`` command: batch files landing in a directory, applied exactly once."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from ..anomaly import DensityAnomalyDetector, validate_stream_params
from ..exceptions import ParameterError
from ..ingest import Ingest
from ..report import stream_report
from ..sources import parse_storage_options
from ..stream_state import METRICS
from .estimator_options import estimator_options
from .group import cli
from .kinds import KINDS, build_estimator
from .options import RunOptions, run_options, storage_option_option

__all__ = ["report", "stream"]


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
@storage_option_option
@click.option(
    "--move-rejected",
    is_flag=True,
    help="INCOMING a URL prefix: move rejected objects out of the bucket into --state "
    "(default: leave them, their reasons in --state/rejected).",
)
@click.option(
    "--on-drift",
    type=click.Choice(["warn", "reset", "refit"]),
    default="warn",
    show_default=True,
    help="When the batch scores drift (Page-Hinkley): report it; or also start a new model "
    "from the next batch (reset), or from the batches since the change began (refit).",
)
@click.option(
    "--drift-threshold",
    type=float,
    default=10.0,
    show_default=True,
    help="Page-Hinkley alarm threshold, in baseline spreads (lower flags sooner).",
)
@run_options
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
    storage_option: tuple[str, ...],
    move_rejected: bool,
    on_drift: str,
    drift_threshold: float,
    run: RunOptions,
    **params: Any,
) -> None:
    """Apply the batch files landing in INCOMING to a model, exactly once.

    Producers write NAME.tmp and rename it to NAME.npy, .csv or .parquet;
    batches are applied in name order. INCOMING may be a prefix in object
    storage (s3://bucket/incoming/): an object is complete once listed (names
    ending .tmp are ignored), and one uploaded again under a name already
    applied is refused. Killed at any point, the same command resumes from the
    last checkpoint in --state (a local directory) with the same result.

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
        "on_drift": on_drift,
        "drift_threshold": drift_threshold,
    }
    # Bad options fail here, before the state directory is touched.
    if not hasattr(KINDS[model_kind].estimator, "partial_fit"):
        raise ParameterError(
            f"--model {model_kind} cannot learn batch by batch; stream a kmeans or gmm model"
        )
    probe = build_estimator(model_kind, params, "sync", False)
    KINDS[model_kind].validate(probe)
    if detect_:
        validate_stream_params(
            DensityAnomalyDetector(probe, percentile=percentile, method=method, window=window)
        )
    job = Ingest(
        incoming,
        state,
        lambda: build_estimator(model_kind, params, "sync", False),
        config,
        checkpoint_every=checkpoint_every,
        header=header,
        client=run.client(),
        reconnect_timeout=reconnect_timeout,
        wait_lock=wait_lock,
        storage_options=parse_storage_options(storage_option) if storage_option else None,
        move_rejected=move_rejected,
    )
    for note in job.state.notes:  # what resuming had to work around, a line each
        click.echo(f"streamclust: {note}", err=True)
    t0 = time.perf_counter()
    seen = {"batches": 0, "rows": 0, "rejected": 0, "last": 0.0}
    last_reject: list[str] = []
    drifts: list[str] = []
    tty = sys.stderr.isatty()

    def report(result: Any, job: Any) -> None:
        seen["batches"] += 1
        seen["rows"] += result.rows
        seen["rejected"] += result.rejected is not None
        if result.rejected is not None:
            last_reject[:] = [result.rejected]
        if result.drift:
            drifts.append(result.name)
            action = {
                "reset": "a new model starts",
                "refit": "a new model learnt the batches since the change",
            }.get(on_drift, "the model goes on")
            click.echo(f"streamclust: drift at batch {result.name}; {action}", err=True)
        now = time.perf_counter()
        if not run.progress or now - seen["last"] < 1.0:
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
    if run.progress and tty:
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
        "drifts": drifts,
        "metrics": os.path.join(state, METRICS),
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
    if drifts:
        lines.append(f"drift at batch {', '.join(drifts)} (on-drift: {on_drift})")
    run.emit(summary, lines)


@cli.command()
@click.argument("state")
@click.option(
    "--out", default=None, help="Directory for report.html and stream.png [STATE/report]."
)
@run_options
def report(state: str, out: str | None, run: RunOptions) -> None:
    """Write an HTML page of the stream in STATE: batch scores, drift alarms, anomaly
    rate and threshold, cluster sizes (figures embedded; also saved as PNG)."""
    page = stream_report(state, out)
    run.emit({"report": str(page)}, [f"wrote {page}"])
