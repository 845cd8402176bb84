"""Data in object storage: Zarr stores read by URL from an S3 server and an HTTP
server that the tests start on 127.0.0.1, with the same results as from disk."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import S3Bucket, cli_json, run_cli

import streamclust as sc
from streamclust.exceptions import DependencyError, ParameterError, SourceError
from streamclust.sources import (
    ArrayWriter,
    parse_storage_options,
    redact_options,
    redact_url,
    remote,
)

KM = {"n_clusters": 16, "n_init": 3, "batch_size": 1024, "random_state": 0, "progress": False}


@pytest.fixture(scope="module")
def s3_blobs(s3_endpoint, blobs_zarr):
    """The blobs store in a bucket of the S3 server: (bucket, URL)."""

    bucket = S3Bucket(s3_endpoint, f"blobs-{uuid.uuid4().hex[:8]}")
    return bucket, bucket.put(blobs_zarr, "data/blobs.zarr")


@pytest.fixture(scope="module")
def http_blobs(http_root, blobs_zarr) -> str:
    root, base = http_root
    name = f"{uuid.uuid4().hex}/blobs.zarr"
    shutil.copytree(blobs_zarr, root / name)
    return f"{base}/{name}"


def test_a_fit_from_s3_http_and_memory_is_bit_identical_to_disk(blobs_zarr, s3_blobs, http_blobs):
    bucket, url = s3_blobs
    local = sc.StreamingKMeans(**KM).fit(blobs_zarr)
    memory = f"memory://{uuid.uuid4().hex}/blobs.zarr"
    zarr.create_array(memory, data=zarr.open_array(blobs_zarr, mode="r")[:], chunks=(3_000, 8))
    fits = {
        "s3": sc.StreamingKMeans(**KM).fit(url, storage_options=bucket.options),
        "http": sc.StreamingKMeans(**KM).fit(http_blobs),
        "memory": sc.StreamingKMeans(**KM).fit(memory),
    }
    for name, km in fits.items():
        np.testing.assert_array_equal(km.cluster_centers_, local.cluster_centers_, err_msg=name)
        assert km.inertia_ == local.inertia_, name
    # The other methods that take data take the URL and its options too.
    km = fits["s3"]
    np.testing.assert_array_equal(
        km.predict(url, storage_options=bucket.options), local.predict(blobs_zarr)
    )
    assert km.score(url, storage_options=bucket.options) == local.score(blobs_zarr)


def test_gmm_and_detector_read_s3(blobs_zarr, s3_blobs):
    bucket, url = s3_blobs
    params = {"n_components": 4, "max_iter": 100, "random_state": 0, "progress": False}
    local = sc.StreamingGaussianMixture(**params).fit(blobs_zarr)
    gm = sc.StreamingGaussianMixture(**params).fit(url, storage_options=bucket.options)
    np.testing.assert_array_equal(gm.means_, local.means_)
    assert gm.bic(url, storage_options=bucket.options) == local.bic(blobs_zarr)
    det = sc.DensityAnomalyDetector(model=gm, percentile=4).fit(url, storage_options=bucket.options)
    assert (
        det.threshold_
        == sc.DensityAnomalyDetector(model=local, percentile=4).fit(blobs_zarr).threshold_
    )


def test_cli_fit_from_s3_with_storage_options(tmp_path, blobs_zarr, s3_blobs, capsys):
    bucket, url = s3_blobs
    args = "--k 16 --n-init 3 --batch-size 1024 --random-state 0"
    remote_out = cli_json(
        ["fit", url, *bucket.cli_options(), args, "--out", tmp_path / "r"], capsys
    )
    local_out = cli_json(["fit", blobs_zarr, args, "--out", tmp_path / "l"], capsys)
    assert remote_out["inertia"] == local_out["inertia"]
    np.testing.assert_array_equal(
        sc.load(tmp_path / "r").cluster_centers_, sc.load(tmp_path / "l").cluster_centers_
    )


def test_zarr_objects_and_groups_on_s3(blobs32, s3_blobs):
    bucket, url = s3_blobs
    arr = zarr.open_array(url, mode="r", storage_options=bucket.options)
    from_object = sc.StreamingKMeans(**KM).fit(arr)
    from_url = sc.StreamingKMeans(**KM).fit(url, storage_options=bucket.options)
    np.testing.assert_array_equal(from_object.cluster_centers_, from_url.cluster_centers_)
    group = zarr.open_group(bucket.url("group.zarr"), mode="w", storage_options=bucket.options)
    group.create_array("X", data=blobs32[:500], chunks=(100, 8))
    group.create_array("y", data=np.ones((500, 1)), chunks=(100, 1))
    source = sc.open_source(bucket.url("group.zarr"), storage_options=bucket.options)
    np.testing.assert_array_equal(source.read(0, 500), blobs32[:500])  # X, by its name
    inside = sc.open_source(bucket.url("group.zarr/y"), storage_options=bucket.options)
    assert inside.shape == (500, 1)
    # The Group object itself, as it is: its X, or the array named by component=.
    opened = zarr.open_group(bucket.url("group.zarr"), mode="r", storage_options=bucket.options)
    np.testing.assert_array_equal(sc.open_source(opened)[:], blobs32[:500])
    assert sc.open_source(opened, component="y").shape == (500, 1)
    km = sc.StreamingKMeans(n_clusters=3, random_state=0, progress=False).fit(opened)
    assert km.n_features_in_ == 8
    with pytest.raises(SourceError, match="no array 'z' in group; has \\['X', 'y'\\]"):
        sc.open_source(opened, component="z")


# ---------------------------------------------------------------- one-line errors


def test_unknown_scheme_and_missing_extra_are_one_line(monkeypatch, tmp_path, capsys):
    with pytest.raises(SourceError, match=r"unknown URL scheme 'ftp://'; streamclust reads s3://"):
        sc.open_source("ftp://host/x.zarr")
    monkeypatch.setitem(remote.SCHEMES, "gs", ("streamclust_no_such_package", "gcs"))
    with pytest.raises(DependencyError, match=r"pip install 'streamclust\[gcs\]'"):
        sc.StreamingKMeans(n_clusters=2).fit("gs://bucket/x.zarr")
    code, _, err = run_cli(
        ["fit", "gs://bucket/x.zarr", "--k", "2", "--out", tmp_path / "m"], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "streamclust[gcs]" in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("nothing/here.zarr", "no Zarr store and no Parquet files there"),
        ("notes.txt", "no Zarr store and no Parquet files there"),
    ],
)
def test_a_key_that_is_not_a_store_is_one_line(s3_bucket, tmp_path, key, message):
    (tmp_path / "notes.txt").write_text("not zarr")
    s3_bucket.put(tmp_path / "notes.txt", "notes.txt")
    with pytest.raises(SourceError, match=message) as info:
        sc.open_source(s3_bucket.url(key), storage_options=s3_bucket.options)
    assert "\n" not in str(info.value)


def test_a_bucket_that_does_not_exist_is_one_line(s3_bucket, tmp_path, capsys):
    url = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x.zarr"
    with pytest.raises(SourceError, match="no-such-bucket") as info:
        sc.open_source(url, storage_options=s3_bucket.options)
    assert "\n" not in str(info.value)
    out = tmp_path / "m"
    code, _, err = run_cli(["fit", url, *s3_bucket.cli_options(), "--k", "2", "--out", out], capsys)
    assert code == 2 and err.count("\n") == 1 and not out.exists()


def test_storage_options_are_checked(blobs32, tmp_path, capsys):
    with pytest.raises(ParameterError, match="not to this ndarray: drop storage_options"):
        sc.StreamingKMeans(n_clusters=2).fit(blobs32, storage_options={"anon": True})
    with pytest.raises(ParameterError, match="storage_options must be a dict, not str"):
        sc.StreamingKMeans(n_clusters=2).fit("s3://b/x.zarr", storage_options="anon")
    code, _, err = run_cli(
        [
            "fit",
            "s3://b/x.zarr",
            "--storage-option",
            "hunter2",
            "--k",
            "2",
            "--out",
            tmp_path / "m",
        ],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "KEY=VALUE" in err
    assert "hunter2" not in err  # a value pasted without its key may be a secret
    assert not (tmp_path / "m").exists()


def test_storage_options_from_the_command_line():
    assert parse_storage_options(
        [
            "endpoint_url=http://127.0.0.1:9000",
            "anon=true",
            "client_kwargs.region_name=eu-west-1",
            "key=a=b",
            "retries=3",
        ]
    ) == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": True,
        "client_kwargs": {"region_name": "eu-west-1"},
        "key": "a=b",
        "retries": 3,
    }


def test_names_and_options_hide_their_secrets():
    assert redact_url("https://user:pw@host/x.zarr?sig=abc&se=1") == "https://***@host/x.zarr?***"
    assert redact_url("s3://bucket/x.zarr") == "s3://bucket/x.zarr"
    assert redact_options(
        {
            "key": "AKIA",
            "secret": "s",
            "token": "t",
            "endpoint_url": "http://h",
            "client_kwargs": {"aws_session_token": "x", "region_name": "r"},
            "anon": False,
        }
    ) == {
        "key": "***",
        "secret": "***",
        "token": "***",
        "endpoint_url": "http://h",
        "client_kwargs": {"aws_session_token": "***", "region_name": "r"},
        "anon": False,
    }


# ---------------------------------------------------------------- secrets stay secret

PLANTED = "planted-SECRET-7f3a9c"


def _files_holding(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_a_secret_in_storage_options_is_never_written_or_printed(
    tmp_path, s3_blobs, http_blobs, capsys
):
    bucket, url = s3_blobs
    secret = [f"--storage-option=secret={PLANTED}"]
    options = [o for o in bucket.cli_options() if "secret=" not in o] + secret
    outputs = []
    for args in (
        ["fit", url, *options, "--k", "4", "--out", tmp_path / "m", "--checkpoint", tmp_path / "c"],
        ["fit", url, *options, "--k", "4", "--out", tmp_path / "g", "--model", "gmm", "--json"],
        ["predict", url, "--model-dir", tmp_path / "m", *options, "--out", tmp_path / "p.npy"],
        ["score", url, "--model-dir", tmp_path / "g", *options, "--json"],
        ["fit", url + "-missing", *options, "--k", "4", "--out", tmp_path / "x"],
    ):
        code, out, err = run_cli([*args, "--scheduler", "sync"], capsys)
        outputs.append(out + err)
        assert code == (2 if "-missing" in str(args[1]) else 0), err
    assert (tmp_path / "m").exists() and (tmp_path / "p.npy").exists()
    assert not any(PLANTED in text for text in outputs)
    assert _files_holding(tmp_path, PLANTED) == []
    # In Python: the source's name and repr, a fitted model's repr and its saved files.
    opts = {**bucket.options, "secret": PLANTED}
    source = sc.open_source(url, storage_options=opts)
    assert PLANTED not in repr(source) + source.name + source.token()
    with_password = http_blobs.replace("http://", f"http://user:{PLANTED}@")
    km = sc.StreamingKMeans(n_clusters=4, progress=False).fit(with_password)
    assert PLANTED not in sc.open_source(with_password).name
    km.save(tmp_path / "py")
    assert _files_holding(tmp_path, PLANTED) == []
    with pytest.raises(SourceError) as info:
        sc.open_source(with_password + "-missing")
    assert PLANTED not in str(info.value)


# ---------------------------------------------------------------- writing to a URL


def test_write_zarr_to_s3_publishes_when_complete(s3_bucket, blobs32):
    url, opts = s3_bucket.url("out/x.zarr"), s3_bucket.options
    written = sc.write_zarr(blobs32, url, block_rows=3_000, storage_options=opts)
    assert written.name == url and written.committed_rows == len(blobs32)
    np.testing.assert_array_equal(sc.open_source(url, storage_options=opts)[:], blobs32)
    with pytest.raises(SourceError, match="already exists; pass overwrite=True") as info:
        sc.write_zarr(blobs32[:10], url, storage_options=opts)
    assert "\n" not in str(info.value)
    sc.write_zarr(blobs32[:10], url, storage_options=opts, overwrite=True)
    assert sc.open_source(url, storage_options=opts).shape == (10, 8)
    # A prefix of other objects is never replaced; http(s) and .npy are not written.
    s3_bucket.fs.pipe(f"{s3_bucket.name}/logs.zarr/readme.txt", b"not a store")
    with pytest.raises(SourceError, match="holds objects that are not a Zarr store"):
        sc.write_zarr(blobs32, s3_bucket.url("logs.zarr"), storage_options=opts, overwrite=True)
    with pytest.raises(SourceError, match="http:// is read-only"):
        sc.write_zarr(blobs32, "http://127.0.0.1:9/x.zarr")
    with pytest.raises(SourceError, match=r"an output at a URL must be a \.zarr store"):
        ArrayWriter(s3_bucket.url("x.npy"), n_rows=3, storage_options=opts)


def test_an_unfinished_remote_store_is_unreadable_and_a_failed_one_removed(s3_bucket, blobs32):
    url, opts = s3_bucket.url("half.zarr"), s3_bucket.options
    writer = ArrayWriter(url, chunk_rows=1_000, storage_options=opts)
    writer.append(blobs32[:2_500])  # a writer that dies here leaves its chunks unpublished
    with pytest.raises(SourceError, match="lie past committed_rows=0: the store was not comp"):
        sc.open_source(url, storage_options=opts).read(0, 10)
    bad = blobs32[:3_000].copy()
    bad[2_100, 3] = np.nan
    with pytest.raises(sc.DataError, match="row index 2100"):
        sc.write_zarr(
            iter([bad[:2_000], bad[2_000:]]), s3_bucket.url("bad.zarr"), storage_options=opts
        )
    assert not s3_bucket.fs.exists(f"{s3_bucket.name}/bad.zarr")


def test_predict_and_convert_write_to_s3(tmp_path, blobs_zarr, s3_blobs, s3_bucket, capsys):
    bucket, url = s3_blobs
    km = sc.StreamingKMeans(**KM).fit(blobs_zarr)
    out = s3_bucket.url("labels.zarr")
    # The data's storage_options reach the output (here both in the same server).
    assert km.predict(url, out=out, storage_options=bucket.options) == out
    labels = zarr.open_array(out, mode="r", storage_options=bucket.options)[:]
    np.testing.assert_array_equal(labels, km.predict(blobs_zarr))
    det = sc.DensityAnomalyDetector(km, percentile=4).fit(blobs_zarr)
    flags_url = s3_bucket.url("flags.zarr")
    summary = det.detect(url, out=flags_url, storage_options=bucket.options)
    flags = zarr.open_array(flags_url, mode="r", storage_options=bucket.options)[:]
    assert (
        summary["anomalies"]
        == int((flags == -1).sum())
        == int((det.predict(blobs_zarr) == -1).sum())
    )
    km.save(tmp_path / "m")
    cli_out = s3_bucket.url("cli-labels.zarr")
    cli_json(
        ["predict", url, "--model-dir", tmp_path / "m", *bucket.cli_options(), "--out", cli_out],
        capsys,
    )
    np.testing.assert_array_equal(
        zarr.open_array(cli_out, mode="r", storage_options=bucket.options)[:], labels
    )
    # convert: S3 -> S3 and S3 -> disk, then back.
    copy = s3_bucket.url("copy.zarr")
    code, out, err = run_cli(["convert", url, copy, *bucket.cli_options(), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["rows"] == 20_000 and json.loads(out)["dst"] == copy
    code, _, err = run_cli(
        ["convert", copy, tmp_path / "local.zarr", *bucket.cli_options()], capsys
    )
    assert code == 0, err
    np.testing.assert_array_equal(
        sc.open_source(tmp_path / "local.zarr")[:], sc.open_source(blobs_zarr)[:]
    )
    code, _, err = run_cli(["convert", blobs_zarr, copy, *bucket.cli_options()], capsys)
    assert code == 2 and "already exists; pass --overwrite" in err and err.count("\n") == 1


def test_convert_a_csv_file_in_a_bucket(tmp_path, s3_bucket, capsys):
    X = np.arange(60, dtype=float).reshape(20, 3)
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    url = s3_bucket.put(tmp_path / "x.csv", "in/x.csv")
    code, _, err = run_cli(["convert", url, tmp_path / "x.zarr", *s3_bucket.cli_options()], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(sc.open_source(tmp_path / "x.zarr")[:], X)
    (tmp_path / "bad.csv").write_text("1,2,3\n4,x,6\n")
    bad = s3_bucket.put(tmp_path / "bad.csv", "in/bad.csv")
    for src, message in (
        (bad, "row index 1, column index 1 holds 'x'"),
        (s3_bucket.url("in/missing.csv"), "no such file"),
    ):
        code, _, err = run_cli(
            ["convert", src, tmp_path / "y.zarr", *s3_bucket.cli_options()], capsys
        )
        assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "y.zarr").exists()


@pytest.fixture(scope="module")
def strict_s3():
    """An S3 server that checks credentials (moto with IAM auth, in its own process):
    ``(endpoint, good storage_options)``; its first 4 requests set up a user and a bucket."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import boto3
    from conftest import free_port

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "no S3 server"
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    anyone = {"aws_access_key_id": "x", "aws_secret_access_key": "x", "region_name": "us-east-1"}
    iam = boto3.client("iam", endpoint_url=endpoint, **anyone)
    iam.create_user(UserName="reader")
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName="reader", PolicyName="all", PolicyDocument=json.dumps(policy))
    good = {
        "endpoint_url": endpoint,
        "key": key["AccessKeyId"],
        "secret": key["SecretAccessKey"],
        "client_kwargs": {"region_name": "us-east-1"},
    }
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=good["key"],
        aws_secret_access_key=good["secret"],
        region_name="us-east-1",
    ).create_bucket(Bucket="strict")
    yield endpoint, good
    proc.terminate()
    proc.wait()


def test_wrong_credentials_are_one_line(strict_s3, blobs32, tmp_path, capsys):
    endpoint, good = strict_s3
    sc.write_zarr(blobs32[:1_000], "s3://strict/x.zarr", storage_options=good, overwrite=True)
    assert sc.open_source("s3://strict/x.zarr", storage_options=good).shape == (1_000, 8)
    wrong = {**good, "secret": "not-the-secret"}
    with pytest.raises(SourceError, match="access denied") as info:
        sc.open_source("s3://strict/x.zarr", storage_options=wrong)
    assert "\n" not in str(info.value) and "not-the-secret" not in str(info.value)
    with pytest.raises(SourceError, match="access denied"):
        sc.write_zarr(blobs32[:10], "s3://strict/y.zarr", storage_options=wrong)
    args = [
        "fit",
        "s3://strict/x.zarr",
        "--k",
        "2",
        "--out",
        tmp_path / "m",
        f"--storage-option=endpoint_url={endpoint}",
        f"--storage-option=key={good['key']}",
        "--storage-option=secret=not-the-secret",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "access denied" in err
    assert "not-the-secret" not in err and not (tmp_path / "m").exists()


def test_s3_goes_through_obstore_by_default_and_fsspec_on_request(s3_blobs, blobs_zarr):
    bucket, url = s3_blobs
    chosen = {
        backend: sc.open_source(url, storage_options={**bucket.options, "backend": backend})
        for backend in ("obstore", "fsspec")
    }
    default = sc.open_source(url, storage_options=bucket.options)
    assert type(default.array.store).__name__ == "ObjectStore"  # one request per chunk
    assert type(chosen["fsspec"].array.store).__name__ == "FsspecStore"
    for source in chosen.values():
        km = sc.StreamingKMeans(**KM).fit(source)
        np.testing.assert_array_equal(
            km.cluster_centers_, sc.StreamingKMeans(**KM).fit(blobs_zarr).cluster_centers_
        )
    # An option obstore does not take: fsspec serves it, unless obstore is asked for.
    extra = {**bucket.options, "config_kwargs": {"max_pool_connections": 20}}
    assert type(sc.open_source(url, storage_options=extra).array.store).__name__ == "FsspecStore"
    with pytest.raises(ParameterError, match="backend='obstore' does not take the option"):
        sc.open_source(url, storage_options={**extra, "backend": "obstore"})
    with pytest.raises(ParameterError, match=r"backend='nope' is not one of \['obstore'"):
        sc.open_source(url, storage_options={**bucket.options, "backend": "nope"})


def test_no_credentials_at_all_is_one_line_with_the_ways_to_give_them(
    s3_endpoint, tmp_path, monkeypatch
):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(SourceError, match=r"no credentials found .* or pass anon=true") as info:
        sc.open_source("s3://any-bucket/x.zarr", storage_options={"endpoint_url": s3_endpoint})
    assert "\n" not in str(info.value)
