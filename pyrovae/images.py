"""Write decoded samples as a PNG grid or as a NumPy array of images."""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from pyrovae.checkpoint import atomic_write_bytes

__all__ = ["IMAGE_SUFFIXES", "as_images", "save_images"]

IMAGE_SUFFIXES = (".png", ".npy")


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
