"""Figures of trained VAEs and CVAEs, each returned as a ``matplotlib.figure.Figure``.

Figures are built with ``Figure()`` directly, never through pyplot: nothing here picks a
backend or keeps a global reference, so they render headless (:func:`save_figure`) and
in notebooks (a ``Figure`` displays as the last value of a cell), and are freed like any
other object (a notebook shows them through ``_repr_png_`` even when pyplot was never
imported). Images are the decoder means in [0, 1], shown grey on black.

Latent pictures use one convention throughout. For the data of class c, the encoder's
diagonal Normals q(z | x_n) = N(loc_n, diag(scale_n^2)) (for a flow guide, the part
before the flow) are summarised by the moment-matched Gaussian of their mixture,

    m_c = mean_n loc_n,    S_c = Cov_n(loc_n) + mean_n diag(scale_n^2),

and drawn as ellipses of equal density at 1, 2 and 3 standard deviations. For z_dim > 2
everything is shown on a plane z -> P^T z: by default the first two principal axes of
the encoder means (computed from centred means, but the coordinates are not shifted,
so the prior N(0, I) stays centred at 0), or any (z_dim, 2) matrix or pair of latent
dims the caller picks; the axis labels say which.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import matplotlib
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Rectangle
from matplotlib.ticker import MaxNLocator
from torch.distributions import Independent, Normal
from torch.nn import functional as F

from pyrovae.checkpoint import atomic_write_bytes

from .evidence import Z95, ais_difference

__all__ = [
    "LatentSourceLike",
    "class_gaussians",
    "pca_projection",
    "plot_class_samples",
    "plot_cvae_style",
    "plot_kl_per_dim",
    "plot_latent_ellipses",
    "plot_latent_space",
    "plot_loglik",
    "plot_neighbourhood",
    "plot_reconstructions",
    "plot_samples",
    "plot_training_curves",
    "plot_traversal",
    "robust_limits",
    "save_figure",
]

SDS = (1.0, 2.0, 3.0)
_GRAY = matplotlib.colormaps["gray"].with_extremes(bad="0.82")
_PRIOR_COLOUR = "0.25"
_OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="white")]


@runtime_checkable
class LatentSourceLike(Protocol):
    """Anything to draw z from: ``sample(n) -> (n, z_dim)`` (and ``log_prob(z)``)."""

    def sample(self, num_samples: int) -> torch.Tensor: ...

    def log_prob(self, z: torch.Tensor) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------
# input checks


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


# ---------------------------------------------------------------------------------------
# model helpers


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


def class_gaussians(
    loc: np.ndarray | torch.Tensor, scale: np.ndarray | torch.Tensor, labels: np.ndarray
) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """Moment-matched Gaussian of each class's encoder posteriors: ``{c: (m_c, S_c, N_c)}``.

    m_c = mean_n loc_n and S_c = Cov_n(loc_n) + mean_n diag(scale_n^2), both over the
    N_c data of class c (population covariance: these are the exact first two moments of
    the mixture 1/N_c sum_n N(loc_n, diag(scale_n^2))).
    """
    loc = np.asarray(loc, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    labels = np.asarray(labels)
    out = {}
    for c in np.unique(labels).tolist():
        mask = labels == c
        lc = loc[mask]
        mean = lc.mean(0)
        centred = lc - mean
        cov = centred.T @ centred / lc.shape[0] + np.diag((scale[mask] ** 2).mean(0))
        out[int(c)] = (mean, cov, int(mask.sum()))
    return out


@dataclass(frozen=True)
class _Plane:
    """The 2-D view z -> P^T z of the latent space."""

    matrix: np.ndarray  # (z_dim, 2)
    labels: tuple[str, str]
    kind: str  # "latent", "pca" or "custom"

    def project(self, z: np.ndarray) -> np.ndarray:
        return z @ self.matrix

    def project_cov(self, cov: np.ndarray) -> np.ndarray:
        return self.matrix.T @ cov @ self.matrix

    def lift(self, a: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Points z with P^T z = a that differ from ``centre`` only within span(P)."""
        p = self.matrix
        return centre + (a - centre @ p) @ np.linalg.solve(p.T @ p, p.T)


def _make_plane(loc: np.ndarray, projection: Any) -> _Plane:
    z_dim = loc.shape[1]
    if isinstance(projection, _Plane):
        return projection
    if z_dim < 2:
        raise ValueError(
            f"2-D latent figures need z_dim >= 2, got z_dim={z_dim}; plot a histogram of z instead"
        )
    if projection is None:
        projection = (0, 1) if z_dim == 2 else "pca"
    if isinstance(projection, str):
        if projection != "pca":
            raise ValueError(
                f"projection must be None, 'pca', a pair of latent dims or a ({z_dim}, 2) "
                f"matrix, got {projection!r}"
            )
        if loc.shape[0] < 3:
            raise ValueError(
                "projection='pca' needs at least 3 encodings; pass more data or a pair of dims"
            )
        centred = loc - loc.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        comps = vt[:2].T.copy()
        for j in range(2):  # a deterministic sign: the largest entry of each axis is positive
            if comps[np.argmax(np.abs(comps[:, j])), j] < 0:
                comps[:, j] *= -1
        var = s**2 / max((s**2).sum(), 1e-300)
        labels = (
            f"PC1 of encoder means ({var[0]:.0%} of variance)",
            f"PC2 of encoder means ({var[1]:.0%} of variance)",
        )
        return _Plane(comps, labels, "pca")
    if (
        isinstance(projection, tuple | list)
        and len(projection) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) for d in projection)
    ):
        i, j = projection
        if not (0 <= i < z_dim and 0 <= j < z_dim and i != j):
            raise ValueError(
                f"projection dims must be two different latent dims in [0, {z_dim}), "
                f"got {tuple(projection)}"
            )
        matrix = np.zeros((z_dim, 2))
        matrix[i, 0] = matrix[j, 1] = 1.0
        return _Plane(matrix, (f"$z_{{{i + 1}}}$", f"$z_{{{j + 1}}}$"), "latent")
    if isinstance(projection, torch.Tensor):
        projection = projection.detach().cpu().numpy()
    matrix = np.asarray(projection, dtype=np.float64)
    if matrix.shape != (z_dim, 2):
        raise ValueError(
            f"projection must be a ({z_dim}, 2) matrix (columns: the two directions), got "
            f"shape {matrix.shape}; or pass 'pca' or a pair of latent dims"
        )
    if not np.isfinite(matrix).all() or np.linalg.matrix_rank(matrix) < 2:
        raise ValueError("projection must have two finite, linearly independent columns")
    return _Plane(matrix, ("projection 1", "projection 2"), "custom")


def pca_projection(vae: Any, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """First two principal axes of the encoder means of ``x``, a (z_dim, 2) matrix.

    Pass it as ``projection`` to several figures so that they share one view.
    """
    _check_model(vae)
    x = _check_x(vae, x)
    loc, _ = _encode(vae, x, _check_y(vae, y, x.shape[0]))
    return torch.from_numpy(_make_plane(loc, "pca").matrix)


def _prior_view(vae: Any, plane: _Plane) -> dict[str, Any]:
    """How to draw the prior on ``plane``: a projected Gaussian or a log-density function."""
    prior = vae.prior
    device, dtype = _model_device(vae)
    conditional = bool(getattr(prior, "conditional", False))
    with torch.no_grad():
        if conditional:
            eye = torch.eye(vae.y_dim, device=device, dtype=dtype)
            d = prior(eye)
        else:
            d = prior(None)
    if (
        not conditional
        and isinstance(d, Independent)
        and isinstance(d.base_dist, Normal)
        and d.batch_shape == ()
        and d.event_shape == (vae.z_dim,)
    ):
        loc = d.base_dist.loc.expand(vae.z_dim).double().cpu().numpy()
        scale = d.base_dist.scale.expand(vae.z_dim).double().cpu().numpy()
        standard = bool(np.all(loc == 0) and np.all(scale == 1))
        return {
            "kind": "gaussian",
            "mean": plane.project(loc),
            "cov": plane.project_cov(np.diag(scale**2)),
            "label": "prior N(0, I)" if standard else "prior p(z) (Gaussian)",
        }

    @torch.no_grad()
    def log_density(a: np.ndarray) -> np.ndarray:
        z = plane.lift(a, np.zeros(vae.z_dim))
        out = []
        for i in range(0, z.shape[0], 1024):
            zb = torch.as_tensor(z[i : i + 1024]).to(device, dtype)
            if conditional:  # the label-marginal 1/K sum_k p(z | y = k)
                lp = d.log_prob(zb.unsqueeze(-2))
                lp = torch.logsumexp(lp, -1) - math.log(lp.shape[-1])
            else:
                lp = d.log_prob(zb)
            out.append(lp.double().cpu())
        return torch.cat(out).numpy()

    with torch.no_grad():
        draws = d.sample((max(1, 2000 // max(1, d.batch_shape.numel())),))
    draws = plane.project(draws.reshape(-1, vae.z_dim).double().cpu().numpy())
    label = "prior (label-marginal)" if conditional else "prior p(z)"
    if plane.kind != "latent" and vae.z_dim > 2:
        label += ", slice"
    return {"kind": "density", "log_density": log_density, "draws": draws, "label": label}


# ---------------------------------------------------------------------------------------
# drawing helpers


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


def _ellipse(mean: np.ndarray, cov: np.ndarray, k: float, **kwargs: Any) -> Ellipse:
    """The k-sd contour of N(mean, cov) in 2-D."""
    evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
    evals = np.clip(evals, 0, None)
    angle = math.degrees(math.atan2(evecs[1, 1], evecs[0, 1]))
    return Ellipse(
        tuple(mean),
        2 * k * math.sqrt(evals[1]),
        2 * k * math.sqrt(evals[0]),
        angle=angle,
        **kwargs,
    )


def _box(mean: np.ndarray, cov: np.ndarray, k: float) -> np.ndarray:
    half = k * np.sqrt(np.clip(np.diag(cov), 0, None))
    return np.array([mean[0] - half[0], mean[0] + half[0], mean[1] - half[1], mean[1] + half[1]])


def _union(boxes: Iterable[np.ndarray]) -> np.ndarray:
    b = np.stack(list(boxes))
    return np.array([b[:, 0].min(), b[:, 1].max(), b[:, 2].min(), b[:, 3].max()])


def _pad_box(box: np.ndarray, frac: float = 0.05) -> np.ndarray:
    w = max(box[1] - box[0], 1e-6)
    h = max(box[3] - box[2], 1e-6)
    return np.array([box[0] - frac * w, box[1] + frac * w, box[2] - frac * h, box[3] + frac * h])


def _panel_width(box: np.ndarray, height: float) -> float:
    """Width (inches) of an equal-aspect panel of the given height showing ``box``."""
    ratio = (box[1] - box[0]) / max(box[3] - box[2], 1e-12)
    return float(np.clip(height * ratio, 0.6 * height, 1.6 * height))


def _set_box(ax: Axes, box: np.ndarray) -> None:
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.set_aspect("equal", adjustable="box")


@dataclass
class _LatentView:
    """Everything a latent-plane figure needs, computed once."""

    plane: _Plane
    points: np.ndarray  # projected encoder means (N, 2)
    labels: np.ndarray
    gaussians: dict[int, tuple[np.ndarray, np.ndarray, int]]  # in z-space
    projected: dict[int, tuple[np.ndarray, np.ndarray]]  # on the plane
    prior: dict[str, Any]
    num_classes: int


def _latent_view(vae: Any, x: Any, labels: Any, y: Any, projection: Any) -> _LatentView:
    _check_model(vae)
    x = _check_x(vae, x)
    labels_np = _check_labels(labels, x.shape[0])
    y = _check_y(vae, y, x.shape[0])
    loc, scale = _encode(vae, x, y)
    plane = _make_plane(loc, projection)
    gaussians = class_gaussians(loc, scale, labels_np)
    projected = {c: (plane.project(m), plane.project_cov(s)) for c, (m, s, _) in gaussians.items()}
    num_classes = max(int(getattr(vae, "y_dim", 0) or 0), int(labels_np.max()) + 1, 10)
    return _LatentView(
        plane,
        plane.project(loc),
        labels_np,
        gaussians,
        projected,
        _prior_view(vae, plane),
        num_classes,
    )


def _view_box(view: _LatentView, sds: Sequence[float]) -> np.ndarray:
    k = max(sds)
    boxes = [_box(m, s, k) for m, s in view.projected.values()]
    prior = view.prior
    if prior["kind"] == "gaussian":
        boxes.append(_box(prior["mean"], prior["cov"], k))
    else:
        lo = np.percentile(prior["draws"], 1, axis=0)
        hi = np.percentile(prior["draws"], 99, axis=0)
        boxes.append(np.array([lo[0], hi[0], lo[1], hi[1]]))
    return _pad_box(_union(boxes))


def _draw_latent(
    ax: Axes,
    view: _LatentView,
    box: np.ndarray,
    sds: Sequence[float],
    max_points: int,
    legend: str | None = "figure",
) -> None:
    """Draw the class ellipses, the prior and a scatter of encoder means into ``ax``.

    ``legend``: "figure" (outside the axes on the right of the figure, where constrained
    layout makes room for it), "axes" (anchored to the right of the axes) or None.
    """
    colours = _class_colours(view.num_classes)
    if max_points > 0 and view.points.shape[0] > 0:
        rng = np.random.default_rng(0)
        n = view.points.shape[0]
        idx = rng.choice(n, size=min(n, max_points), replace=False)
        ax.scatter(
            view.points[idx, 0],
            view.points[idx, 1],
            s=3,
            c=[colours[c] for c in view.labels[idx]],
            alpha=0.35,
            linewidths=0,
            rasterized=True,
        )
    _set_box(ax, box)
    prior = view.prior
    if prior["kind"] == "gaussian":
        for k in sds:
            ax.add_patch(
                _ellipse(
                    prior["mean"],
                    prior["cov"],
                    k,
                    fill=False,
                    edgecolor=_PRIOR_COLOUR,
                    linestyle="--",
                    linewidth=1.0,
                    gid="prior-ellipse",
                )
            )
    else:
        res = 101
        xs = np.linspace(box[0], box[1], res)
        ys = np.linspace(box[2], box[3], res)
        gx, gy = np.meshgrid(xs, ys)
        lp = prior["log_density"](np.stack([gx.ravel(), gy.ravel()], -1)).reshape(res, res)
        finite = np.isfinite(lp)
        if finite.any():
            top = lp[finite].max()
            lp = np.where(finite, lp, lp[finite].min() - 10.0)
            levels = sorted(top - 0.5 * k**2 for k in sds)
            if lp.min() < levels[-1]:
                ax.contour(
                    gx,
                    gy,
                    lp,
                    levels=levels,
                    colors=_PRIOR_COLOUR,
                    linestyles="--",
                    linewidths=1.0,
                )
    for c, (mean, cov) in sorted(view.projected.items()):
        for k in sds:
            ax.add_patch(
                _ellipse(
                    mean,
                    cov,
                    k,
                    fill=False,
                    edgecolor=colours[c],
                    linewidth=1.6 if k == min(sds) else 1.0,
                    alpha=1.0 if k == min(sds) else 0.6,
                    gid="class-ellipse",
                )
            )
        if box[0] <= mean[0] <= box[1] and box[2] <= mean[1] <= box[3]:
            ax.text(
                mean[0],
                mean[1],
                str(c),
                color=colours[c],
                fontsize=10,
                fontweight="bold",
                ha="center",
                va="center",
                path_effects=_OUTLINE,
                gid="class-label",
            )
    ax.set_xlabel(view.plane.labels[0])
    ax.set_ylabel(view.plane.labels[1])
    if legend is not None:
        handles = [
            Line2D([], [], color=colours[c], marker="o", markersize=4, linewidth=1.6, label=str(c))
            for c in sorted(view.projected)
        ]
        handles.append(
            Line2D([], [], color=_PRIOR_COLOUR, linestyle="--", linewidth=1.0, label=prior["label"])
        )
        style = {"title": "class", "frameon": False, "fontsize": 8, "title_fontsize": 9}
        if legend == "figure":
            ax.get_figure(root=True).legend(handles=handles, loc="outside right upper", **style)
        else:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), **style)


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


# ---------------------------------------------------------------------------------------
# public figures


def plot_reconstructions(
    vae: Any, x: torch.Tensor, y: torch.Tensor | None = None, n: int = 10
) -> Figure:
    """The first ``n`` rows of ``x`` above their reconstructions (decoder mean at the
    encoder mean, ``vae.reconstruct``). For a CVAE, ``y`` holds one-hot labels of ``x``."""
    _check_model(vae)
    x = _check_x(vae, x)
    side = _image_side(vae)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n > x.shape[0]:
        raise ValueError(f"n={n} is more than the {x.shape[0]} rows of x; pass n <= {x.shape[0]}")
    y = _check_y(vae, y, x.shape[0])
    xs = x[:n]
    ys = None if y is None else y[:n]
    device, dtype = _model_device(vae)
    with torch.no_grad():
        loc, _, _ = vae.encoder.encode(
            xs.to(device, dtype), None if ys is None else ys.to(device, dtype)
        )
    recon = _decode(vae, loc, ys)
    fig = _new_figure(max(4.0, 0.75 * n), 2.2)
    axes = fig.subplots(2, 1)
    _show(axes[0], _tile(xs.detach().double().cpu().numpy(), side, n))
    axes[0].set_title("inputs", fontsize=10)
    _show(axes[1], _tile(recon, side, n))
    axes[1].set_title("reconstructions (decoder mean at the encoder mean)", fontsize=10)
    return fig


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


_SCORE_FORMATS = (
    ("loglik", "log-lik {:.1f}"),
    ("entropy", "entropy {:.2f}"),
    ("ambiguous", "ambiguous {:.0%}"),
    ("frechet", "Frechet {:.1f}"),
)


def plot_samples(
    vae: Any,
    sources: Mapping[str, Any] | Sequence[Any],
    n: int = 64,
    y: torch.Tensor | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
) -> Figure:
    """One grid of ``n`` decoded samples per latent source, side by side.

    Each panel shows ``vae.decoder.mean(source.sample(n), y)``. For a CVAE, ``y`` holds
    one-hot labels of shape (n, y_dim) used for every source. ``scores`` (optional,
    ``{name: {"loglik": ..., "entropy": ..., ...}}``, e.g. the comparison results) adds a
    line of numbers under each title.
    """
    _check_model(vae)
    side = _image_side(vae)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    items = _sources_dict(sources)
    y = _check_y(vae, y, n)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    k = len(items)
    title_lines = 1
    if scores is not None:
        shown = [sum(key in v for key, _ in _SCORE_FORMATS) for v in scores.values()]
        title_lines += math.ceil(max(shown, default=0) / 2)
    fig = _new_figure(max(3.0, 2.8 * k), 2.6 * nrows / ncols + 0.25 + 0.18 * title_lines)
    axes = np.atleast_1d(fig.subplots(1, k))
    for ax, (name, source) in zip(axes, items.items(), strict=True):
        images = _decode(vae, _draw_from(source, n, vae.z_dim, name), y)
        _show(ax, _tile(images, side, ncols))
        title = name
        if scores is not None and name in scores:
            parts = [
                fmt.format(scores[name][key]) for key, fmt in _SCORE_FORMATS if key in scores[name]
            ]
            lines = [", ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
            title = "\n".join([title, *lines])
        ax.set_title(title, fontsize=9)
    return fig


def plot_latent_ellipses(
    vae: Any,
    x: torch.Tensor,
    labels: torch.Tensor,
    y: torch.Tensor | None = None,
    projection: Any = None,
    ax: Axes | None = None,
    sds: Sequence[float] = SDS,
    max_points: int = 2000,
    title: str | None = None,
) -> Figure:
    """Per-class Gaussian ellipses of the encodings of ``x``, over the prior's contours.

    For each class c, the moment-matched Gaussian of its encoder posteriors (see the module
    docstring and :func:`class_gaussians`) is drawn at ``sds`` standard deviations, in the
    tab10 colour of c, with a faint scatter of up to ``max_points`` encoder means. The
    prior is drawn dashed grey: a Gaussian prior (N(0, I) by default) as its ellipses at
    the same sds (exact marginal on the plane); any other prior as contours of its log
    density at log p_max - k^2/2 (the levels that give k-sd ellipses for a Gaussian),
    on the plane itself for z_dim = 2 and on the slice through 0 spanned by the
    projection for z_dim > 2. A conditional prior is shown as 1/K sum_k p(z | y = k).

    Args:
        vae: a trained VAE or CVAE.
        x: images of shape (N, x_dim).
        labels: integer classes of shape (N,).
        y: one-hot labels for a CVAE (``pyrovae.train.one_hot(labels, 10)``), else None.
        projection: for z_dim > 2: None or ``"pca"`` (default), a pair of latent dims, or a
            (z_dim, 2) matrix such as :func:`pca_projection`'s.
        ax: draw into this axes instead of a new figure.
        sds: the standard deviations of the ellipses.
        max_points: how many encoder means to scatter (0: none).
        title: the axes title (default: says what is drawn).

    Returns:
        The figure holding the axes.
    """
    sds = _check_sds(sds)
    view = _latent_view(vae, x, labels, y, projection)
    box = _view_box(view, sds)
    if ax is None:
        fig = _new_figure(_panel_width(box, 4.4) + 1.9, 5.0)
        ax = fig.subplots()
        legend = "figure"
    else:
        fig = ax.get_figure(root=True)
        legend = "axes"
    _draw_latent(ax, view, box, sds, max_points, legend=legend)
    ax.set_title(title if title is not None else _ellipse_title(sds), fontsize=10)
    return fig


def _check_sds(sds: Any) -> tuple[float, ...]:
    if not isinstance(sds, Sequence) or not sds:
        raise ValueError(f"sds must be a non-empty sequence of positive numbers, got {sds!r}")
    return tuple(_check_positive("each entry of sds", s) for s in sds)


def _ellipse_title(sds: Sequence[float]) -> str:
    ks = ", ".join(f"{s:g}" for s in sds)
    return f"q(z | x) per class: Gaussian fits at {ks} sd"


def _named_splits(data: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(data, "train") and hasattr(data, "test"):
        data = {"train": data.train, "test": data.test}
    if not isinstance(data, Mapping) or not data:
        raise ValueError(
            "data must be pyrovae Splits or a dict {name: Split or (x, labels)}, got "
            f"{type(data).__name__}"
        )
    out = {}
    for name, split in data.items():
        if hasattr(split, "x") and hasattr(split, "y"):
            out[str(name)] = (split.x, split.y)
        elif isinstance(split, tuple | list) and len(split) == 2:
            out[str(name)] = (split[0], split[1])
        else:
            raise ValueError(
                f"data[{name!r}] must be a Split or an (x, labels) pair, got {type(split).__name__}"
            )
    return out


def plot_latent_space(
    vae: Any,
    data: Any,
    projection: Any = None,
    sds: Sequence[float] = SDS,
    max_points: int = 2000,
) -> Figure:
    """:func:`plot_latent_ellipses` for several data sets side by side, on shared axes.

    Args:
        vae: a trained VAE or CVAE (for a CVAE the one-hot labels are built from the
            integer labels of each set).
        data: ``pyrovae.data.Splits`` (panels "train" and "test"), or a dict
            ``{title: Split or (x, labels)}``.
        projection: as in :func:`plot_latent_ellipses`; for z_dim > 2 the default PCA is
            computed on the first set and used for all panels.
        sds: the standard deviations of the ellipses.
        max_points: encoder means scattered per panel.
    """
    _check_model(vae)
    sds = _check_sds(sds)
    sets = _named_splits(data)
    device, dtype = _model_device(vae)
    views = {}
    for name, (x, labels) in sets.items():
        x = _check_x(vae, x, f"data[{name!r}].x")
        _check_labels(labels, x.shape[0])
        y = _one_hot(labels, vae.y_dim, device, dtype) if vae.conditional else None
        views[name] = _latent_view(vae, x, labels, y, projection)
        projection = views[name].plane  # one plane for all panels (PCA of the first set)
    box = _union(_view_box(v, sds) for v in views.values())
    fig = _new_figure((_panel_width(box, 3.9) + 0.8) * len(views) + 1.9, 4.8)
    axes = np.atleast_1d(fig.subplots(1, len(views)))
    for i, (ax, (name, view)) in enumerate(zip(axes, views.items(), strict=True)):
        _draw_latent(ax, view, box, sds, max_points, legend="figure" if i == 0 else None)
        ax.set_title(f"{name} (N={view.points.shape[0]:,})", fontsize=10)
    fig.suptitle(_ellipse_title(sds), fontsize=11)
    return fig


def _span_pair(span: Any, default: np.ndarray) -> np.ndarray:
    if span is None:
        return default
    if isinstance(span, int | float) and not isinstance(span, bool):
        s = _check_positive("span", span)
        return np.array([s, s])
    if isinstance(span, Sequence) and len(span) == 2:
        return np.array([_check_positive("each entry of span", s) for s in span])
    raise ValueError(f"span must be a positive number or a pair of them, got {span!r}")


def _traversal_grid(
    view: _LatentView, digit: int, grid: int, span: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre (z-space), plane coordinates a1, a2 (ascending) and the z of each tile."""
    if digit not in view.gaussians:
        present = sorted(view.gaussians)
        raise ValueError(
            f"digit={digit} does not occur in labels (classes present: {present}); "
            "pick a present class or pass data that contain it"
        )
    mean, cov, _ = view.gaussians[digit]
    m2, s2 = view.projected[digit]
    half = _span_pair(span, 2.5 * np.sqrt(np.clip(np.diag(s2), 1e-12, None)))
    a1 = m2[0] + np.linspace(-half[0], half[0], grid)
    a2 = m2[1] + np.linspace(-half[1], half[1], grid)
    rows = [(a1[j], a2[grid - 1 - i]) for i in range(grid) for j in range(grid)]
    z = view.plane.lift(np.array(rows), mean)
    return mean, a1, a2, z


def _digit_y(vae: Any, digit: int, n: int) -> torch.Tensor | None:
    if not vae.conditional:
        return None
    device, dtype = _model_device(vae)
    return _one_hot(torch.full((n,), digit, dtype=torch.long), vae.y_dim, device, dtype)


def _num_classes(vae: Any, labels: torch.Tensor | None = None) -> int:
    if vae.conditional:
        return int(vae.y_dim)
    return 10 if labels is None else max(10, int(labels.max().item()) + 1)


def plot_traversal(
    vae: Any,
    x: torch.Tensor,
    labels: torch.Tensor,
    digit: int = 9,
    grid: int = 7,
    span: float | Sequence[float] | None = None,
    y: torch.Tensor | None = None,
    projection: Any = None,
) -> Figure:
    """Decoded images on a ``grid`` x ``grid`` lattice around the mean encoding of ``digit``.

    The lattice is centred on m_c (the class mean of the encoder means) and spans
    +-``span`` along the two plane directions (z_1, z_2 for z_dim = 2; else the
    ``projection``, PCA by default, with every other coordinate kept at the class mean).
    The default ``span`` is 2.5 sd of the class's Gaussian fit along each direction. Each
    tile shows its plane coordinates; the centre tile is framed in red. For a CVAE, ``y``
    holds the one-hot labels of ``x`` (for encoding) and tiles are decoded with y = digit.
    """
    _check_model(vae)
    side = _image_side(vae)
    grid = _check_grid(grid)
    view = _latent_view(vae, x, labels, y, projection)
    digit = _check_digit(digit, _num_classes(vae, labels))
    _, a1, a2, z = _traversal_grid(view, digit, grid, span)
    images = _decode(vae, z, _digit_y(vae, digit, z.shape[0]))
    fig = _new_figure(0.75 * grid + 1.2, 0.75 * grid + 1.3)
    ax = fig.subplots()
    _draw_tiles(ax, images, side, grid, a1, a2, view.plane.labels, highlight_centre=True)
    title = f"decoded z around the mean encoding of {digit}"
    if vae.z_dim > 2:
        title += "\n(other coordinates at the class mean)"
    ax.set_title(title, fontsize=10)
    return fig


@torch.no_grad()
def _class_map(
    vae: Any,
    view: _LatentView,
    digit: int,
    box: np.ndarray,
    resolution: int,
    classifier: Any,
) -> np.ndarray:
    """RGB image (res, res, 3), origin lower: the most probable class at each point,
    faded towards white where that class is uncertain."""
    xs = np.linspace(box[0], box[1], resolution)
    ys = np.linspace(box[2], box[3], resolution)
    gx, gy = np.meshgrid(xs, ys)
    a = np.stack([gx.ravel(), gy.ravel()], -1)
    if classifier is None:
        classes = sorted(view.projected)
        total = sum(view.gaussians[c][2] for c in classes)
        scores = []
        for c in classes:
            m, s = view.projected[c]
            s = s + 1e-9 * np.eye(2)
            diff = a - m
            maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(s), diff)
            scores.append(
                math.log(view.gaussians[c][2] / total)
                - 0.5 * maha
                - 0.5 * math.log(np.linalg.det(s))
            )
        logits = torch.from_numpy(np.stack(scores, -1))
        probs = torch.softmax(logits, -1).numpy()
        label_of = np.array(classes)
    else:
        z = view.plane.lift(a, view.gaussians[digit][0])
        images = torch.from_numpy(_decode(vae, z, _digit_y(vae, digit, z.shape[0])))
        param = next(iter(classifier.parameters()))
        probs = classifier.probs(images.to(param.device, param.dtype)).double().cpu().numpy()
        label_of = np.arange(probs.shape[-1])
    best = probs.argmax(-1)
    conf = probs.max(-1)
    k = probs.shape[-1]
    strength = np.clip((conf - 1.0 / k) / (1.0 - 1.0 / k), 0, 1)[:, None]
    colours = np.array(_class_colours(view.num_classes))[:, :3]
    rgb = strength * colours[label_of[best]] + (1 - strength) * 1.0
    return rgb.reshape(resolution, resolution, 3)


def plot_neighbourhood(
    vae: Any,
    x: torch.Tensor,
    labels: torch.Tensor,
    digit: int = 9,
    grid: int = 7,
    span: float | Sequence[float] | None = None,
    y: torch.Tensor | None = None,
    projection: Any = None,
    classifier: Any = None,
    zoom: float = 2.0,
    resolution: int = 80,
) -> Figure:
    """Which classes surround ``digit`` in latent space, and where the traversal looks.

    Left: the class ellipses (as in :func:`plot_latent_ellipses`) zoomed on a window
    ``zoom`` times the traversal window of :func:`plot_traversal` (drawn as a black
    rectangle with its lattice points). Right: the same window coloured by the most
    probable class at each point, faded to white where that class is uncertain: without
    a ``classifier``, by the per-class Gaussian fits weighted by class frequency
    (classifier-free); with one (``MNISTClassifier``), by the classifier's reading of the
    decoded image there (other coordinates at the class mean; a CVAE decodes with
    y = digit). Arguments as in :func:`plot_traversal`.
    """
    _check_model(vae)
    grid = _check_grid(grid)
    zoom = _check_positive("zoom", zoom)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution must be an integer >= 4, got {resolution!r}")
    view = _latent_view(vae, x, labels, y, projection)
    digit = _check_digit(digit, _num_classes(vae, labels))
    _, a1, a2, _ = _traversal_grid(view, digit, grid, span)
    step1 = (a1[-1] - a1[0]) / (grid - 1)
    step2 = (a2[-1] - a2[0]) / (grid - 1)
    window = np.array(
        [a1[0] - step1 / 2, a1[-1] + step1 / 2, a2[0] - step2 / 2, a2[-1] + step2 / 2]
    )
    centre = np.array([(window[0] + window[1]) / 2, (window[2] + window[3]) / 2])
    half = zoom * np.array([window[1] - window[0], window[3] - window[2]]) / 2
    box = np.array(
        [centre[0] - half[0], centre[0] + half[0], centre[1] - half[1], centre[1] + half[1]]
    )
    fig = _new_figure(11.0, 5.0)
    left, right = fig.subplots(1, 2)
    _draw_latent(left, view, box, SDS, max_points=3000, legend=None)
    left.set_title(f"class ellipses (1, 2, 3 sd) around {digit}", fontsize=10)
    rgb = _class_map(vae, view, digit, box, resolution, classifier)
    right.imshow(rgb, extent=tuple(box), origin="lower", interpolation="nearest")
    _set_box(right, box)
    right.set_xlabel(view.plane.labels[0])
    right.set_ylabel(view.plane.labels[1])
    colours = _class_colours(view.num_classes)
    for c, (m, _) in sorted(view.projected.items()):
        if box[0] <= m[0] <= box[1] and box[2] <= m[1] <= box[3]:
            right.text(
                m[0],
                m[1],
                str(c),
                color="black",
                fontsize=11,
                fontweight="bold",
                ha="center",
                va="center",
                path_effects=_OUTLINE,
                gid="class-label",
            )
    how = (
        "classifier's reading of the decoded image"
        if classifier is not None
        else "most probable class (per-class Gaussian fits)"
    )
    right.set_title(how, fontsize=10)
    gx, gy = np.meshgrid(a1, a2)
    for ax in (left, right):
        ax.add_patch(
            Rectangle(
                (window[0], window[2]),
                window[1] - window[0],
                window[3] - window[2],
                fill=False,
                edgecolor="black",
                linewidth=1.5,
                gid="traversal-window",
            )
        )
        ax.plot(gx.ravel(), gy.ravel(), "+", color="black", markersize=4, alpha=0.6)
    handles = [
        Line2D([], [], color=colours[c], marker="s", linestyle="", label=str(c))
        for c in sorted(view.projected)
    ]
    handles.append(Line2D([], [], color="black", linewidth=1.5, label="traversal window"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=8, title="class")
    fig.suptitle(f"the latent neighbourhood of {digit}", fontsize=11)
    return fig


def plot_cvae_style(
    cvae: Any,
    digit: int,
    grid: int = 7,
    span: float = 2.0,
    dims: tuple[int, int] = (0, 1),
) -> Figure:
    """CVAE decodes on a ``grid`` x ``grid`` lattice of z in [-span, span]^2 with y = digit.

    The lattice lies in latent dims ``dims`` (other coordinates 0) and is centred at the
    origin, where N(0, I) puts its mass: the label fixes the digit, z moves its style
    (slant, width, stroke).
    """
    _check_model(cvae, conditional=True)
    side = _image_side(cvae)
    grid = _check_grid(grid)
    digit = _check_digit(digit, int(cvae.y_dim))
    span = _check_positive("span", span)
    plane = _make_plane(np.zeros((1, cvae.z_dim)), tuple(dims))
    a1 = np.linspace(-span, span, grid)
    a2 = np.linspace(-span, span, grid)
    rows = [(a1[j], a2[grid - 1 - i]) for i in range(grid) for j in range(grid)]
    z = plane.lift(np.array(rows), np.zeros(cvae.z_dim))
    images = _decode(cvae, z, _digit_y(cvae, digit, z.shape[0]))
    fig = _new_figure(0.75 * grid + 1.2, 0.75 * grid + 1.3)
    ax = fig.subplots()
    _draw_tiles(ax, images, side, grid, a1, a2, plane.labels, highlight_centre=True)
    rest = ", other z = 0" if cvae.z_dim > 2 else ""
    ax.set_title(f"CVAE with y = {digit}: z moves the style{rest}", fontsize=10)
    return fig


def plot_class_samples(
    vae: Any,
    sources: Mapping[int, Any] | Sequence[Any] | Any | None = None,
    n: int = 10,
    classifier: Any = None,
) -> Figure:
    """Class-conditional samples: row c shows ``n`` decodes for class c.

    - CVAE: z from ``sources`` (one source for all rows, a dict/list of one per class, or
      None for the prior p(z [| y])) decoded with y = c.
    - VAE: ``sources`` must hold one source per class (e.g.
      ``pyrovae.analysis.sources.fit_per_class("gaussian-full", vae, x, labels)``).

    With a ``classifier``, each row label also gives the fraction of the row that the
    classifier reads as c.
    """
    _check_model(vae)
    side = _image_side(vae)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    per_class: dict[int, Any] | None = None
    if isinstance(sources, Mapping):
        per_class = {int(k): v for k, v in sources.items()}
    elif isinstance(sources, Sequence) and not isinstance(sources, str):
        per_class = dict(enumerate(sources))
    if vae.conditional:
        classes = list(range(int(vae.y_dim)))
        if per_class is not None:
            missing = sorted(set(classes) - set(per_class))
            if missing:
                raise ValueError(f"sources lacks classes {missing}; give one source per class")
    else:
        if per_class is None:
            raise ValueError(
                "an unconditional VAE needs one latent source per class, e.g. "
                "sources=fit_per_class('gaussian-full', vae, x, labels)"
            )
        classes = sorted(per_class)
    rows, read_as = [], []
    for c in classes:
        y = _digit_y(vae, c, n)
        if per_class is not None:
            z = _draw_from(per_class[c], n, vae.z_dim, f"sources[{c}]")
        elif sources is not None:
            z = _draw_from(sources, n, vae.z_dim, getattr(sources, "name", "source"))
        else:
            with torch.no_grad():
                prior = vae.prior(y)
                z = prior.sample() if prior.batch_shape else prior.sample((n,))
        images = _decode(vae, z, y)
        rows.append(images)
        if classifier is not None:
            param = next(iter(classifier.parameters()))
            pred = classifier.predict(torch.from_numpy(images).to(param.device, param.dtype))
            read_as.append((pred == c).double().mean().item())
    fig = _new_figure(0.55 * n + 1.6, 0.55 * len(classes) + 0.9)
    ax = fig.subplots()
    _show(ax, _tile(np.concatenate(rows), side, n))
    step = side + 2
    ticks = np.arange(len(classes)) * step + (side - 1) / 2
    if classifier is not None:
        ax.set_yticks(ticks, [f"{c} ({r:.0%})" for c, r in zip(classes, read_as, strict=True)])
        ax.set_ylabel("class (share read as that class)")
    else:
        ax.set_yticks(ticks, [str(c) for c in classes])
        ax.set_ylabel("class")
    ax.tick_params(length=0)
    what = "CVAE, y = row" if vae.conditional else "VAE, per-class latent sources"
    ax.set_title(f"class-conditional samples ({what})", fontsize=10)
    return fig


def plot_training_curves(metrics_rows: Sequence[Mapping[str, float]]) -> Figure:
    """Training and validation ELBO (nats per datum) per epoch, from ``pyrovae.read_metrics``.

    The training ELBO is the running average over the epoch's minibatches (with that
    epoch's KL weight); the validation ELBO is computed on the validation split after it.

    The best validation epoch is marked; when the KL weight changes over training (KL
    warm-up) it is drawn on a second y axis.
    """
    if isinstance(metrics_rows, Mapping) or not isinstance(metrics_rows, Sequence):
        raise ValueError(
            "metrics_rows must be a list of dict rows, as returned by pyrovae.read_metrics"
        )
    if not metrics_rows:
        raise ValueError("metrics_rows is empty; train at least one epoch first")
    needed = ("epoch", "train_elbo", "val_elbo")
    for i, row in enumerate(metrics_rows):
        missing = [k for k in needed if k not in row]
        if missing:
            raise ValueError(f"metrics_rows[{i}] lacks {missing}; rows need keys {list(needed)}")
    epoch = np.array([float(r["epoch"]) for r in metrics_rows])
    train = np.array([float(r["train_elbo"]) for r in metrics_rows])
    val = np.array([float(r["val_elbo"]) for r in metrics_rows])
    fig = _new_figure(6.0, 3.8)
    ax = fig.subplots()
    ax.plot(epoch, train, marker="o", markersize=3, label="train ELBO")
    ax.plot(epoch, val, marker="o", markersize=3, label="validation ELBO")
    best = int(np.nanargmax(val))
    ax.plot(
        [epoch[best]],
        [val[best]],
        marker="*",
        markersize=12,
        color="tab:red",
        linestyle="",
        label=f"best validation: {val[best]:.2f} (epoch {epoch[best]:g})",
    )
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ELBO (nats per datum, higher is better)")
    ax.grid(alpha=0.3)
    handles, texts = ax.get_legend_handles_labels()
    kl = [r.get("kl_weight") for r in metrics_rows]
    if all(k is not None for k in kl) and len(set(kl)) > 1:
        twin = ax.twinx()
        (line,) = twin.plot(epoch, kl, color="0.5", linestyle=":", label="KL weight")
        twin.set_ylabel("KL weight")
        twin.set_ylim(0, 1.05 * max(kl))
        handles.append(line)
        texts.append("KL weight")
    ax.legend(handles, texts, fontsize=8, loc="lower right")
    ax.set_title("training curves", fontsize=10)
    return fig


@dataclass(frozen=True)
class _DiffRow:
    """One row of :func:`plot_loglik`: a difference to the reference and its 95% half-width."""

    name: str
    diff: float
    half: float | None  # Z95 * stderr, None when no standard error is known
    ais_diff: float | None
    ais_half: float | None
    notes: tuple[str, ...]
    unreliable: bool
    reference: bool


def _finite_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool | str):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ais_pair(entry: Mapping[str, Any], ref: Mapping[str, Any]) -> tuple[float, float] | None:
    """AIS difference to the reference (paired by image where possible), or None."""
    a, b = entry.get("ais"), ref.get("ais")
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return None
    keys = ("loglik", "stderr")
    if any(_finite_or_none(d.get(k)) is None for d in (a, b) for k in keys):
        return None
    return ais_difference(a, b)


def _loglik_rows(results: Mapping[str, Mapping[str, Any]]) -> tuple[str, list[_DiffRow]]:
    """The reference ("prior", else the first source) and one row per source."""
    for name, entry in results.items():
        if not isinstance(entry, Mapping) or "loglik" not in entry:
            raise ValueError(f"results[{name!r}] must be a dict with a 'loglik' entry")
        value, stderr = _finite_or_none(entry["loglik"]), entry.get("stderr")
        bad_se = stderr is not None and not (_finite_or_none(stderr) is not None and stderr >= 0)
        if value is None or bad_se:
            raise ValueError(
                f"results[{name!r}] has loglik={entry['loglik']} and stderr={stderr}; "
                "loglik must be finite and stderr non-negative"
            )
    ref_name = "prior" if "prior" in results else next(iter(results))
    ref = results[ref_name]
    rows = []
    for name, entry in results.items():
        is_ref = name == ref_name
        paired = _finite_or_none(entry.get("vs_prior")) if ref_name == "prior" else None
        if is_ref:
            diff, se = 0.0, 0.0
        elif paired is not None:
            diff, se = paired, _finite_or_none(entry.get("vs_prior_stderr"))
        else:
            diff = float(entry["loglik"]) - float(ref["loglik"])
            sa, sb = _finite_or_none(entry.get("stderr")), _finite_or_none(ref.get("stderr"))
            se = None if sa is None or sb is None else math.hypot(sa, sb)
        ais = _ais_pair(entry, ref)
        if is_ref and ais is not None:
            ais = (0.0, 0.0)
        notes = []
        fraction = _finite_or_none(entry.get("khat_gt_0.7"))
        if fraction:
            notes.append(f"k̂>0.7: {fraction:.0%}")
        elif entry.get("khat_flag") is True:
            notes.append("k̂ flag")
        if entry.get("converged") is False:
            notes.append("rising in K")
        rows.append(
            _DiffRow(
                name=str(name),
                diff=diff,
                half=None if se is None else Z95 * se,
                ais_diff=None if ais is None else ais[0],
                ais_half=None if ais is None else Z95 * ais[1],
                notes=tuple(notes),
                unreliable=entry.get("khat_flag") is True or entry.get("converged") is False,
                reference=is_ref,
            )
        )
    return ref_name, rows


def robust_limits(
    centres: Sequence[float],
    halves: Sequence[float],
    factor: float = 4.0,
    floor: float = 0.5,
) -> tuple[float, float]:
    """Axis limits for differences ``centres`` +- ``halves`` that one wild row cannot stretch.

    With extents e_i = |c_i| + h_i and the lower median m of the e_i, rows with
    |c_i| <= B = max(floor, factor * m) are in range; the limits span 0 and every in-range
    row with its error bar (each side at most 1.5 B), 10% more on a side where rows lie
    beyond, padded by 6% and widened to at least ``floor``. Rows outside the limits are
    for the caller to draw as clipped.
    """
    c = np.asarray(centres, dtype=np.float64)
    h = np.asarray(halves, dtype=np.float64)
    if c.size == 0:
        return -floor / 2, floor / 2
    extent = np.sort(np.abs(c) + h)
    bound = max(floor, factor * float(extent[(extent.size - 1) // 2]))
    inside = np.abs(c) <= bound
    lo = min(0.0, float((c - h)[inside].min(initial=0.0)))
    hi = max(0.0, float((c + h)[inside].max(initial=0.0)))
    lo, hi = max(lo, -1.5 * bound), min(hi, 1.5 * bound)
    width = max(hi - lo, floor)
    if (c < lo).any():  # room for the triangles of clipped rows
        lo -= 0.1 * width
    if (c > hi).any():
        hi += 0.1 * width
    pad = 0.06 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if hi - lo < floor:
        widen = (floor - (hi - lo)) / 2
        lo, hi = lo - widen, hi + widen
    return lo, hi


def _pm(diff: float, half: float | None) -> str:
    return f"{diff:+.2f} ± " + ("?" if half is None else f"{half:.2f}")


def plot_loglik(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Each source's held-out log-likelihood as a difference to the prior, with 95% bars.

    ``results`` is the ``"sources"`` dict of an evaluation: per source ``"loglik"`` and
    ``"stderr"`` (nats per datum) and, from a paired comparison, ``"vs_prior"`` and
    ``"vs_prior_stderr"``; optionally ``"khat_gt_0.7"``, ``"khat_flag"``, ``"converged"``
    and ``"ais"``. A row shows d = log p_source(x) - log p_prior(x) +- 1.96 SE (the paired
    error where recorded, else sqrt(SE_a^2 + SE_prior^2)), and where both the source and
    the prior have AIS results, the AIS difference as a diamond (paired image by image
    when both hold ``per_datum``; :func:`~pyrovae.analysis.evidence.ais_difference`). The
    prior is the zero line (without a ``"prior"`` source, the first source is). A row
    is green or red only where |d| > 1.96 SE; hollow markers are unreliable estimates
    (k-hat flag, or still rising in K). The axis follows the robust spread of the rows
    (:func:`robust_limits`); a row beyond it is drawn as a triangle at the edge and its
    value is written next to the row.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError(
            "results must be a non-empty dict {source name: {'loglik': ..., 'stderr': ...}}"
        )
    ref_name, rows = _loglik_rows(results)
    points = [(r.diff, r.half or 0.0) for r in rows if not r.reference]
    points += [(r.ais_diff, r.ais_half or 0.0) for r in rows if r.ais_diff is not None]
    lo, hi = robust_limits([p[0] for p in points], [p[1] for p in points])
    has_ais = any(r.ais_diff is not None for r in rows)
    fig = _new_figure(8.0, 0.55 * len(rows) + 1.9)
    ax = fig.subplots()
    ax.axvline(0.0, color=_PRIOR_COLOUR, linewidth=1.2, zorder=1)
    label_at = ax.get_yaxis_transform()  # x in axes fractions, y in data
    span = hi - lo

    def draw(y: float, diff: float, half: float | None, marker: str, row: _DiffRow) -> bool:
        """One point with its bar, or a triangle at the edge; True when clipped."""
        if row.reference:
            colour = _PRIOR_COLOUR
        elif half is not None and abs(diff) > half:  # shown beyond 1.96 SE
            colour = "tab:green" if diff > 0 else "tab:red"
        else:
            colour = "0.45"
        face = "white" if row.unreliable else colour
        if lo <= diff <= hi:
            ax.errorbar(
                [diff],
                [y],
                xerr=None if not half else [[half], [half]],
                fmt=marker,
                color=colour,
                mfc=face,
                ms=6,
                capsize=3,
                zorder=3,
            )
            return False
        edge, arrow = (hi - 0.02 * span, ">") if diff > hi else (lo + 0.02 * span, "<")
        ax.plot([edge], [y], marker=arrow, ms=9, color=colour, mfc=face, gid="clipped", zorder=3)
        return True

    for i, row in enumerate(rows):
        clipped = draw(i, row.diff, row.half, "o", row)
        if row.reference:
            text = "reference"
        else:
            text = _pm(row.diff, row.half) + (" (off scale)" if clipped else "")
        text = "  ".join([text, *row.notes])
        ax.text(1.02, i, text, transform=label_at, va="center", fontsize=8)
        if row.ais_diff is not None and not row.reference:
            clipped = draw(i + 0.3, row.ais_diff, row.ais_half, "D", row)
            text = "AIS " + _pm(row.ais_diff, row.ais_half) + (" (off scale)" if clipped else "")
            ax.text(1.02, i + 0.3, text, transform=label_at, va="center", fontsize=7, color="0.3")
    ax.set_yticks(np.arange(len(rows)), [r.name for r in rows])
    ax.set_ylim(len(rows) - 0.4, -0.6)  # first source on top
    ax.set_xlim(lo, hi)
    ax.set_xlabel(f"held-out log-likelihood minus {ref_name}'s (nats per datum; > 0: better)")
    ax.set_title(f"held-out log-likelihood relative to {ref_name} (bars: ±1.96 SE)", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], color=_PRIOR_COLOUR, linewidth=1.2, label=f"{ref_name} (0)"),
        Line2D([], [], color="0.45", marker="o", linestyle="", label="importance sampling"),
    ]
    if has_ais:
        handles.append(Line2D([], [], color="0.45", marker="D", linestyle="", label="AIS"))
    if any(r.unreliable for r in rows):
        handles.append(
            Line2D([], [], color="0.45", marker="o", mfc="white", linestyle="", label="unreliable")
        )
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8
    )
    return fig


def plot_kl_per_dim(
    kl_per_dim: Sequence[float] | torch.Tensor | np.ndarray,
    threshold: float | None = None,
    sort: bool = False,
) -> Figure:
    """Bar chart of the KL term per latent dimension (nats).

    With ``threshold``, the active-unit threshold is drawn as a line, bars above it are
    dark and the title counts them. ``sort=True`` orders dimensions by decreasing KL
    (the x labels keep the original dimension numbers).
    """
    if isinstance(kl_per_dim, torch.Tensor):
        kl_per_dim = kl_per_dim.detach().cpu().numpy()
    values = np.asarray(kl_per_dim, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all():
        raise ValueError(
            "kl_per_dim must be a non-empty 1-D sequence of finite numbers, got shape "
            f"{values.shape}"
        )
    if threshold is not None:
        threshold = float(threshold)
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
    order = np.argsort(-values, kind="stable") if sort else np.arange(values.size)
    shown = values[order]
    fig = _new_figure(max(5.0, 0.18 * values.size + 2.0), 3.5)
    ax = fig.subplots()
    if threshold is None:
        colours = ["tab:blue"] * values.size
    else:
        colours = ["tab:blue" if v > threshold else "lightsteelblue" for v in shown]
    xpos = np.arange(values.size)
    ax.bar(xpos, shown, color=colours, width=0.8)
    step = max(1, math.ceil(values.size / 25))
    ax.set_xticks(xpos[::step], [str(int(d) + 1) for d in order[::step]], fontsize=8)
    ax.set_xlabel("latent dimension" + (" (sorted by KL)" if sort else ""))
    ax.set_ylabel("KL (nats)")
    title = "KL per latent dimension"
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0)
        active = int((values > threshold).sum())
        ax.legend(
            [Line2D([], [], color="tab:red", linestyle="--")],
            [f"active-unit threshold {threshold:g}"],
            fontsize=8,
        )
        title += f": {active} of {values.size} above the threshold"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return fig


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
