"""Data named by URL (``s3://``, ``gs://``, ``az://``, ``http(s)://``, ``memory://``):
which package and extra each scheme needs, ``storage_options`` from the command
line, and names and options with their secrets hidden for display."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..exceptions import DependencyError, ParameterError, SourceError

__all__ = [
    "BACKENDS",
    "LOCAL_SCHEMES",
    "READ_ONLY_SCHEMES",
    "SCHEMES",
    "check_url",
    "explain_failure",
    "filesystem",
    "is_url",
    "local_path",
    "parse_storage_options",
    "redact_options",
    "redact_url",
    "output_storage_options",
    "scheme_of",
    "storage_options_for_outputs",
    "zarr_location",
]

#: Scheme -> (the fsspec package it needs, the streamclust extra that installs it).
SCHEMES: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
    "http": ("aiohttp", "http"),
    "https": ("aiohttp", "http"),
    "memory": ("fsspec", "cloud"),
}
#: Schemes that name this machine's files: opened as the local path.
LOCAL_SCHEMES = ("file", "local")
#: Schemes read but never written.
READ_ONLY_SCHEMES = ("http", "https")

#: The storage_options of the call in progress, for the URLs it writes (``out=``).
_OUTPUT_OPTIONS: ContextVar[dict[str, Any] | None] = ContextVar(
    "streamclust_output_storage_options", default=None
)

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")
#: Option names whose values are secrets (matched anywhere in the key, any case).
_SECRET_KEYS = re.compile(
    r"secret|token|password|passwd|credential|key|sas|signature|connection_string|auth",
    re.I,
)
#: Option names that look like secrets but are not (shown as they are).
_PUBLIC_KEYS = {"key_prefix", "endpoint_url", "account_name"}


def scheme_of(path: str) -> str | None:
    """The URL scheme of ``path`` in lower case, or None for a plain path (a Windows
    drive letter such as ``C:\\`` is a path, not a scheme)."""
    match = _URL.match(path)
    return match.group(1).lower() if match else None


def is_url(path: Any) -> bool:
    """True for a string naming data by URL (other than ``file://``)."""
    if not isinstance(path, str):
        return False
    scheme = scheme_of(path)
    return scheme is not None and scheme not in LOCAL_SCHEMES


def local_path(path: str) -> str:
    """``file:///data/x.zarr`` -> ``/data/x.zarr``; anything else unchanged."""
    if scheme_of(path) in LOCAL_SCHEMES:
        return urlsplit(path).path
    return path


def check_url(url: str) -> None:
    """Refuse an unknown scheme, or one whose package is missing, in one line naming the
    extra to install."""
    scheme = scheme_of(url) or ""
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in ("s3", "gs", "az", "abfs", "http", "https", "file"))
        raise SourceError(
            f"{redact_url(url)}: unknown URL scheme '{scheme}://'; streamclust reads {known} "
            "and local paths"
        )
    package, extra = SCHEMES[scheme]
    if importlib.util.find_spec(package) is None:
        raise DependencyError(
            f"{redact_url(url)}: reading {scheme}:// needs the package {package}; install it "
            f"with: pip install 'streamclust[{extra}]'"
        )


def redact_url(url: str) -> str:
    """``url`` with any user/password and query string (a SAS token, a signature)
    replaced by ``***``, so that it can be printed, logged or saved."""
    if scheme_of(url) is None:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``storage_options`` safe to print: every value under a key that names a
    secret (``secret``, ``token``, ``password``, ``key``...) replaced by ``***``, nested
    dicts included."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if isinstance(value, dict):
            out[key] = redact_options(value)
        elif _SECRET_KEYS.search(str(key)) and str(key).lower() not in _PUBLIC_KEYS:
            out[key] = "***"
        else:
            out[key] = value
    return out


def parse_storage_options(items: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--storage-option``) as a ``storage_options`` dict.

    A dotted key nests (``client_kwargs.region_name=eu-west-1``); a value that
    reads as JSON (``true``, ``3``, ``{"a": 1}``) is that value, else the string.
    """
    options: dict[str, Any] = {}
    for number, item in enumerate(items, 1):
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            # Not quoted: a value pasted without its key may be a secret.
            raise ParameterError(
                f"--storage-option number {number} is not KEY=VALUE; write it as, e.g., "
                "--storage-option endpoint_url=http://127.0.0.1:9000"
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = options
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise ParameterError(
                    f"--storage-option {key}: {name} is given both a value and sub-keys; "
                    "give it one or the other"
                )
        node[leaf] = value
    return options


def filesystem(url: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path inside it."""
    check_url(url)
    import fsspec

    options = {k: v for k, v in (storage_options or {}).items() if k != "backend"}
    try:
        return fsspec.core.url_to_fs(url, **options)
    except Exception as exc:  # a bad option: its kind only, its message may quote values
        raise SourceError(
            f"{redact_url(url)}: cannot set up its filesystem ({type(exc).__name__}); check "
            "storage_options (CLI: --storage-option)"
        ) from exc


def explain_failure(exc: BaseException) -> str | None:
    """Why a request to object storage failed, when it is a known reason: denied
    credentials, or a bucket that does not exist (None otherwise)."""
    kind = type(exc).__name__
    text = str(exc)
    if isinstance(exc, PermissionError) or any(
        word in text for word in ("AccessDenied", "Forbidden", "InvalidAccessKeyId", "Signature")
    ):
        return (
            f"access denied ({kind}); check the credentials in storage_options "
            "(CLI: --storage-option) or the environment"
        )
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return "the bucket does not exist; check the URL"
    if kind == "NoCredentialsError" or "Unable to locate credentials" in text:
        return (
            f"no credentials found ({kind}); give them in storage_options (CLI: "
            "--storage-option key=... --storage-option secret=...) or the provider's "
            "environment variables, or pass anon=true for a public bucket"
        )
    return None


@contextmanager
def storage_options_for_outputs(options: dict[str, Any] | None) -> Iterator[None]:
    """Within this block, URLs written (an estimator method's ``out=``) use ``options``,
    the same as the data read in the call."""
    token = _OUTPUT_OPTIONS.set(options)
    try:
        yield
    finally:
        _OUTPUT_OPTIONS.reset(token)


def output_storage_options() -> dict[str, Any] | None:
    """The options set by :func:`storage_options_for_outputs` around this call, if any."""
    return _OUTPUT_OPTIONS.get()


#: How zarr reaches a store at a URL: ``"obstore"`` (zarr's ``ObjectStore``: one request
#: per chunk, measured faster in benchmarks/storage.py) or ``"fsspec"`` (zarr's
#: ``FsspecStore``: every scheme and every fsspec option). The storage option
#: ``backend`` chooses; by default obstore serves ``s3://`` when it is installed and
#: can take the options given, fsspec everything else.
BACKENDS = ("obstore", "fsspec")

#: s3fs options -> obstore ``S3Store`` options.
_S3_OPTIONS = {
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint_url": "endpoint",
}
#: Environment variables under which obstore finds S3 credentials itself (it does not
#: read ~/.aws profiles: those stay with fsspec, through boto's credential chain).
_S3_ENV_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_WEB_IDENTITY_TOKEN_FILE")


def zarr_location(
    url: str, storage_options: dict[str, Any] | None, read_only: bool
) -> tuple[Any, str | None, dict[str, Any]]:
    """Where zarr opens ``url``: ``(store, path inside it, extra keyword arguments)``,
    for ``zarr.open(store=..., path=...)`` and ``zarr.create_array(store=..., name=...)``."""
    options = dict(storage_options or {})
    backend = options.pop("backend", None)
    if backend is not None and backend not in BACKENDS:
        raise ParameterError(
            f"storage option backend={backend!r} is not one of {list(BACKENDS)}; "
            "drop it for the default"
        )
    if backend != "fsspec":
        store = _obstore_s3(url, options, read_only, required=backend == "obstore")
        if store is not None:
            return store, urlsplit(url).path.strip("/") or None, {}
    return url, None, {"storage_options": options}


def _obstore_s3(url: str, options: dict[str, Any], read_only: bool, required: bool) -> Any:
    """A zarr ``ObjectStore`` over obstore's ``S3Store`` for an ``s3://`` URL, or None when
    obstore is missing or cannot take the options (unless ``required``)."""
    import os

    def refuse(why: str) -> None:
        if required:
            raise ParameterError(f"{redact_url(url)}: backend='obstore' {why}")

    if scheme_of(url) not in ("s3", "s3a"):
        return refuse("serves s3:// URLs only; use backend='fsspec'")
    if importlib.util.find_spec("obstore") is None:
        return refuse("needs obstore; pip install 'streamclust[s3]'")
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for key, value in options.items():
        if key in _S3_OPTIONS:
            config[_S3_OPTIONS[key]] = value
        elif key == "anon":
            config["skip_signature"] = bool(value)
        elif key == "client_kwargs" and set(value) <= {"region_name"}:
            if "region_name" in value:
                config["region"] = value["region_name"]
        else:
            return refuse(f"does not take the option {key!r}; use backend='fsspec'")
    explicit = "access_key_id" in config or config.get("skip_signature")
    if not explicit and not any(os.environ.get(v) for v in _S3_ENV_CREDENTIALS):
        if not required:
            return None  # credentials from a profile or boto's chain: fsspec reads them
    endpoint = config.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL", "")
    if str(endpoint).startswith("http://"):
        client["allow_http"] = True
    from obstore.store import S3Store
    from zarr.storage import ObjectStore

    bucket = urlsplit(url).netloc
    try:
        store = S3Store(bucket, client_options=client or None, **config)  # type: ignore[arg-type]
    except Exception as exc:  # a bad value: its kind only, its message may quote it
        raise SourceError(
            f"{redact_url(url)}: obstore cannot set up the bucket ({type(exc).__name__}); "
            "check storage_options, or pass backend='fsspec'"
        ) from exc
    return ObjectStore(store, read_only=read_only)
