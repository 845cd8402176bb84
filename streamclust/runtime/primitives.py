"""The two primitives the estimators run their kernels with, on any runner.

- :func:`map_blocks` -- data-parallel: every block independently, results
  yielded in block order (so reductions are deterministic), with a bounded
  number of blocks in flight.
- :func:`scan` -- sequential: the driver owns the state; each block's task gets
  the *concrete* state (never a future of the previous task), so a lost worker
  costs one block's recompute. Upcoming blocks are read ahead while one block
  computes. Several independent chains (e.g. groups of K-Means candidates)
  advance in lockstep over the same blocks.

And :func:`call`, one task with its data shipped, for a stream's updates.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import copy
import functools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from ..exceptions import SchedulerError
from ..sources import Source
from .runners import DistributedRunner, Runner, block_of

__all__ = ["call", "map_blocks", "on_block", "progress_bar", "scan"]


def _map_task(fn: Callable[..., Any], handle: Any, lo: int, args: tuple[Any, ...]) -> Any:
    return fn(block_of(handle), lo, *args)


def map_blocks(
    fn: Callable[..., Any],
    source: Source,
    *args: Any,
    runner: Runner,
    ranges: Sequence[tuple[int, int]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Yield ``fn(block, start, *args)`` for every block, in block order.

    At most ``2 * n_workers`` blocks (at least 2) are in flight: results are
    consumed in order while later blocks compute, so memory is bounded by the
    window, not by the dataset.
    """
    ranges = source.blocks() if ranges is None else ranges
    window = max(2, 2 * runner.n_workers)
    it = iter(ranges)
    pending: deque[tuple[Any, int, int]] = deque()

    def _submit(lo: int, hi: int) -> Any:
        return runner.submit(_map_task, fn, runner.block_handle(source, lo, hi), lo, args)

    def _submit_next() -> None:
        nxt = next(it, None)
        if nxt is not None:
            pending.append((_submit(*nxt), *nxt))

    with runner.parallel():
        for _ in range(window):
            _submit_next()
        while pending:
            fut, lo, hi = pending.popleft()
            result = runner.result(fut, functools.partial(_submit, lo, hi))
            _submit_next()
            if progress is not None:
                progress(hi - lo)
            yield result


def _scan_task(
    fn: Callable[..., Any], handle: Any, lo: int, state: Any, args: tuple[Any, ...]
) -> Any:
    return fn(state, block_of(handle), lo, *args)


def scan(
    fn: Callable[..., Any],
    source: Source,
    states: list[Any],
    steps: Sequence[tuple[int, int, Any]],
    *,
    runner: Runner,
    progress: Callable[[int], None] | None = None,
    readahead: int = 2,
    on_step: Callable[[int, list[Any]], None] | None = None,
    until: Callable[[list[Any]], bool] | None = None,
) -> list[Any]:
    """Advance independent chains of state in lockstep over the blocks ``steps``.

    ``steps`` lists ``(start, stop, arg)``: the task for chain ``g`` at that
    block runs ``fn(states[g], block, start, arg)`` and returns the chain's
    new state. Every task receives the concrete state from the driver, so a
    worker lost mid-scan costs the recompute of one block only. Up to
    ``readahead`` later blocks are read while the current one computes.
    ``on_step(i, states)`` is called on the driver after step ``i`` (to checkpoint);
    the scan ends early, before a block, once ``until(states)`` is true.
    """
    states = list(states)
    if until is not None and until(states):
        return states
    places = runner.placement(len(states))
    queue = iter(steps)
    planned: deque[tuple[tuple[int, int, Any], list[Any]]] = deque()

    def _read_next() -> None:
        nxt = next(queue, None)
        if nxt is not None:
            planned.append((nxt, runner.read_ahead(source, nxt[0], nxt[1], places)))

    with runner.parallel():
        for _ in range(readahead + 1):
            _read_next()
        for i in range(len(steps)):
            if i and runner.remote:
                moved = runner.replace(places)
                if moved != places:  # read the planned blocks where the chains are now
                    places = moved
                    steps_ahead = [step for step, _ in planned]
                    planned.clear()
                    for step in steps_ahead:
                        planned.append((step, runner.read_ahead(source, step[0], step[1], places)))
            (lo, hi, arg), handles = planned.popleft()
            # A read on the driver's own pool is waited for here, not inside a task.
            # (A failed read travels on to the chains as its TaskFailed, raised in their task.)
            handles = [h.result() if isinstance(h, cf.Future) else h for h in handles]
            _read_next()
            futures = [
                runner.submit(_scan_task, fn, h, lo, s, (arg,), worker=w)
                for h, s, w in zip(handles, states, places, strict=True)
            ]

            def again(state: Any, lo: int = lo, hi: int = hi, arg: Any = arg) -> Any:
                block = runner.block_handle(source, lo, hi)
                return runner.submit(_scan_task, fn, block, lo, state, (arg,))

            states = [
                runner.result(f, functools.partial(again, s), tied=w is not None)
                for f, s, w in zip(futures, states, places, strict=True)
            ]
            if on_step is not None:
                on_step(i, states)
            if progress is not None:
                progress(hi - lo)
            if until is not None and until(states):
                break
    return states


def call(
    fn: Callable[..., Any],
    *args: Any,
    data: np.ndarray,
    runner: Runner,
    reconnect_timeout: float = 0.0,
) -> Any:
    """``fn(*args, data)`` as one task; ``data`` (on the driver) is shipped with it.

    The task works on copies of its arguments (in-process too), so the driver's
    objects are unchanged unless its result arrives: a task that fails half-way
    leaves nothing half-done. That also makes a lost scheduler safe to retry:
    the same task runs again once the scheduler and a worker are back, waiting
    at most ``reconnect_timeout`` seconds before a :class:`SchedulerError`. A
    scheduler with no worker counts as lost.
    """
    if not isinstance(runner, DistributedRunner):
        return fn(*copy.deepcopy(args), data)  # as a task on a cluster: on copies
    from distributed.comm import CommClosedError

    deadline: float | None = None
    while True:
        client = runner.client
        submitted: list[Any] = []

        def again(submitted: list[Any] = submitted) -> Any:
            # Again: the scattered batch may have been lost with the worker.
            submitted.append(runner.submit(fn, *args, runner.scatter(data)))
            return submitted[-1]

        try:
            if client.status != "running":  # lost while the driver was busy elsewhere
                raise CommClosedError(f"the client is {client.status}")
            client.wait_for_workers(1, timeout=max(reconnect_timeout, 0.5))
            return runner.result(again(), again)
        except (cf.CancelledError, CommClosedError, OSError, TimeoutError) as exc:
            # An OSError or TimeoutError the task itself raised (its future erred) is
            # the task's own error; any other one (the scatter, the submit, waiting
            # for a worker or for the result) means the scheduler was lost. The
            # client's cached scheduler_info cannot tell: it hides a failed query.
            if submitted and submitted[-1].status == "error":
                raise
            lost = exc
        if deadline is None:
            deadline = time.monotonic() + reconnect_timeout
        if not runner.reconnect(deadline):
            raise SchedulerError(
                f"lost the Dask scheduler at {runner.address!r} ({type(lost).__name__}) and it "
                f"was not back within {reconnect_timeout:g} s"
            ) from lost


#: Called on the driver after every block of a pass (see :func:`on_block`).
_block_hooks: list[Callable[[str, int, int], None]] = []


@contextlib.contextmanager
def on_block(hook: Callable[[str, int, int], None]) -> Iterator[None]:
    """Within the block, call ``hook(desc, done_rows, total_rows)`` on the driver after
    every block of every pass (``desc`` as its progress bar names it: ``"pass 1/3"``,
    ``"inertia"``, ``"EM 2"``...). An exception it raises stops the pass there, as a
    crash would: the fault-injection point of the tests, and a place to watch a fit."""
    _block_hooks.append(hook)
    try:
        yield
    finally:
        _block_hooks.remove(hook)


class _Bar:
    """A tqdm bar that also tells the :func:`on_block` hooks."""

    def __init__(self, total_rows: int, desc: str, enabled: bool) -> None:
        self.desc, self.total, self.done = desc, total_rows, 0
        self.bar = tqdm(
            total=total_rows,
            desc=desc,
            unit="rows",
            unit_scale=True,
            disable=None if enabled else True,
            leave=False,
            dynamic_ncols=True,
        )

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()

    def update(self, rows: int) -> None:
        self.bar.update(rows)
        self.done += rows
        for hook in list(_block_hooks):
            hook(self.desc, self.done, self.total)


def progress_bar(total_rows: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over rows on the driver, shown on terminals when ``enabled``; its
    ``update`` after each block also calls the :func:`on_block` hooks."""
    return _Bar(total_rows, desc, enabled)
