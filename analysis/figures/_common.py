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
from pyrovae.images import MNIST_SHAPE, VALUE_KINDS, image_shape_of, to_display, value_kind_of

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
    if out.min() < 0:
        raise ValueError(
            f"labels must be classes 0, 1, ..., K-1, got a negative label {out.min()}; "
            "map the labels to 0..K-1 first"
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


Shape = tuple[int, int, int]
"""(C, H, W) of one image."""


def _image_shape(vae: Any) -> Shape | None:
    """(C, H, W) of the model's images (:func:`pyrovae.images.image_shape_of`), None for
    vectors."""
    shape = image_shape_of(vae)
    if shape is not None and math.prod(shape) != vae.x_dim:
        raise ValueError(
            f"the model's image_shape {shape} does not hold x_dim={vae.x_dim} values; "
            "record the right [C, H, W] in ModelConfig.image_shape"
        )
    return shape


def _display(
    vae: Any, values: np.ndarray | torch.Tensor, kind: str | None
) -> tuple[np.ndarray, str | None]:
    """Values of the model's data (data units) in [0, 1] for drawing, and a caption note.

    ``kind`` (of :data:`pyrovae.images.VALUE_KINDS`) overrides the kind read from the model
    (:func:`pyrovae.images.value_kind_of`): 8-bit values are divided by 255, real values
    min-max scaled over everything the figure draws (the note says so), others clamped to
    [0, 1].
    """
    if kind is not None and kind not in VALUE_KINDS:
        raise ValueError(f"kind must be one of {VALUE_KINDS} or None, got {kind!r}")
    shown, note = to_display(torch.as_tensor(values), kind or value_kind_of(vae))
    return shown.numpy(), note


def _with_note(title: str, note: str | None) -> str:
    return title if note is None else f"{title}\n({note})"


def _tile_size(shape: Shape | int) -> tuple[int, int]:
    """Height and width of one drawn tile: channels other than 1 or 3 are laid side by side."""
    if isinstance(shape, int):
        return shape, shape
    c, h, w = shape
    return h, (w if c in (1, 3) else c * w)


def _tile_image(image: np.ndarray, shape: Shape | int) -> np.ndarray:
    if isinstance(shape, int):
        return image.reshape(shape, shape)
    c, h, w = shape
    image = image.reshape(c, h, w)
    if c == 1:
        return image[0]
    if c == 3:
        return image.transpose(1, 2, 0)
    return image.transpose(1, 0, 2).reshape(h, c * w)


_CLASS_CYCLE = 0.6180339887498949
"""The golden ratio's fraction: hues of successive classes far apart for any K."""


def _class_colours(num_classes: int) -> list[tuple[float, ...]]:
    """A distinct colour per class: tab10 up to 10 classes, tab20 up to 20, and beyond that
    the turbo colour map at points i * 0.618 (mod 1), so that neighbouring classes differ."""
    if num_classes <= 20:
        cmap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        return [cmap(i) for i in range(num_classes)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(0.05 + 0.9 * ((i * _CLASS_CYCLE) % 1.0)) for i in range(num_classes)]


def _class_name(c: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= c < len(class_names):
        return str(class_names[c])
    return str(c)


def _legend_style(num_entries: int) -> dict[str, Any]:
    """Legend columns and font size that keep 2 or 50 entries readable."""
    ncols = max(1, math.ceil(num_entries / 24))
    return {"ncols": ncols, "fontsize": 8 if num_entries <= 24 else 6}


DIGIT_DATASETS = frozenset({"mnist", "emnist-digits", "svhn"})
"""Data sets (of :func:`pyrovae.load_dataset`) whose classes are the digits 0-9."""


def _class_word(vae: Any, data_name: str | None = None) -> str:
    """What a class is called: a digit for data whose classes are digits (MNIST, EMNIST
    digits, SVHN), else a class."""
    run = getattr(vae, "run_config", None)
    if data_name is None and run is not None:
        if getattr(run.train, "data", None):
            return "class"
        data_name = getattr(run.train, "dataset", None)
    if data_name is not None:
        return "digit" if data_name in DIGIT_DATASETS else "class"
    return "digit" if image_shape_of(vae) == MNIST_SHAPE else "class"


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


def _tile(images: np.ndarray, shape: Shape | int, ncols: int, pad: int = 2) -> np.ndarray:
    """Arrange (n, C*H*W) images in [0, 1] row by row; gaps are NaN (drawn light grey).

    ``shape`` is (C, H, W) (or the side of a square grey image): one channel gives a 2-D
    canvas (drawn grey), three an (rows, cols, 3) RGB canvas, and any other number of
    channels a 2-D canvas with each image's channels side by side.
    """
    n = images.shape[0]
    nrows = math.ceil(n / ncols)
    h, w = _tile_size(shape)
    rgb = not isinstance(shape, int) and shape[0] == 3
    size = (nrows * (h + pad) - pad, ncols * (w + pad) - pad)
    canvas = np.full((*size, 3) if rgb else size, np.nan)
    for k in range(n):
        r, c = divmod(k, ncols)
        top, left = r * (h + pad), c * (w + pad)
        canvas[top : top + h, left : left + w] = _tile_image(images[k], shape)
    return canvas


_GAP_GREY = 0.82
"""The colour of the gaps between tiles (as the grey colour map's "bad" value)."""


def _show(ax: Axes, canvas: np.ndarray, **kwargs: Any) -> None:
    if canvas.ndim == 3:  # RGB: gaps filled with the same light grey
        ax.imshow(
            np.where(np.isnan(canvas), _GAP_GREY, canvas).clip(0.0, 1.0),
            interpolation="nearest",
            **kwargs,
        )
    else:
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
    shape: Shape | int,
    grid: int,
    a1: np.ndarray,
    a2: np.ndarray,
    labels: tuple[str, str],
    highlight_centre: bool,
) -> None:
    """Show a grid x grid traversal: column j is a1[j], row i (top down) is a2[grid-1-i]."""
    pad = 2
    h, w = _tile_size(shape)
    step, xstep = h + pad, w + pad
    _show(ax, _tile(images, shape, grid, pad))
    ax.set_xticks(np.arange(grid) * xstep + (w - 1) / 2, [_fmt(v) for v in a1], fontsize=7)
    ax.set_yticks(np.arange(grid) * step + (h - 1) / 2, [_fmt(v) for v in a2[::-1]], fontsize=7)
    ax.tick_params(length=2)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    for i in range(grid):
        for j in range(grid):
            ax.text(
                j * xstep + 0.5,
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
                (mid * xstep - 1.5, mid * step - 1.5),
                w + 2,
                h + 2,
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
    """The model's classes (a CVAE's ``y_dim``), else those the labels show (max + 1; at
    least MNIST's 10 for a model of MNIST-format images)."""
    if vae.conditional:
        return int(vae.y_dim)
    known = 10 if image_shape_of(vae) == MNIST_SHAPE else 1
    if labels is None or labels.numel() == 0:
        return known
    return max(known, int(labels.max().item()) + 1)


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
