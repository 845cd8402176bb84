"""On a Dask cluster, a pass reads each block from storage once, whatever the number
of workers: the chains on other workers get it from the worker that read it. Counted
at an HTTP server the test starts (every chunk is one GET)."""

from __future__ import annotations

import collections
import functools
import http.server
import shutil
import threading

import numpy as np
import pytest

import streamclust as sc

KM = {"n_clusters": 8, "n_init": 4, "batch_size": 1024, "random_state": 0, "progress": False}


@pytest.fixture(scope="module")
def counting_server(tmp_path_factory, blobs_zarr):
    """The blobs store served over HTTP; ``(url, counts)`` with the GETs of each chunk."""
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(blobs_zarr, root / "blobs.zarr")
    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    class Counting(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if "/c/" in self.path:
                with lock:
                    counts[self.path] += 1
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Counting, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/blobs.zarr", counts
    server.shutdown()
    server.server_close()


def _gets(counts, fit) -> int:
    counts.clear()
    fit()
    return sum(counts.values())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_cluster_pass_reads_each_chunk_once(counting_server, cluster_client):
    url, counts = counting_server
    # The reference: threads in this process without the cache, so every pass reads
    # storage once (the scan, the exact inertia, and the blocks of the initial sample).
    fits = {}
    local = _gets(
        counts, lambda: fits.setdefault("local", sc.StreamingKMeans(**KM, cache_mb=0).fit(url))
    )
    assert len(counts) == 7  # 20,000 rows in chunks of 3,000
    remote = _gets(
        counts,
        lambda: fits.setdefault("remote", sc.StreamingKMeans(**KM, client=cluster_client).fit(url)),
    )
    np.testing.assert_array_equal(fits["remote"].cluster_centers_, fits["local"].cluster_centers_)
    # Two workers each run chains, and still read every chunk once per pass.
    assert remote == local, dict(counts)
    gm = {"n_components": 3, "max_iter": 4, "random_state": 0, "progress": False}
    local = _gets(counts, lambda: sc.StreamingGaussianMixture(**gm, cache_mb=0).fit(url))
    remote = _gets(
        counts, lambda: sc.StreamingGaussianMixture(**gm, client=cluster_client).fit(url)
    )
    assert remote == local, dict(counts)
