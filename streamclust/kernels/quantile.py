"""Exact percentiles of values computed block by block, in a few passes.

``np.percentile`` needs every value in memory. Here the values (e.g. the
log-densities of a model over a Zarr store) are computed again on each pass,
block by block, and only small summaries come back to the driver:

1. Every float64 maps to a 64-bit key whose unsigned order is the numeric order
   (:func:`float_keys`). Pass 1 counts the keys' top 20 bits: a 2^20-bin
   histogram that brackets the wanted rank(s) whatever the range of the values.
2. If a bracket holds at most ``collect`` values, the next pass returns those
   values and the driver sorts them; otherwise the next pass histograms the
   next 20 bits inside the bracket. A bracket 64 bits deep is a single value,
   so ties and duplicated values end the search too.

Continuous data need two passes. Memory is the histograms plus at most
``collect`` values, whatever the number of rows. The result is then
interpolated exactly as ``np.percentile(..., method="linear")`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

DIGIT_BITS = 20
COLLECT = 1 << 22
_SIGN = np.uint64(1 << 63)


def float_keys(values: np.ndarray) -> np.ndarray:
    """uint64 keys in the order of the float64 ``values`` (-inf < ... < -0.0 < 0.0 < ... < inf)."""
    u = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    return np.where(u & _SIGN, ~u, u | _SIGN)


def key_value(key: int) -> float:
    """The float64 of a key (inverse of :func:`float_keys`)."""
    k = np.uint64(key)
    u = k ^ _SIGN if k & _SIGN else ~k
    return float(np.array([u], dtype=np.uint64).view(np.float64)[0])


@dataclass(frozen=True)
class Bracket:
    """Keys whose top ``depth`` bits equal ``prefix``; ``collect``: return them, else
    histogram their next bits."""

    prefix: int
    depth: int
    collect: bool

    def select(self, keys: np.ndarray) -> np.ndarray:
        if self.depth == 0:
            return keys
        return keys[(keys >> np.uint64(64 - self.depth)) == np.uint64(self.prefix)]

    @property
    def bits(self) -> int:
        return min(DIGIT_BITS, 64 - self.depth)


def summarize(values: np.ndarray, brackets: list[Bracket]) -> list[Any]:
    """One block's answer for every bracket: the in-bracket keys, or a sparse
    histogram of their next digit (the digits present and their counts), which
    is at most as large as the block whatever the number of bins."""
    keys = float_keys(values)
    out: list[Any] = []
    for b in brackets:
        sel = b.select(keys)
        if b.collect:
            out.append(sel)
        else:
            shift = np.uint64(64 - b.depth - b.bits)
            digits = ((sel >> shift) & np.uint64((1 << b.bits) - 1)).astype(np.uint32)
            out.append(np.unique(digits, return_counts=True))
    return out


@dataclass
class _Target:
    rank: int  # 0-based rank among all values
    prefix: int = 0
    depth: int = 0
    below: int = 0  # values in brackets before this one
    count: int = -1  # values in the bracket (-1: not known yet)
    value: float | None = None

    def bracket(self, collect: int) -> Bracket:
        return Bracket(self.prefix, self.depth, 0 <= self.count <= collect)


def order_statistics(
    run_pass: Callable[[list[Bracket]], Iterable[list[np.ndarray]]],
    n: int,
    ranks: Iterable[int],
    collect: int = COLLECT,
) -> tuple[list[float], int]:
    """The values of 0-based ``ranks`` among ``n`` values, and the passes it took.

    ``run_pass(brackets)`` runs :func:`summarize` over every block and yields
    the per-block answers (in any order: they are added up or concatenated).
    Memory: one histogram per bracket, at most ``collect`` keys, and the
    answers of the blocks in flight.
    """
    targets = {r: _Target(r) for r in ranks}
    if any(not 0 <= r < n for r in targets):
        raise ValueError(f"ranks must lie in [0, {n})")
    passes = 0
    while True:
        todo = [t for t in targets.values() if t.value is None]
        if not todo:
            return [targets[r].value for r in ranks], passes  # type: ignore[misc]
        brackets = list(dict.fromkeys(t.bracket(collect) for t in todo))
        totals: list[Any] = [[] if b.collect else np.zeros(1 << b.bits, np.int64) for b in brackets]
        for part in run_pass(brackets):
            for b, total, got in zip(brackets, totals, part, strict=True):
                if b.collect:
                    total.append(got)
                else:
                    present, counts = got
                    total[present] += counts
        passes += 1
        done: set[Bracket] = set()
        for t in todo:
            i = brackets.index(t.bracket(collect))
            b, total = brackets[i], totals[i]
            if b.collect:
                keys = np.sort(np.concatenate(total))
                t.value = key_value(int(keys[t.rank - t.below]))
                continue
            cum = total if b in done else np.cumsum(total, out=total)  # in place
            done.add(b)
            digit = int(np.searchsorted(cum, t.rank - t.below, side="right"))
            before = int(cum[digit - 1]) if digit else 0
            t.below += before
            t.prefix = (t.prefix << b.bits) | digit
            t.depth += b.bits
            t.count = int(cum[digit]) - before
            if t.depth == 64:
                t.value = key_value(t.prefix)


def percentile_ranks(n: int, q: float) -> tuple[int, int, float]:
    """The two ranks and the weight ``np.percentile(method="linear")`` interpolates."""
    virtual = (n - 1) * float(np.true_divide(q, 100))
    if virtual >= n - 1:
        return n - 1, n - 1, virtual - (n - 1)
    if virtual < 0:
        return 0, 0, virtual
    lo = int(np.floor(virtual))
    return lo, lo + 1, virtual - lo


def lerp(a: float, b: float, t: float) -> float:
    """numpy's interpolation between two neighbours, operation for operation."""
    diff = b - a
    if t >= 0.5:
        return float(np.float64(b) - np.float64(diff) * (1 - np.float64(t)))
    return float(np.float64(a) + np.float64(diff) * np.float64(t))


def exact_percentile(
    run_pass: Callable[[list[Bracket]], Iterable[list[np.ndarray]]],
    n: int,
    q: float,
    collect: int = COLLECT,
) -> tuple[float, int]:
    """``np.percentile(values, q)`` of ``n`` values summarized by ``run_pass``; and passes."""
    lo, hi, t = percentile_ranks(n, q)
    (a, b), passes = order_statistics(run_pass, n, [lo, hi], collect)
    return lerp(a, b, t), passes
