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
from typing import TYPE_CHECKING, Any

import pyro

from pyrovae.build import ModelConfig, build_model
from pyrovae.data import Splits
from pyrovae.models import VAE
from pyrovae.nets import data_scaling
from pyrovae.objectives import make_objective
from pyrovae.run_data import DataMismatchError, record_data

if TYPE_CHECKING:
    from pyrovae.user_data import UserData

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
    data: Splits | UserData,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    context: Any = None,
) -> VAE:
    """Build, train and return a model; the run directory is written as it goes.

    ``data`` from :func:`pyrovae.read_data` (a :class:`~pyrovae.user_data.UserData`) records
    its path, fingerprint and kind in the run's config (see
    :func:`pyrovae.run_data.record_data`); a resumed run refuses data with another
    fingerprint. With ``model_config.standardize``, the data scaling is fitted to the
    training split before the first epoch (and restored from the checkpoint on resume).

    ``context`` (a :class:`~pyrovae.distributed.DistributedContext`, from
    :func:`~pyrovae.distributed.process_group` under torchrun) trains data-parallel over
    the job's processes, with the results of one process (see :mod:`pyrovae.distributed`).

    Example (from a notebook)::

        data = pyrovae.load_dataset("mnist", root="data")
        vae = pyrovae.train_model(ModelConfig(z_dim=10), TrainConfig(epochs=5), data, "runs/z10")
    """
    from pyrovae.user_data import UserData

    if isinstance(data, UserData):
        expected = train_config.data_fingerprint
        if expected is not None and expected != data.fingerprint:
            raise DataMismatchError(
                f"{data.path} is not the data the run in {out_dir} was trained on: its "
                f"fingerprint {data.fingerprint[:12]} differs from the run's {expected[:12]}; "
                "pass the run's own data, or train into a new out_dir"
            )
        train_config = record_data(train_config, data)
        data = data.splits
    width = data.train.x.shape[1]
    if width != model_config.x_dim:
        raise ValueError(
            f"the data's rows hold {width} values but model_config.x_dim is "
            f"{model_config.x_dim}; build the config with pyrovae.run_data.model_config_for"
        )
    check_semi_supervised(model_config, train_config, data, context)
    if not resume:
        pyro.set_rng_seed(train_config.seed)  # the same initial weights for the same seed
    vae = build_model(model_config)
    scaling = data_scaling(vae.encoder)
    if scaling is not None and not resume:
        n = train_config.subset or len(data.train)
        scaling.fit(data.train.x[:n])
    if model_config.model == "m2":
        from pyrovae.semi_supervised import SemiSupervisedTrainer

        trainer = SemiSupervisedTrainer(
            vae, data, train_config, out_dir, model_config, progress=progress
        )
    elif context is None:
        trainer = Trainer(vae, data, train_config, out_dir, model_config, progress=progress)
    else:
        from pyrovae.distributed import DistributedTrainer

        trainer = DistributedTrainer(
            vae, data, train_config, out_dir, model_config, progress=progress, context=context
        )
    trainer.fit(resume=resume)
    return trainer.vae


def check_semi_supervised(
    model_config: ModelConfig, train_config: TrainConfig, data: Splits, context: Any = None
) -> None:
    """The settings of the semi-supervised M2 apply to it alone, and it needs labelled data
    with as many classes as it has, one process, and an ELBO it can enumerate the label in
    (one line each: the setting, its value and the fix)."""
    semi = {"labels": train_config.labels, "aux_weight": train_config.aux_weight}
    if model_config.model != "m2":
        given = [name for name, value in semi.items() if value is not None]
        if given:
            flag = given[0].replace("_", "-")
            raise ValueError(
                f"--{flag} ({given[0]}={semi[given[0]]!r}) applies to --model m2 only; drop "
                "it, or train the semi-supervised M2"
            )
        return
    classes = int(getattr(data, "num_classes", 0) or 0)
    if classes < 2:
        raise ValueError(
            f"--model m2 needs labelled data with at least 2 classes, but {data.name} has "
            f"{classes}; give labels (a label column, y, or class subfolders)"
        )
    if model_config.y_dim != classes:
        raise ValueError(
            f"model_config.y_dim is {model_config.y_dim} but {data.name} has {classes} "
            "classes; build the config with pyrovae.run_data.model_config_for"
        )
    if train_config.elbo == "iwae":
        raise ValueError(
            "--model m2 trains with TraceEnum_ELBO (the label summed out exactly); the "
            "importance-weighted bound is not available for it: use --elbo trace"
        )
    if train_config.kl_warmup:
        raise ValueError(
            f"--kl-warmup {train_config.kl_warmup} is not available for --model m2 (the "
            "warm-up would also scale the label's terms); drop it"
        )
    if context is not None:
        raise ValueError("--model m2 runs in one process; run it without torchrun")


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
