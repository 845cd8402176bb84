"""A sensor fleet writes batches into a landing directory; the stream flags anomalies.

    python examples/sensor_stream.py [--out DIR]           # 60 batches
    python examples/sensor_stream.py --full [--out DIR]    # 1,000 batches

Every few seconds of simulated time a shipper drops one batch of readings
(8 sensors) into ``incoming/``, writing ``name.tmp`` and renaming it. Some
batches carry faults: a burst of spikes (anomalies to flag), a NaN reading or
a file of the wrong width (rejected, the stream goes on), and one file that is
never finished (left as ``.tmp``, never read). ``streamclust stream --detect``
applies everything exactly once; the figure shows the anomaly rate per batch.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from streamclust.cli import main as cli

SENSORS, ROWS = 8, 500


def write_fleet(incoming: Path, n_batches: int, seed: int = 0) -> dict[str, list[int]]:
    """Write the batches the way a shipper should (temporary name, then rename)."""
    rng = np.random.default_rng(seed)
    modes = rng.normal(size=(3, SENSORS)) * 3  # three operating regimes
    faults: dict[str, list[int]] = {"spikes": [], "nan": [], "width": []}
    incoming.mkdir(parents=True, exist_ok=True)
    for i in range(n_batches):
        X = modes[rng.integers(0, 3, ROWS)] + rng.normal(scale=0.5, size=(ROWS, SENSORS))
        if i > 5 and i % 9 == 0:  # a burst of spikes on a few sensors
            X[:50, rng.integers(0, SENSORS, 3)] += rng.normal(scale=8, size=(50, 3))
            faults["spikes"].append(i)
        if i == n_batches // 3:
            X[7, 2] = np.nan
            faults["nan"].append(i)
        if i == n_batches // 2:
            X = X[:, :5]
            faults["width"].append(i)
        name = incoming / f"fleet_{i:06d}.npy"
        with open(f"{name}.tmp", "wb") as fh:
            np.save(fh, X.astype(np.float32))
        os.replace(f"{name}.tmp", name)
    (incoming / "fleet_999999.npy.tmp").write_bytes(b"still being written")
    return faults


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="1,000 batches")
    ap.add_argument("--out", type=Path, default=None, help="where to save the figure")
    args = ap.parse_args(argv)
    n = 1000 if args.full else 60
    with tempfile.TemporaryDirectory() as tmp:
        incoming, state = Path(tmp) / "incoming", Path(tmp) / "state"
        faults = write_fleet(incoming, n)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            command = f"stream {incoming} --model gmm --k 3 --state {state} --detect --window 20"
            code = cli([*command.split(), "--once", "--no-progress", "--json"])
        assert code == 0
        summary = json.loads(buf.getvalue())
        rates = {}
        for f in sorted((state / "flags").glob("*.npy")):
            rates[int(f.stem.split("_")[1])] = float((np.load(f) == -1).mean())
        rejected = sorted(p.name for p in (state / "rejected").glob("*.reason"))
    spikes = np.mean([rates[i] for i in faults["spikes"] if i in rates])
    calm = np.mean([r for i, r in rates.items() if i not in faults["spikes"]])
    print(f"{summary['batches']} batches applied, {summary['rejected']} rejected: {rejected}")
    print(f"threshold {summary['threshold']:.4f} (4th percentile over the last 20 batches)")
    print(f"anomaly rate: {calm:.1%} in ordinary batches, {spikes:.1%} in batches with spikes")
    if args.out is not None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.5), layout="constrained")
        ax = fig.subplots()
        xs = sorted(rates)
        ax.plot(xs, [rates[i] for i in xs], ".-", label="anomaly rate")
        for i in faults["spikes"]:
            ax.axvline(i, color="tab:red", alpha=0.2)
        ax.set(xlabel="batch", ylabel="share of rows flagged", title="Sensor fleet stream")
        ax.legend()
        args.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out / "sensor_stream.png", dpi=90)
    return {"summary": summary, "rejected": rejected, "calm": calm, "spikes": spikes}


if __name__ == "__main__":
    main()
