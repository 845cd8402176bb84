"""The ``streamclust`` command group; each command module adds its commands to it."""

from __future__ import annotations

import click

from ..version import __version__

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="streamclust")
def cli() -> None:
    """Clustering for data that does not fit in memory or never stops arriving."""
