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


# ---------------------------------------------------------------- object storage servers


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3 API server (moto's server mode) on 127.0.0.1, on a free port, for the session."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class S3Bucket:
    """A fresh bucket on the test S3 server: its name, URLs in it, and the options
    (endpoint and credentials) that reach it."""

    def __init__(self, endpoint: str, name: str) -> None:
        import s3fs

        self.name = name
        self.options = {
            "endpoint_url": endpoint,
            "key": "streamclust-test",
            "secret": "streamclust-test-secret",
            "client_kwargs": {"region_name": "us-east-1"},
        }
        import boto3  # installed with moto

        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="streamclust-test",
            aws_secret_access_key="streamclust-test-secret",
            region_name="us-east-1",
        ).create_bucket(Bucket=name)
        self.fs = s3fs.S3FileSystem(**self.options, skip_instance_cache=True)

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put(self, local: str, key: str) -> str:
        """Upload a local file or directory (a Zarr store) under ``key``; its URL."""
        self.fs.put(str(local), f"{self.name}/{key}", recursive=True)
        return self.url(key)

    def cli_options(self) -> list[str]:
        """The same options as ``--storage-option`` arguments."""
        opts = {k: v for k, v in self.options.items() if k != "client_kwargs"}
        args = [f"--storage-option={k}={v}" for k, v in opts.items()]
        return [*args, "--storage-option=client_kwargs.region_name=us-east-1"]


@pytest.fixture()
def s3_bucket(s3_endpoint, request) -> S3Bucket:
    """A new, empty bucket for one test."""
    import re
    import uuid

    stem = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    return S3Bucket(s3_endpoint, f"{stem}-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def s3_kit_bucket(s3_endpoint) -> S3Bucket:
    """One bucket for the Source conformance kit's remote stores."""
    return S3Bucket(s3_endpoint, "source-kit")


@pytest.fixture(scope="session")
def http_root(tmp_path_factory):
    """A read-only HTTP server on 127.0.0.1 (free port) serving a fresh directory:
    ``(directory, base URL)``."""
    import functools
    import http.server
    import threading

    root = tmp_path_factory.mktemp("http")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: no reconnect per read

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def pytest_collection_modifyitems(config, items) -> None:
    """Skip, with its reason, every case a ported scikit-learn suite calls not applicable."""
    for item in items:
        judge = getattr(getattr(item, "module", None), "not_applicable", None)
        if callable(judge):
            reason = judge(item)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"not applicable: {reason}"))
        known = getattr(getattr(item, "module", None), "known_failure", None)
        if callable(known):
            reason = known(item)
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


def stream_ledger(checkpoint) -> dict:
    """A stream checkpoint's ledger, without the wall-clock time of each metrics line
    (the one thing a replayed batch may record differently)."""
    ledger = json.loads((checkpoint / "ledger.json").read_text())
    for line in ledger.get("metrics", []):
        line.pop("time", None)
    return ledger
