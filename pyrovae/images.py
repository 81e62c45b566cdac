"""Write decoded samples as a PNG grid or as a NumPy array of images."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import torch

from pyrovae.checkpoint import atomic_write_bytes

__all__ = ["IMAGE_SUFFIXES", "MNIST_SHAPE", "as_images", "image_shape_of", "save_images"]

IMAGE_SUFFIXES = (".png", ".npy")
MNIST_SHAPE = (1, 28, 28)


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


def as_images(x: torch.Tensor) -> torch.Tensor:
    """Reshape (n, side*side) rows in [0, 1] to (n, side, side)."""
    side = math.isqrt(x.shape[-1])
    if side * side != x.shape[-1]:
        raise ValueError(f"x_dim={x.shape[-1]} is not a square image size; cannot draw images")
    return x.detach().reshape(-1, side, side).clamp(0.0, 1.0).cpu()


def save_images(x: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save rows of ``x`` as a grid image (``.png``) or an (n, 28, 28) float array (``.npy``)."""
    path = Path(path)
    if path.suffix not in IMAGE_SUFFIXES:
        raise ValueError(
            f"--out must end in .png (a grid image) or .npy (an array), got {str(path)!r}"
        )
    images = as_images(x)
    buf = io.BytesIO()
    if path.suffix == ".npy":
        import numpy as np

        np.save(buf, images.numpy().astype("float32"))
    else:
        from torchvision.utils import save_image

        nrow = nrow or math.ceil(math.sqrt(len(images)))
        save_image(images.unsqueeze(1), buf, nrow=nrow, padding=2, pad_value=1.0, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
