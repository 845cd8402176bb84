"""Options shared by the commands, declared once; each group reaches the command as
one value (:class:`DataOptions`, :class:`RunOptions`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from ..exceptions import ParameterError, SourceError
from ..runtime import get_client, make_security
from ..sources import (
    Source,
    check_output,
    open_source,
    parse_storage_options,
    storage_options_for_outputs,
)

__all__ = [
    "SCHEDULER_HELP",
    "DataOptions",
    "RunOptions",
    "check_array_output",
    "check_new_output",
    "data_options",
    "emit",
    "json_option",
    "overwrite_option",
    "columns_option",
    "run_options",
    "storage_option_option",
]

SCHEDULER_HELP = (
    "Where to run: a scheduler address (tcp://host:8786, tls://...), 'local' (start a local "
    "cluster of worker processes), 'threads' or 'sync' (in this process). Default: "
    "DASK_SCHEDULER_ADDRESS if set, else threads."
)


def _parse_shape(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        rows, cols = (int(v) for v in value.split(","))
    except ValueError as exc:
        raise ParameterError(f"--shape {value!r} must be ROWS,COLS (ROWS may be -1)") from exc
    return rows, cols


@dataclass(frozen=True)
class DataOptions:
    """How to read DATA: --dtype and --shape (raw files), --component (Zarr groups),
    --header (CSV batches), --storage-option (URLs), --columns (Parquet)."""

    dtype: str | None = None
    shape: str | None = None
    component: str | None = None
    header: bool = False
    storage_option: tuple[str, ...] = ()
    columns: str | None = None

    @property
    def storage_options(self) -> dict[str, Any] | None:
        """The ``--storage-option KEY=VALUE`` given, as ``storage_options`` (None if none)."""
        return parse_storage_options(self.storage_option) if self.storage_option else None

    def open(self, data: str) -> Source:
        return open_source(
            data,
            dtype=self.dtype,
            shape=_parse_shape(self.shape),
            component=self.component,
            header=self.header,
            storage_options=self.storage_options,
            columns=None if self.columns is None else self.columns.split(","),
        )

    def open_column(self, data: str) -> Source:
        """One value per row (sample weights): a 1-D or one-column ``.npy`` or Zarr store,
        at a path or URL (with the same ``--storage-option``)."""
        return open_source(data, storage_options=self.storage_options, column=True)


@dataclass(frozen=True)
class RunOptions:
    """Where the work runs (--scheduler, --tls-*) and how it reports (--progress, --json)."""

    scheduler: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    progress: bool = True
    as_json: bool = False

    def client(self) -> Any:
        """The ``client`` argument of the estimators: the scheduler, or a TLS client."""
        if not (self.tls_ca or self.tls_cert or self.tls_key):
            return self.scheduler
        if not self.scheduler or not self.scheduler.startswith("tls://"):
            raise ParameterError("--tls-ca/--tls-cert/--tls-key need --scheduler tls://HOST:PORT")
        security = make_security(self.tls_ca, self.tls_cert, self.tls_key)
        return get_client(self.scheduler, security=security)

    def emit(self, summary: dict[str, Any], lines: list[str]) -> None:
        emit(self.as_json, summary, lines)


def emit(as_json: bool, summary: dict[str, Any], lines: list[str]) -> None:
    """The command's result: one JSON object on stdout with --json, else the lines."""
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True))
    else:
        for line in lines:
            click.echo(line)


storage_option_option = click.option(
    "--storage-option",
    multiple=True,
    metavar="KEY=VALUE",
    help="For data named by URL (s3://, gs://, az://, https://), read or written: an option "
    "of its filesystem, e.g. endpoint_url=http://127.0.0.1:9000 or anon=true; repeatable; "
    "dotted keys nest (client_kwargs.region_name=eu-west-1). Credentials also come from the "
    "provider's usual environment variables.",
)


columns_option = click.option(
    "--columns",
    default=None,
    metavar="A,B,...",
    help="Parquet: the feature columns (default: every numeric column).",
)


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that say how to read DATA; the command gets ``data_opts``."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        dtype: Any,
        shape: Any,
        component: Any,
        header: bool,
        storage_option: tuple[str, ...],
        columns: str | None,
        **kwargs: Any,
    ) -> Any:
        opts = DataOptions(dtype, shape, component, header, tuple(storage_option), columns)
        with storage_options_for_outputs(opts.storage_options):  # --out URLs too
            return fn(*args, data_opts=opts, **kwargs)

    for option in reversed(
        [
            click.option("--dtype", default=None, help="dtype of a raw binary file, e.g. float32."),
            click.option(
                "--shape", default=None, help="ROWS,COLS of a raw binary file (ROWS=-1 infers)."
            ),
            click.option("--component", default=None, help="Array inside a Zarr group."),
            click.option("--header", is_flag=True, help="CSV batch files start with a header row."),
            storage_option_option,
            columns_option,
        ]
    ):
        command = option(command)
    return command


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that say where the work runs and how it reports; the command
    gets ``run``."""

    @functools.wraps(fn)
    def command(
        *args: Any,
        scheduler: Any,
        tls_ca: Any,
        tls_cert: Any,
        tls_key: Any,
        progress: bool,
        as_json: bool,
        **kwargs: Any,
    ) -> Any:
        run = RunOptions(scheduler, tls_ca, tls_cert, tls_key, progress, as_json)
        return fn(*args, run=run, **kwargs)

    path = click.Path(dir_okay=False)
    for option in reversed(
        [
            click.option("--scheduler", default=None, help=SCHEDULER_HELP),
            click.option(
                "--tls-ca", default=None, type=path, help="CA certificate for tls:// schedulers."
            ),
            click.option("--tls-cert", default=None, type=path, help="Client TLS certificate."),
            click.option("--tls-key", default=None, type=path, help="Client TLS key."),
            click.option("--progress/--no-progress", default=True, help="Progress on stderr."),
            json_option,
        ]
    ):
        command = option(command)
    return command


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON summary on stdout."
)

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace the output if it exists (refused without)."
)


def check_new_output(path: str, overwrite: bool) -> None:
    """A path to write to: new, or replaced with --overwrite (see ``check_output``)."""
    check_output(path, overwrite, "--overwrite")


def check_array_output(path: str, overwrite: bool) -> None:
    """A ``.zarr`` or ``.npy`` path for per-row results."""
    if Path(path).suffix.lower() not in (".zarr", ".npy"):
        raise SourceError(f"{path}: an output of per-row results must end in .zarr or .npy")
    check_new_output(path, overwrite)
