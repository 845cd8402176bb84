#!/usr/bin/env python
"""Run a streamclust command on a Dask cluster of Slurm jobs (dask-jobqueue).

    python deploy/slurm/launch.py --jobs 4 --cores 8 --memory 32GiB --walltime 02:00:00 \\
        -- fit /scratch/sensors.zarr --k 64 --random-state 0 --out /scratch/models/sensors

The scheduler runs in this process (on a login node, or inside the small
driver job of ``streamclust.sbatch``); every worker job is submitted with
``sbatch`` and runs one single-threaded worker per core. The streamclust
command after ``--`` runs here, on that cluster, as soon as the first
workers have joined; the worker jobs are cancelled when it ends, and its
exit code is this script's.

The scheduler listens on the interface the compute nodes reach (--interface,
e.g. ib0), so it speaks TLS with a throw-away certificate authority by
default: the worker jobs get their certificates through --shared-dir, a
directory on a file system the nodes share, readable by you only. The
dashboard listens on 127.0.0.1 only: ``ssh -L 8787:127.0.0.1:8787 LOGIN-NODE``.
``--print-job-script`` prints a worker job's script and exits.

Needs ``pip install "streamclust[slurm]"`` (dask-jobqueue) in an environment
that the compute nodes share (--prologue activates it in the worker jobs).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=2, help="Worker jobs to submit [2].")
    p.add_argument("--cores", type=int, default=4, help="Cores per worker job [4].")
    p.add_argument(
        "--memory", default="16GiB", help="Memory per worker job, split among its workers [16GiB]."
    )
    p.add_argument("--walltime", default="01:00:00", help="Time limit of a worker job [01:00:00].")
    p.add_argument("--queue", default=None, help="Slurm partition (-p).")
    p.add_argument("--account", default=None, help="Slurm account (-A).")
    p.add_argument(
        "--interface", default=None, help="Network interface the nodes reach, e.g. ib0 or eth0."
    )
    p.add_argument(
        "--local-directory", default=None, help="Node-local scratch for spilling, e.g. $TMPDIR."
    )
    p.add_argument(
        "--shared-dir",
        default=os.path.join(os.path.expanduser("~"), ".streamclust-slurm"),
        help="Shared directory for the worker jobs' logs and certificates [~/.streamclust-slurm].",
    )
    p.add_argument(
        "--job-extra",
        action="append",
        default=[],
        help="An extra #SBATCH directive, e.g. --job-extra=--exclusive (repeatable).",
    )
    p.add_argument(
        "--prologue",
        action="append",
        default=[],
        help="A shell line run before each worker, e.g. 'source ~/venv/bin/activate' (repeatable).",
    )
    p.add_argument(
        "--min-workers",
        type=int,
        default=None,
        help="Workers to wait for before the command starts [all of them].",
    )
    p.add_argument(
        "--wait", type=float, default=600.0, help="Seconds to wait for those workers [600]."
    )
    p.add_argument(
        "--dashboard-address", default="127.0.0.1:8787", help="[127.0.0.1:8787; loopback only]."
    )
    p.add_argument(
        "--no-tls",
        dest="tls",
        action="store_false",
        help="Plain tcp:// between the scheduler and the workers (trusted networks only).",
    )
    p.add_argument("--print-job-script", action="store_true", help="Print a worker job's script.")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- then a streamclust command.")
    args = p.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command and not args.print_job_script:
        p.error("give a streamclust command after --, e.g. -- fit DATA --k 8 --out MODEL")
    if args.jobs < 1 or args.cores < 1:
        p.error(f"--jobs {args.jobs} and --cores {args.cores} must be >= 1")
    return args


def make_cluster(args: argparse.Namespace) -> Any:
    """The SLURMCluster of ``args``: its scheduler starts now, its jobs on ``scale``."""
    from dask_jobqueue import SLURMCluster

    os.makedirs(args.shared_dir, mode=0o700, exist_ok=True)
    os.chmod(args.shared_dir, 0o700)  # also when it was there already: it holds TLS keys
    tls: dict[str, Any] = {}
    if args.tls:
        from distributed.security import Security

        tls = {
            "security": Security.temporary(),
            "protocol": "tls://",
            "shared_temp_directory": args.shared_dir,
        }
    return SLURMCluster(
        cores=args.cores,
        processes=args.cores,  # one single-threaded worker per core, as streamclust's LocalCluster
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        interface=args.interface,
        local_directory=args.local_directory,
        log_directory=os.path.join(args.shared_dir, "logs"),
        job_extra_directives=args.job_extra,
        job_script_prologue=args.prologue,
        scheduler_options={"dashboard_address": args.dashboard_address},
        **tls,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from distributed import Client

    from streamclust.cli import main as streamclust_main

    with make_cluster(args) as cluster:
        if args.print_job_script:
            print(cluster.job_script())
            return 0
        cluster.scale(jobs=args.jobs)
        want = args.min_workers or args.jobs * args.cores
        with Client(cluster) as client:  # the default client: streamclust runs on it
            print(f"launch: dashboard at {client.dashboard_link}", file=sys.stderr)
            try:
                client.wait_for_workers(want, timeout=args.wait)
            except TimeoutError:
                have = len(client.scheduler_info(n_workers=-1)["workers"])
                if not have:
                    print(f"launch: no worker joined within {args.wait:g} s", file=sys.stderr)
                    return 1
                print(f"launch: {have} of {want} workers after {args.wait:g} s", file=sys.stderr)
            return streamclust_main(args.command)


if __name__ == "__main__":
    sys.exit(main())
