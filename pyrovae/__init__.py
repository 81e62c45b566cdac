"""pyrovae: VAEs and CVAEs as Pyro model/guide pairs, and tools to study their latent space.

The public names below are imported on first use (PEP 562), so that ``import pyrovae``
and the command line's argument parsing do not pay for importing torch and Pyro.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ModelConfig": "pyrovae.build",
    "build_model": "pyrovae.build",
    "load_dataset": "pyrovae.data",
    "load_run": "pyrovae.runs",
    "read_config": "pyrovae.runs",
    "read_metrics": "pyrovae.runs",
    "IWAE": "pyrovae.traces",
    "ImportanceTerms": "pyrovae.traces",
    "importance_terms": "pyrovae.traces",
    "TrainConfig": "pyrovae.train",
    "Trainer": "pyrovae.train",
    "train": "pyrovae.train",
}

__all__ = [
    "IWAE",
    "ImportanceTerms",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "build_model",
    "importance_terms",
    "load_dataset",
    "load_run",
    "read_config",
    "read_metrics",
    "train",
]

if TYPE_CHECKING:
    from pyrovae.build import ModelConfig, build_model
    from pyrovae.data import load_dataset
    from pyrovae.runs import load_run, read_config, read_metrics
    from pyrovae.traces import IWAE, ImportanceTerms, importance_terms
    from pyrovae.train import TrainConfig, Trainer, train


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (not the helpers this module imports for itself)."""
    return sorted([*__all__, "__version__"])


class _Package(types.ModuleType):
    """Keeps ``pyrovae.train`` the function: importing the submodule ``pyrovae.train`` would
    otherwise bind the module to that name (as eager imports here used to override)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
