"""The data a run trains on and is evaluated with, and the model settings they call for.

A run names its data in ``config.json``: a built-in data set (``train.dataset``, read by
:func:`pyrovae.data.load_dataset`) or the user's own file or image folder (``train.data``,
read by :func:`pyrovae.user_data.read_data` with the split settings stored beside it).
User data are checked against the fingerprint the run recorded, so a run never meets other
data under its name.

The likelihood follows the kind of values (:data:`DEFAULT_LIKELIHOODS`) unless one is asked
for, and one that cannot be right for the values is refused (:func:`check_likelihood`):
nothing is coerced. Real-valued and 8-bit data are standardized by default, with the
Jacobian of the standardization in every log-likelihood (:class:`pyrovae.nets.DataScaling`),
so that log p(x) is in the data's own units.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    import pyrovae.user_data
    from pyrovae.build import ModelConfig
    from pyrovae.data import Splits
    from pyrovae.trainer import TrainConfig

__all__ = [
    "DEFAULT_LIKELIHOODS",
    "LIKELIHOOD_KINDS",
    "DataMismatchError",
    "check_likelihood",
    "load_dataset",
    "model_config_for",
    "open_data",
    "record_data",
]

DEFAULT_LIKELIHOODS = {
    "binary": "bernoulli",
    "unit": "bernoulli",
    "8-bit": "discretized-logistic",
    "real": "gaussian",
}
"""The likelihood a kind of values gets when none is asked for: Bernoulli for values in
[0, 1] (dynamically binarized unless binary), a discretized logistic for 8-bit integers,
a Gaussian for anything else."""

LIKELIHOOD_KINDS = {
    "bernoulli": ("binary", "unit"),
    "continuous-bernoulli": ("binary", "unit"),
    "discretized-logistic": ("binary", "8-bit"),
    "gaussian": ("binary", "unit", "8-bit", "real"),
}
"""The kinds of values each likelihood is a density (or mass) of."""

_WHY = {
    "bernoulli": "is a distribution on [0, 1]",
    "continuous-bernoulli": "is a distribution on [0, 1]",
    "discretized-logistic": "is a distribution on the integers 0..255",
}
_KIND_TEXT = {
    "binary": "only 0 and 1",
    "unit": "values in [0, 1] that are not all integers",
    "8-bit": "integers 0..255, some above 1",
    "real": "values outside [0, 1] that are not all integers 0..255",
}


class DataMismatchError(ValueError):
    """Data given for a run are not the data it was trained on (their fingerprints differ)."""


def check_likelihood(likelihood: str, kind: str | None, flag: str = "--likelihood") -> None:
    """Raise a one-line ``ValueError`` when ``likelihood`` cannot model values of ``kind``
    (None: unknown, nothing checked)."""
    if kind is None or kind in LIKELIHOOD_KINDS.get(likelihood, (kind,)):
        return
    fixes = [name for name, kinds in LIKELIHOOD_KINDS.items() if kind in kinds]
    fix = " or ".join(f"{flag} {name}" for name in fixes)
    raise ValueError(
        f"{flag} {likelihood} {_WHY[likelihood]}, but the data hold {_KIND_TEXT[kind]} "
        f"({kind}); use {fix}"
    )


def model_config_for(
    data: Splits, settings: dict[str, Any] | None = None
) -> tuple[ModelConfig, list[str]]:
    """The :class:`~pyrovae.build.ModelConfig` of ``settings`` (its field values) fitted to
    ``data``, and what was inferred, one line each.

    ``x_dim`` and ``image_shape`` come from the data, ``y_dim`` from its classes (a CVAE
    or M2 needs labelled data with at least two), the likelihood from the kind of values unless
    given (and checked when given), ``standardize`` is on for a Gaussian or discretized
    likelihood of 8-bit or real values unless given.
    """
    from pyrovae.build import STANDARDIZED_LIKELIHOODS, ModelConfig

    given = dict(settings or {})
    kind = data.kind
    notes: list[str] = []
    out: dict[str, Any] = {"x_dim": int(data.train.x.shape[1])}
    if data.image_shape is not None:
        out["image_shape"] = list(data.image_shape)
    if given.get("model") in ("cvae", "m2"):
        if data.num_classes < 2:
            raise ValueError(
                f"--model {given['model']} needs labelled data with at least 2 classes, but "
                f"{data.name} has {data.num_classes}; give labels (a label column, y, or "
                "class subfolders) or use --model vae"
            )
        out["y_dim"] = int(data.num_classes)
    likelihood = given.get("likelihood")
    if likelihood is None:
        likelihood = DEFAULT_LIKELIHOODS.get(kind or "unit", "bernoulli")
        if kind is not None:
            notes.append(f"likelihood: {likelihood} (inferred from {kind} values)")
    else:
        check_likelihood(likelihood, kind)
    out["likelihood"] = likelihood
    if "standardize" not in given:
        standardize = likelihood in STANDARDIZED_LIKELIHOODS and kind in ("8-bit", "real")
        out["standardize"] = standardize
        if standardize:
            notes.append(
                "standardized: the encoder reads (x - mean) / std of the training data; "
                "log p(x) stays in the data's units (the Jacobian is included)"
            )
    if "x_dim" in given and given["x_dim"] != out["x_dim"]:
        raise ValueError(
            f"x_dim={given['x_dim']!r} was given, but the rows of {data.name} hold "
            f"{out['x_dim']} values; leave x_dim out (it is read from the data)"
        )
    out.update({k: v for k, v in given.items() if k != "likelihood"})
    return ModelConfig(**out), notes


def record_data(train: TrainConfig, user: pyrovae.user_data.UserData) -> TrainConfig:
    """``train`` with the user data's path, fingerprint, kind and names recorded."""
    return replace(
        train,
        dataset=None,
        data=str(user.path),
        data_fingerprint=user.fingerprint,
        data_kind=user.kind,
        class_names=list(user.class_names) if user.class_names else None,
        column_names=list(user.column_names) if user.column_names else None,
    )


def read_user_data(
    train: TrainConfig, path: str | Path | None = None
) -> pyrovae.user_data.UserData:
    """The run's own data, read with its stored split settings (from ``path`` when given,
    else ``train.data``) and checked against its fingerprint."""
    from pyrovae.user_data import read_data

    source = Path(path if path is not None else str(train.data)).expanduser()
    if not source.exists():
        raise FileNotFoundError(
            f"the run's data {str(source)!r} does not exist here; pass --data PATH with the "
            "same data (its fingerprint is checked)"
        )
    user = read_data(
        source,
        label_column=train.label_column,
        image_size=train.image_size,
        val_fraction=train.val_fraction,
        test_fraction=train.test_fraction,
        seed=train.split_seed,
    )
    expected = train.data_fingerprint
    if expected is not None and user.fingerprint != expected:
        raise DataMismatchError(
            f"{source} is not the data this run was trained on: its fingerprint "
            f"{user.fingerprint[:12]} differs from the run's {expected[:12]} (config.json); "
            "pass the run's own data, or train a new run on these"
        )
    return user


def open_data(
    train: TrainConfig,
    device: torch.device | str = "cpu",
    root: str | Path | None = None,
    path: str | Path | None = None,
    download: bool = True,
) -> Splits:
    """The splits of the run whose training settings are ``train``, on ``device``.

    A built-in data set is looked for in ``root`` (see :func:`pyrovae.data.load_dataset`);
    the user's data are read from ``path`` when given (the file moved), else from where the
    run read them, and must have the run's fingerprint (:class:`DataMismatchError`).
    """
    if train.data is None:
        from pyrovae.data import load_dataset

        if path is not None:
            raise ValueError(
                f"--data {path} was given, but the run was trained on the built-in data set "
                f"{train.dataset!r}; drop --data (use --data-root DIR to say where it is)"
            )
        return load_dataset(str(train.dataset), root, device, download)
    return read_user_data(train, path).splits.to(device)


def load_dataset(
    dataset: Any = "mnist",
    root: str | Path | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
    **read_options: Any,
) -> Splits:
    """The splits of a built-in data set by name (:func:`pyrovae.data.load_dataset`), or of
    the user's own data: a path (``.npy``, ``.npz``, ``.pt``, ``.csv`` or an image folder),
    an array, a tensor or a Dataset, read by :func:`pyrovae.read_data` with
    ``read_options`` (``label_column``, ``image_size``, ``val_fraction``, ...), on
    ``device``. ``pyrovae.load_dataset`` is this function.
    """
    from pyrovae.data import DATASETS
    from pyrovae.data import load_dataset as load_builtin

    if isinstance(dataset, str) and dataset in DATASETS:
        if read_options:
            raise ValueError(
                f"{sorted(read_options)} apply to your own data, not to the built-in data set "
                f"{dataset!r}; leave them out"
            )
        return load_builtin(dataset, root, device, download)
    from pyrovae.user_data import read_data

    if isinstance(dataset, str) and not Path(dataset).expanduser().exists():
        raise ValueError(
            f"{dataset!r} is neither a built-in data set ({', '.join(sorted(DATASETS))}) nor "
            "an existing file or folder; give one of those names or the path of your data"
        )
    return read_data(dataset, **read_options).splits.to(device)
