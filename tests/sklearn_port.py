"""Run scikit-learn's own test files against streamclust's estimators.

:func:`port` reads a test file of the *installed* scikit-learn (nothing of it
is kept in this repository), rebinds the estimator class it imports to a
streamclust class, and runs the module's code, so that its ``test_*``
functions and fixtures land in the calling test module and pytest collects
them there. :func:`sklearn_spelling` gives a streamclust class the few
parameter names scikit-learn's tests use, and the defaults that keep the test
in one process without progress bars.

The class keeps the name the test file imports, since the tests match
messages that carry it ("This GaussianMixture instance is not fitted yet").

A case is applicable when it exercises the swapped class: cases parametrized
with one of scikit-learn's other estimators (``KMeans``), and tests that never
name the swapped class (they test scikit-learn's private helpers), are skipped
with that reason. The calling module lists the remaining not-applicable cases,
each with its reason; ``tests/conftest.py`` applies them at collection.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn

__all__ = ["port", "sklearn_spelling", "applicability", "expected_failure"]


def sklearn_spelling(base: type, name: str, renames: dict[str, str], **defaults: Any) -> type:
    """A subclass of ``base`` named ``name`` that takes scikit-learn's spelling of
    its parameters (``renames`` maps scikit-learn's name to streamclust's) and
    ``defaults`` as its own defaults; ``get_params``/``clone`` speak the same names."""
    inverse = {ours: theirs for theirs, ours in renames.items()}
    base_names = base._get_param_names()  # type: ignore[attr-defined]
    names = sorted(inverse.get(n, n) for n in base_names)
    sig = inspect.signature(base.__init__)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        for theirs, ours in renames.items():
            if theirs in kwargs:
                kwargs[ours] = kwargs.pop(theirs)
        base.__init__(self, *args, **kwargs)

    def rename_property(ours: str) -> property:
        return property(lambda self: getattr(self, ours), lambda self, v: setattr(self, ours, v))

    namespace: dict[str, Any] = {
        "__init__": __init__,
        "_get_param_names": classmethod(lambda cls: names),
        "__module__": base.__module__,
        "__doc__": base.__doc__,
    }
    for theirs, ours in renames.items():
        namespace[theirs] = rename_property(ours)
    cls = type(name, (base,), namespace)
    params = [
        p.replace(name=inverse.get(p.name, p.name), default=defaults.get(p.name, p.default))
        for p in sig.parameters.values()
    ]
    cls.__init__.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return cls


def port(
    relpath: str, swaps: dict[str, Any], into: dict[str, Any], drop: tuple[str, ...] = ()
) -> Path:
    """Run scikit-learn's test file ``relpath`` (inside the installed package) into the
    namespace ``into``, with each name of ``swaps`` rebound after the file's imports;
    the tests named in ``drop`` are left out (not even collected)."""
    path = Path(sklearn.__file__).parent / relpath
    tree = ast.parse(path.read_text(), filename=str(path))
    last_import = max(
        i for i, node in enumerate(tree.body) if isinstance(node, (ast.Import, ast.ImportFrom))
    )
    line = tree.body[last_import].end_lineno or 1
    rebind = ast.parse("\n".join(f"{n} = __swaps__[{n!r}]" for n in swaps)).body
    for node in rebind:
        for sub in ast.walk(node):
            sub.lineno = sub.end_lineno = line  # type: ignore[attr-defined]
    tree.body[last_import + 1 : last_import + 1] = rebind
    tree.body = [
        node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name in drop)
    ]
    into["__swaps__"] = dict(swaps)
    into["__ported_from__"] = str(path)
    exec(compile(tree, str(path), "exec"), into)
    return path


@pytest.fixture
def global_random_seed() -> int:
    """scikit-learn's default global seed (its conftest parametrizes it; 42 unless set)."""
    return 42


@pytest.fixture(params=[np.float32, np.float64])
def global_dtype(request: Any) -> Any:
    """scikit-learn's dtype fixture, with float32 run too (it is opt-in there)."""
    return request.param


def applicability(
    item: Any, name: str, swapped: Any, others: tuple[Any, ...], not_applicable: dict[str, str]
) -> str | None:
    """Why the collected case ``item`` is not applicable, or None to run it: it must
    name the class ``name`` (rebound to ``swapped``) or be parametrized with it.

    ``not_applicable`` maps a regular expression on the case's name (test name
    and parameter id) to the reason."""
    for pattern, reason in not_applicable.items():
        if re.fullmatch(pattern, item.name):
            return reason
    params = getattr(getattr(item, "callspec", None), "params", {})
    values = [v for p in params.values() for v in (p if isinstance(p, tuple) else (p,))]
    if any(v is o for v in values for o in others):
        return "parametrized with scikit-learn's own estimator, not a streamclust class"
    source = inspect.getsource(item.function)
    if not re.search(rf"\b{name}\b", source) and not any(v is swapped for v in values):
        return "tests scikit-learn's own helpers; the streamclust class is not involved"
    return None


def expected_failure(item: Any, known: dict[str, str]) -> str | None:
    """Why the case ``item`` is known to fail still (``known`` maps a regular
    expression on its name to the reason), or None."""
    for pattern, reason in known.items():
        if re.fullmatch(pattern, item.name):
            return reason
    return None
