"""Connecting to Dask: a scheduler's address, an active client, or a local cluster
started once per process; this package is the only one that imports
``dask.distributed``.

Every client streamclust makes is cached by address and registered with a log
filter that drops what it logs about a lost scheduler (streamclust reports
that itself, in one line). A local cluster's workers are forked from a server
that has imported the kernels, and refuse to start from a script whose
top-level code is not under a main guard.
"""

from __future__ import annotations

import ast
import asyncio
import atexit
import contextlib
import inspect
import logging
import os
import sys
import threading
import weakref
from typing import Any

import dask

from ..exceptions import ParameterError, SchedulerError

__all__ = [
    "CLOSE_TIMEOUT",
    "CONNECT_TIMEOUT",
    "check_address",
    "clients",
    "close_all",
    "close_quietly",
    "connect",
    "current_client",
    "get_client",
    "local_cluster",
    "make_security",
]


#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 8


#: Seconds to wait for one of our clients to close.
CLOSE_TIMEOUT = 2.0


_lock = threading.Lock()


_local_cluster: Any = None


clients: dict[str, Any] = {}


_announced: set[int] = set()


def connect(address: str, security: Any = None, timeout: float | None = None) -> Any:
    from distributed import Client

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    check_address(address)
    key = f"{address}|{id(security)}"
    with _lock:
        client = clients.get(key)
        if client is not None and client.status == "running":
            return client
        if client is not None:  # it lost its scheduler: stop it reconnecting on its own
            close_quietly(client)
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
        clients[key] = client
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
_WORKER_MODULES = (
    "streamclust.kernels.kmeans",
    "streamclust.kernels.gmm",
    "streamclust.kernels.online_em",
)


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
        # Only CRITICAL: a worker whose heartbeat meets the scheduler already closing at
        # shutdown logs a traceback at ERROR, on the user's terminal after a good run.
        # Failures that matter reach the driver (a task's error, a lost worker, a lost
        # scheduler) and are reported there in one line.
        silence_logs=logging.CRITICAL,
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
    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # streamclust/
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
    frame: Any = inspect.currentframe()
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
        client = clients.get("local")
        if client is not None and client.status == "running":
            return client
        _local_cluster = local_cluster()
        client = _own(Client(_local_cluster, set_as_default=False))
        clients["local"] = client
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


def close_quietly(client: Any) -> None:
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
def close_all() -> None:
    global _local_cluster
    for client in list(clients.values()):
        close_quietly(client)
    clients.clear()
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
        return connect(str(address), security) if address else None
    return connect(scheduler, security)


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
