"""Faults on a real distributed cluster: killed workers, poison blocks, a killed driver."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
import warnings

import dask
import numpy as np
import pytest
import zarr
from conftest import local_cluster_client, logical_blocks_of, until
from sklearn.exceptions import ConvergenceWarning

import streamclust as sc
from streamclust import runtime
from streamclust.exceptions import DataError, ParameterError, SchedulerError, SourceError


@pytest.fixture()
def nanny_client():
    """A fresh cluster per test: these tests kill its workers."""
    with local_cluster_client() as client:
        yield client


def worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def kill_a_worker(client, rng: np.random.Generator) -> int:
    pids = sorted(worker_pids(client).values())
    pid = int(rng.choice(pids))
    os.kill(pid, signal.SIGKILL)
    return pid


class KillAt:
    """An ``on_block`` hook: SIGKILLs a worker (once) when the pass ``desc`` (the first
    pass) reaches ``fraction`` of its rows."""

    def __init__(self, client, fraction: float, desc: str = "pass 1") -> None:
        self.client, self.fraction, self.desc = client, fraction, desc
        self.killed: list[int] = []

    def __call__(self, desc: str, done: int, total: int) -> None:
        if desc.startswith(self.desc) and not self.killed and done >= self.fraction * total:
            self.killed.append(kill_a_worker(self.client, np.random.default_rng(0)))


@pytest.mark.parametrize("where", ["disk", pytest.param("s3", marks=pytest.mark.slow)])
def test_worker_killed_mid_fit_gives_the_same_model(
    blobs_zarr, nanny_client, monkeypatch, request, where
):
    params = dict(n_clusters=16, n_init=4, batch_size=500, max_passes=2, random_state=1)
    logical_blocks_of(monkeypatch, 2_000, batch_size=500, n_features=8)
    source = sc.open_source(blobs_zarr)  # 10 blocks, 10 tasks per chain
    if where == "s3":  # the same store in a bucket: the workers read it from there
        bucket = request.getfixturevalue("s3_bucket")
        url = bucket.put(blobs_zarr, "blobs.zarr")
        source = sc.open_source(url, storage_options=bucket.options)
    ref = sc.StreamingKMeans(**params, client="sync", progress=False).fit(source)
    before = set(worker_pids(nanny_client).values())
    killer = KillAt(nanny_client, 0.5)
    with runtime.on_block(killer):
        km = sc.StreamingKMeans(**params, client=nanny_client).fit(source)
    assert killer.killed and killer.killed[0] in before
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(km.init_scores_, ref.init_scores_)
    assert km.inertia_ == ref.inertia_
    # Every mini-batch was applied exactly once: the driver's step counter.
    assert km._state.steps == ref._state.steps == km.n_steps_
    # The nanny brought the killed worker back.
    until(lambda: len(nanny_client.scheduler_info()["workers"]) >= 2, timeout=30)
    after = set(worker_pids(nanny_client).values())
    assert killer.killed[0] not in after and len(after) == 2


@pytest.mark.slow  # 7-9 s: keeps the default run under 3 minutes
def test_in_memory_data_on_a_cluster_survives_a_worker_kill(blobs32, nanny_client, monkeypatch):
    """In-memory data reaches the workers block by block (scattered); the blocks a killed
    worker held are lost with it, and their tasks cancelled: the driver, which still has
    the data, sends those blocks again. For a scan (fit) and a map over blocks (score)."""
    logical_blocks_of(monkeypatch, 1_000, batch_size=500, n_features=8)
    source = sc.open_source(blobs32, block_rows=1_000)
    params = dict(n_clusters=8, n_init=2, batch_size=500, max_passes=2, random_state=0)
    ref = sc.StreamingKMeans(**params, client="sync", progress=False).fit(source)
    ref_score = ref.score(source)
    for desc in ("pass 1", "inertia"):
        killer = KillAt(nanny_client, 0.5, desc)
        with runtime.on_block(killer):
            km = sc.StreamingKMeans(**params, client=nanny_client).fit(source)
        assert km.score(source) == ref_score
        assert killer.killed, desc
        np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
        assert km._state.steps == ref._state.steps
        nanny_client.wait_for_workers(2, timeout=30)


@pytest.mark.slow  # (subprocesses or a cluster: with the long tests)
def test_a_task_dask_gives_up_on_is_submitted_again(tmp_path, blobs_zarr):
    """With distributed's retries set to none, a task whose worker dies under it fails
    with KilledWorker at once; the driver submits it again, for both primitives. In the
    scan, both workers die at the same block: the tasks tied to them are not stranded."""
    source = sc.open_source(blobs_zarr, block_rows=2_000)
    deaths = tmp_path / "deaths"
    allowed = {"n": 0}  # deaths allowed to the tasks at row 10,000 (set per part below)

    def die_at_10000(lo: int) -> None:
        if lo == 10_000 and len(deaths.read_text()) < allowed["n"]:
            with open(deaths, "a") as fh:
                fh.write("x")
            os.kill(os.getpid(), signal.SIGKILL)

    def total(block, lo):
        die_at_10000(lo)
        return float(block.sum(dtype=np.float64))

    def running_sum(state, block, lo, arg):
        die_at_10000(lo)
        return state + float(block.sum(dtype=np.float64))

    deaths.write_text("")
    steps = [(lo, hi, None) for lo, hi in source.blocks()]
    sync = runtime.resolve_runner("sync")
    want_map = list(runtime.map_blocks(total, source, runner=sync))
    want_scan = runtime.scan(running_sum, source, [0.0, 1.0], steps, runner=sync)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        local_cluster_client() as client,
    ):
        runner = runtime.resolve_runner(client)
        allowed["n"] = 1
        assert list(runtime.map_blocks(total, source, runner=runner)) == want_map
        assert deaths.read_text() == "x"  # a worker did die under a task
        deaths.write_text("")
        allowed["n"] = 2  # one per chain: each worker dies at row 10,000
        assert runtime.scan(running_sum, source, [0.0, 1.0], steps, runner=runner) == want_scan
        assert deaths.read_text() == "xx"


@pytest.mark.slow
def test_call_tells_a_tasks_own_oserror_from_a_lost_scheduler(dask_processes, tmp_path):
    """An OSError the task raises is its own error, raised once; a scheduler killed under
    the client (noticed by it yet or not: the scatter may be the first to fail) is a
    SchedulerError once ``reconnect_timeout`` has passed, never a bare OSError."""
    runs = tmp_path / "runs"

    def fails(path, data):
        with open(path, "a") as fh:
            fh.write("x")
        raise FileNotFoundError(f"the task's own: {data.sum():g}")

    dask_processes.start()
    runner = runtime.resolve_runner(dask_processes.address)
    with pytest.raises(FileNotFoundError, match="the task's own: 6"):
        runtime.call(fails, str(runs), data=np.full(3, 2.0), runner=runner, reconnect_timeout=0)
    assert runs.read_text() == "x"  # not run again as if the scheduler had been lost
    assert runtime.call(np.add, 1.0, data=np.full(3, 2.0), runner=runner).tolist() == [3.0] * 3
    dask_processes.kill_scheduler()
    with pytest.raises(
        SchedulerError, match=re.escape(f"lost the Dask scheduler at '{dask_processes.address}'")
    ):
        runtime.call(np.add, 1.0, data=np.full(3, 2.0), runner=runner, reconnect_timeout=0.5)


@pytest.mark.parametrize("end", ["closed by us", "gives up by itself"])
def test_our_client_of_a_dead_scheduler_logs_nothing(dask_processes, monkeypatch, end):
    """A client that lost its scheduler reconnects by itself and logs its failure:
    when it gives up ("Failed to reconnect"), or when closing it cancels the
    reconnection -- also after ``close`` returned, if the reconnection was stuck
    in a connect (forced here by a close that gives up at once). Either may come
    while the driver is still in a call, before its one-line SchedulerError: none
    of it may reach the user's terminal."""
    dask_processes.start()
    client = runtime.cluster.connect(dask_processes.address, timeout=1.0)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    log = logging.getLogger("distributed.client")
    log.addHandler(handler)
    try:
        dask_processes.kill_scheduler()
        until(lambda: client.status == "connecting")
        if end == "closed by us":
            monkeypatch.setattr(runtime.cluster, "CLOSE_TIMEOUT", 0.01)
            runtime.cluster.close_quietly(client)
        until(lambda: client._handle_report_task.done())
    finally:
        log.removeHandler(handler)
    assert client.status == "closed"
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []


def test_chains_of_a_lost_worker_move_to_live_ones_and_back(nanny_client):
    runner = runtime.runners.DistributedRunner(nanny_client)
    a, b = sorted(worker_pids(nanny_client))
    assert runner.replace([a, b, a, b]) == [a, b, a, b]  # nothing to do
    gone = "tcp://127.0.0.1:1"
    # The chains of a lost worker go where there is room; the others stay put.
    assert runner.replace([gone, gone, a, a]) == [b, b, a, a]
    assert runner.replace([gone, b]) == [a, b]
    # A worker joins (a nanny restarted one): chains move to it until the load is even.
    assert runner.replace([a, a, a, a]) == [a, a, b, b]
    assert runner.replace([a, a, a]) == [a, a, b]


def poisoned_store(tmp_path, blobs32, rows: slice):
    path = tmp_path / "poison.zarr"
    sc.write_zarr(blobs32, path, block_rows=2_000)
    arr = zarr.open_array(str(path), mode="r+")
    bad = arr[rows]
    bad[len(bad) // 2, 3] = np.nan
    arr[rows] = bad
    return path


def test_poison_block_is_one_clear_error_naming_its_rows(tmp_path, blobs32, nanny_client):
    from distributed import get_task_stream

    path = poisoned_store(tmp_path, blobs32, slice(10_000, 12_000))
    with get_task_stream(nanny_client) as ts:
        with pytest.raises(
            DataError,
            match=r"chunk 5 \(rows 10000:12000\) contains NaN: row index 11000, column index 3 ",
        ):
            sc.StreamingKMeans(8, n_init=2, batch_size=500, client=nanny_client).fit(str(path))
    # The error came back as the task's value, raised once on the driver: no task erred
    # (so no worker logged a traceback, and nothing was retried).
    assert ts.data and not [t for t in ts.data if t.get("status") == "error"]


def test_corrupt_chunk_is_one_clear_error(tmp_path, blobs32, nanny_client):
    path = tmp_path / "corrupt.zarr"
    sc.write_zarr(blobs32, path, block_rows=2_000)
    chunk = path / "c" / "5" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(SourceError, match=r"chunk 5 \(rows 10000:12000\) cannot be read.*corrupt"):
        sc.StreamingKMeans(8, n_init=2, batch_size=500, client=nanny_client).fit(str(path))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_chaos_worker_kills_during_fit_score_and_detect(tmp_path, nanny_client):
    """A worker is SIGKILLed every 2-4 s; everything still completes correctly."""
    from streamclust.datasets import write_blobs_zarr

    path = tmp_path / "chaos.zarr"
    write_blobs_zarr(path, 400_000, n_centers=8, n_features=8, seed=2, block_rows=20_000)
    params = dict(n_components=8, covariance_type="diag", max_iter=5, tol=0, random_state=0)
    ref = sc.StreamingGaussianMixture(**params, client="sync", progress=False).fit(str(path))
    ref_score = ref.score(str(path))
    ref_det = sc.DensityAnomalyDetector(ref, percentile=4).fit(str(path))

    stop = threading.Event()
    kills: list[int] = []

    def chaos() -> None:
        rng = np.random.default_rng(7)
        while not stop.wait(rng.uniform(2.0, 4.0)):
            try:
                kills.append(kill_a_worker(nanny_client, rng))
            except Exception:  # a worker restarting right now: try again later
                pass

    thread = threading.Thread(target=chaos, daemon=True)
    thread.start()
    ref_flags = ref_det.predict(str(path))
    rounds = 0
    try:
        # Repeat the whole job until the chaos has struck at least 3 times.
        while len(kills) < 3 and rounds < 10:
            gm = sc.StreamingGaussianMixture(**params, client=nanny_client, progress=False)
            gm.fit(str(path))
            score = gm.score(str(path))
            det = sc.DensityAnomalyDetector(gm, percentile=4).fit(str(path))
            flags = det.predict(str(path))
            np.testing.assert_array_equal(gm.means_, ref.means_)
            np.testing.assert_array_equal(gm.covariances_, ref.covariances_)
            assert score == ref_score
            assert det.threshold_ == ref_det.threshold_
            np.testing.assert_array_equal(flags, ref_flags)
            rounds += 1
    finally:
        stop.set()
        thread.join()
    assert len(kills) >= 3


def kill_at(cmd, env, targets, position, jitter=lambda: 0.0) -> int:
    """Run ``cmd`` once per target and SIGKILL it once ``position()`` reaches the target
    (``jitter()`` seconds later); how many runs were killed before they finished."""
    import subprocess

    for kills, target in enumerate(targets):
        proc = subprocess.Popen(cmd, env=env)
        while proc.poll() is None and position() < target:
            time.sleep(0.002)
        time.sleep(jitter())
        if proc.poll() is not None:
            return kills
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return len(targets)


class Crash(Exception):
    pass


def crash_after(blocks: int):
    """An ``on_block`` hook that raises (a driver dying) after ``blocks`` blocks of any
    pass."""
    seen = [0]

    def count(desc: str, done: int, total: int) -> None:
        seen[0] += 1
        if seen[0] == blocks:
            raise Crash

    return count


@pytest.mark.parametrize("client", ["sync", "threads", "threads-s3"])
def test_fit_resumes_from_its_checkpoint_bit_identical(
    blobs_zarr, tmp_path, monkeypatch, request, client
):
    params = dict(n_clusters=8, n_init=3, batch_size=400, max_passes=3, random_state=4)
    logical_blocks_of(monkeypatch, 3_200, batch_size=400, n_features=8)
    data = sc.open_source(blobs_zarr)  # 7 blocks a pass
    if client == "threads-s3":  # the same store in a bucket
        bucket = request.getfixturevalue("s3_bucket")
        data = sc.open_source(bucket.put(blobs_zarr, "b.zarr"), storage_options=bucket.options)
        client = "threads"
    ref = sc.StreamingKMeans(**params, client="sync", progress=False).fit(data)
    ckpt = tmp_path / "ckpt"
    # Die at several points: during the first pass, at a pass boundary, in the last pass.
    for blocks in (3, 7, 4, 1):
        with pytest.raises(Crash), runtime.on_block(crash_after(blocks)):
            sc.StreamingKMeans(**params, client=client, checkpoint=ckpt).fit(data)
    km = sc.StreamingKMeans(**params, client=client, progress=False, checkpoint=ckpt)
    km.fit(data)
    np.testing.assert_array_equal(km.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(km.init_scores_, ref.init_scores_)
    assert km._state.steps == ref._state.steps and km.inertia_ == ref.inertia_
    # Another fit must not pick up this checkpoint.
    with pytest.raises(ParameterError, match="was written by another fit"):
        sc.StreamingKMeans(**{**params, "n_clusters": 9}, checkpoint=ckpt).fit(data)
    with pytest.raises(ParameterError, match="needs an int random_state"):
        sc.StreamingKMeans(8, checkpoint=ckpt).fit(data)


@pytest.mark.parametrize("init_params", ["kmeans", "random"])
def test_gmm_fit_resumes_from_its_checkpoint_bit_identical(
    blobs_zarr, tmp_path, monkeypatch, init_params
):
    """Exact EM saves every candidate and the sums of the pass under way after each block
    (the K-Means initialization its own chain): crashes in the initialization, inside
    and at the end of EM passes all resume to the uninterrupted model."""
    params = dict(n_components=6, n_init=2, init_params=init_params, max_iter=8, random_state=3)
    params |= dict(covariance_type="diag", tol=1e-4, batch_size=1_000)
    logical_blocks_of(monkeypatch, 3_000, batch_size=1_000, n_features=8)
    data = sc.open_source(blobs_zarr)  # 7 blocks a pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = sc.StreamingGaussianMixture(**params, client="sync", progress=False).fit(data)
    ckpt = tmp_path / "ckpt"
    for blocks in (3, 9, 7, 12, 1, 10):
        with pytest.raises(Crash), runtime.on_block(crash_after(blocks)):
            sc.StreamingGaussianMixture(**params, client="threads", checkpoint=ckpt).fit(data)
    meta, _ = sc.persistence.load_checkpoint(ckpt / "gmm-fit.npz")
    assert meta["it"] > 1  # the crashes reached EM
    gm = sc.StreamingGaussianMixture(**params, client="threads", progress=False, checkpoint=ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(data)
    for name in ("weights_", "means_", "covariances_", "init_lower_bounds_"):
        np.testing.assert_array_equal(getattr(gm, name), getattr(ref, name), err_msg=name)
    assert (gm.n_iter_, gm.converged_, gm.lower_bound_) == (
        ref.n_iter_,
        ref.converged_,
        ref.lower_bound_,
    )
    with pytest.raises(ParameterError, match="was written by another fit"):
        sc.StreamingGaussianMixture(**{**params, "tol": 1e-3}, checkpoint=ckpt).fit(data)


def test_bayesian_fit_resumes_from_its_checkpoint_bit_identical(blobs_zarr, tmp_path, monkeypatch):
    """Variational EM checkpoints as exact EM does, with its posterior, priors and
    ``sum r log r``: crashes in the priors' pass, the initialization and EM resume to
    the uninterrupted model."""
    params = dict(n_components=6, n_init=2, max_iter=6, random_state=3, batch_size=1_000)
    params |= dict(covariance_type="full", tol=1e-6, weight_concentration_prior=0.01)
    logical_blocks_of(monkeypatch, 3_000, batch_size=1_000, n_features=8)
    data = sc.open_source(blobs_zarr)  # 7 blocks a pass
    model = sc.StreamingBayesianGaussianMixture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = model(**params, client="sync", progress=False).fit(data)
    ckpt = tmp_path / "ckpt"
    for blocks in (3, 9, 7, 12, 1, 10, 15):
        with pytest.raises(Crash), runtime.on_block(crash_after(blocks)):
            model(**params, client="threads", checkpoint=ckpt).fit(data)
    meta, _ = sc.persistence.load_checkpoint(ckpt / "gmm-fit.npz")
    assert meta["it"] > 1  # the crashes reached EM
    bgm = model(**params, client="threads", progress=False, checkpoint=ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bgm.fit(data)
    for name in ("weights_", "means_", "covariances_", "mean_precision_", "init_lower_bounds_"):
        np.testing.assert_array_equal(getattr(bgm, name), getattr(ref, name), err_msg=name)
    assert bgm.lower_bounds_ == ref.lower_bounds_ and bgm.n_iter_ == ref.n_iter_
    with pytest.raises(ParameterError, match="was written by another fit"):
        model(**{**params, "tol": 1e-3}, checkpoint=ckpt).fit(data)


@pytest.mark.slow
def test_driver_killed_at_20_points_resumes_bit_identical(tmp_path):
    """``streamclust fit --checkpoint`` SIGKILLed 20 times, rerun each time, then compared."""
    import subprocess
    import sys

    from streamclust.datasets import write_blobs_zarr

    data = tmp_path / "d.zarr"
    write_blobs_zarr(data, 40_000, n_centers=16, n_features=16, block_rows=2_500)
    base = [sys.executable, "-m", "streamclust", "fit", str(data), "--k", "16"]
    base += ["--n-init", "3", "--batch-size", "500", "--max-passes", "120", "--no-progress"]
    base += ["--scheduler", "threads"]
    env = {**os.environ, "STREAMCLUST_QUIET": "1"}
    subprocess.run([*base, "--out", str(tmp_path / "ref")], check=True, env=env)
    ckpt = tmp_path / "ckpt"
    cmd = [*base, "--out", str(tmp_path / "resumed"), "--checkpoint", str(ckpt)]
    state = ckpt / "kmeans-fit.npz"

    # 40,000 rows are one block (one scan step) a pass: the fit is 120 steps.

    def position() -> int:
        try:
            meta, _ = sc.persistence.load_checkpoint(state)
        except Exception:  # not there yet
            return -1
        return meta["pass"] + meta["step"]

    rng = np.random.default_rng(3)
    # 20 points spread over the fit's 120 steps; each kill lands up to 5 ms after one.
    targets = np.linspace(1, 115, 20).astype(int)
    assert kill_at(cmd, env, targets, position, lambda: rng.uniform(0, 0.005)) == 20
    if not (tmp_path / "resumed").exists():
        subprocess.run(cmd, check=True, env=env)
    ref = sc.load(tmp_path / "ref")
    got = sc.load(tmp_path / "resumed")
    np.testing.assert_array_equal(got.cluster_centers_, ref.cluster_centers_)
    np.testing.assert_array_equal(got.init_scores_, ref.init_scores_)
    assert got.inertia_ == ref.inertia_ and got._state.steps == ref._state.steps


@pytest.mark.slow
def test_gmm_cli_fit_killed_5_times_resumes_bit_identical(tmp_path):
    """``streamclust fit --model gmm --checkpoint`` SIGKILLed inside EM passes, rerun."""
    import subprocess
    import sys

    from streamclust.datasets import write_blobs_zarr

    data = tmp_path / "d.zarr"
    write_blobs_zarr(data, 80_000, n_centers=8, n_features=8, block_rows=2_500)
    base = [sys.executable, "-m", "streamclust", "fit", str(data), "--model", "gmm", "--k", "8"]
    base += ["--covariance", "full", "--tol", "0", "--max-iter", "40", "--n-init", "2"]
    base += ["--no-progress", "--scheduler", "threads"]
    env = {**os.environ, "STREAMCLUST_QUIET": "1", "PYTHONWARNINGS": "ignore"}
    subprocess.run([*base, "--out", str(tmp_path / "ref")], check=True, env=env)
    ckpt = tmp_path / "ckpt"
    cmd = [*base, "--out", str(tmp_path / "resumed"), "--checkpoint", str(ckpt)]

    def position() -> int:  # blocks done, counted from the first EM pass (32 a pass)
        try:
            meta, _ = sc.persistence.load_checkpoint(ckpt / "gmm-fit.npz")
        except Exception:  # not there yet
            return -1
        return (meta["it"] - 1) * 32 + meta["blocks"]

    assert kill_at(cmd, env, (5, 100, 300, 600, 900), position) == 5  # of 1,280 blocks
    subprocess.run(cmd, check=True, env=env)
    ref, got = sc.load(tmp_path / "ref"), sc.load(tmp_path / "resumed")
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
    assert got.n_iter_ == ref.n_iter_ == 40 and got.lower_bound_ == ref.lower_bound_


class PeakRSS:
    """Samples the resident memory of some processes every 20 ms, keeping each one's peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
def test_512_mib_workers_fit_a_4_gib_store(tmp_path):
    """Two workers limited to 512 MiB each fit 4 GiB of Zarr: none is paused or restarted
    for memory, and the driver's memory grows by a small fraction of one block window."""
    import shutil

    from streamclust.datasets import write_blobs_zarr

    if shutil.disk_usage(tmp_path).free < 8 * 2**30:
        pytest.skip("needs 8 GiB of free disk for a 4 GiB store")
    rows = 2**25  # x 32 float32 columns = 4 GiB
    store = write_blobs_zarr(tmp_path / "big.zarr", rows)
    assert rows * store.n_features * store.dtype.itemsize == 4 * 2**30
    limit = 512 * 2**20
    with local_cluster_client(memory_limit=limit) as client:
        pids = worker_pids(client)
        km = sc.StreamingKMeans(
            16, n_init=3, batch_size=16_384, max_passes=1, random_state=0, client=client
        )
        with PeakRSS({**pids, "driver": os.getpid()}) as rss:
            driver_before = rss.procs["driver"].memory_info().rss
            km.set_params(progress=False).fit(str(tmp_path / "big.zarr"))
        assert km.n_steps_ == rows // 16_384 and np.isfinite(km.inertia_)
        assert worker_pids(client) == pids  # no worker was killed and restarted
        pause = dask.config.get("distributed.worker.memory.pause") * limit
        for worker in pids:
            assert rss.peak[worker] < pause, (worker, rss.peak[worker] / 2**20)
        messages = [msg for lines in client.get_worker_logs().values() for _, msg in lines]
        assert not [m for m in messages if "Pausing worker" in m or "memory budget" in m]
        # The driver never holds data: its growth is bounded by far less than the store.
        assert rss.peak["driver"] - driver_before < 128 * 2**20
