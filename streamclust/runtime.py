"""Where kernels run: in-process, on threads, or on a Dask cluster.

This is the only module that imports ``dask.distributed``. Estimators call two
primitives with pure kernels (NumPy in, small NumPy out):

- :func:`map_blocks` -- data-parallel: every block independently, results
  yielded in block order (so reductions are deterministic), with a bounded
  number of blocks in flight.
- :func:`scan` -- sequential: the driver owns the state; each block's task gets
  the *concrete* state (never a future of the previous task), so a lost worker
  costs one block's recompute. Upcoming blocks are read ahead while one block
  computes. Several independent chains (e.g. groups of K-Means candidates)
  advance in lockstep over the same blocks.

Workers read their blocks themselves: a task carries the source description
and a row range, not the data -- except for data that already lives in the
driver's memory, which is shipped block by block.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import concurrent.futures as cf
import contextlib
import copy
import functools
import logging
import os
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
import dask.utils
import numpy as np

from .exceptions import ParameterError, SchedulerError, StreamclustError
from .sources import Source

__all__ = [
    "call",
    "check_address",
    "current_client",
    "get_client",
    "map_blocks",
    "resolve_runner",
    "scan",
]

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 8

#: Seconds to wait for one of our clients to close.
CLOSE_TIMEOUT = 2.0

#: Times the driver submits a task again after distributed gave up on it
#: (``KilledWorker``: the workers running it died ``allowed-failures`` times).
RESUBMITS = 3

#: Seconds between looks at the workers while the driver waits for a task.
WATCH_SECONDS = 2.0

_lock = threading.Lock()
_local_cluster: Any = None
_clients: dict[str, Any] = {}
_thread_pool: cf.ThreadPoolExecutor | None = None
_read_pool: cf.ThreadPoolExecutor | None = None
_announced: set[int] = set()
_blas_sections = 0
_blas_limiter: Any = None


# --------------------------------------------------------------------------- runners


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
        """Something a task can turn into the block ``lo:hi`` (see ``_block``)."""
        return (source, lo, hi)

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


class _SyncRunner(Runner):
    pass


class _ThreadRunner(Runner):
    kind = "threads"

    def __init__(self) -> None:
        global _thread_pool, _read_pool
        with _lock:
            if _thread_pool is None:
                n = os.cpu_count() or 1
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
        self.n_workers = self.pool._max_workers

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
    global _blas_sections, _blas_limiter
    from threadpoolctl import threadpool_limits

    with _lock:
        if _blas_sections == 0:
            _blas_limiter = threadpool_limits(limits=1, user_api="blas")
        _blas_sections += 1
    try:
        yield
    finally:
        with _lock:
            _blas_sections -= 1
            if _blas_sections == 0:
                _blas_limiter.restore_original_limits()
                _blas_limiter = None


class _DistributedRunner(Runner):
    kind = "distributed"
    remote = True

    def __init__(self, client: Any) -> None:
        self.client = client
        self.address = getattr(client.scheduler, "address", None)
        #: The workers the last ``placement``/``replace`` placed chains among.
        self.placed_among = self._workers()
        self.n_workers = max(1, len(self.placed_among))

    def reconnect(self, deadline: float) -> bool:
        """A new client once the scheduler and a worker are back; False at ``deadline``.

        Our own client of the lost scheduler is closed first, so that it stops
        reconnecting by itself; a client the user passed is left alone.
        """
        old = self.client
        # The security the client was made with (a tcp:// client has a default one):
        # the new client replaces the old one in the cache, under the same key.
        security = old.security if self.address and self.address.startswith("tls://") else None
        if any(old is c for c in _clients.values()):
            _close_quietly(old)
        while time.monotonic() < deadline and self.address:
            wait = min(CONNECT_TIMEOUT, max(0.5, deadline - time.monotonic()))
            try:
                client = _connect(self.address, security, timeout=wait)
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
        # Each worker reads the block itself, once for all the chains placed on it:
        # shipping an 8 MiB block from the worker that read it to the others costs
        # as much as reading it again, and it would draw every chain onto the reader.
        if source.in_memory:
            data = source.read(lo, hi)
            handles = {w: self.scatter(data, w) for w in places}
        else:
            handles = {w: self.submit(_read_task, source, lo, hi, worker=w) for w in places}
        return [handles[w] for w in places]


def _block(handle: Any) -> np.ndarray:
    """The block a task was given: read here, already read (an array), or failed to read."""
    if isinstance(handle, tuple):
        source, lo, hi = handle
        return source.read(lo, hi)
    return _unwrap(handle)


# --------------------------------------------------------------------------- clients


def _connect(address: str, security: Any = None, timeout: float | None = None) -> Any:
    from distributed import Client

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    check_address(address)
    key = f"{address}|{id(security)}"
    with _lock:
        client = _clients.get(key)
        if client is not None and client.status == "running":
            return client
        if client is not None:  # it lost its scheduler: stop it reconnecting on its own
            _close_quietly(client)
        if (
            address.startswith("tls://")
            and security is None
            and not dask.config.get("distributed.comm.tls.ca-file", None)
        ):
            raise SchedulerError(
                f"the Dask scheduler at {address!r} speaks TLS: pass --tls-ca, --tls-cert and "
                "--tls-key (security= in Python, or Dask's distributed.comm.tls config)"
            )
        try:
            client = _own(_start_client(Client, address, security, timeout))
        except (OSError, TimeoutError) as exc:
            raise SchedulerError(
                f"cannot reach the Dask scheduler at {address!r} within {timeout:g} s "
                f"({type(exc).__name__}); check the address and that the scheduler runs, or run "
                "on threads (no --scheduler)"
            ) from exc
        _clients[key] = client
    _announce(client)
    return client


def _start_client(client_class: Any, address: str, security: Any, timeout: float) -> Any:
    """``Client(address)`` within ``timeout`` seconds, or a one-line SchedulerError.

    distributed's own timeout covers the connection, not the scheduler's reply
    to it: a server that accepts and never answers holds ``Client()`` forever.
    So the client is built on a thread of its own, waited for with our
    deadline, and abandoned past it (the thread is a daemon; nothing waits
    for it).
    """
    built: dict[str, Any] = {}

    def build() -> None:
        try:
            built["client"] = client_class(
                address, timeout=timeout, security=security, set_as_default=False
            )
        except BaseException as exc:
            built["error"] = exc

    thread = threading.Thread(target=build, name="streamclust-connect", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    if thread.is_alive():
        raise SchedulerError(
            f"the server at {address!r} accepted the connection but did not answer as a Dask "
            f"scheduler within {timeout:g} s; check the address (and its port), or run on "
            "threads (no --scheduler)"
        )
    if "error" in built:
        raise built["error"]
    return built["client"]


#: Modules every worker of streamclust's local cluster has imported before its first task.
_WORKER_MODULES = ("streamclust._kmeans_kernels", "streamclust._gmm_kernels")


def local_cluster(n_workers: int | None = None) -> Any:
    """A ``LocalCluster`` as streamclust starts it: one single-threaded worker
    process per core (or ``n_workers``), scheduler, workers and dashboard on
    127.0.0.1, workers forked from a server that has imported our kernels, and
    importing them (again, if not forked) before they take a task -- restarted
    ones too -- so that no timed task pays for the import."""
    from distributed import LocalCluster

    _fork_workers_from_a_server()
    _check_workers_can_start()
    return LocalCluster(
        n_workers=n_workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.ERROR,
        preload=list(_WORKER_MODULES),
    )


def _fork_workers_from_a_server() -> None:
    """Start worker processes by forking a server that has imported distributed and our
    kernels, instead of Dask's default of a fresh interpreter each ("spawn").

    A fresh interpreter spends about 1.5 s importing before a worker can run a
    task (1.1 s of it scikit-learn, through streamclust); a forked one starts
    warm. It matters most when a nanny restarts a killed worker in the middle
    of a fit. Left alone when the method is not Dask's default "spawn", when
    ``DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD`` is set (``=spawn``
    keeps Dask's default), or where there is no forkserver (Windows). This sets
    the method for the rest of the process.
    """
    import multiprocessing

    key = "distributed.worker.multiprocessing-method"
    if (
        dask.config.get(key) != "spawn"
        or "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD" in os.environ
        or "forkserver" not in multiprocessing.get_all_start_methods()
        or _shadowed_from_cwd()
    ):
        return
    from distributed.utils import get_mp_context

    dask.config.set({key: "forkserver"})
    # Distributed sets its own list on the first call; ours replaces it before any fork.
    get_mp_context().set_forkserver_preload(["distributed", *_WORKER_MODULES])


def _shadowed_from_cwd() -> bool:
    """True when the working directory holds a ``streamclust`` that is not this package.

    The fork server starts as ``python -c``, with the working directory first
    on its path, and (unlike a spawned worker) does not take this process's
    path: from the folder above a clone it would import that folder as an
    empty namespace package and every worker forked from it would fail.
    Spawned workers are slower to start but import what this process imports.
    """
    here = os.path.join(os.getcwd(), "streamclust")
    ours = os.path.dirname(os.path.abspath(__file__))
    return os.path.lexists(here) and os.path.realpath(here) != os.path.realpath(ours)


def _check_workers_can_start() -> None:
    """Fail in one line where the local cluster's workers would run the main script again.

    A worker process that is spawned, or forked from a fork server, first
    imports the ``__main__`` module of this process, which runs a script's
    top-level code again: without an ``if __name__ == "__main__":`` guard
    around the code that starts the cluster, every worker would start a
    cluster of its own and fail, and a script read from standard input cannot
    be imported at all. Interactive sessions and notebooks have no main file
    and need no guard.
    """
    if dask.config.get("distributed.worker.multiprocessing-method") == "fork":
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    if main is None or path is None or name == "__main__" or name.endswith(".__main__"):
        return  # no main file, or a package's __main__, which workers do not run again
    fix = 'put the code under `if __name__ == "__main__":`, or leave client unset to run on threads'
    if not os.path.isfile(path):
        raise ParameterError(
            f"client='local' starts worker processes that import the main script, and {path} "
            f"is not a file (standard input?): save the script to a file and {fix}"
        )
    frame: Any = sys._getframe()
    while frame is not None and not (
        frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"
    ):
        frame = frame.f_back
    if frame is None:  # not reached from the script's top-level code
        return
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return
    line = frame.f_lineno
    if not any(
        isinstance(node, ast.If)
        and _tests_main(node.test)
        and node.lineno <= line <= (node.end_lineno or node.lineno)
        for node in ast.walk(tree)
    ):
        raise ParameterError(
            f"client='local' starts worker processes that run {path} again from the top, "
            f"which would start the cluster again in each of them: {fix}"
        )


def _tests_main(test: Any) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    sides = [test.left, *test.comparators]
    return isinstance(test.ops[0], ast.Eq) and {
        (type(side).__name__, getattr(side, "id", getattr(side, "value", None))) for side in sides
    } == {("Name", "__name__"), ("Constant", "__main__")}


def _local_client() -> Any:
    """The process-wide LocalCluster client, started on first use and reused after."""
    global _local_cluster
    from distributed import Client

    with _lock:
        client = _clients.get("local")
        if client is not None and client.status == "running":
            return client
        _local_cluster = local_cluster()
        client = _own(Client(_local_cluster, set_as_default=False))
        _clients["local"] = client
    _announce(client)
    return client


def _announce(client: Any) -> None:
    if id(client) in _announced:
        return
    _announced.add(id(client))
    link = getattr(client, "dashboard_link", None)
    if link and os.environ.get("STREAMCLUST_QUIET") != "1":
        print(f"streamclust: Dask dashboard at {link}", file=sys.stderr)


def _own(client: Any) -> Any:
    """``client``, which streamclust made, with what it logs about a lost scheduler muted.

    A client that loses its scheduler reconnects by itself, on its own event
    loop, and logs its failure ("Failed to reconnect to scheduler", and a
    CancelledError traceback when closing it cancels the reconnection) -- at
    any time, also after ``close`` returned or while a scatter is still
    waiting to connect. For our clients, streamclust reports a lost scheduler
    itself (one :class:`SchedulerError` line), so what they log from that
    background task is dropped. A client the user made logs as usual.
    """
    log = logging.getLogger("distributed.client")
    if _own_logs not in log.filters:
        log.addFilter(_own_logs)
    _ours.add(client)
    return client


def _close_quietly(client: Any) -> None:
    """Close one of our clients (``_own`` mutes it, also if it is reconnecting)."""
    with contextlib.suppress(Exception):
        client.close(timeout=CLOSE_TIMEOUT)


class _OwnClientLogs(logging.Filter):
    """Drops what our clients log from their background task while they are not
    running: reconnecting, or closing (see ``_own``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # not on an event loop
            return True
        return task is None or not any(
            c.status != "running" and getattr(c, "_handle_report_task", None) is task
            for c in list(_ours)
        )


_ours: weakref.WeakSet[Any] = weakref.WeakSet()
_own_logs = _OwnClientLogs()


@atexit.register
def _close_all() -> None:
    global _local_cluster
    for client in list(_clients.values()):
        _close_quietly(client)
    _clients.clear()
    if _local_cluster is not None:
        try:
            _local_cluster.close()
        except Exception:
            pass
        _local_cluster = None


def current_client() -> Any:
    """The active Dask ``Client`` (Dask's ``default_client``), or None.

    Without distributed imported there is no client (Dask checks the same way),
    so the threads default does not pay 0.2 s for importing it.
    """
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def get_client(scheduler: Any = None, *, security: Any = None) -> Any:
    """The Dask client streamclust runs on, or None when it runs in-process.

    Resolution order for ``scheduler=None`` (Dask's own convention): a
    ``Client`` the user already created, then ``DASK_SCHEDULER_ADDRESS`` (the
    ``scheduler-address`` Dask config), else None: the work runs on threads
    in the calling process and nothing is started. A cluster is only used
    when asked for.

    Parameters
    ----------
    scheduler : None, "local", "threads", "sync", address string, or Client
        ``"local"`` starts a ``LocalCluster`` bound to 127.0.0.1 with one
        single-threaded worker process per core, once per process, and reuses
        it in every later call. ``"sync"`` and ``"threads"`` return None.
    security : distributed.Security, optional
        TLS settings for a ``tls://`` address.
    """
    if scheduler in ("sync", "threads"):
        return None
    if scheduler is not None and not isinstance(scheduler, str):
        if hasattr(scheduler, "submit") and hasattr(scheduler, "scheduler_info"):
            return scheduler
        raise ParameterError(
            f"client={scheduler!r} is not a Dask Client, an address, or one of "
            "'local', 'threads', 'sync'"
        )
    if scheduler == "local":
        return _local_client()
    if scheduler is None:
        current = current_client()
        if current is not None:
            return current
        address = dask.config.get("scheduler-address", None)
        return _connect(str(address), security) if address else None
    return _connect(scheduler, security)


def check_address(address: str) -> str:
    """``address`` if it names a scheduler in a scheme distributed speaks, else a one-line error."""
    from distributed.comm.addressing import parse_host_port
    from distributed.comm.registry import backends

    fix = "pass an address like tcp://host:8786 or one of 'local', 'threads', 'sync'"
    scheme, sep, rest = address.partition("://")
    if not sep:
        if ":" not in address:
            raise ParameterError(f"client/--scheduler {address!r} is not an address; {fix}")
        scheme, rest = "tcp", address  # host:port, which distributed reads as tcp://
    if scheme not in backends or scheme == "inproc":
        known = ", ".join(f"{name}://" for name in sorted(backends) if name != "inproc")
        raise ParameterError(
            f"client/--scheduler {address!r} has an unknown scheme {scheme + '://'!r} "
            f"(known: {known}); {fix}"
        )
    if scheme != "ucx":
        try:
            host, _ = parse_host_port(rest)
            if "/" in host:  # e.g. "tcp//host:8786", a scheme missing its colon
                raise ValueError(f"a host name has no '/': {host!r}")
        except ValueError as exc:
            raise ParameterError(
                f"client/--scheduler {address!r} is not HOST:PORT ({exc}); {fix}"
            ) from exc
    return address


def resolve_runner(client: Any, source: Source | None = None) -> Runner:
    """The runner for an estimator's ``client`` parameter and its input.

    ``client=None`` runs on threads in this process unless a Dask client is
    active or ``DASK_SCHEDULER_ADDRESS`` names a scheduler (see
    :func:`get_client`); in-memory input then still runs on threads unless a
    client is active: shipping data that is already on the driver to a
    cluster only costs time.
    """
    if client == "sync":
        return _SyncRunner()
    if client is None and source is not None and source.in_memory:
        current = current_client()
        return _ThreadRunner() if current is None else _DistributedRunner(current)
    found = get_client(client)
    return _ThreadRunner() if found is None else _DistributedRunner(found)


# --------------------------------------------------------------------------- primitives


def _map_task(fn: Callable[..., Any], handle: Any, lo: int, args: tuple[Any, ...]) -> Any:
    return fn(_block(handle), lo, *args)


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


def _read_task(source: Source, lo: int, hi: int) -> np.ndarray:
    return source.read(lo, hi)


def _scan_task(
    fn: Callable[..., Any], handle: Any, lo: int, state: Any, args: tuple[Any, ...]
) -> Any:
    return fn(state, _block(handle), lo, *args)


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
) -> list[Any]:
    """Advance independent chains of state in lockstep over the blocks ``steps``.

    ``steps`` lists ``(start, stop, arg)``: the task for chain ``g`` at that
    block runs ``fn(states[g], block, start, arg)`` and returns the chain's
    new state. Every task receives the concrete state from the driver, so a
    worker lost mid-scan costs the recompute of one block only. Up to
    ``readahead`` later blocks are read while the current one computes.
    ``on_step(i, states)`` is called on the driver after step ``i`` (to checkpoint).
    """
    states = list(states)
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
    if not isinstance(runner, _DistributedRunner):
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


def progress_bar(total_rows: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over rows on the driver; shown on terminals when ``enabled``."""
    from tqdm import tqdm

    return tqdm(
        total=total_rows,
        desc=desc,
        unit="rows",
        unit_scale=True,
        disable=None if enabled else True,
        leave=False,
        dynamic_ncols=True,
    )


def make_security(ca: str | None, cert: str | None, key: str | None) -> Any:
    """A ``distributed.Security`` for a ``tls://`` scheduler, from PEM file paths."""
    from distributed.security import Security

    for flag, value in (("--tls-ca", ca), ("--tls-cert", cert), ("--tls-key", key)):
        if not value:
            raise ParameterError(f"{flag} is missing: TLS needs --tls-ca, --tls-cert and --tls-key")
        if not os.path.isfile(value):
            raise ParameterError(f"{flag} {value!r}: no such file; pass the PEM file path")
    return Security(
        tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )
