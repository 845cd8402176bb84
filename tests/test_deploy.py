"""deploy/: the compose file, the Kubernetes manifests and the Slurm launcher.

No Docker engine, Kubernetes cluster or Slurm runs here, so the files are
checked for the keys the tools need, and every command they run (the
scheduler's healthcheck, the jobs' streamclust commands, the Slurm launcher)
is run for real against a Dask scheduler on 127.0.0.1. `docker compose
config` runs too when a compose plugin is present.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from dask.utils import parse_bytes

import streamclust as sc

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
BIN = os.path.dirname(sys.executable)


def load_yaml(path: Path) -> list[dict]:
    with open(path) as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def pinned_dask() -> str:
    pins = dict(
        line.split("==")
        for line in (DEPLOY / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["dask"] == pins["distributed"]
    return pins["distributed"]


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def run_job(script: str, data: Path, env: dict[str, str] | None = None) -> str:
    """Run a job's shell commands here: /data is ``data``, the venv's tools first on PATH."""
    script = script.replace("/data/", f"{data}/").replace("2_000_000", "20_000")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], **(env or {})}
    done = subprocess.run(
        ["sh", "-ec", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def same_as_sync_fit(data: Path, args: list[str]) -> None:
    """The model a job wrote equals the same fit with no cluster at all."""
    params = {
        "n_clusters": int(option(args, "--k")),
        "n_init": int(option(args, "--n-init")),
        "batch_size": int(option(args, "--batch-size")),
        "random_state": int(option(args, "--random-state")),
    }
    ref = sc.StreamingKMeans(**params, client="sync", progress=False).fit(str(data / "blobs.zarr"))
    model = sc.load(str(data / "model-blobs64"))
    np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)


# --------------------------------------------------------------------------- image


def test_the_image_tag_pins_the_same_dask_as_the_constraints():
    version = pinned_dask()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    image = re.search(r"^ARG DASK_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert image == f"ghcr.io/dask/dask:{version}-py3.11"
    assert "FROM ${DASK_IMAGE}" in dockerfile and "-c /src/constraints.txt" in dockerfile
    assert re.search(r"^USER streamclust$", dockerfile, re.M)  # no root at run time
    ignore = (DEPLOY.parent / ".dockerignore").read_text().split()
    for needed in ("pyproject.toml", "README.md", "streamclust/", "deploy/constraints.txt"):
        assert f"!{needed}" in ignore and (DEPLOY.parent / needed).exists()


# --------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(DEPLOY / "compose" / "compose.yaml")[0]


def test_compose_file_has_what_the_deployment_needs(compose):
    services = compose["services"]
    assert sorted(services) == ["job", "scheduler", "worker"]
    tag = f"dask{pinned_dask()}"
    for svc in services.values():
        assert svc["image"].endswith(tag)
        assert svc["build"] == {"context": "../..", "dockerfile": "deploy/Dockerfile"}
    assert (DEPLOY / "compose" / ".." / ".." / "deploy" / "Dockerfile").exists()

    sched = services["scheduler"]
    assert sched["command"][:2] == ["dask", "scheduler"]
    assert option(sched["command"], "--port") == "8786"
    # The dashboard on the host's loopback only; the scheduler port not at all.
    assert sched["ports"] == ["127.0.0.1:8787:8787"]
    assert all("ports" not in svc for name, svc in services.items() if name != "scheduler")
    assert sched["healthcheck"]["test"][0] == "CMD"

    worker = services["worker"]
    assert worker["command"][:3] == ["dask", "worker", "tcp://scheduler:8786"]
    assert worker["deploy"]["replicas"] == 2
    limit = parse_bytes(worker["deploy"]["resources"]["limits"]["memory"])
    assert 0 < parse_bytes(option(worker["command"], "--memory-limit")) <= limit
    assert worker["depends_on"]["scheduler"]["condition"] == "service_healthy"
    assert worker["restart"] == "unless-stopped"

    job = services["job"]
    assert job["depends_on"]["scheduler"]["condition"] == "service_healthy"
    script = job["command"][2]
    assert "streamclust fit /data/blobs.zarr" in script
    assert "--scheduler tcp://scheduler:8786" in script
    # The same data volume at /data: read-only in the workers, writable in the job.
    assert worker["volumes"] == ["${STREAMCLUST_DATA:-data}:/data:ro"]
    assert job["volumes"] == ["${STREAMCLUST_DATA:-data}:/data"]
    assert "data" in compose["volumes"]


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="no docker compose plugin on this machine",
)
def test_docker_compose_config_accepts_the_file():
    done = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose" / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_compose_healthcheck_and_job_work_against_a_real_scheduler(
    compose, dask_processes, tmp_path
):
    dask_processes.start()
    check = compose["services"]["scheduler"]["healthcheck"]["test"][1:]
    assert check[:2] == ["python", "-c"]
    code = check[2].replace("127.0.0.1:8787", f"127.0.0.1:{dask_processes.dashboard_port}")
    assert subprocess.run([sys.executable, "-c", code], timeout=30).returncode == 0
    nobody = code.replace(str(dask_processes.dashboard_port), str(dask_processes.port + 1))
    assert subprocess.run([sys.executable, "-c", nobody], capture_output=True).returncode != 0

    script = compose["services"]["job"]["command"][2].replace(
        "tcp://scheduler:8786", dask_processes.address
    )
    out = run_job(script, tmp_path)
    assert (tmp_path / "blobs.zarr").is_dir() and not (tmp_path / "blobs.writing.zarr").exists()
    assert "inertia" in out
    fit = shlex.split(next(line for line in script.splitlines() if "streamclust fit" in line))
    same_as_sync_fit(tmp_path, fit)


# --------------------------------------------------------------------------- kubernetes


def container(pod_spec: dict, name: str) -> dict:
    (found,) = [c for c in pod_spec["containers"] if c["name"] == name]
    return found


def check_resources(c: dict) -> None:
    res = c["resources"]
    assert parse_bytes(res["requests"]["memory"]) <= parse_bytes(res["limits"]["memory"])
    assert float(res["requests"]["cpu"]) <= float(res["limits"]["cpu"])


def test_daskjob_manifest_follows_the_operators_schema():
    (pvc,) = load_yaml(DEPLOY / "kubernetes" / "pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    (job,) = load_yaml(DEPLOY / "kubernetes" / "daskjob.yaml")
    assert job["apiVersion"] == "kubernetes.dask.org/v1" and job["kind"] == "DaskJob"
    name = job["metadata"]["name"]
    cluster = job["spec"]["cluster"]["spec"]
    pods = {
        "job": job["spec"]["job"]["spec"],
        "worker": cluster["worker"]["spec"],
        "scheduler": cluster["scheduler"]["spec"],
    }
    assert isinstance(cluster["worker"]["replicas"], int) and cluster["worker"]["replicas"] >= 1
    tag = f"dask{pinned_dask()}"
    for role, pod in pods.items():
        c = container(pod, role)
        assert c["image"].endswith(tag)
        check_resources(c)
        assert pod["securityContext"]["runAsNonRoot"] is True

    sched = container(pods["scheduler"], "scheduler")
    assert sched["args"][:2] == ["dask", "scheduler"]
    ports = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}  # the names the operator uses
    for probe in ("readinessProbe", "livenessProbe"):
        assert sched[probe]["httpGet"] == {"port": "http-dashboard", "path": "/health"}
    service = cluster["scheduler"]["service"]
    assert service["type"] == "ClusterIP"
    assert service["selector"]["dask.org/cluster-name"] == name
    assert {p["targetPort"] for p in service["ports"]} == set(ports)

    worker = container(pods["worker"], "worker")
    assert worker["args"][:2] == ["dask", "worker"] and "$(DASK_WORKER_NAME)" in worker["args"]
    assert parse_bytes(option(worker["args"], "--memory-limit")) <= parse_bytes(
        worker["resources"]["limits"]["memory"]
    )
    # Job and workers mount the claim of pvc.yaml at /data.
    for role in ("job", "worker"):
        (vol,) = pods[role]["volumes"]
        assert vol["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        (mount,) = container(pods[role], role)["volumeMounts"]
        assert mount == {"name": vol["name"], "mountPath": "/data", **mount}
    args = container(pods["job"], "job")["args"]
    assert args[:3] == ["streamclust", "fit", "/data/blobs.zarr"]
    assert "--scheduler" not in args  # the operator sets DASK_SCHEDULER_ADDRESS


def test_helm_values_use_the_charts_keys_and_the_job_finds_its_scheduler():
    (values,) = load_yaml(DEPLOY / "kubernetes" / "helm-values.yaml")
    # Keys of the dask chart's values.yaml (helm.dask.org, chart "dask").
    chart_keys = {
        "scheduler": {"image", "serviceType", "servicePort", "resources", "env", "extraArgs"},
        "webUI": {"servicePort"},
        "worker": {
            "replicas", "image", "resources", "mounts", "env", "extraArgs",
            "threads_per_worker", "portDashboard",
        },
        "jupyter": {"enabled"},
    }  # fmt: skip
    assert set(values) <= set(chart_keys)
    for section, keys in values.items():
        assert set(keys) <= chart_keys[section], section
    tag = f"dask{pinned_dask()}"
    assert values["scheduler"]["image"]["tag"].endswith(tag)
    assert values["worker"]["image"] == values["scheduler"]["image"]
    assert values["scheduler"]["serviceType"] == "ClusterIP"
    assert values["jupyter"]["enabled"] is False
    assert set(values["worker"]["mounts"]) == {"volumes", "volumeMounts"}
    limits = values["worker"]["resources"]["limits"]
    assert parse_bytes(limits["memory"]) > 0 and values["worker"]["threads_per_worker"] == 1

    (job,) = load_yaml(DEPLOY / "kubernetes" / "helm-job.yaml")
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    pod = job["spec"]["template"]["spec"]
    c = container(pod, "job")
    check_resources(c)
    env = {e["name"]: e["value"] for e in c["env"]}
    # Release "streamclust" of chart "dask": its scheduler service is streamclust-dask-scheduler.
    port = values["scheduler"]["servicePort"]
    assert env["DASK_SCHEDULER_ADDRESS"] == f"tcp://streamclust-dask-scheduler:{port}"
    assert c["image"] == "{repository}:{tag}".format(**values["scheduler"]["image"])


@pytest.mark.slow  # 7-9 s: keeps the default run under 3 minutes
def test_kubernetes_job_args_run_against_a_real_scheduler(dask_processes, tmp_path):
    """The DaskJob's job container runs its args with DASK_SCHEDULER_ADDRESS set by the
    operator: run the same args here with the variable pointing at a real scheduler."""
    dask_processes.start()
    (job,) = load_yaml(DEPLOY / "kubernetes" / "daskjob.yaml")
    args = container(job["spec"]["job"]["spec"], "job")["args"]
    write = (
        "from streamclust.datasets import write_blobs_zarr; "
        "write_blobs_zarr('/data/blobs.zarr', 20_000)"
    )
    script = f'python -c "{write}"\n' + shlex.join(args)
    run_job(script, tmp_path, {"DASK_SCHEDULER_ADDRESS": dask_processes.address})
    same_as_sync_fit(tmp_path, args)
    log = Path(dask_processes.log.name).read_text(errors="replace")
    assert "Receive client connection" in log  # the fit did run on that scheduler


@pytest.mark.slow  # 8-9 s: keeps the default run under 3 minutes
def test_s3_daskjob_reads_the_bucket_with_the_secrets_credentials(
    dask_processes, tmp_path, s3_endpoint, blobs32, monkeypatch
):
    """s3-daskjob.yaml: job and workers take the credentials of s3-secret.yaml from their
    environment and the workers mount no volume. Its job command runs here against a
    real scheduler and worker, with the Secret's variables (and the test S3 server as
    AWS_ENDPOINT_URL) in their environment."""
    import boto3

    (secret,) = load_yaml(DEPLOY / "kubernetes" / "s3-secret.yaml")
    (job,) = load_yaml(DEPLOY / "kubernetes" / "s3-daskjob.yaml")
    assert secret["kind"] == "Secret" and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        secret["stringData"]
    )
    refs = [{"secretRef": {"name": secret["metadata"]["name"]}}]
    pods = {
        "job": job["spec"]["job"]["spec"],
        "worker": job["spec"]["cluster"]["spec"]["worker"]["spec"],
    }
    for role, pod in pods.items():
        assert container(pod, role)["envFrom"] == refs
    assert "volumes" not in pods["worker"]  # the workers read the bucket, no shared volume
    text = (DEPLOY / "kubernetes" / "s3-daskjob.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "--storage-option" not in text
    args = container(pods["job"], "job")["args"]
    url = args[2]
    assert args[:2] == ["streamclust", "fit"] and url.startswith("s3://")

    env = {**secret["stringData"], "AWS_ENDPOINT_URL": s3_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # for the worker, started below
    bucket = url.split("/")[2]
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    if bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=bucket)
    sc.write_zarr(blobs32, url, overwrite=True)
    dask_processes.start()
    run_job(shlex.join(args), tmp_path, {"DASK_SCHEDULER_ADDRESS": dask_processes.address})
    params = {
        "n_clusters": int(option(args, "--k")),
        "n_init": int(option(args, "--n-init")),
        "batch_size": int(option(args, "--batch-size")),
        "random_state": int(option(args, "--random-state")),
    }
    ref = sc.StreamingKMeans(**params, client="sync", progress=False).fit(blobs32)
    model = sc.load(str(tmp_path / "model-blobs64"))
    np.testing.assert_array_equal(model.cluster_centers_, ref.cluster_centers_)
    log = Path(dask_processes.log.name).read_text(errors="replace")
    assert "Receive client connection" in log


# --------------------------------------------------------------------------- slurm


def launcher():
    spec = importlib.util.spec_from_file_location("launch", DEPLOY / "slurm" / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slurm_job_script_has_tls_and_one_worker_per_core(tmp_path):
    shared = tmp_path / "shared"
    cmd = [sys.executable, str(DEPLOY / "slurm" / "launch.py"), "--print-job-script"]
    cmd += ["--interface", "lo", "--shared-dir", str(shared), "--cores", "4"]
    cmd += ["--memory", "16GiB", "--queue", "batch", "--job-extra=--exclusive"]
    cmd += ["--prologue", "source ~/venv/bin/activate", "--dashboard-address", "127.0.0.1:0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    script = done.stdout
    for line in ("#SBATCH -p batch", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16G"):
        assert line in script
    assert "#SBATCH --exclusive" in script and "source ~/venv/bin/activate" in script
    worker = next(line for line in script.splitlines() if "dask_worker" in line).split()
    assert worker[worker.index("--nthreads") + 1] == "1"
    assert worker[worker.index("--nworkers") + 1] == "4"
    assert worker[3].startswith("tls://127.0.0.1:")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    for flag in ("--tls-ca-file", "--tls-cert", "--tls-key"):
        assert Path(worker[worker.index(flag) + 1]).parent == shared


def test_sbatch_example_calls_the_launcher_with_options_it_knows():
    text = (DEPLOY / "slurm" / "streamclust.sbatch").read_text()
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    call = re.search(r"^python deploy/slurm/launch\.py(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    argv = shlex.split(call.group(1).replace("\\\n", " "))
    args = launcher().parse_args(argv)
    assert args.command[:2] == ["fit", "/scratch/$USER/sensors.zarr"] and args.tls


FAKE_SBATCH = """#!/bin/sh
# Stands in for Slurm: run the job script in its own session, print its job id.
cp "$1" "$0.$$.sh"
setsid bash "$0.$$.sh" > "$0.$$.log" 2>&1 < /dev/null &
echo $! >> "$0.jobs"
echo "Submitted batch job $!"
"""
FAKE_SCANCEL = """#!/bin/sh
for id in "$@"; do kill -TERM -- "-$id" 2>/dev/null || true; done
"""


@pytest.mark.slow  # 7-9 s: keeps the default run under 3 minutes
def test_slurm_launcher_fits_on_its_worker_jobs(tmp_path, blobs_zarr):
    """launch.py end to end, with sbatch and scancel standing in for Slurm: worker jobs
    join the launcher's TLS scheduler and the fit equals the in-process one."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL)):
        (fake / name).write_text(text)
        (fake / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"}
    out = tmp_path / "model"
    cmd = [sys.executable, str(DEPLOY / "slurm" / "launch.py"), "--interface", "lo"]
    cmd += ["--jobs", "1", "--cores", "2", "--memory", "2GiB", "--wait", "120"]
    cmd += ["--shared-dir", str(tmp_path / "shared"), "--dashboard-address", "127.0.0.1:0"]
    cmd += ["--", "fit", blobs_zarr, "--k", "8", "--random-state", "0", "--out", str(out)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    finally:  # no worker job outlives the test, whatever happened to the launcher
        for job in (fake / "sbatch.jobs").read_text().split():
            subprocess.run([str(fake / "scancel"), job])
    logs = "".join(p.read_text(errors="replace") for p in fake.glob("*.log"))
    assert done.returncode == 0, done.stderr + logs
    ref = sc.StreamingKMeans(8, random_state=0, client="sync", progress=False).fit(blobs_zarr)
    np.testing.assert_array_equal(sc.load(str(out)).cluster_centers_, ref.cluster_centers_)
    assert "tls://127.0.0.1:" in logs  # the workers joined over TLS
