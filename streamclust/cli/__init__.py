"""The ``streamclust`` command line.

Every estimator parameter is an option of the same name in kebab case. Bad
arguments, paths or files print one line on stderr and exit with code 2;
nothing is written. One module per group of commands: :mod:`.models` (fit,
predict, score, detect), :mod:`.stream`, :mod:`.select`, :mod:`.data` (convert,
demo); the options they share are declared once in :mod:`.options`, and what
differs between kinds of model lives in :mod:`.kinds`.
"""

from .group import cli
from .main import main

__all__ = ["cli", "main"]
