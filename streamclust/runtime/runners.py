"""Runners: where tasks run (the calling thread, a thread pool, or a Dask cluster),
behind one small interface the primitives use.

A task returns a user's error (a :class:`StreamclustError`) as a
:class:`TaskFailed` value, raised by the driver when it takes the result: no
worker logs it, no task errs, nothing is retried.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dask
import dask.utils
import numpy as np

from ..exceptions import SchedulerError, StreamclustError
from ..sources import Source
from . import cluster
from .cluster import close_quietly, connect, current_client, get_client

__all__ = [
    "DistributedRunner",
    "Runner",
    "SyncRunner",
    "TaskFailed",
    "ThreadRunner",
    "block_of",
    "resolve_runner",
]


_lock = threading.Lock()

#: Times the driver submits a task again after distributed gave up on it
#: (``KilledWorker``: the workers running it died ``allowed-failures`` times).
RESUBMITS = 3


#: Seconds between looks at the workers while the driver waits for a task.
WATCH_SECONDS = 2.0


_thread_pool: cf.ThreadPoolExecutor | None = None


_read_pool: cf.ThreadPoolExecutor | None = None


_blas_sections = 0


_blas_limiter: Any = None
#: threadpoolctl's view of the loaded BLAS libraries, found once (as scikit-learn does)
_blas_controller: Any = None


class _Done:
    """An already-computed result with the ``Future.result()`` interface."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class TaskFailed:
    """What a task returns instead of raising a :class:`StreamclustError` (bad data, a
    corrupt chunk): the driver raises the error itself, as one line, instead of a
    worker logging a traceback and the scheduler marking the task erred."""

    __slots__ = ("error",)

    def __init__(self, error: StreamclustError) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        return (TaskFailed, (self.error,))


def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` as every task runs it: a user's error comes back as a value."""
    try:
        return fn(*args)
    except StreamclustError as exc:
        exc.__traceback__ = None  # the message says it all; frames would ship too
        return TaskFailed(exc)


def _unwrap(value: Any) -> Any:
    """A task's result on the driver: its value, or its :class:`StreamclustError` raised."""
    if isinstance(value, TaskFailed):
        raise value.error
    return value


def _task_key(fn: Callable[..., Any]) -> str:
    """What the dashboard calls a task: its function, as if it had been submitted bare."""
    return f"{dask.utils.funcname(fn)}-{uuid.uuid4().hex}"


class Runner:
    """Runs tasks somewhere. ``submit`` returns an object with ``.result()``; take results
    with :meth:`result`, which raises a task's :class:`StreamclustError`."""

    kind = "sync"
    remote = False
    n_workers = 1

    def submit(self, fn: Callable[..., Any], *args: Any, worker: str | None = None) -> Any:
        """Run ``fn(*args)``; ``worker`` is a placement hint (cluster runners only)."""
        return _Done(_guarded(fn, *args))

    def result(self, fut: Any, again: Callable[[], Any], tied: bool = False) -> Any:
        """``fut.result()``; on a cluster, ``again()`` submits the task anew if it was lost
        (``tied``: it was submitted with a worker hint)."""
        return _unwrap(fut.result())

    def block_handle(self, source: Source, lo: int, hi: int) -> Any:
        """Something a task can turn into the block ``lo:hi`` (see ``block_of``)."""
        return (source, lo, hi)

    def chain_groups(self, n_candidates: int, n_models: int = 1) -> int:
        """How many chains to split a model's ``n_candidates`` into, when ``n_models``
        models share the scan: the workers are shared out, at least one chain each."""
        return min(n_candidates, max(1, self.n_workers // n_models))

    def placement(self, n: int) -> list[str | None]:
        """Where each of ``n`` chains of a scan lives (None: anywhere)."""
        return [None] * n

    def replace(self, places: list[str | None]) -> list[str | None]:
        """``places`` again, with the chains of lost workers moved to live ones."""
        return places

    def read_ahead(self, source: Source, lo: int, hi: int, places: list[str | None]) -> list[Any]:
        """Block handles for a later step of a scan, one per chain placement.

        In-process: an in-memory block is a free slice, anything else is read
        once here and the same array is given to every chain.
        """
        if source.in_memory or len(places) == 1:
            return [(source, lo, hi)] * len(places)
        return [source.read(lo, hi)] * len(places)

    def parallel(self) -> contextlib.AbstractContextManager[None]:
        """Context for a section whose tasks run concurrently in this process."""
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} workers={self.n_workers}>"


class SyncRunner(Runner):
    pass


#: Threads of the shared in-process pools (one per core).
_POOL_THREADS = os.cpu_count() or 1


class ThreadRunner(Runner):
    kind = "threads"

    def __init__(self) -> None:
        global _thread_pool, _read_pool
        with _lock:
            if _thread_pool is None:
                n = _POOL_THREADS
                _thread_pool = cf.ThreadPoolExecutor(
                    max_workers=n, thread_name_prefix="streamclust"
                )
                # Reads wait on storage (and on zarr's own decoding threads): on a pool of
                # their own they never hold a compute thread idle (a fit ran 5-8% faster).
                _read_pool = cf.ThreadPoolExecutor(
                    max_workers=n, thread_name_prefix="streamclust-read"
                )
        assert _thread_pool is not None and _read_pool is not None
        self.pool, self.reader = _thread_pool, _read_pool
        self.n_workers = _POOL_THREADS

    def submit(self, fn: Callable[..., Any], *args: Any, worker: str | None = None) -> Any:
        reads = [a for a in args if isinstance(a, cf.Future)]
        if not reads:
            return self.pool.submit(_guarded, fn, *args)
        # As on a cluster, a task whose arguments include a pending read starts once the
        # read is done, and does not hold a compute thread while it waits.
        task: cf.Future = cf.Future()
        # ``start`` stays among each read's callbacks: it must not keep the reads (and
        # their blocks) alive once it has run, or only the cyclic GC would free them.
        left, counting, waiting = [len(reads)], threading.Lock(), [args]

        def start(_: cf.Future) -> None:
            with counting:
                left[0] -= 1
                if left[0]:
                    return
                given = waiting.pop()
            try:
                values = [a.result() if isinstance(a, cf.Future) else a for a in given]
                del given
                self.pool.submit(_guarded, fn, *values).add_done_callback(
                    functools.partial(_settle, task)
                )
            except BaseException as exc:  # a read that did not return: the task fails
                task.set_exception(exc)

        for read in reads:
            read.add_done_callback(start)
        return task

    def block_handle(self, source: Source, lo: int, hi: int) -> Any:
        if source.in_memory:
            return (source, lo, hi)
        return self.reader.submit(_guarded, _read_task, source, lo, hi)

    def read_ahead(self, source: Source, lo: int, hi: int, places: list[str | None]) -> list[Any]:
        # One read shared by every chain: the block lands in this process's memory
        # (``scan`` waits for the read before handing the block to the chains).
        return [self.block_handle(source, lo, hi)] * len(places)

    def parallel(self) -> contextlib.AbstractContextManager[None]:
        return _single_threaded_blas() if self.n_workers > 1 else contextlib.nullcontext()


def _settle(outer: cf.Future, inner: cf.Future) -> None:
    """Give ``outer`` the outcome of ``inner``."""
    if inner.exception() is not None:
        outer.set_exception(inner.exception())
    else:
        outer.set_result(inner.result())


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """BLAS limited to one thread while tasks run on our thread pool.

    Several threads each calling a multithreaded BLAS oversubscribe the cores,
    and OpenBLAS serializes concurrent callers: on 2 cores a K-Means pass ran
    1.6x slower. scikit-learn's KMeans limits BLAS the same way (threadpoolctl)
    around its own threads. Sections nest and overlap; the last one to leave
    restores the user's setting.
    """
    global _blas_sections, _blas_limiter, _blas_controller
    with _lock:
        if _blas_sections == 0:
            if _blas_controller is None:  # finding the loaded BLAS takes ~4 ms: once
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            _blas_limiter = _blas_controller.limit(limits=1, user_api="blas")
        _blas_sections += 1
    try:
        yield
    finally:
        with _lock:
            _blas_sections -= 1
            if _blas_sections == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


class DistributedRunner(Runner):
    kind = "distributed"
    remote = True

    def __init__(self, client: Any) -> None:
        self.client = client
        self.address = getattr(client.scheduler, "address", None)
        #: The workers the last ``placement``/``replace`` placed chains among.
        self.placed_among = self._workers()
        self.n_workers = max(1, len(self.placed_among))
        self._reads = 0  # blocks a scan has read: the reads rotate over the workers

    def reconnect(self, deadline: float) -> bool:
        """A new client once the scheduler and a worker are back; False at ``deadline``.

        Our own client of the lost scheduler is closed first, so that it stops
        reconnecting by itself; a client the user passed is left alone.
        """
        old = self.client
        # The security the client was made with (a tcp:// client has a default one):
        # the new client replaces the old one in the cache, under the same key.
        security = old.security if self.address and self.address.startswith("tls://") else None
        if any(old is c for c in cluster.clients.values()):
            close_quietly(old)
        while time.monotonic() < deadline and self.address:
            wait = min(cluster.CONNECT_TIMEOUT, max(0.5, deadline - time.monotonic()))
            try:
                client = connect(self.address, security, timeout=wait)
                client.wait_for_workers(1, timeout=max(0.5, deadline - time.monotonic()))
            except (SchedulerError, OSError, TimeoutError):
                time.sleep(0.2)
                continue
            self.client = client
            return True
        return False

    def submit(self, fn: Callable[..., Any], *args: Any, worker: str | None = None) -> Any:
        key = _task_key(fn)
        if worker is None:
            return self.client.submit(_guarded, fn, *args, key=key)
        # A preference, not a pin: if that worker is lost the task runs elsewhere.
        return self.client.submit(
            _guarded, fn, *args, key=key, workers=[worker], allow_other_workers=True
        )

    def result(self, fut: Any, again: Callable[[], Any], tied: bool = False) -> Any:
        # Distributed retries a task whose worker died, up to its allowed-failures;
        # past that (workers dying fast, or the same task killing them), the driver,
        # which holds every task's inputs, submits it again with a fresh read.
        # A task tied to a worker (a scan's placement) can also wait forever once
        # every worker has died at the same moment: distributed gives the new ones
        # only untied tasks. So when the workers changed while a task waited, it is
        # submitted again, untied. Its tie was chosen among ``placed_among``.
        # A task whose input was scattered from the driver (in-memory data) is
        # cancelled when the worker holding that input dies: distributed cannot
        # recompute scattered data. ``again`` scatters it anew.
        from distributed import KilledWorker

        workers = self.placed_among
        resubmits = 0
        while True:
            try:
                return _unwrap(fut.result(timeout=WATCH_SECONDS if tied else None))
            except (KilledWorker, cf.CancelledError) as exc:
                if isinstance(exc, cf.CancelledError) and self.client.status != "running":
                    raise  # the scheduler was lost: not a worker's doing
                if resubmits == RESUBMITS:
                    raise SchedulerError(
                        f"{exc}; submitted {RESUBMITS} more times, it was lost each time: the "
                        "workers keep dying (see their logs: out of memory?)"
                    ) from exc
                resubmits += 1
            except TimeoutError:
                if self._workers() == workers or fut.status != "pending":
                    continue
                fut.cancel()
            fut = again()
            workers = self._workers() if tied else workers

    def block_handle(self, source: Source, lo: int, hi: int) -> Any:
        if source.in_memory:
            # The data is on the driver already: ship the block, not the whole array.
            return self.scatter(source.read(lo, hi))
        return (source, lo, hi)

    def scatter(self, data: Any, worker: str | None = None) -> Any:
        """``data`` scattered (to ``worker`` while it lives, else to any worker).

        A worker that dies while it is chosen fails the scatter (the scheduler no
        longer knows it, or the transfer breaks): it is tried again elsewhere.
        """
        attempt = 0
        while True:
            try:
                return self.client.scatter(
                    data, workers=None if worker is None else [worker], hash=False
                )
            except (KeyError, OSError):
                if self.client.status != "running" or attempt == RESUBMITS:
                    raise
                attempt += 1
                worker = None
                time.sleep(0.1 * attempt)

    def placement(self, n: int) -> list[str | None]:
        workers = self.placed_among = self._workers()
        return [workers[i % len(workers)] if workers else None for i in range(n)]

    def _workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def replace(self, places: list[str | None]) -> list[str | None]:
        # A chain whose worker died runs on another one (its tasks allow that);
        # it comes back to an idle worker, e.g. the one a nanny restarted, so that
        # the rest of the scan does not run on fewer workers than it could.
        workers = self.placed_among = self._workers()
        if not workers:
            return places
        live = set(workers)
        load = {w: sum(p == w for p in places) for w in workers}
        out = list(places)
        for i, w in enumerate(out):
            if w not in live:
                new = min(workers, key=lambda x: load[x])
                out[i] = new
                load[new] += 1
        while True:
            busiest = max(workers, key=lambda x: load[x])
            idlest = min(workers, key=lambda x: load[x])
            if load[busiest] - load[idlest] <= 1:
                return out
            i = max(j for j, w in enumerate(out) if w == busiest)
            out[i] = idlest
            load[busiest] -= 1
            load[idlest] += 1

    def read_ahead(self, source: Source, lo: int, hi: int, places: list[str | None]) -> list[Any]:
        # One read of the block for every chain: the workers of the other chains get
        # it from the reader by Dask's worker-to-worker transfer. Reading it again on
        # each worker would cost a pass W reads of the data (and W times the requests
        # object storage bills), so that more workers never sped up an I/O-bound fit.
        # The reads rotate over the chains' workers, spreading the I/O.
        workers = list(dict.fromkeys(places))
        reader = workers[self._reads % len(workers)]
        self._reads += 1
        if source.in_memory:
            handle = self.scatter(source.read(lo, hi), reader)
        else:
            handle = self.submit(_read_task, source, lo, hi, worker=reader)
        return [handle] * len(places)


def block_of(handle: Any) -> np.ndarray:
    """The block a task was given: read here, already read (an array), or failed to read."""
    if isinstance(handle, tuple):
        source, lo, hi = handle
        return source.read(lo, hi)
    return _unwrap(handle)


def _read_task(source: Source, lo: int, hi: int) -> np.ndarray:
    return source.read(lo, hi)


def resolve_runner(client: Any, source: Source | None = None) -> Runner:
    """The runner for an estimator's ``client`` parameter and its input.

    ``client=None`` runs on threads in this process unless a Dask client is
    active or ``DASK_SCHEDULER_ADDRESS`` names a scheduler (see
    :func:`get_client`); in-memory input then still runs on threads unless a
    client is active: shipping data that is already on the driver to a
    cluster only costs time.
    """
    if client == "sync":
        return SyncRunner()
    if client is None and source is not None and source.in_memory:
        current = current_client()
        return ThreadRunner() if current is None else DistributedRunner(current)
    found = get_client(client)
    return ThreadRunner() if found is None else DistributedRunner(found)
