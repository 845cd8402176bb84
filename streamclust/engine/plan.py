"""The mini-batch plan: which rows each pass visits, in which order, in which steps.

Every pass of a fit walks *logical blocks*: consecutive row ranges whose size
depends only on ``batch_size`` and the number of features, never on how the
data are stored. So the same rows give a bit-identical model from a Zarr store
of any chunking, a ``.npy`` file, a raw memmap, an ndarray, a dask array of any
chunks or a directory of batch files. Storage chunks only decide how a logical
block is read (a read may span chunks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from .. import runtime
from ..kernels.kmeans import StepArg
from ..sources import BlockRanges, Source
from .seeds import SEED_PASS, child

__all__ = [
    "LOGICAL_BLOCK_VALUES",
    "BatchPlan",
    "Step",
    "block_ranges",
    "logical_block_rows",
    "logical_pass",
    "pass_steps",
]

#: Values in a logical block: 8 MiB of float32, the chunk size streamclust's own
#: writers give float32 data, so its stores are read one chunk per block.
LOGICAL_BLOCK_VALUES = 2**21


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
    tol: float = 0.0  # relative to the mean feature variance; 0: off
    max_no_improvement: int | None = None  # None: off
    verbose: bool = False

    @property
    def stops_early(self) -> bool:
        return self.tol > 0 or self.max_no_improvement is not None


def logical_block_rows(batch_size: int, n_features: int) -> int:
    """Rows of a logical block: the multiple of ``batch_size`` nearest to
    :data:`LOGICAL_BLOCK_VALUES` values (at least one batch)."""
    batches = round(LOGICAL_BLOCK_VALUES / max(1, n_features) / batch_size)
    return batch_size * max(1, batches)


def block_ranges(source: Source, batch_size: int) -> Sequence[tuple[int, int]]:
    """The logical blocks every pass of a fit visits (a last block shorter than
    ``batch_size`` joins the one before)."""
    rows = logical_block_rows(batch_size, source.n_features)
    return BlockRanges(source.n_rows, rows, min_rows=batch_size)


def logical_pass(
    fn: Callable[..., Any],
    source: Source,
    *args: Any,
    runner: runtime.Runner,
    batch_size: int,
    desc: str,
    progress: bool,
) -> Iterator[Any]:
    """One data-parallel pass: ``fn(block, start, *args)`` over the logical blocks of
    ``batch_size``, results in block order, with a progress bar named ``desc``."""
    with runtime.progress_bar(source.n_rows, desc, progress) as bar:
        yield from runtime.map_blocks(
            fn,
            source,
            *args,
            runner=runner,
            ranges=block_ranges(source, batch_size),
            progress=bar.update,
        )


def pass_steps(
    plan: BatchPlan,
    ranges: Sequence[tuple[int, int]],
    root: np.random.SeedSequence,
    p: int,
    remaining: int,
    total: int | None = None,
) -> list[Step]:
    """Blocks of pass ``p`` in visiting order, each with its permutation seed and its
    number of mini-batches; the pass stops after ``remaining`` mini-batches
    (``total``: the fit's, for progress lines)."""
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
        ratio = float(plan.reassignment_ratio)
        arg = StepArg(seeds[i], n, plan.batch_size, ratio, total, bool(plan.verbose))
        steps.append(Step(lo, hi, arg))
    return steps
