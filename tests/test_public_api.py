"""The one-import API: ``import pyrovae`` and ``import pyrovae.analysis as pa`` reach every name a
notebook uses, the old module paths still import (with a warning, one release), and
``pyrovae.train`` is the module."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

import pyrovae
import pyrovae.analysis as pa
from pyrovae.analysis._moved import MOVED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("package", [pyrovae, pa])
def test_every_exported_name_resolves_to_its_module(package) -> None:
    for name in package.__all__:
        value = getattr(package, name)
        assert value is not None, name
    assert sorted(dir(package)) == sorted(
        [*package.__all__, *(["__version__"] if package is pyrovae else [])]
    )


def test_exports_are_the_objects_of_their_modules() -> None:
    from pyrovae.analysis.evaluation.compare import compare_sources
    from pyrovae.analysis.likelihood.bdmc import bdmc
    from pyrovae.analysis.quality.memorization import memorization

    assert pa.compare_sources is compare_sources
    assert pa.bdmc is bdmc and callable(pa.bdmc)
    assert pa.memorization is memorization and callable(pa.memorization)
    assert isinstance(pa.figures, types.ModuleType) and callable(pa.figures.plot_samples)


@pytest.mark.parametrize("package", ["likelihood", "sources", "posterior", "quality", "evaluation"])
def test_each_subpackage_exports_the_public_names_of_its_modules(package) -> None:
    sub = importlib.import_module(f"pyrovae.analysis.{package}")
    folder = ROOT / "analysis" / package
    modules = {p.stem for p in folder.glob("*.py")} - {"__init__"}
    for stem in sorted(modules):
        module = importlib.import_module(f"pyrovae.analysis.{package}.{stem}")
        for name in getattr(module, "__all__", []):
            if name in modules:
                continue  # a submodule's own name: the package attribute is the submodule
            assert getattr(sub, name) is getattr(module, name), (stem, name)


def test_old_module_paths_warn_and_give_the_same_module() -> None:
    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert module.__spec__.name == new  # the module keeps its own identity
        sys.modules.pop(old, None)


def test_old_package_paths_keep_their_names() -> None:
    """``pyrovae.analysis.sources``, ``.posterior`` and ``.quality`` were modules; their names
    still import from the packages that replaced them, without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from pyrovae.analysis.posterior import RHAT_THRESHOLD, reference_posterior
        from pyrovae.analysis.quality import sample_quality
        from pyrovae.analysis.sources import SOURCES, AggregatePosterior, Encodings, fit_source
    assert RHAT_THRESHOLD > 1 and callable(reference_posterior) and callable(sample_quality)
    assert "aggregate" in SOURCES and callable(fit_source)
    assert AggregatePosterior.__module__ == "pyrovae.analysis.sources.classes"
    assert Encodings.__module__ == "pyrovae.analysis.sources.encodings"


def test_pyrovae_train_is_the_module_and_train_model_the_function() -> None:
    import pyrovae.train

    assert isinstance(pyrovae.train, types.ModuleType)
    assert pyrovae.train.__name__ == "pyrovae.train"
    assert pyrovae.train_model is pyrovae.train.train_model is pyrovae.train.train
    # calling the module, as when pyrovae.train was the function: one release, with a warning
    with pytest.warns(DeprecationWarning, match="train_model"), pytest.raises(TypeError):
        pyrovae.train()


def test_importing_pyrovae_imports_no_torch() -> None:
    code = "import sys, pyrovae, pyrovae.analysis; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def _notebook_imports(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    names = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names.append(node.module or "")
    return names


@pytest.mark.parametrize("notebook", sorted((ROOT / "examples").glob("*.ipynb")), ids=str)
def test_notebooks_use_the_one_import_api(notebook: Path) -> None:
    ours = [n for n in _notebook_imports(notebook) if n.split(".")[0] == "pyrovae"]
    assert ours, "the notebook imports nothing of pyrovae"
    deep = [n for n in ours if n not in ("pyrovae", "pyrovae.analysis")]
    assert not deep, f"{notebook.name} reaches into {deep}: use pyrovae or pyrovae.analysis"
