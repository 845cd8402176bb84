"""Shared fixtures: the chapter's data, Zarr stores on disk, a real 2-worker LocalCluster."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import streamclust as sc
from streamclust.cli import main
from streamclust.datasets import BlobSpec, blob_blocks, make_chapter_blobs

os.environ.setdefault("STREAMCLUST_QUIET", "1")


@pytest.fixture(scope="session")
def chapter_X() -> np.ndarray:
    X, _ = make_chapter_blobs()
    return X


@pytest.fixture(scope="session")
def blobs32() -> np.ndarray:
    """20,000 rows of the benchmark's overlapping 16-blob, 8-feature float32 data."""
    spec = BlobSpec.make(n_centers=16, n_features=8, seed=3)
    return np.concatenate(list(blob_blocks(spec, 20_000, block_rows=5_000)))


@pytest.fixture(scope="session")
def blobs_zarr(tmp_path_factory, blobs32) -> str:
    path = tmp_path_factory.mktemp("data") / "blobs.zarr"
    sc.write_zarr(blobs32, path, block_rows=3_000)
    return str(path)


@pytest.fixture(scope="session")
def blobs_npy(tmp_path_factory, blobs32) -> str:
    path = tmp_path_factory.mktemp("data") / "blobs.npy"
    np.save(path, blobs32)
    return str(path)


def logical_blocks_of(monkeypatch, rows: int, batch_size: int, n_features: int) -> None:
    """Make the engine's logical blocks ``rows`` long (a multiple of ``batch_size``)
    for data of ``n_features``, instead of 8 MiB: small data then span many blocks.
    The driver plans the blocks, so this holds on any runner."""
    from streamclust.engine import plan

    monkeypatch.setattr(plan, "LOGICAL_BLOCK_VALUES", rows * n_features)
    assert plan.logical_block_rows(batch_size, n_features) == rows


@contextlib.contextmanager
def local_cluster_client(**options):
    """A real LocalCluster: 2 worker processes (nannies restart them), one thread each,
    on 127.0.0.1; ``options`` go to ``LocalCluster`` (e.g. ``memory_limit``)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # never a fixed port (8787 may be taken)
            **options,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def cluster_client():
    with local_cluster_client() as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def until(condition, timeout: float = 60) -> None:
    """Wait for ``condition()`` to hold; fail the test if it does not within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not so after {timeout:g} s"
        time.sleep(0.02)


class DaskProcesses:
    """A ``dask scheduler`` and one ``dask worker`` as separate processes on 127.0.0.1,
    that a test can kill and start again on the same port (as a supervisor would)."""

    def __init__(self, log_dir, port: int | None = None, worker_args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.dashboard_port = free_port()
        self.log = open(os.path.join(log_dir, f"dask-{self.port}.log"), "ab")
        self.worker_args = worker_args
        self.scheduler: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def _spawn(self, module: str, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", f"distributed.cli.{module}", *args]
        return subprocess.Popen(cmd, stdout=self.log, stderr=self.log)

    def start(self, timeout: float = 60) -> DaskProcesses:
        from distributed import Client

        self.stop()  # reap what is left of a killed scheduler and its worker
        self.scheduler = self._spawn(
            "dask_scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--dashboard-address", f"127.0.0.1:{self.dashboard_port}", "--no-show",
        )  # fmt: skip
        self.worker = self._spawn(
            "dask_worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
            "--dashboard-address", "127.0.0.1:0", *self.worker_args,
        )  # fmt: skip
        with Client(self.address, timeout=timeout, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=timeout)
        return self

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait()

    def stop(self) -> None:
        for proc in (self.worker, self.scheduler):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def forget_clients(self) -> None:
        """Close the clients streamclust cached for this address."""
        from streamclust import runtime

        for key in [k for k in runtime.cluster.clients if k.startswith(self.address + "|")]:
            runtime.cluster.clients.pop(key).close()


@pytest.fixture()
def dask_processes(tmp_path):
    procs = DaskProcesses(tmp_path)
    try:
        yield procs
    finally:
        procs.forget_clients()
        procs.stop()
        procs.log.close()


def run_cli(args, capsys=None) -> tuple[int, str, str]:
    """Run ``streamclust ARGS`` in this process (arguments stringified): its exit code,
    and its stdout and stderr when ``capsys`` is given. The one way tests call the CLI
    in-process; subprocess tests run ``python -m streamclust`` themselves."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def cli_json(args, capsys, scheduler="sync") -> dict:
    """The JSON summary of a command that must succeed (items holding several
    space-separated arguments are split)."""
    args = " ".join(map(str, args)).split()
    code, out, err = run_cli([*args, "--scheduler", scheduler, "--json", "--no-progress"], capsys)
    assert code == 0, err
    return json.loads(out)
