"""Sphinx configuration of pyrovae's documentation.

Sphinx, as Pyro's own documentation uses, because autodoc reads the API reference from the
same Google-style docstrings the code is written with and sphinx.ext.doctest runs every
example on the guide pages, so neither can drift from the code.

Build (from the repository root)::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

project = "pyrovae"
author = "pyrovae contributors"
copyright = "pyrovae contributors"  # noqa: A001
release = importlib.import_module("pyrovae").__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "myst_parser",  # the guide pages are Markdown, readable on the repository host as well
]
# No sphinx.ext.intersphinx: the build must not need the network.

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "furo"
html_title = f"pyrovae {release}"
html_static_path = ["_static"]

# Only the ``testcode``/``doctest`` blocks of the guide pages run, not the ``>>>`` examples of
# the docstrings (those show a call on a trained model the reader has).
doctest_test_doctest_blocks = ""

# MNIST as the tests find it: $PYROVAE_TEST_DATA or ../shared/data beside the repository.
_DATA = os.environ.get("PYROVAE_TEST_DATA") or str(
    Path(__file__).resolve().parents[2] / "shared" / "data"
)

# Every example runs on the CPU with one thread, seeded, in a few seconds, inside a fresh
# temporary directory (so ``runs/...`` in an example never touches the checkout).
doctest_global_setup = f"""
import os, tempfile
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("PYROVAE_DATA", {_DATA!r})
_doctest_home = os.getcwd()
os.chdir(tempfile.mkdtemp(prefix="pyrovae-doctest-"))
import torch
import pyro
torch.set_num_threads(1)
torch.manual_seed(0)
pyro.set_rng_seed(0)
pyro.clear_param_store()
"""
doctest_global_cleanup = """
os.chdir(_doctest_home)
"""


class AnalysisNames(SphinxDirective):
    """A table of the one-import API: every name of ``pyrovae.analysis.__all__``, its kind,
    the first line of its docstring and a link to the module that defines it."""

    def run(self) -> list[nodes.Node]:
        api = importlib.import_module("pyrovae.analysis")
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 25 10 65", ""]
        lines += ["   * - name", "     - kind", "     - what it is"]
        for name in api.__all__:
            obj = getattr(api, name)
            if inspect.ismodule(obj):
                kind, role = "module", "mod"
            else:
                kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else "data"
                role = "obj"
            doc = inspect.getdoc(obj) if kind != "data" else None
            summary = doc.strip().splitlines()[0] if doc else ""
            summary = summary.replace("|", "\\|").replace("*", "\\*")
            target = obj.__name__ if kind == "module" else f"{api.__name__}.{name}"
            lines += [f"   * - :py:{role}:`{name} <{target}>`", f"     - {kind}"]
            lines += [f"     - {summary}" if summary else "     -"]
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines, source="pyrovae.analysis"), 0, node)
        return node.children


def resolve_one_import(app, env, node, contnode):  # noqa: ANN001, ANN201
    """Link ``pyrovae.analysis.NAME`` to where NAME is documented (the module defining it)."""
    target = node.get("reftarget", "")
    prefix = "pyrovae.analysis."
    name = target[len(prefix) :]
    if node.get("refdomain") != "py" or not target.startswith(prefix) or "." in name:
        return None
    domain = env.get_domain("py")
    found = sorted(full for full in domain.objects if full.endswith("." + name))
    found = [full for full in found if full.startswith(prefix)] or found
    found = [full for full in found if domain.objects[full].objtype != "module"] or found
    if not found:
        return None
    return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", found[0], node, contnode)


def check_reference_complete(app, env):  # noqa: ANN001, ANN201
    """Warn (an error under -W) about a public analysis module missing from docs/api/."""
    import pkgutil

    from sphinx.util import logging

    api = importlib.import_module("pyrovae.analysis")
    public = {
        info.name
        for info in pkgutil.walk_packages(api.__path__, prefix=api.__name__ + ".")
        if not any(part.startswith("_") for part in info.name.split("."))
    }
    documented = set(env.get_domain("py").modules)
    for name in sorted(public - documented):
        logging.getLogger(__name__).warning(
            f"{name} is not in the API reference: add `.. automodule:: {name}` to the "
            "page of its subpackage in docs/api/"
        )


def setup(app):  # noqa: ANN001, ANN201
    app.add_directive("analysis-names", AnalysisNames)
    app.connect("missing-reference", resolve_one_import)
    app.connect("env-check-consistency", check_reference_complete)
    return {"parallel_read_safe": True}
