"""Which reads of a fit go through its block cache (see :mod:`streamclust.sources.cache`)."""

from __future__ import annotations

from typing import Any

from .. import runtime
from ..sources import Source
from ..sources.cache import BlockCache, CachedSource, cache_budget

__all__ = ["fit_cache"]


def fit_cache(
    source: Source, runner: runtime.Runner, cache_mb: Any
) -> tuple[Source, BlockCache | None]:
    """The source a fit's passes read, and the cache that keeps and counts its reads.

    Blocks read in this process (threads or sync) are kept within the budget (data
    already in memory are only counted); on a cluster the workers read the blocks
    themselves and there is no cache (None).
    """
    budget = cache_budget(cache_mb)
    if runner.remote:
        return source, None
    cache = BlockCache(0 if source.in_memory else budget)
    return CachedSource(source, cache), cache
