"""The mini-batch plan: which rows each pass visits, in which order, in which steps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..kernels.kmeans import StepArg
from ..sources import Source
from .seeds import SEED_PASS, child

__all__ = ["BatchPlan", "Step", "block_ranges", "pass_steps"]


class Step(NamedTuple):
    """One block of a pass: rows ``start:stop`` and what the scan kernel does there."""

    start: int
    stop: int
    arg: StepArg


@dataclass(frozen=True)
class BatchPlan:
    """How a fit walks the data: shared by every model fitted in the same passes."""

    batch_size: int
    max_passes: int = 1
    max_steps: int | None = None
    shuffle: bool = True
    reassignment_ratio: float = 0.01


def block_ranges(source: Source, batch_size: int) -> Sequence[tuple[int, int]]:
    """The blocks a fit's passes visit, each holding at least ``batch_size`` rows."""
    return source.blocks(min_rows=batch_size)


def pass_steps(
    plan: BatchPlan,
    ranges: Sequence[tuple[int, int]],
    root: np.random.SeedSequence,
    p: int,
    remaining: int,
) -> list[Step]:
    """Blocks of pass ``p`` in visiting order, each with its permutation seed and its
    number of mini-batches; the pass stops after ``remaining`` mini-batches."""
    order = np.arange(len(ranges))
    seeds: list[int | None] = [None] * len(ranges)
    if plan.shuffle:
        rng = np.random.default_rng(child(root, SEED_PASS, p))
        order = rng.permutation(len(ranges))
        seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=len(ranges))]
    steps = []
    for i in order:
        if remaining <= 0:
            break
        lo, hi = ranges[int(i)]
        n = min(math.ceil((hi - lo) / plan.batch_size), remaining)
        remaining -= n
        arg = StepArg(seeds[i], n, plan.batch_size, float(plan.reassignment_ratio))
        steps.append(Step(lo, hi, arg))
    return steps
