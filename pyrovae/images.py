"""Write decoded samples as a PNG grid or as a NumPy array of images, and tell a model's
image shape and the units of its values (what the figures need to draw them)."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch

from pyrovae.checkpoint import atomic_write_bytes

__all__ = [
    "IMAGE_SUFFIXES",
    "MNIST_SHAPE",
    "VALUE_KINDS",
    "as_images",
    "image_shape_of",
    "save_images",
    "to_display",
    "value_kind_of",
]

IMAGE_SUFFIXES = (".png", ".npy")
MNIST_SHAPE = (1, 28, 28)
VALUE_KINDS = ("binary", "unit", "8-bit", "real")
"""Kinds of values (as :attr:`pyrovae.data.Splits.kind`): 0/1, [0, 1], integers 0..255, reals."""

_UNIT_LIKELIHOODS = frozenset({"bernoulli", "continuous-bernoulli"})
_MNIST_DATASETS = frozenset({"mnist", "fashion-mnist"})


def image_shape_of(obj: Any) -> tuple[int, int, int] | None:
    """(C, H, W) of the images a model (or a :class:`~pyrovae.build.ModelConfig`, or
    :class:`~pyrovae.data.Splits`) works on, or None for vectors.

    The recorded ``image_shape`` when there is one; otherwise a model of 784 values that was
    not trained on the user's own data is taken to be MNIST-format (runs written before the
    shape was recorded all were).
    """
    config = getattr(obj, "config", obj)
    shape = getattr(config, "image_shape", None)
    if shape:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    run = getattr(obj, "run_config", None)
    if run is not None and getattr(run.train, "data", None):
        return None
    if getattr(config, "kind", None) is not None:  # Splits that know their data
        return None
    x_dim = getattr(config, "x_dim", None)
    return MNIST_SHAPE if x_dim == 784 else None


def value_kind_of(obj: Any) -> str | None:
    """The kind of values (one of :data:`VALUE_KINDS`) a model's data hold, or None if unknown.

    In order: a ``kind`` the object records (:class:`~pyrovae.data.Splits`, or a run's
    ``train.data_kind``); a discretized likelihood (integers 0..255: "8-bit"); a Bernoulli or
    continuous Bernoulli likelihood ("unit", values in [0, 1]); a run on MNIST or
    Fashion-MNIST ("unit"); a standardized model, or any other model of the user's own data
    ("real"). None otherwise: the figures then
    draw values in [0, 1], as for MNIST.
    """
    kind = getattr(obj, "kind", None)
    if isinstance(kind, str) and kind in VALUE_KINDS:
        return kind
    run = getattr(obj, "run_config", None)
    train = getattr(run, "train", None)
    kind = getattr(train, "data_kind", None)
    if isinstance(kind, str) and kind in VALUE_KINDS:
        return kind
    config = getattr(obj, "config", obj)
    likelihood = str(getattr(config, "likelihood", "") or "")
    if likelihood.startswith("discretized"):
        return "8-bit"
    if likelihood in _UNIT_LIKELIHOODS:
        return "unit"
    if train is not None and not getattr(train, "data", None):
        if getattr(train, "dataset", None) in _MNIST_DATASETS:
            return "unit"
    if getattr(config, "standardize", False) or getattr(train, "data", None):
        return "real"  # a Gaussian (or other) likelihood on the user's own values
    return None


def to_display(x: torch.Tensor, kind: str | None = None) -> tuple[torch.Tensor, str | None]:
    """Values in [0, 1] to draw ``x`` (data units) with, and a note for the caption (or None).

    - "8-bit": x / 255 (integers 0..255 in the data's units);
    - "real": min-max scaled over all of ``x`` (one scale per figure; the note says so and
      gives the range);
    - otherwise (binary, [0, 1] or unknown): clamped to [0, 1], as for MNIST.
    """
    x = x.detach()
    if kind == "8-bit":
        return (x / 255.0).clamp(0.0, 1.0), None
    if kind == "real":
        finite = x[torch.isfinite(x)]
        lo = float(finite.min()) if finite.numel() else 0.0
        hi = float(finite.max()) if finite.numel() else 1.0
        span = hi - lo if hi > lo else 1.0
        note = f"values min-max scaled per figure: {lo:.3g} to {hi:.3g} drawn black to white"
        return ((x - lo) / span).clamp(0.0, 1.0), note
    return x.clamp(0.0, 1.0), None


def _check_shape(x_dim: int, image_shape: Any) -> tuple[int, int, int]:
    if image_shape is None:
        side = math.isqrt(x_dim)
        if side * side != x_dim:
            raise ValueError(
                f"x_dim={x_dim} is not a square image size; pass image_shape=(C, H, W) "
                "(pyrovae.images.image_shape_of(vae))"
            )
        return (1, side, side)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or math.prod(shape) != x_dim:
        raise ValueError(
            f"image_shape must be (C, H, W) with C*H*W = {x_dim}, got {tuple(image_shape)!r}"
        )
    return shape  # type: ignore[return-value]


def as_images(
    x: torch.Tensor,
    image_shape: tuple[int, int, int] | None = None,
    kind: str | None = None,
) -> torch.Tensor:
    """Rows of ``x`` (n, C*H*W, in C, H, W order) as (n, C, H, W) images in [0, 1] on the CPU.

    ``image_shape`` defaults to one grey square channel (MNIST's (1, 28, 28) for 784 values);
    ``kind`` says how to bring the values to [0, 1] (see :func:`to_display`).
    """
    shape = _check_shape(x.shape[-1], image_shape)
    shown, _ = to_display(x, kind)
    return shown.reshape(-1, *shape).cpu()


def save_images(
    x: torch.Tensor,
    path: str | Path,
    nrow: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    kind: str | None = None,
) -> Path:
    """Save rows of ``x`` as a grid image (``.png``, grey for one channel, colour for three)
    or a float array (``.npy``: (n, H, W) for one channel, (n, C, H, W) otherwise, in [0, 1]).

    ``image_shape`` and ``kind`` as in :func:`as_images`.
    """
    path = Path(path)
    if path.suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"--out must end in .png (a grid image) or .npy (an array), got {str(path)!r}"
        )
    images = as_images(x, image_shape, kind)
    buf = io.BytesIO()
    if path.suffix == ".npy":
        import numpy as np

        array = images[:, 0] if images.shape[1] == 1 else images
        np.save(buf, array.numpy().astype("float32"))
    else:
        from torchvision.utils import save_image

        if images.shape[1] not in (1, 3):  # neither grey nor RGB: the channels side by side
            images = images.permute(0, 2, 1, 3).reshape(len(images), 1, images.shape[2], -1)
        nrow = nrow or math.ceil(math.sqrt(len(images)))
        save_image(images, buf, nrow=nrow, padding=2, pad_value=1.0, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
