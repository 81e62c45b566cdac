"""Walks through the latent space: traversals, neighbourhood maps, the CVAE's style grid.

Images of any shape are tiled as in :mod:`.grids` (``kind`` says how values are drawn); for
vector data the lattice figures draw one heat map per feature of the decoded mean instead.
The class argument is still called ``digit`` (MNIST's classes) and takes any class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from pyrovae.analysis.figures import _vectors as V
from pyrovae.analysis.figures._common import (
    _OUTLINE,
    SDS,
    _check_digit,
    _check_grid,
    _check_model,
    _check_positive,
    _class_colours,
    _decode,
    _digit_y,
    _display,
    _draw_tiles,
    _image_shape,
    _legend_style,
    _new_figure,
    _num_classes,
    _with_note,
)
from pyrovae.analysis.figures.latent import (
    _draw_latent,
    _latent_view,
    _LatentView,
    _make_plane,
    _set_box,
)


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


def plot_traversal(
    vae: Any,
    x: torch.Tensor,
    labels: torch.Tensor,
    digit: int = 9,
    grid: int = 7,
    span: float | Sequence[float] | None = None,
    y: torch.Tensor | None = None,
    projection: Any = None,
    kind: str | None = None,
    features: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """Decoded images on a ``grid`` x ``grid`` lattice around the mean encoding of ``digit``.

    The lattice is centred on m_c (the class mean of the encoder means) and spans
    +-``span`` along the two plane directions (z_1, z_2 for z_dim = 2; else the
    ``projection``, PCA by default, with every other coordinate kept at the class mean).
    The default ``span`` is 2.5 sd of the class's Gaussian fit along each direction. Each
    tile shows its plane coordinates; the centre tile is framed in red. For a CVAE, ``y``
    holds the one-hot labels of ``x`` (for encoding) and tiles are decoded with y = digit.
    ``digit`` is any class of the data. For vector data: one heat map per feature (of
    ``features``, default the first 4, labelled by ``feature_names``) of the decoded mean
    over the lattice.
    """
    _check_model(vae)
    shape = _image_shape(vae)
    grid = _check_grid(grid)
    view = _latent_view(vae, x, labels, y, projection)
    digit = _check_digit(digit, _num_classes(vae, labels))
    _, a1, a2, z = _traversal_grid(view, digit, grid, span)
    images = _decode(vae, z, _digit_y(vae, digit, z.shape[0]))
    title = f"decoded z around the mean encoding of {digit}"
    if vae.z_dim > 2:
        title += "\n(other coordinates at the class mean)"
    plane = view.plane.labels
    chosen = _chosen(vae, shape, features, feature_names)
    return _lattice_figure(vae, images, shape, grid, a1, a2, plane, title, kind, chosen)


def _chosen(
    vae: Any, shape: Any, features: Any, feature_names: Any
) -> list[tuple[int, str]] | None:
    if shape is not None:
        return None
    return V.check_features(features, vae.x_dim, V.MAX_MAP_FEATURES, feature_names)


def _lattice_figure(
    vae: Any,
    images: np.ndarray,
    shape: tuple[int, int, int] | None,
    grid: int,
    a1: np.ndarray,
    a2: np.ndarray,
    labels: tuple[str, str],
    title: str,
    kind: str | None,
    chosen: list[tuple[int, str]] | None,
) -> Figure:
    """The decodes of a lattice: image tiles, or heat maps of features for vectors."""
    if shape is None:
        assert chosen is not None
        fig = _new_figure(3.0 * len(chosen) + 0.4, 3.2)
        V.feature_maps(fig, images, a1, a2, grid, labels, chosen)
        fig.suptitle(f"{title} (decoded mean of each feature; + the centre)", fontsize=10)
        return fig
    shown, note = _display(vae, images, kind)
    fig = _new_figure(0.75 * grid + 1.2, 0.75 * grid + 1.3)
    ax = fig.subplots()
    _draw_tiles(ax, shown, shape, grid, a1, a2, labels, highlight_centre=True)
    ax.set_title(_with_note(title, note), fontsize=10)
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
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Which classes surround ``digit`` in latent space, and where the traversal looks.

    Left: the class ellipses (as in :func:`plot_latent_ellipses`) zoomed on a window
    ``zoom`` times the traversal window of :func:`plot_traversal` (drawn as a black
    rectangle with its lattice points). Right: the same window coloured by the most
    probable class at each point, faded to white where that class is uncertain: without
    a ``classifier``, by the per-class Gaussian fits weighted by class frequency
    (classifier-free); with one (``MNISTClassifier``), by the classifier's reading of the
    decoded image there (other coordinates at the class mean; a CVAE decodes with
    y = digit). Arguments as in :func:`plot_traversal`; ``class_names`` label the legend.
    Works for any data: it draws no decoded images.
    """
    _check_model(vae)
    grid = _check_grid(grid)
    zoom = _check_positive("zoom", zoom)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4:
        raise ValueError(f"resolution must be an integer >= 4, got {resolution!r}")
    view = _latent_view(vae, x, labels, y, projection, class_names)
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
        Line2D([], [], color=colours[c], marker="s", linestyle="", label=view.legend_label(c))
        for c in sorted(view.projected)
    ]
    handles.append(Line2D([], [], color="black", linewidth=1.5, label="traversal window"))
    fig.legend(
        handles=handles,
        loc="outside right upper",
        frameon=False,
        title="class",
        **_legend_style(len(handles)),
    )
    fig.suptitle(f"the latent neighbourhood of {digit}", fontsize=11)
    return fig


def plot_cvae_style(
    cvae: Any,
    digit: int,
    grid: int = 7,
    span: float = 2.0,
    dims: tuple[int, int] = (0, 1),
    kind: str | None = None,
    features: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """CVAE decodes on a ``grid`` x ``grid`` lattice of z in [-span, span]^2 with y = digit.

    The lattice lies in latent dims ``dims`` (other coordinates 0) and is centred at the
    origin, where N(0, I) puts its mass: the label fixes the class, z moves its style
    (for MNIST: slant, width, stroke). Vector data get heat maps of ``features`` as in
    :func:`plot_traversal`.
    """
    _check_model(cvae, conditional=True)
    shape = _image_shape(cvae)
    grid = _check_grid(grid)
    digit = _check_digit(digit, int(cvae.y_dim))
    span = _check_positive("span", span)
    plane = _make_plane(np.zeros((1, cvae.z_dim)), tuple(dims))
    a1 = np.linspace(-span, span, grid)
    a2 = np.linspace(-span, span, grid)
    rows = [(a1[j], a2[grid - 1 - i]) for i in range(grid) for j in range(grid)]
    z = plane.lift(np.array(rows), np.zeros(cvae.z_dim))
    images = _decode(cvae, z, _digit_y(cvae, digit, z.shape[0]))
    rest = ", other z = 0" if cvae.z_dim > 2 else ""
    title = f"CVAE with y = {digit}: z moves the style{rest}"
    chosen = _chosen(cvae, shape, features, feature_names)
    return _lattice_figure(cvae, images, shape, grid, a1, a2, plane.labels, title, kind, chosen)
