"""Errors raised by streamclust.

Everything a user can get wrong raises a subclass of :class:`StreamclustError`,
which is a ``ValueError`` so that code written against scikit-learn keeps
catching it. The command line turns these into one line on stderr and exit
code 2.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "ModelFileError",
    "ParameterError",
    "SchedulerError",
    "SourceError",
    "StreamclustError",
]


class StreamclustError(ValueError):
    """Base class of every error a user can cause: bad input, bad parameters, bad files."""


class ParameterError(StreamclustError):
    """An estimator or command parameter has an invalid value."""


class DataError(StreamclustError):
    """The data has the wrong shape, dtype, width, or contains NaN / inf."""


class SourceError(StreamclustError):
    """A dataset cannot be opened or read: missing path, unknown format, bad or missing chunk."""


class ModelFileError(StreamclustError):
    """A saved model directory is missing, tampered with, truncated, or of another class."""


class SchedulerError(StreamclustError):
    """A Dask scheduler cannot be reached or refused the connection."""
