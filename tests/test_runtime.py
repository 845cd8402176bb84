"""One machine, no surprises: threads by default, and scripts that just run.

The scripts run as real subprocesses, the way a user runs them: a plain file
with no main guard, the same code on standard input and through ``exec``, and
the command line from a folder that holds a ``streamclust/`` directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import streamclust as sc
from streamclust import runtime

#: A script as a user writes it: no ``if __name__ == "__main__":``.
SCRIPT = """\
import streamclust as sc
print("start")
X = sc.open_source("data.zarr")
km = sc.StreamingKMeans(n_clusters=5, n_init=4, batch_size=100, random_state=0).fit(X)
print("inertia", round(km.inertia_, 6))
"""


def run_python(cwd, *args: str, stdin: str | None = None, timeout: float = 120):
    """``python ARGS`` in ``cwd``, as a user would run it (no STREAMCLUST_QUIET)."""
    env = {k: v for k, v in os.environ.items() if k != "STREAMCLUST_QUIET"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture()
def script_dir(tmp_path, chapter_X):
    sc.write_zarr(chapter_X, tmp_path / "data.zarr", block_rows=500)
    (tmp_path / "tour.py").write_text(SCRIPT)
    return tmp_path


@pytest.fixture(scope="module")
def expected_inertia(tmp_path_factory, chapter_X) -> str:
    path = tmp_path_factory.mktemp("ref") / "data.zarr"
    sc.write_zarr(chapter_X, path, block_rows=500)
    km = sc.StreamingKMeans(
        n_clusters=5, n_init=4, batch_size=100, random_state=0, client="sync", progress=False
    ).fit(str(path))
    return f"inertia {round(km.inertia_, 6)}"


def test_no_client_means_threads_in_this_process(blobs_zarr, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert runtime.get_client(None) is None
    runner = runtime.resolve_runner(None, sc.open_source(blobs_zarr))
    assert runner.kind == "threads" and not runner.remote
    assert "local" not in runtime.cluster.clients  # nothing was started


def test_scheduler_address_config_is_used_and_matches_threads(blobs_zarr, cluster_client):
    import dask

    address = cluster_client.scheduler.address
    params = dict(n_clusters=6, n_init=3, batch_size=500, random_state=1, progress=False)
    threads = sc.StreamingKMeans(**params).fit(blobs_zarr)
    with dask.config.set({"scheduler-address": address}):
        assert runtime.get_client(None).scheduler.address == address
        runner = runtime.resolve_runner(None, sc.open_source(blobs_zarr))
        assert runner.remote
        remote = sc.StreamingKMeans(**params).fit(blobs_zarr)
    np.testing.assert_array_equal(remote.cluster_centers_, threads.cluster_centers_)
    for key in [k for k in runtime.cluster.clients if k.startswith(address + "|")]:
        runtime.cluster.clients.pop(key).close()


def test_a_plain_script_without_main_guard_just_runs(script_dir, expected_inertia):
    done = run_python(script_dir, "tour.py")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["start", expected_inertia]
    assert "dashboard" not in done.stderr and "Traceback" not in done.stderr
    # Nothing of distributed is even imported on the default path (0.2 s saved).
    check = SCRIPT + "import sys\nprint('distributed' in sys.modules)\n"
    assert run_python(script_dir, "-", stdin=check).stdout.splitlines()[-1] == "False"


@pytest.mark.slow  # (subprocesses or a cluster: with the long tests)
def test_the_same_script_on_standard_input_and_through_exec(script_dir, expected_inertia):
    piped = run_python(script_dir, "-", stdin=SCRIPT)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines() == ["start", expected_inertia]
    notebook = run_python(script_dir, "-c", "exec(open('tour.py').read())")
    assert notebook.returncode == 0, notebook.stderr
    assert notebook.stdout.splitlines() == ["start", expected_inertia]


@pytest.mark.slow  # (subprocesses or a cluster: with the long tests)
def test_commands_run_from_a_folder_holding_a_streamclust_directory(script_dir):
    (script_dir / "streamclust").mkdir()  # e.g. the folder a clone was made in
    (script_dir / "streamclust" / "README.md").write_text("not the package\n")
    command = shutil.which("streamclust", path=os.path.dirname(sys.executable))
    assert command, "the streamclust console script is installed next to this Python"
    for scheduler in ([], ["--scheduler", "local"]):
        out = f"model{len(scheduler)}"
        done = subprocess.run(
            [command, "fit", "data.zarr", "--k", "5", "--out", out, "--no-progress", *scheduler],
            cwd=script_dir,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    np.testing.assert_array_equal(
        sc.load(script_dir / "model0").cluster_centers_,
        sc.load(script_dir / "model2").cluster_centers_,
    )


@pytest.mark.slow  # (subprocesses or a cluster: with the long tests)
def test_a_local_cluster_from_a_script_without_guard_fails_in_one_line(script_dir):
    (script_dir / "local.py").write_text(SCRIPT.replace("random_state=0", 'client="local"'))
    done = run_python(script_dir, "local.py", timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("streamclust.exceptions.ParameterError: client='local' starts worker")
    assert 'if __name__ == "__main__":' in last and "threads" in last
    assert "bootstrapping" not in done.stderr and "Nanny" not in done.stderr
    assert done.stdout.splitlines() == ["start"]  # printed once: nothing ran it again

    piped = run_python(script_dir, "-", stdin=SCRIPT.replace("random_state=0", 'client="local"'))
    assert piped.returncode == 1
    assert "standard input" in piped.stderr.strip().splitlines()[-1]


def test_a_local_cluster_from_a_guarded_script_works(script_dir, expected_inertia):
    guarded = (
        "def main():\n"
        + textwrap.indent(SCRIPT, "    ")
        + ('\n\nif __name__ == "__main__":\n    main()\n')
    )
    (script_dir / "guarded.py").write_text(
        guarded.replace("random_state=0", 'random_state=0, client="local"')
    )
    done = run_python(script_dir, "guarded.py", timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["start", expected_inertia]
    assert "streamclust: Dask dashboard at http://127.0.0.1:" in done.stderr


class SilentServer:
    """A loopback TCP server that accepts every connection and never answers."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture()
def silent_server():
    server = SilentServer()
    yield server
    server.close()


def test_a_server_that_never_answers_is_given_up_on_in_time(silent_server):
    """distributed's own Client() waits forever for such a server's reply; ours stops at
    its deadline with one line."""
    started = time.monotonic()
    with pytest.raises(sc.SchedulerError, match="accepted the connection but did not answer"):
        runtime.cluster.connect(silent_server.address, timeout=1)
    assert time.monotonic() - started < 30  # a deadline, not forever (generous: busy CI)


@pytest.mark.slow
def test_fit_and_stream_on_a_silent_scheduler_exit_2(silent_server, script_dir):
    np.save(script_dir / "x.npy", np.random.default_rng(0).random((100, 2)))
    (script_dir / "in").mkdir()
    np.save(script_dir / "in" / "b0.npy", np.random.default_rng(0).random((100, 2)))
    for args in (
        ["fit", "x.npy", "--out", "m", "--k", "2"],
        ["stream", "in", "--state", "st", "--k", "2", "--once"],
    ):
        done = run_python(
            script_dir, "-m", "streamclust", *args, "--scheduler", silent_server.address
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "did not answer as a Dask scheduler" in lines[0]
    assert not (script_dir / "m").exists() and not (script_dir / "st").exists()


def _blas_threads(block, start):
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


def test_thread_tasks_run_single_threaded_blas_and_the_setting_comes_back():
    from threadpoolctl import threadpool_info, threadpool_limits

    import streamclust as sc
    from streamclust import runtime

    source = sc.ArraySource(np.zeros((4_000, 2)), block_rows=500)
    runner = runtime.resolve_runner("threads", source)
    if runner.n_workers < 2:  # one thread: BLAS is left as it is
        pytest.skip("one core: the thread pool runs one task at a time")
    with threadpool_limits(limits=2, user_api="blas"):
        for _ in range(2):  # the second pass limits BLAS as the first did
            inside = list(runtime.map_blocks(_blas_threads, source, runner=runner))
            assert all(threads == {1} for threads in inside)
            after = {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
            assert after == {2}
