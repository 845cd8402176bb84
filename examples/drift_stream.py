"""A sensor fleet whose operating modes drift, then jump: followed with a half-life,
and flagged at the change.

    python examples/drift_stream.py [--out DIR]           # 120 batches
    python examples/drift_stream.py --full [--out DIR]    # 1,000 batches

Three operating modes of 4 sensors move slowly (machines age); at two thirds of
the stream every mode jumps (a new deployment). Three models learn the batches
one by one: ``StreamingKMeans`` as it is (every row counts forever), with
``half_life=10`` batches, and with the half-life and a drift test that starts a
new model when it fires (``streamclust stream --on-drift reset``). The slow
drift is followed with a half-life, averaged away without; the jump is too far
for mini-batch updates to recover from (centers end up on the wrong modes),
and only the reset model is right again after it. ``streamclust stream`` on the
same batches logs every batch to ``metrics.jsonl`` and raises its alarm at the
jump; ``streamclust report`` draws it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

import streamclust as sc
from streamclust.cli import main as cli
from streamclust.drift import PageHinkley

SENSORS, ROWS, HALF_LIFE = 4, 400, 10


def fleet(n_batches: int, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """The batches, the true modes at each batch, and the batch where they jump."""
    rng = np.random.default_rng(seed)
    start = rng.normal(scale=4, size=(3, SENSORS))
    speed = rng.normal(scale=0.003, size=(3, SENSORS))  # per batch
    jump = 2 * n_batches // 3
    batches, modes = [], []
    for t in range(n_batches):
        now = start + speed * t + (3.0 if t >= jump else 0.0)
        modes.append(now)
        batches.append(now[rng.integers(3, size=ROWS)] + rng.normal(scale=0.5, size=(ROWS, 4)))
    return batches, modes, jump


def error(centers: np.ndarray, truth: np.ndarray) -> float:
    """The largest distance between a true mode and the center matched to it."""
    cost = np.sqrt(((centers[:, None] - truth[None]) ** 2).sum(-1))
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--full", action="store_true", help="1,000 batches")
    ap.add_argument("--out", type=Path, default=None, help="where to save the figures")
    args = ap.parse_args(argv)
    n = 1000 if args.full else 120
    batches, modes, jump = fleet(n)
    kw = dict(n_clusters=3, batch_size=ROWS, random_state=0, progress=False)
    keys = ("no half-life", f"half_life={HALF_LIFE}", "half-life + reset on drift")
    models = [sc.StreamingKMeans(**kw)] + [
        sc.StreamingKMeans(half_life=HALF_LIFE, **kw) for _ in range(2)
    ]
    test = PageHinkley()
    errors: dict[str, list[float]] = {key: [] for key in keys}
    for batch, truth in zip(batches, modes, strict=True):
        if hasattr(models[2], "cluster_centers_") and test.update(-models[2].score(batch) / ROWS):
            models[2] = sc.StreamingKMeans(half_life=HALF_LIFE, **kw)  # a new model
        for model, key in zip(models, keys, strict=True):
            model.partial_fit(batch)
            errors[key].append(error(model.cluster_centers_, truth))
    with tempfile.TemporaryDirectory() as tmp:
        incoming, state = Path(tmp) / "incoming", Path(tmp) / "state"
        incoming.mkdir()
        for t, batch in enumerate(batches):
            np.save(incoming / f"fleet_{t:06d}.npy", batch)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            command = f"stream {incoming} --k 3 --batch-size {ROWS} --state {state}"
            code = cli([*command.split(), "--half-life", str(HALF_LIFE), "--once",
                        "--no-progress", "--json"])  # fmt: skip
        assert code == 0
        summary = json.loads(buf.getvalue())
        alarms = [int(name.split("_")[1][:6]) for name in summary["drifts"]]
        if args.out is not None:
            with contextlib.redirect_stdout(io.StringIO()):
                cli(["report", str(state), "--out", str(args.out), "--no-progress"])
    late = {key: float(np.mean(v[jump - 20 : jump])) for key, v in errors.items()}
    end = {key: float(np.mean(v[-10:])) for key, v in errors.items()}
    print(f"{n} batches of {ROWS} rows; the modes jump at batch {jump}")
    for key in keys:
        print(f"  {key}: mean error {late[key]:.3f} before the jump, {end[key]:.3f} at the end")
    print(f"drift alarms at batches {alarms}")
    if args.out is not None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 3.5), layout="constrained")
        ax = fig.subplots()
        for key, values in errors.items():
            ax.plot(values, label=key)
        for a in alarms:
            ax.axvline(a, color="tab:red", linestyle="--", alpha=0.5, label="drift alarm")
        ax.set_yscale("log")
        ax.set(xlabel="batch", ylabel="distance to the true modes", title="Following a drift")
        ax.legend()
        args.out.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out / "drift_stream.png", dpi=90)
    return {"late": late, "end": end, "alarms": alarms, "jump": jump, "batches": n}


if __name__ == "__main__":
    main()
