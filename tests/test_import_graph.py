"""The import graph between pyrovae's own modules: no new cycles, every module imports alone.

The graph is read from the source with `ast`, so an import inside a function counts as much as one
at module level (a function-level import hides a cycle from the interpreter, not from the layers).
Only imports under `if TYPE_CHECKING:` are skipped, since they never run.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Import name -> folder, as in pyproject.toml's [tool.setuptools.package-dir].
PACKAGE_DIRS: dict[str, Path] = {
    "pyrovae": ROOT / "pyrovae",
    "pyrovae.models": ROOT / "models",
    "pyrovae.guides": ROOT / "guides",
    "pyrovae.analysis": ROOT / "analysis",
    "pyrovae.analysis.figures": ROOT / "analysis" / "figures",
    "pyrovae.analysis.report": ROOT / "analysis" / "report",
}

# Cycles still open, as the set of modules in each strongly connected component.
# Remove a cycle from these lists when it is broken; a new cycle fails the test.
OPEN_CYCLES: list[frozenset[str]] = [
    # One component, joined through LAYER_BRIDGE below.
    frozenset(
        {
            "pyrovae.analysis.ais",
            "pyrovae.analysis.ais_chains",
            "pyrovae.analysis.bdmc",
            "pyrovae.analysis.compare",
            "pyrovae.analysis.loglik",
            "pyrovae.analysis.proposals",
            "pyrovae.analysis.sharding",
            "pyrovae.analysis.source_fits",
            "pyrovae.analysis.source_store",
            "pyrovae.analysis.sources",
            "pyrovae.build",
            "pyrovae.distributed",
            "pyrovae.models",
            "pyrovae.models.vae",
            "pyrovae.runs",
            "pyrovae.train",
            "pyrovae.trainer",
        }
    ),
]

# VAE.sample(source="name") loads a source saved with a run: the models layer reaching up into
# analysis, which joins every cycle below into the one component above. Without that edge:
LAYER_BRIDGE = ("pyrovae.models.vae", "pyrovae.analysis.source_store")
OPEN_CYCLES_BELOW_BRIDGE: list[frozenset[str]] = []


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
    assert "pyrovae.analysis.annealing" in graph["pyrovae.analysis.ais"]  # `from .annealing`
    assert "pyrovae.analysis.figures.curves" in graph["pyrovae.analysis.figures"]


def _check(found: set[frozenset[str]], allowed: list[frozenset[str]], where: str) -> None:
    new, broken = found - set(allowed), set(allowed) - found
    assert not new, f"new import cycle(s) {[sorted(c) for c in new]}: move the shared piece down"
    assert not broken, f"cycle(s) {[sorted(c) for c in broken]} are broken: drop from {where}"


def test_no_import_cycles_beyond_the_open_ones() -> None:
    _check(set(cycles(import_graph())), OPEN_CYCLES, "OPEN_CYCLES")


def test_no_import_cycles_below_the_layer_bridge() -> None:
    graph = import_graph()
    source, target = LAYER_BRIDGE
    assert target in graph[source], f"{source} no longer imports {target}: drop LAYER_BRIDGE"
    graph[source].discard(target)
    _check(set(cycles(graph)), OPEN_CYCLES_BELOW_BRIDGE, "OPEN_CYCLES_BELOW_BRIDGE")


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
