"""A fit's block cache: decompressed blocks kept, within a memory budget, for the
later passes of the same fit.

A fit reads its data several times (the steps, the exact inertia, ``refine``,
``selection="full"``, every EM iteration). The first read of a block stores it,
validated, in the fit's :class:`BlockCache` while the budget allows; later
passes take it from there instead of reading and decompressing storage again.
Blocks are never evicted during the fit (a scan larger than the budget would
evict every block before its next use, as an LRU cache does), so data larger
than the budget keep the blocks that fit and read the rest. The cache lives as
long as the fit: nothing is kept once it returns, and a changed file is never
served from an older fit's memory.

The budget: the estimator's ``cache_mb`` parameter, else ``STREAMCLUST_CACHE_MB``,
else a quarter of the memory available when the fit starts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import psutil

from ..exceptions import ParameterError
from .base import Source

__all__ = ["CACHE_ENV", "BlockCache", "CachedSource", "cache_budget", "check_cache_mb"]

CACHE_ENV = "STREAMCLUST_CACHE_MB"

#: Share of the available memory the cache may take when no budget is given.
DEFAULT_SHARE = 0.25


def cache_budget(cache_mb: Any = None) -> int:
    """The budget in bytes: ``cache_mb``, else ``STREAMCLUST_CACHE_MB``, else a quarter
    of the available memory. 0 turns the cache off."""
    given = check_cache_mb(cache_mb)
    if given is None:
        return int(psutil.virtual_memory().available * DEFAULT_SHARE)
    return given


def check_cache_mb(cache_mb: Any = None) -> int | None:
    """The budget in bytes that ``cache_mb`` or ``STREAMCLUST_CACHE_MB`` sets, None
    when neither does; a value that is not a number of MiB >= 0 is refused in one
    line. Cheap (no look at the machine's memory), so estimators check it up front."""
    where = "cache_mb"
    if cache_mb is None:
        cache_mb = os.environ.get(CACHE_ENV)
        where = CACHE_ENV
    if cache_mb is None or cache_mb == "":
        return None
    try:
        mb = float(cache_mb)
    except (TypeError, ValueError):
        mb = float("nan")
    if not 0 <= mb < float("inf") or isinstance(cache_mb, bool):
        raise ParameterError(
            f"{where}={cache_mb!r} must be a number of MiB >= 0 (0 turns the block cache off)"
        )
    return int(mb * 2**20)


class BlockCache:
    """Blocks of one source by row range, up to ``budget`` bytes, with counters."""

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self.used = 0
        self.blocks: dict[tuple[int, int], np.ndarray] = {}
        self.reads = self.rows_read = self.hits = 0
        self._lock = threading.Lock()

    def get(self, start: int, stop: int) -> np.ndarray | None:
        with self._lock:
            block = self.blocks.get((start, stop))
            if block is not None:
                self.hits += 1
            return block

    def put(self, start: int, stop: int, block: np.ndarray) -> None:
        with self._lock:
            self.reads += 1
            self.rows_read += stop - start
            size = getattr(block, "nbytes", None)
            if size is None:  # (a sparse block: in memory already)
                return
            if (start, stop) in self.blocks or self.used + size > self.budget:
                return
            block.setflags(write=False)  # shared by every pass: nothing may change it
            self.blocks[(start, stop)] = block
            self.used += size

    def stats(self) -> dict[str, int]:
        """Blocks and rows read from storage, blocks served from memory, bytes kept."""
        return {
            "blocks_read": self.reads,
            "rows_read": self.rows_read,
            "cache_hits": self.hits,
            "cached_bytes": self.used,
        }


class CachedSource(Source):
    """``source`` read through a fit's :class:`BlockCache` (in this process only: it is
    never shipped to workers, which read the source itself)."""

    def __init__(self, source: Source, cache: BlockCache) -> None:
        self.source, self.cache = source, cache
        self.n_rows, self.n_features = source.n_rows, source.n_features
        self.dtype, self.block_rows, self.name = source.dtype, source.block_rows, source.name
        self.in_memory = source.in_memory

    def read(self, start: int, stop: int) -> np.ndarray:
        block = self.cache.get(start, stop)
        if block is None:
            block = self.source.read(start, stop)
            self.cache.put(start, stop, block)
        return block

    def _read(self, start: int, stop: int) -> np.ndarray:
        return self.source.read(start, stop)

    def blocks(self, min_rows: int = 1) -> Sequence[tuple[int, int]]:
        return self.source.blocks(min_rows)

    def token(self) -> str:
        return self.source.token()

    def __repr__(self) -> str:
        return f"CachedSource({self.source!r})"

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError("a CachedSource stays in the process of its fit")
