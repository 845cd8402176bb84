"""Errors raised by streamclust.

Everything a user can get wrong raises a subclass of :class:`StreamclustError`,
which is a ``ValueError`` so that code written against scikit-learn keeps
catching it. The command line turns these into one line on stderr and exit
code 2.
"""

from __future__ import annotations

import re

__all__ = [
    "DataError",
    "DependencyError",
    "ModelFileError",
    "ParameterError",
    "SchedulerError",
    "SourceError",
    "StateError",
    "StreamclustError",
    "one_line",
]


def one_line(text: str) -> str:
    """``text`` on one line: an array printed into it (scikit-learn's ``array=[...]``)
    dropped, and every run of whitespace, newlines included, made one space."""
    text = re.sub(r"\barray=.*?\]\.\n", "", text, flags=re.S)
    return " ".join(text.split())


class StreamclustError(ValueError):
    """Base class of every error a user can cause: bad input, bad parameters, bad files.

    Its message is always one line (see :func:`one_line`), also when it quotes
    another library's error.
    """

    def __init__(self, message: str = "") -> None:
        super().__init__(one_line(str(message)))


class ParameterError(StreamclustError):
    """An estimator or command parameter has an invalid value."""


class DataError(StreamclustError):
    """The data has the wrong shape, dtype, width, or contains NaN / inf."""


class SourceError(StreamclustError):
    """A dataset cannot be opened or read: missing path, unknown format, bad or missing chunk."""


class ModelFileError(StreamclustError):
    """A saved model directory is missing, tampered with, truncated, or of another class."""


class DependencyError(StreamclustError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""


class StateError(StreamclustError):
    """A stream's state directory is in use by another stream, or has no usable checkpoint."""


class SchedulerError(StreamclustError):
    """A Dask scheduler cannot be reached or refused the connection."""
