"""Stochastic variational inference for a VAE/CVAE, with run directories and exact resume.

A run directory holds ``config.json`` (everything needed to rebuild the model),
``metrics.csv`` (``epoch,train_elbo,val_elbo,kl_weight,seconds,lr``; ELBOs per datum in
nats), ``checkpoint.pt`` (the last epoch, with optimizer and RNG state) and ``best.pt``
(the epoch with the best validation ELBO).
"""

from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path
from typing import Any

import pyro

from pyrovae.build import ModelConfig, build_model
from pyrovae.data import Splits
from pyrovae.models import VAE
from pyrovae.objectives import make_objective

# The training loop lives in pyrovae.trainer, below pyrovae.distributed; its names stay
# importable from here.
from pyrovae.trainer import (  # noqa: F401
    ELBOS,
    METRIC_COLUMNS,
    NONFINITE_CHECK_EVERY,
    VALIDATION_CHUNK,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    _forget_other_models,
    _LatentScale,
    _NonFiniteWatch,
    elbo_per_datum,
    make_adam,
    model_inputs,
    one_hot,
    resolve_device,
)

__all__ = [
    "ELBOS",
    "METRIC_COLUMNS",
    "NONFINITE_CHECK_EVERY",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "elbo_per_datum",
    "make_adam",
    "make_objective",
    "one_hot",
    "resolve_device",
    "train",
    "train_model",
]


def train_model(
    model_config: ModelConfig,
    train_config: TrainConfig,
    data: Splits,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    context: Any = None,
) -> VAE:
    """Build, train and return a model; the run directory is written as it goes.

    ``context`` (a :class:`~pyrovae.distributed.DistributedContext`, from
    :func:`~pyrovae.distributed.process_group` under torchrun) trains data-parallel over
    the job's processes, with the results of one process (see :mod:`pyrovae.distributed`).

    Example (from a notebook)::

        data = pyrovae.load_dataset("mnist", root="data")
        vae = pyrovae.train_model(ModelConfig(z_dim=10), TrainConfig(epochs=5), data, "runs/z10")
    """
    if not resume:
        pyro.set_rng_seed(train_config.seed)  # the same initial weights for the same seed
    vae = build_model(model_config)
    if context is None:
        trainer = Trainer(vae, data, train_config, out_dir, model_config, progress=progress)
    else:
        from pyrovae.distributed import DistributedTrainer

        trainer = DistributedTrainer(
            vae, data, train_config, out_dir, model_config, progress=progress, context=context
        )
    trainer.fit(resume=resume)
    return trainer.vae


train = train_model
"""The same function under the module's own name: ``from pyrovae.train import train``."""


class _CallableModule(types.ModuleType):
    """``pyrovae.train(...)``, the function this name was before it became the module: still
    callable for one release, with a ``DeprecationWarning`` pointing at
    :func:`pyrovae.train_model`."""

    def __call__(self, *args: Any, **kwargs: Any) -> VAE:
        warnings.warn(
            "calling pyrovae.train(...) is deprecated: pyrovae.train is the module; call "
            "pyrovae.train_model(...) (the same function) instead",
            DeprecationWarning,
            stacklevel=2,
        )
        return train_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
