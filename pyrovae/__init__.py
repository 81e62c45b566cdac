"""pyrovae: VAEs and CVAEs as Pyro model/guide pairs, and tools to study their latent space.

The public names below are imported on first use (PEP 562), so that ``import pyrovae``
and the command line's argument parsing do not pay for importing torch and Pyro.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyrovae._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ModelConfig": "pyrovae.build",
    "build_model": "pyrovae.build",
    "fixed_binarization": "pyrovae.data",
    "load_dataset": "pyrovae.run_data",
    "load_run": "pyrovae.runs",
    "read_config": "pyrovae.runs",
    "read_metrics": "pyrovae.runs",
    "IWAE": "pyrovae.traces",
    "ImportanceTerms": "pyrovae.traces",
    "importance_terms": "pyrovae.traces",
    "TrainConfig": "pyrovae.train",
    "Trainer": "pyrovae.train",
    "train_model": "pyrovae.train",
    "UserData": "pyrovae.user_data",
    "from_pyro": "pyrovae.pyro_pair",
    "read_data": "pyrovae.user_data",
    "draw_samples": "pyrovae.export",
    "write_samples": "pyrovae.export",
}

__all__ = [
    "IWAE",
    "ImportanceTerms",
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "UserData",
    "build_model",
    "draw_samples",
    "fixed_binarization",
    "from_pyro",
    "importance_terms",
    "load_dataset",
    "load_run",
    "read_config",
    "read_data",
    "read_metrics",
    "train_model",
    "write_samples",
]

if TYPE_CHECKING:
    from pyrovae.build import ModelConfig, build_model
    from pyrovae.data import fixed_binarization
    from pyrovae.export import draw_samples, write_samples
    from pyrovae.pyro_pair import from_pyro
    from pyrovae.run_data import load_dataset
    from pyrovae.runs import load_run, read_config, read_metrics
    from pyrovae.traces import IWAE, ImportanceTerms, importance_terms
    from pyrovae.train import TrainConfig, Trainer, train_model
    from pyrovae.user_data import UserData, read_data


__getattr__ = lazy_exports(__name__, _EXPORTS)[0]


def __dir__() -> list[str]:
    """The public names, and the version."""
    return sorted([*__all__, "__version__"])
