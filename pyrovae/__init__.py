"""pyrovae: VAEs and CVAEs as Pyro model/guide pairs, and tools to study their latent space."""

from pyrovae.build import ModelConfig, build_model
from pyrovae.data import load_dataset
from pyrovae.runs import load_run, read_config, read_metrics
from pyrovae.traces import IWAE, ImportanceTerms, importance_terms
from pyrovae.train import TrainConfig, Trainer, train

__version__ = "0.1.0"

__all__ = [
    "ModelConfig",
    "TrainConfig",
    "Trainer",
    "IWAE",
    "ImportanceTerms",
    "build_model",
    "importance_terms",
    "load_dataset",
    "load_run",
    "read_config",
    "read_metrics",
    "train",
]
