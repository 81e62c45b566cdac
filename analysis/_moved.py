"""The module paths of the flat ``pyrovae.analysis`` layout, kept importable for one release.

``import pyrovae.analysis.loglik`` (say) gives the module now at
``pyrovae.analysis.likelihood.loglik`` — the same module object, so patching either name
patches both — after a ``DeprecationWarning`` that names the new path.
``pyrovae.analysis.bdmc`` and ``pyrovae.analysis.memorization`` are not kept: those names
are now the functions :func:`~pyrovae.analysis.likelihood.bdmc.bdmc` and
:func:`~pyrovae.analysis.quality.memorization.memorization` of the one-import API.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

__all__ = ["MOVED", "install_moved_finder"]

_P = "pyrovae.analysis"

# old module path -> new module path
MOVED: dict[str, str] = {
    **{
        f"{_P}.{name}": f"{_P}.likelihood.{name}"
        for name in (
            "ais",
            "ais_chains",
            "annealing",
            "datum_noise",
            "evidence",
            "evidence_numbers",
            "exact",
            "loglik",
            "proposals",
            "sharding",
        )
    },
    f"{_P}.diagnostics": f"{_P}.likelihood.psis",
    f"{_P}.encodings": f"{_P}.sources.encodings",
    f"{_P}.flow_pairs": f"{_P}.sources.flow_pairs",
    f"{_P}.mixture_pruning": f"{_P}.sources.mixture_pruning",
    f"{_P}.source_fits": f"{_P}.sources.fits",
    f"{_P}.source_helpers": f"{_P}.sources.helpers",
    f"{_P}.source_store": f"{_P}.sources.store",
    f"{_P}.source_types": f"{_P}.sources.classes",
    f"{_P}.surgery": f"{_P}.sources.surgery",
    f"{_P}.diagnose": f"{_P}.posterior.diagnose",
    f"{_P}.gaps": f"{_P}.posterior.gaps",
    f"{_P}.inference_data": f"{_P}.posterior.inference_data",
    f"{_P}.inference_quality": f"{_P}.posterior.inference_quality",
    f"{_P}.classifier": f"{_P}.quality.classifier",
    f"{_P}.compare": f"{_P}.evaluation.compare",
    f"{_P}.evaluate": f"{_P}.evaluation.evaluate",
    f"{_P}.evaluation_cost": f"{_P}.evaluation.plan",
    f"{_P}.evaluation_runs": f"{_P}.evaluation.reuse",
    f"{_P}.run_report": f"{_P}.report.run_figures",
}


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, new: str) -> None:
        self.new = new
        self.spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; import it from there (or use the one-import "
            "API, pyrovae.analysis): the old path goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module ran under its new name. The import system has set the
        module's ``__spec__`` to the old name's; give it back its own."""
        module.__spec__ = self.spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(new))


def install_moved_finder() -> None:
    """Put the finder for the old paths on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
