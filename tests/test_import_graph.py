"""The import graph between pyrovae's own modules: no new cycles, every module imports alone.

The graph is read from the source with `ast`, so an import inside a function counts as much as one
at module level (a function-level import hides a cycle from the interpreter, not from the layers).
Only imports under `if TYPE_CHECKING:` are skipped, since they never run.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Import name -> folder, read from pyproject.toml's [tool.setuptools.package-dir], so a new
# subpackage is in the graph as soon as it is packaged.
PACKAGE_DIRS: dict[str, Path] = {
    name: ROOT / folder
    for name, folder in re.findall(
        r'^"(pyrovae[\w.]*)" = "([\w/]+)"', (ROOT / "pyproject.toml").read_text(), re.M
    )
}


def package_modules() -> dict[str, Path]:
    """Every module of the package (packages as their `__init__`), name -> file."""
    modules: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in the tree, at any depth, except under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name of `from <...> import` in `module`, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (importing `a.b.c` also runs `a` and `a.b`)."""
    modules = package_modules()

    def targets(name: str) -> set[str]:
        """`name` and its parent packages, as far as they are package modules."""
        parts = name.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & modules.keys()

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.stem == "__init__"
        own_parents = targets(name) - {name}
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            found: set[str] = set()
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found |= targets(alias.name)
            else:
                base = _resolve(name, is_package, node)
                found |= targets(base)
                for alias in node.names:
                    found |= targets(f"{base}.{alias.name}")
            # A module's parent packages are already imported before it runs, and a package's
            # `from . import x` names the package itself.
            graph[name] |= found - own_parents - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of size > 1, and modules importing themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.append(frozenset(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_cycle_finder_on_a_known_graph() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}, "f": set()}
    assert set(cycles(graph)) == {frozenset({"a", "b", "c"}), frozenset({"d"})}


def test_graph_reads_relative_function_level_and_skips_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .b import f\n"
        "if TYPE_CHECKING:\n"
        "    from .c import g\n"
        "def h():\n"
        "    from .. import d\n"
    )
    tree = ast.parse(source)
    # `.c` is skipped (TYPE_CHECKING); `from .. import d` in module top.pkg.a names top
    names = {
        _resolve("top.pkg.a", False, n) for n in _imports(tree) if isinstance(n, ast.ImportFrom)
    }
    assert names == {"typing", "top.pkg.b", "top"}


def test_graph_reads_the_mapped_folders() -> None:
    graph = import_graph()
    # models/ is pyrovae.models, analysis/ is pyrovae.analysis (pyproject's package-dir)
    assert "pyrovae.models" in graph["pyrovae.train"]  # `from pyrovae.models import VAE`
    assert "pyrovae.analysis.likelihood.annealing" in graph["pyrovae.analysis.likelihood.ais"]
    assert "pyrovae.analysis.sources.classes" in graph["pyrovae.analysis.sources.saved"]
    assert "pyrovae.analysis.figures.curves" in graph["pyrovae.analysis.figures"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, f"import cycle(s) {[sorted(c) for c in found]}: move the shared piece down"


def test_the_analysis_subpackages_are_all_in_the_graph() -> None:
    graph = import_graph()
    for package in ("evaluation", "likelihood", "sources", "posterior", "quality", "report"):
        assert f"pyrovae.analysis.{package}" in graph, package
    assert "pyrovae.analysis.sources.saved" in graph["pyrovae.models.vae"]  # by name, no circle


@pytest.mark.slow
def test_every_module_imports_alone() -> None:
    """One fresh interpreter per module, so no module relies on another being imported first.

    `pyrovae.__main__` is left out: importing it runs the command line. About 2 s a module
    (torch's import), two interpreters at a time.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    names = sorted(set(package_modules()) - {"pyrovae.__main__"})

    def run(name: str) -> str | None:
        done = subprocess.run(
            [sys.executable, "-W", "ignore", "-c", f"import {name}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT.parent,
        )
        if done.returncode == 0:
            return None
        return f"{name}: {(done.stderr.strip().splitlines() or ['(no message)'])[-1]}"

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [f for f in pool.map(run, names) if f is not None]
    assert not failures, "\n".join(failures)


MAX_MODULE_LINES = 650
"""About 600 lines at most: a module past that is split where it holds two subjects."""


def test_no_module_is_over_about_600_lines() -> None:
    long = {
        name: n
        for name, path in package_modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}; split them by subject"
