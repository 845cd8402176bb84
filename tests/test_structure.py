"""The package's own rules, checked on its source: modules share only public names,
and import each other at the top (function-level imports are left for optional or
heavy third-party dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "streamclust"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return str(path.relative_to(PACKAGE))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _internal(node: ast.ImportFrom) -> bool:
    return node.level > 0 or (node.module or "").split(".")[0] == "streamclust"


def _own_names(tree: ast.AST) -> set[str]:
    """The private names a module defines: functions, classes, globals, attributes."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {n for n in names if _private(n)}


def private_uses(source: str) -> list[str]:
    """Private names a module imports from another, or reads off an object when it
    does not define that name itself."""
    tree = ast.parse(source)
    own = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _internal(node):
            found += [f"import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append(ast.unparse(node))
    return found


def late_internal_imports(source: str) -> list[int]:
    """Lines of imports of the package's own modules inside functions."""
    tree = ast.parse(source)
    return [
        node.lineno
        for fn in ast.walk(tree)
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(fn)
        if isinstance(node, ast.ImportFrom) and _internal(node)
    ]


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_use_only_public_names_of_other_modules(path):
    assert private_uses(path.read_text()) == []


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_import_each_other_at_the_top(path):
    assert late_internal_imports(path.read_text()) == []


def test_the_checks_see_what_they_look_for():
    bad = (
        "from .kmeans import _helper\n"
        "from . import gmm\n"
        "x = gmm._params\n"
        "class A:\n"
        "    def f(self, other):\n"
        "        self._mine = other._mine\n"
        "        from .sources import open_source\n"
    )
    assert private_uses(bad) == ["import _helper", "gmm._params"]
    assert late_internal_imports(bad) == [7]


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_passes_about_500_lines(path):
    """One concept per module: past ~500 lines a module splits by concept."""
    assert len(path.read_text().splitlines()) <= 525
