"""``streamclust report STATE``: a self-contained HTML page of a stream, with PNG figures.

It reads what the stream published (``metrics.jsonl`` and the latest
checkpoint's model) and writes, into one directory, ``stream.png`` and
``report.html``, whose figures are embedded (base64), so the page opens
anywhere on its own. Nothing in the state is changed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import SourceError
from .kmeans import StreamingKMeans, center_counts
from .persistence import load, write_atomic
from .plotting import plot_stream_metrics
from .stream_state import LATEST, METRICS

__all__ = ["stream_report"]


def _metrics(state: Path) -> list[dict[str, Any]]:
    path = state / METRICS
    if not path.exists():
        raise SourceError(
            f"{state}: no {METRICS} here; run `streamclust stream ... --state {state}` first"
        )
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sizes(state: Path) -> Any:
    """The latest model's cluster shares (mixture weights, or K-Means counts), or None."""
    latest = state / LATEST
    if not latest.exists():
        return None
    folder = state / "checkpoints" / latest.read_text().strip() / "model"
    if not (folder / "manifest.json").exists():
        return None
    model = load(folder)
    if hasattr(model, "weights_"):
        return model.weights_
    if isinstance(model, StreamingKMeans):
        return center_counts(model)
    return None


def _number(value: Any) -> str:
    return "" if value is None else f"{value:.6g}"


def stream_report(state: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of the stream in ``state`` into ``out`` (default
    ``STATE/report``); return the path of ``report.html``."""
    state = Path(state)
    metrics = _metrics(state)
    folder = Path(out) if out is not None else state / "report"
    folder.mkdir(parents=True, exist_ok=True)
    fig = plot_stream_metrics(metrics, _sizes(state))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    png = buf.getvalue()
    write_atomic(folder / "stream.png", png)
    drifts = [m["batch"] for m in metrics if m.get("drift")]
    rows = sum(int(m["rows"]) for m in metrics)
    scores = [m["score"] for m in metrics if m.get("score") is not None]
    facts = {
        "batches": len(metrics),
        "rows": rows,
        "last score": f"{scores[-1]:.6g}" if scores else "-",
        "median score": f"{float(np.median(scores)):.6g}" if scores else "-",
        "drift alarms": ", ".join(drifts) if drifts else "none",
    }
    table = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    lines = "".join(
        f"<tr><td>{html.escape(m['batch'])}</td><td>{m['rows']}</td>"
        f"<td>{_number(m['score'])}</td>"
        f"<td>{'drift' if m.get('drift') else ''}</td></tr>"
        for m in metrics[-50:]
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Stream report: {html.escape(str(state))}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:left}}</style>
</head><body>
<h1>Stream report</h1>
<p>State: <code>{html.escape(str(state))}</code></p>
<table id="summary">{table}</table>
<h2>Over time</h2>
<img id="stream" alt="batch scores, drift alarms, anomaly rate and cluster sizes"
 src="data:image/png;base64,{base64.b64encode(png).decode()}">
<h2>Last batches</h2>
<table id="batches"><tr><th>batch</th><th>rows</th><th>score</th><th></th></tr>{lines}</table>
</body></html>
"""
    write_atomic(folder / "report.html", page.encode())
    return folder / "report.html"
