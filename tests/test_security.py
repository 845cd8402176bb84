"""Secure by default: TLS end to end, local services on 127.0.0.1, no path escapes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import run_cli

import streamclust as sc
from streamclust import runtime


@pytest.fixture()
def tls_cluster(tmp_path):
    """A scheduler and worker on 127.0.0.1 that speak TLS only, with a self-signed CA."""
    import trustme
    from distributed import LocalCluster
    from distributed.security import Security

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("streamclust-client")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(paths["ca"])
    client.cert_chain_pems[0].write_to_path(paths["cert"])
    client.private_key_pem.write_to_path(paths["key"])
    server_cert, server_key = tmp_path / "server.pem", tmp_path / "server-key.pem"
    server.cert_chain_pems[0].write_to_path(server_cert)
    server.private_key_pem.write_to_path(server_key)
    sec = Security(
        tls_ca_file=str(paths["ca"]),
        tls_scheduler_cert=str(server_cert),
        tls_scheduler_key=str(server_key),
        tls_worker_cert=str(server_cert),
        tls_worker_key=str(server_key),
        tls_client_cert=str(server_cert),
        tls_client_key=str(server_key),
        require_encryption=True,
    )
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tls://",
        host="127.0.0.1",
        security=sec,
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        yield cluster.scheduler_address, {k: str(v) for k, v in paths.items()}
        # streamclust keeps its clients for reuse: close this cluster's before it stops.
        for key in [k for k in runtime.cluster.clients if k.startswith(cluster.scheduler_address)]:
            runtime.cluster.clients.pop(key).close()


def test_fit_through_a_tls_scheduler_and_refused_without_certificate(
    tls_cluster, blobs_npy, tmp_path, capsys
):
    address, pem = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    args = ["fit", blobs_npy, "--k", "4", "--random-state", "0", "--no-progress"]
    tls = ["--tls-ca", pem["ca"], "--tls-cert", pem["cert"], "--tls-key", pem["key"]]
    assert run_cli([*args, "--scheduler", address, *tls, "--out", str(tmp_path / "m")])[0] == 0
    assert run_cli([*args, "--scheduler", "sync", "--out", str(tmp_path / "ref")])[0] == 0
    a, b = sc.load(tmp_path / "m"), sc.load(tmp_path / "ref")
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    capsys.readouterr()
    # Without the client certificate (or without TLS at all) the scheduler refuses.
    for scheduler, flags, message in (
        (address, ["--tls-ca", pem["ca"]], "--tls-cert is missing"),
        (address, [], "speaks TLS: pass --tls-ca, --tls-cert and --tls-key"),
        (address.replace("tls://", "tcp://"), [], "cannot reach the Dask scheduler"),
    ):
        code = run_cli([*args, "--scheduler", scheduler, *flags, "--out", str(tmp_path / "x")])[0]
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_local_cluster_binds_to_loopback_only(monkeypatch):
    import dask
    import psutil

    monkeypatch.setattr(runtime.cluster, "clients", {})
    monkeypatch.setattr(runtime.cluster, "_local_cluster", None)
    key = "distributed.worker.multiprocessing-method"
    with dask.config.set({key: "spawn"}):  # Dask's default; restored after the test
        client = runtime.get_client("local")
        try:
            info = client.scheduler_info()
            assert info["address"].startswith("tcp://127.0.0.1:")
            assert all(w.startswith("tcp://127.0.0.1:") for w in info["workers"])
            assert client.dashboard_link.startswith("http://127.0.0.1:")
            # Workers are forked from a server that imported the kernels (fast restarts).
            assert dask.config.get(key) == "forkserver"
            for pid in client.run(os.getpid).values():
                assert "forkserver" in " ".join(psutil.Process(pid).parent().cmdline())
            loaded = client.run(lambda: "streamclust.kernels.gmm" in __import__("sys").modules)
            assert all(loaded.values())  # imported before the first task
        finally:
            runtime.cluster.close_all()


def _batches(incoming, n=3):
    incoming.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        np.save(incoming / f"b{i}.npy", rng.standard_normal((40, 3)))


def test_landing_directory_links_outside_and_pickled_batches_are_refused(tmp_path, capsys):
    incoming = tmp_path / "in"
    _batches(incoming)
    secret = tmp_path / "outside.npy"
    np.save(secret, np.ones((40, 3)))
    (incoming / "b3.npy").symlink_to(secret)
    np.save(incoming / "b4.npy", np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    args = ["stream", str(incoming), "--k", "2", "--state", str(tmp_path / "st"), "--once"]
    assert run_cli([*args, "--no-progress"])[0] == 0
    rejected = tmp_path / "st" / "rejected"
    assert "outside the landing directory" in (rejected / "b3.npy.reason").read_text()
    assert "pickle" in (rejected / "b4.npy.reason").read_text().lower()
    assert secret.exists()  # the link was moved aside, its target untouched


def test_a_checkpoint_pointer_cannot_escape_the_state_directory(tmp_path, capsys):
    incoming = tmp_path / "in"
    _batches(incoming)
    state = tmp_path / "st"
    args = ["stream", str(incoming), "--k", "2", "--state", str(state), "--once", "--no-progress"]
    assert run_cli(args)[0] == 0
    newest = (state / "LATEST").read_text()
    for name in ("../../etc", "/etc", "..", "ckpt-1/../../../etc"):
        (state / "LATEST").write_text(name)
        capsys.readouterr()
        # Never followed: the pointer is damaged, the newest checkpoint inside is resumed.
        assert run_cli(args)[0] == 0
        err = capsys.readouterr().err
        assert "LATEST: is damaged (it names no checkpoint)" in err
        assert (state / "LATEST").read_text() == newest


def test_models_with_pickled_arrays_do_not_load(blobs32, tmp_path):
    import hashlib
    import json

    km = sc.StreamingKMeans(3, random_state=0, progress=False).fit(blobs32[:500])
    km.save(tmp_path / "m")
    arrays = dict(np.load(tmp_path / "m" / "arrays.npz", allow_pickle=False))
    arrays["cluster_centers_"] = np.array([object()] * 3, dtype=object)
    np.savez(tmp_path / "m" / "arrays.npz", **arrays)
    # Even with a matching checksum, an object array is refused (never unpickled).
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    digest = hashlib.sha256((tmp_path / "m" / "arrays.npz").read_bytes()).hexdigest()
    manifest["arrays"]["sha256"] = digest
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sc.exceptions.ModelFileError, match="pickle"):
        sc.load(tmp_path / "m")


def test_zarr_chunks_that_link_out_of_the_store_are_refused_and_never_echoed(tmp_path):
    """A chunk linked to another file used to be followed: to a text file, the error
    quoted its bytes; to another store's chunk, it was read silently."""
    rows = np.random.default_rng(0).random((3000, 4))
    sc.write_zarr(rows, tmp_path / "a.zarr", block_rows=1000)
    sc.write_zarr(rows + 1, tmp_path / "b.zarr", block_rows=1000)
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:SECRET-LINE\n")
    chunk = tmp_path / "a.zarr" / "c" / "1" / "0"
    for target in (secret, tmp_path / "b.zarr" / "c" / "1" / "0"):
        chunk.unlink()
        chunk.symlink_to(target)
        with pytest.raises(sc.SourceError, match=r"chunk 1 \(rows 1000:2000\) is a link to") as err:
            sc.StreamingKMeans(2, progress=False).fit(str(tmp_path / "a.zarr"))
        assert "outside the store" in str(err.value) and "SECRET" not in str(err.value)
    # A chunk that is not a link but holds such text: its bytes are not quoted either.
    chunk.unlink()
    chunk.write_text(secret.read_text())
    with pytest.raises(sc.SourceError, match=r"chunk 1 \(rows 1000:2000\) cannot be read") as err:
        sc.open_source(tmp_path / "a.zarr").read(0, 3000)
    assert "SECRET" not in str(err.value)
