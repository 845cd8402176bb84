"""The K-Means fit of benchmarks/kmeans.py from local disk and from object storage.

    python benchmarks/storage.py [--rows 2000000] [--latency-ms 20] [--repeat 1]

One run starts an S3 server (moto's server mode, a subprocess on 127.0.0.1)
and uploads the 2M x 32 float32 Zarr store of benchmarks/kmeans.py to it, then
starts, in this process, a loopback TCP proxy in front of the server that
holds every request for ``--latency-ms`` before passing it on (the first-byte
latency of object storage) and counts the requests and the bytes served.
Every method runs in a fresh subprocess (peak memory of its process tree,
cluster workers included):

- local: StreamingKMeans(k=64, n_init=10, batch_size=4096) fitted from the
  store on local disk, threads (the default runner);
- s3: the same fit from the S3 server, directly;
- s3+latency: the same fit through the proxy;
- s3+latency-fsspec: the same through zarr's fsspec store (storage option
  ``backend="fsspec"``) instead of the default, obstore (zarr's ``ObjectStore``);
- cluster: the same fit through the proxy on a 2-worker LocalCluster;
- cluster-score: one ``score`` pass (exactly one pass over the data) on it.

Requests and bytes are counted at the proxy, per method; "per pass" divides
by the passes the method makes over the data: a fit on threads reads the
data once (its cache serves the exact-inertia pass) plus the 8 blocks of the
initial sample; on a cluster (no cache) twice plus the sample; a score once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from _harness import add_child_arguments, ensure_data, machine, run_child, write_result

K, N_INIT, BATCH = 64, 10, 4096
METHODS = ["local", "s3", "s3+latency", "s3+latency-fsspec", "cluster", "cluster-score"]
BUCKET = "bench"
KEY, SECRET = "bench-key", "bench-secret"


def options(endpoint: str) -> dict:
    return {
        "endpoint_url": endpoint,
        "key": KEY,
        "secret": SECRET,
        "client_kwargs": {"region_name": "us-east-1"},
    }


# ---------------------------------------------------------------- the S3 server and proxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, endpoint
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the S3 server did not start") from None
            time.sleep(0.2)


def upload(local: Path, endpoint: str) -> int:
    """Put the store in the bucket (once per run); its stored bytes."""
    import boto3
    import s3fs

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    fs = s3fs.S3FileSystem(**options(endpoint))
    t = time.perf_counter()
    fs.put(str(local), f"{BUCKET}/{local.name}", recursive=True)
    print(f"uploaded {local.name} in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return sum(p.stat().st_size for p in local.rglob("*") if p.is_file())


class LatencyProxy:
    """A loopback TCP proxy that holds each request ``delay`` s before forwarding it,
    counting requests and the bytes sent back."""

    METHODS = (b"GET ", b"HEAD", b"PUT ", b"POST", b"DELE")

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port, self.delay = upstream_port, delay
        self.requests = self.bytes = 0
        self.loop = asyncio.new_event_loop()
        self.port = free_port()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def to_server() -> None:
            while data := await reader.read(1 << 16):
                if data[:4] in self.METHODS:
                    self.requests += 1
                    await asyncio.sleep(self.delay)
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def to_client() -> None:
            while data := await up_r.read(1 << 18):
                self.bytes += len(data)
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(to_server(), to_client())
        except (ConnectionError, OSError):
            writer.close()

    def reset(self) -> tuple[int, int]:
        counts = (self.requests, self.bytes)
        self.requests = self.bytes = 0
        return counts


# ---------------------------------------------------------------- one method, in a child


def run_method(method: str, path: Path, endpoint: str) -> dict:
    import streamclust as sc

    info: dict = {}
    client = None
    if method.startswith("cluster"):
        t = time.perf_counter()
        client = sc.get_client("local")
        info["startup_seconds"] = time.perf_counter() - t
    km = sc.StreamingKMeans(
        n_clusters=K,
        n_init=N_INIT,
        batch_size=BATCH,
        random_state=0,
        progress=False,
        client=client,
    )
    data = str(path) if method == "local" else f"s3://{BUCKET}/{path.name}"
    opts = None if method == "local" else options(endpoint)
    if method.endswith("fsspec"):
        opts = {**options(endpoint), "backend": "fsspec"}
    if method == "cluster-score":
        import numpy as np

        km.cluster_centers_ = np.random.default_rng(0).normal(size=(K, 32)).astype(np.float32)
        km.n_features_in_ = 32
        t = time.perf_counter()
        km.score(data, storage_options=opts)
        return {**info, "seconds": time.perf_counter() - t}
    t = time.perf_counter()
    km.fit(data, storage_options=opts)
    info["seconds"] = time.perf_counter() - t
    info["inertia"] = km.inertia_
    if km.read_stats_ is not None:
        info["read_stats"] = km.read_stats_
    return info


def child_main(method: str, path: Path, out: Path, endpoint: str) -> None:
    os.environ["STREAMCLUST_QUIET"] = "1"
    write_result(out, run_method(method, path, endpoint))


# ---------------------------------------------------------------- the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--endpoint")
    add_child_arguments(ap, Path(__file__).parent / "data")
    args = ap.parse_args()
    if args.child:
        child_main(args.child, args.path, args.out, args.endpoint)
        return
    path = ensure_data(args.data_dir, args.rows)
    server, endpoint = start_s3_server()
    try:
        stored = upload(path, endpoint)
        proxy = LatencyProxy(int(endpoint.rsplit(":", 1)[1]), args.latency_ms / 1000)
        via_proxy = f"http://127.0.0.1:{proxy.port}"
        methods = args.methods.split(",")
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        for _ in range(args.repeat):
            for m in methods:
                print(f"running {m} ...", file=sys.stderr, flush=True)
                ep = endpoint if m == "s3" else via_proxy
                proxy.reset()
                res = run_child(__file__, m, path, args.rows, ["--endpoint", ep])
                res["requests"], res["bytes"] = proxy.reset()
                runs[m].append(res)
        results = {
            m: min((r for r in done if "seconds" in r), key=lambda r: r["seconds"], default=done[0])
            for m, done in runs.items()
        }
        print_table(results, args.rows, stored, args.latency_ms)
    finally:
        server.terminate()
        server.wait()


def print_table(results: dict, rows: int, stored: int, latency_ms: float) -> None:
    print(
        f"\n{rows:,} rows x 32 float32 ({stored / 2**20:.0f} MiB stored), k={K}, "
        f"n_init={N_INIT}; {machine()}\n"
    )
    print("| method | wall s | vs local | requests | bytes read / stored | peak MiB | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    names = {
        "local": "local disk (threads)",
        "s3": "S3 server (threads)",
        "s3+latency": f"S3 server + {latency_ms:g} ms per request (threads)",
        "s3+latency-fsspec": "the same through fsspec instead of obstore",
        "cluster": f"S3 server + {latency_ms:g} ms, LocalCluster of 2 workers",
        "cluster-score": "the same cluster: one score pass",
    }
    local = results.get("local", {}).get("seconds")
    for m, r in results.items():
        if "skipped" in r:
            print(f"| {names[m]} | - | - | - | - | - | {r['skipped']} |")
            continue
        ratio = f"{r['seconds'] / local:.2f}x" if local and m != "cluster-score" else "-"
        notes = []
        if "read_stats" in r:
            st = r["read_stats"]
            notes.append(f"{st['blocks_read']} blocks read, {st['cache_hits']} from the cache")
        if "startup_seconds" in r:
            notes.append(f"cluster start-up {r['startup_seconds']:.1f} s excluded")
        counted = m not in ("local", "s3")  # (the proxy counts what passes through it)
        reqs = f"{r['requests']:,}" if counted else "-"
        share = f"{r['bytes'] / stored:.2f}" if counted else "-"
        print(
            f"| {names[m]} | {r['seconds']:.2f} | {ratio} | {reqs} | {share} | "
            f"{r['peak_mib']:.0f} | {'; '.join(notes)} |"
        )


if __name__ == "__main__":
    main()
