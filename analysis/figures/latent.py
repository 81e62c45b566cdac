"""The latent space: per-class Gaussians as ellipses, projections, the prior's view.

For the data of class c, the encoder's diagonal Normals q(z | x_n) = N(loc_n,
diag(scale_n^2)) (for a flow guide, the part before the flow) are summarised by the
moment-matched Gaussian of their mixture,

    m_c = mean_n loc_n,    S_c = Cov_n(loc_n) + mean_n diag(scale_n^2),

and drawn as ellipses of equal density at 1, 2 and 3 standard deviations. For z_dim > 2
everything is shown on a plane z -> P^T z: by default the first two principal axes of
the encoder means (computed from centred means, but the coordinates are not shifted,
so the prior N(0, I) stays centred at 0), or any (z_dim, 2) matrix or pair of latent
dims the caller picks; the axis labels say which.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse
from torch.distributions import Independent, Normal

from pyrovae.analysis.figures._common import (
    _OUTLINE,
    _PRIOR_COLOUR,
    SDS,
    _check_labels,
    _check_model,
    _check_positive,
    _check_x,
    _check_y,
    _class_colours,
    _class_name,
    _encode,
    _legend_style,
    _model_device,
    _new_figure,
    _one_hot,
)


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
    class_names: Sequence[str] | None = None

    def legend_label(self, c: int) -> str:
        """The class's legend entry: its index, and its name where known."""
        name = _class_name(c, self.class_names)
        return str(c) if name == str(c) else f"{c} {name}"


def _latent_view(
    vae: Any,
    x: Any,
    labels: Any,
    y: Any,
    projection: Any,
    class_names: Sequence[str] | None = None,
) -> _LatentView:
    _check_model(vae)
    x = _check_x(vae, x)
    labels_np = _check_labels(labels, x.shape[0])
    y = _check_y(vae, y, x.shape[0])
    loc, scale = _encode(vae, x, y)
    plane = _make_plane(loc, projection)
    gaussians = class_gaussians(loc, scale, labels_np)
    projected = {c: (plane.project(m), plane.project_cov(s)) for c, (m, s, _) in gaussians.items()}
    num_classes = max(int(getattr(vae, "y_dim", 0) or 0), int(labels_np.max()) + 1)
    return _LatentView(
        plane,
        plane.project(loc),
        labels_np,
        gaussians,
        projected,
        _prior_view(vae, plane),
        num_classes,
        _check_class_names(class_names),
    )


def _check_class_names(class_names: Any) -> tuple[str, ...] | None:
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise ValueError(
            f"class_names must be a list of names of classes 0, 1, ..., got {class_names!r}"
        )
    return tuple(str(n) for n in class_names)


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
            Line2D(
                [],
                [],
                color=colours[c],
                marker="o",
                markersize=4,
                linewidth=1.6,
                label=view.legend_label(c),
            )
            for c in sorted(view.projected)
        ]
        handles.append(
            Line2D([], [], color=_PRIOR_COLOUR, linestyle="--", linewidth=1.0, label=prior["label"])
        )
        style = {
            "title": "class",
            "frameon": False,
            "title_fontsize": 9,
            **_legend_style(len(handles)),
        }
        if legend == "figure":
            ax.get_figure(root=True).legend(handles=handles, loc="outside right upper", **style)
        else:
            ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), **style)


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
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Per-class Gaussian ellipses of the encodings of ``x``, over the prior's contours.

    For each class c, the moment-matched Gaussian of its encoder posteriors (see the module
    docstring and :func:`class_gaussians`) is drawn at ``sds`` standard deviations, in the
    colour of c (tab10 up to 10 classes), with a faint scatter of up to ``max_points``
    encoder means. The prior is drawn dashed grey: a Gaussian prior (N(0, I) by default) as
    its ellipses at the same sds (exact marginal on the plane); any other prior as contours
    of its log density at log p_max - k^2/2 (the levels that give k-sd ellipses for a
    Gaussian), on the plane itself for z_dim = 2 and on the slice through 0 spanned by the
    projection for z_dim > 2. A conditional prior is shown as 1/K sum_k p(z | y = k).

    Args:
        vae: a trained VAE or CVAE.
        x: images of shape (N, x_dim).
        labels: integer classes of shape (N,).
        y: one-hot labels for a CVAE (``pyrovae.train.one_hot(labels, vae.y_dim)``), else None.
        projection: for z_dim > 2: None or ``"pca"`` (default), a pair of latent dims, or a
            (z_dim, 2) matrix such as :func:`pca_projection`'s.
        ax: draw into this axes instead of a new figure.
        sds: the standard deviations of the ellipses.
        max_points: how many encoder means to scatter (0: none).
        title: the axes title (default: says what is drawn).
        class_names: names of classes 0, 1, ... for the legend (e.g. ``UserData.class_names``).

    Returns:
        The figure holding the axes.
    """
    sds = _check_sds(sds)
    view = _latent_view(vae, x, labels, y, projection, class_names)
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
    class_names: Sequence[str] | None = None,
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
        class_names: names of classes 0, 1, ... for the legend.
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
        views[name] = _latent_view(vae, x, labels, y, projection, class_names)
        projection = views[name].plane  # one plane for all panels (PCA of the first set)
    box = _union(_view_box(v, sds) for v in views.values())
    fig = _new_figure((_panel_width(box, 3.9) + 0.8) * len(views) + 1.9, 4.8)
    axes = np.atleast_1d(fig.subplots(1, len(views)))
    for i, (ax, (name, view)) in enumerate(zip(axes, views.items(), strict=True)):
        _draw_latent(ax, view, box, sds, max_points, legend="figure" if i == 0 else None)
        ax.set_title(f"{name} (N={view.points.shape[0]:,})", fontsize=10)
    fig.suptitle(_ellipse_title(sds), fontsize=11)
    return fig
