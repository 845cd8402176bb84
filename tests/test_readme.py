"""The README works as written: its two set-up commands, and its tour pasted into a
plain script (no main guard) or fed to Python on standard input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

#: What the tour writes, besides its data.
TOUR_OUTPUTS = [
    "labels.zarr",
    "model/manifest.json",
    "logp.zarr",
    "kmeans_sweep.png",
    "gmm_sweep.png",
    "flags.zarr",
    "scores.zarr",
]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_it_opens_with_the_two_setup_commands_and_ci_runs_the_second():
    first, second = (b.strip() for b in blocks("bash")[:2])
    assert first == 'pip install -e ".[plot]" && streamclust demo'
    assert second == 'pip install -e ".[dev]" && python -m pytest'
    assert README.index(first) < README.index("## A short tour")
    assert second in (ROOT / ".ci" / "run").read_text()


def run_tour(cwd: Path, how: str) -> subprocess.CompletedProcess:
    tour = "\n".join(blocks("python"))
    if how == "script":
        (cwd / "tour.py").write_text(tour)
        args, stdin = ["tour.py"], None
    else:
        args, stdin = ["-"], tour
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, input=stdin, capture_output=True, text=True, timeout=300
    )


# (standard input runs the same code another way: with the slow tests)
@pytest.mark.parametrize("how", ["script", pytest.param("stdin", marks=pytest.mark.slow)])
def test_the_tour_runs_as_written(tmp_path, how):
    pytest.importorskip("matplotlib")
    if how == "stdin":  # over the outputs of an earlier run, which it replaces
        for name in TOUR_OUTPUTS:
            (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / "labels.zarr").mkdir()
        (tmp_path / "labels.zarr" / "zarr.json").write_text("{}")
    done = run_tour(tmp_path, how)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "dashboard" not in done.stderr
    for name in ["data.zarr", *TOUR_OUTPUTS]:
        assert (tmp_path / name).exists(), name
