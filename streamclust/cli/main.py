"""Entry point of the ``streamclust`` command: every user error is one line and exit
code 2, every warning one line; SIGINT and SIGTERM stop it in one line with exit
code 128 + the signal."""

from __future__ import annotations

import signal
import sys
import warnings
from typing import Any

import click

from ..exceptions import StreamclustError, one_line
from . import data, models, select, stream  # noqa: F401  (they add their commands)
from .group import cli

__all__ = ["Stopped", "main"]


class Stopped(BaseException):
    """SIGINT or SIGTERM arrived: unwind (every writer removes what it had not
    finished) and exit with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(signum)


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """A warning (e.g. a fit that did not converge) as one line, without source lines."""
    click.echo(f"streamclust: warning: {one_line(str(message))}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning every user error into one line and exit code 2.

    SIGINT and SIGTERM stop it the same way: the work in flight is abandoned,
    temporary files are removed as their writers unwind (a stream keeps its
    last checkpoint), one line says so, and the exit code is 128 + the signal.
    """
    previous = {}
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        return _main(argv)
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        click.echo(
            f"streamclust: stopped by {name}; unfinished outputs were removed (a stream "
            "resumes from its last checkpoint)",
            err=True,
        )
        return 128 + exc.signum
    finally:
        warnings.showwarning = shown
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: list[str] | None) -> int:
    try:
        cli.main(args=argv, prog_name="streamclust", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:  # end of input at a prompt
        click.echo("streamclust: aborted", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"streamclust: error: {exc.format_message()}", err=True)
        return 2
    except StreamclustError as exc:
        click.echo(f"streamclust: error: {one_line(str(exc))}", err=True)
        return 2
    except OSError as exc:
        click.echo(f"streamclust: error: {one_line(str(exc))}", err=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
