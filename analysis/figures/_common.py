"""Shared pieces of the figures: input checks, model helpers, tiles, the figure class.

Private to :mod:`pyrovae.analysis.figures`; the modules of the package import from here.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import matplotlib
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch.nn import functional as F

from pyrovae.checkpoint import atomic_write_bytes

SDS = (1.0, 2.0, 3.0)


_GRAY = matplotlib.colormaps["gray"].with_extremes(bad="0.82")


_PRIOR_COLOUR = "0.25"


_OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="white")]


@runtime_checkable
class LatentSourceLike(Protocol):
    """Anything to draw z from: ``sample(n) -> (n, z_dim)`` (and ``log_prob(z)``)."""

    def sample(self, num_samples: int) -> torch.Tensor: ...

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...


def _shape(value: Any) -> Any:
    return tuple(value.shape) if hasattr(value, "shape") else type(value).__name__


def _check_model(vae: Any, conditional: bool | None = None) -> None:
    for attr in ("encoder", "decoder", "prior", "z_dim", "x_dim"):
        if not hasattr(vae, attr):
            raise ValueError(
                f"vae must be a pyrovae VAE or CVAE (missing attribute {attr!r}); "
                "build one with pyrovae.build_model or load it with pyrovae.load_run"
            )
    if conditional is True and not getattr(vae, "conditional", False):
        raise ValueError("this figure needs a CVAE (a model with y); got an unconditional VAE")


def _model_device(vae: Any) -> tuple[torch.device, torch.dtype]:
    param = next(iter(vae.parameters()), None)
    if param is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return param.device, param.dtype


def _check_x(vae: Any, x: Any, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != vae.x_dim:
        raise ValueError(
            f"{name} must be a tensor of shape (N, {vae.x_dim}), got {_shape(x)}; "
            "flatten images with x.reshape(len(x), -1)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one image")
    return x


def _check_y(vae: Any, y: Any, n: int, name: str = "y") -> torch.Tensor | None:
    if getattr(vae, "conditional", False):
        if y is None:
            raise ValueError(
                f"{name} is required for a CVAE: one-hot labels of shape ({n}, {vae.y_dim}); "
                f"make them with pyrovae.train.one_hot(labels, {vae.y_dim})"
            )
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (n, vae.y_dim):
            raise ValueError(
                f"{name} must be one-hot labels of shape ({n}, {vae.y_dim}), got {_shape(y)}; "
                f"make them with pyrovae.train.one_hot(labels, {vae.y_dim})"
            )
        return y
    if y is not None:
        raise ValueError(f"{name} was given but the model is an unconditional VAE; drop {name}")
    return None


def _check_labels(labels: Any, n: int) -> np.ndarray:
    if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n,):
        raise ValueError(f"labels must be integer classes of shape ({n},), got {_shape(labels)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer classes, got dtype {labels.dtype}; "
            "for one-hot labels pass labels.argmax(-1)"
        )
    out = labels.detach().cpu().numpy().astype(np.int64)
    if out.min() < 0 or out.max() >= 20:
        raise ValueError(
            f"labels must lie in [0, 20) to get distinct colours, got range "
            f"[{out.min()}, {out.max()}]"
        )
    return out


def _check_digit(digit: Any, num_classes: int, name: str = "digit") -> int:
    if isinstance(digit, bool) or not isinstance(digit, int | np.integer):
        raise ValueError(f"{name} must be an integer class in [0, {num_classes}), got {digit!r}")
    if not 0 <= digit < num_classes:
        raise ValueError(
            f"{name} must be in [0, {num_classes}), got {digit}; pick one of the classes "
            f"0..{num_classes - 1}"
        )
    return int(digit)


def _check_grid(grid: Any) -> int:
    if isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= 25:
        raise ValueError(f"grid must be an integer between 2 and 25, got {grid!r}")
    return grid


def _check_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _image_side(vae: Any) -> int:
    side = math.isqrt(vae.x_dim)
    if side * side != vae.x_dim:
        raise ValueError(
            f"image figures need square images, but x_dim={vae.x_dim} is not a perfect square"
        )
    return side


def _class_colours(num_classes: int) -> list[tuple[float, ...]]:
    cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
    return [cmap(i) for i in range(num_classes)]


def _one_hot(labels: torch.Tensor, num_classes: int, device: torch.device, dtype: torch.dtype):
    return F.one_hot(labels.to(device), num_classes).to(dtype)


@torch.no_grad()
def _encode(
    vae: Any, x: torch.Tensor, y: torch.Tensor | None, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Encoder loc and scale of every row, as float64 arrays of shape (N, z_dim)."""
    device, dtype = _model_device(vae)
    locs, scales = [], []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size].to(device, dtype)
        yb = None if y is None else y[i : i + batch_size].to(device, dtype)
        loc, scale, _ = vae.encoder.encode(xb, yb)
        locs.append(loc.double().cpu())
        scales.append(scale.double().cpu())
    return torch.cat(locs).numpy(), torch.cat(scales).numpy()


@torch.no_grad()
def _decode(vae: Any, z: np.ndarray | torch.Tensor, y: torch.Tensor | None = None) -> np.ndarray:
    device, dtype = _model_device(vae)
    z = torch.as_tensor(z).to(device, dtype)
    if y is not None:
        y = y.to(device, dtype)
    return vae.decoder.mean(z, y).double().cpu().numpy()


def _tile(images: np.ndarray, side: int, ncols: int, pad: int = 2) -> np.ndarray:
    """Arrange (n, side*side) images row by row; gaps are NaN (drawn light grey)."""
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    step = side + pad
    canvas = np.full((nrows * step - pad, ncols * step - pad), np.nan)
    for k in range(n):
        r, c = divmod(k, ncols)
        canvas[r * step : r * step + side, c * step : c * step + side] = images[k].reshape(
            side, side
        )
    return canvas


def _show(ax: Axes, canvas: np.ndarray, **kwargs: Any) -> None:
    ax.imshow(
        np.ma.masked_invalid(canvas),
        cmap=_GRAY,
        vmin=0.0,
        vmax=1.0,
        interpolation="nearest",
        **kwargs,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


class _DisplayFigure(Figure):
    """A ``Figure`` that also shows itself in Jupyter when pyplot was never imported.

    IPython shows an object through ``_repr_png_``; a plain ``Figure`` has none unless
    the inline backend is active (that is, pyplot was imported), so a figure returned by
    a library call would otherwise print as ``<Figure size ...>``.
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    fig = _DisplayFigure(figsize=(width, height), layout="constrained")
    # A margin of 0.1 inch keeps outer labels and legends off the edge of the image.
    fig.get_layout_engine().set(w_pad=0.1, h_pad=0.08)
    return fig


def _fmt(v: float) -> str:
    return f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def _draw_tiles(
    ax: Axes,
    images: np.ndarray,
    side: int,
    grid: int,
    a1: np.ndarray,
    a2: np.ndarray,
    labels: tuple[str, str],
    highlight_centre: bool,
) -> None:
    """Show a grid x grid traversal: column j is a1[j], row i (top down) is a2[grid-1-i]."""
    pad = 2
    step = side + pad
    _show(ax, _tile(images, side, grid, pad))
    centres = np.arange(grid) * step + (side - 1) / 2
    ax.set_xticks(centres, [_fmt(v) for v in a1], fontsize=7)
    ax.set_yticks(centres, [_fmt(v) for v in a2[::-1]], fontsize=7)
    ax.tick_params(length=2)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    for i in range(grid):
        for j in range(grid):
            ax.text(
                j * step + 0.5,
                i * step + 0.5,
                f"{_fmt(a1[j])}, {_fmt(a2[grid - 1 - i])}",
                color="#ffd54f",
                fontsize=5,
                ha="left",
                va="top",
                gid="tile-coordinates",
            )
    if highlight_centre and grid % 2 == 1:
        mid = grid // 2
        ax.add_patch(
            Rectangle(
                (mid * step - 1.5, mid * step - 1.5),
                side + 2,
                side + 2,
                fill=False,
                edgecolor="tab:red",
                linewidth=1.5,
                gid="centre-tile",
            )
        )


def _sources_dict(sources: Any) -> dict[str, Any]:
    if isinstance(sources, Mapping):
        items = {str(k): v for k, v in sources.items()}
    elif isinstance(sources, Sequence) and not isinstance(sources, str):
        items = {}
        for s in sources:
            name = getattr(s, "name", None)
            if not isinstance(name, str):
                raise ValueError(
                    "sources given as a list need a str .name each; pass a dict {name: source}"
                )
            items[name] = s
    else:
        raise ValueError(
            f"sources must be a dict {{name: source}} or a list of named sources, got "
            f"{type(sources).__name__}"
        )
    if not items:
        raise ValueError("sources is empty; pass at least one latent source")
    for name, s in items.items():
        if not callable(getattr(s, "sample", None)):
            raise ValueError(f"source {name!r} has no sample(n) method")
    return items


def _draw_from(source: Any, n: int, z_dim: int, name: str) -> torch.Tensor:
    with torch.no_grad():
        z = source.sample(n)
    if not isinstance(z, torch.Tensor) or tuple(z.shape) != (n, z_dim):
        raise ValueError(
            f"source {name!r}.sample({n}) must return a tensor of shape ({n}, {z_dim}), got "
            f"{_shape(z)}; is it fitted to this model's z_dim?"
        )
    return z


def _digit_y(vae: Any, digit: int, n: int) -> torch.Tensor | None:
    if not vae.conditional:
        return None
    device, dtype = _model_device(vae)
    return _one_hot(torch.full((n,), digit, dtype=torch.long), vae.y_dim, device, dtype)


def _num_classes(vae: Any, labels: torch.Tensor | None = None) -> int:
    if vae.conditional:
        return int(vae.y_dim)
    return 10 if labels is None else max(10, int(labels.max().item()) + 1)


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, e.g. .png) atomically; return it.

    The image is rendered in memory and then written to a temporary file that is renamed,
    so a reader never sees half a file.
    """
    if not isinstance(fig, Figure):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"cannot tell the image format of {str(path)!r}; end it with one of "
            f"{sorted('.' + k for k in supported)}, e.g. '.png'"
        )
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
    return path
