"""What the image figures draw for vector data (a model with no image shape).

A vector has no picture, so each image figure draws what fits its features instead, in the
data's own units (no scaling):

- samples: the marginal histograms of a few features, real data (grey, filled) against the
  samples of each source (lines), and pair plots (scatters) of two or three features;
- reconstructions: x_d against its reconstruction per feature, on the diagonal when exact,
  with the share of variance explained R^2 = 1 - sum (x - x_hat)^2 / sum (x - mean x)^2;
- traversals: one heat map per feature of the decoded mean over the lattice of z;
- class-conditional samples: pair plots of the samples coloured by class.

Private to :mod:`pyrovae.analysis.figures`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

MAX_MARGINALS = 4
"""Features whose marginal histograms the sample figure shows by default."""
MAX_PAIR_FEATURES = 3
"""Features whose pairs the pair plots show by default (3 pairs for 3 features)."""
MAX_RECONSTRUCTION_FEATURES = 8
"""Features the reconstruction scatter shows by default."""
MAX_MAP_FEATURES = 4
"""Features the traversal heat maps show by default."""
VECTOR_SAMPLES = 1000
"""Samples per source drawn for a histogram (the image grids' 64 are too few)."""
VECTOR_ROWS = 500
"""Rows of x whose reconstructions are scattered by default."""
REAL_COLOUR = "0.55"
"""Real data in every vector figure."""


Feature = tuple[int, str]
"""A feature to draw: its index and its label (its column name, else "feature d")."""


def check_features(
    features: Any, x_dim: int, default: int, names: Sequence[str] | None = None
) -> list[Feature]:
    """The features to draw, as (index, label): ``features`` (checked) or the first
    ``default``; labelled by ``names`` (e.g. a CSV's column names) where given."""
    if names is not None and (isinstance(names, str) or len(names) != x_dim):
        raise ValueError(
            f"feature_names must name all {x_dim} features, got {names!r}; pass one name "
            "per column of x or None"
        )
    indices = _check_indices(features, x_dim, default)
    return [(d, f"feature {d}" if names is None else str(names[d])) for d in indices]


def _check_indices(features: Any, x_dim: int, default: int) -> list[int]:
    if features is None:
        return list(range(min(x_dim, default)))
    if isinstance(features, str) or not isinstance(features, Sequence) or not features:
        raise ValueError(f"features must be a non-empty list of feature indices, got {features!r}")
    out = []
    for f in features:
        if isinstance(f, bool) or not isinstance(f, int | np.integer) or not 0 <= f < x_dim:
            raise ValueError(
                f"features must be indices in [0, {x_dim}), got {f!r}; pick features 0..{x_dim - 1}"
            )
        out.append(int(f))
    return out


def source_colours(k: int) -> list[Any]:
    return [f"C{i % 10}" for i in range(k)]


def _bins(values: list[np.ndarray], bins: int = 30) -> np.ndarray:
    """Shared bins over the 0.5-99.5 percentiles of all the values (outliers clipped in)."""
    joined = np.concatenate([v[np.isfinite(v)] for v in values])
    if joined.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = np.percentile(joined, [0.5, 99.5])
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def draw_marginal(
    ax: Axes, feature: Feature, real: np.ndarray | None, samples: Mapping[str, np.ndarray]
) -> None:
    """Density histograms of one feature: real data filled grey, each source a line."""
    feature, label = feature
    columns = [s[:, feature] for s in samples.values()]
    if real is not None:
        columns.append(real[:, feature])
    edges = _bins(columns)
    if real is not None:
        ax.hist(
            np.clip(real[:, feature], edges[0], edges[-1]),
            bins=edges,
            density=True,
            color=REAL_COLOUR,
            alpha=0.5,
            gid="real-marginal",
        )
    for colour, (_, s) in zip(source_colours(len(samples)), samples.items(), strict=True):
        ax.hist(
            np.clip(s[:, feature], edges[0], edges[-1]),
            bins=edges,
            density=True,
            histtype="step",
            color=colour,
            linewidth=1.3,
            gid="sample-marginal",
        )
    ax.set_xlabel(label)
    ax.set_yticks([])
    ax.tick_params(labelsize=7)


def draw_pair(
    ax: Axes,
    pair: tuple[Feature, Feature],
    real: np.ndarray | None,
    samples: Mapping[str, np.ndarray],
    colours: Sequence[Any] | None = None,
    max_points: int = 1000,
) -> None:
    """A scatter of two features: real data grey, each set of samples in its colour."""
    (a, label_a), (b, label_b) = pair
    rng = np.random.default_rng(0)

    def thin(v: np.ndarray) -> np.ndarray:
        return v if len(v) <= max_points else v[rng.choice(len(v), max_points, replace=False)]

    if real is not None:
        r = thin(real)
        ax.scatter(r[:, a], r[:, b], s=4, c=REAL_COLOUR, alpha=0.5, linewidths=0, gid="real-pair")
    colours = colours or source_colours(len(samples))
    for colour, s in zip(colours, samples.values(), strict=True):
        t = thin(s)
        ax.scatter(t[:, a], t[:, b], s=4, color=colour, alpha=0.5, linewidths=0, gid="sample-pair")
    ax.set_xlabel(label_a)
    ax.set_ylabel(label_b)
    ax.tick_params(labelsize=7)


def pairs_of(features: Sequence[Feature]) -> list[tuple[Feature, Feature]]:
    return list(itertools.combinations(features[:MAX_PAIR_FEATURES], 2))


def legend_handles(names: Sequence[str], colours: Sequence[Any], real: bool) -> list[Line2D]:
    handles = [Line2D([], [], color=REAL_COLOUR, linewidth=6, alpha=0.5, label="real data")]
    handles = handles if real else []
    handles += [
        Line2D([], [], color=c, linewidth=1.5, label=n) for n, c in zip(names, colours, strict=True)
    ]
    return handles


def samples_figure(
    new_figure: Any,
    real: np.ndarray | None,
    samples: Mapping[str, np.ndarray],
    labels: Mapping[str, str],
    features: list[Feature],
) -> Figure:
    """Marginals of ``features`` (top row) and pair plots of the first three (bottom row)."""
    pairs = pairs_of(features)
    ncols = max(len(features), len(pairs), 1)
    nrows = 2 if pairs else 1
    fig = new_figure(max(5.0, 2.3 * ncols + 1.8), 2.3 * nrows + 0.5)
    grid = fig.subplots(nrows, ncols, squeeze=False)
    for j, ax in enumerate(grid[0]):
        if j < len(features):
            draw_marginal(ax, features[j], real, samples)
        else:
            ax.set_axis_off()
    if pairs:
        for j, ax in enumerate(grid[1]):
            if j < len(pairs):
                draw_pair(ax, pairs[j], real, samples)
            else:
                ax.set_axis_off()
    handles = legend_handles(
        [labels[n] for n in samples], source_colours(len(samples)), real is not None
    )
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=8)
    return fig


def reconstruction_figure(
    new_figure: Any, x: np.ndarray, recon: np.ndarray, features: list[Feature]
) -> Figure:
    """x_d against its reconstruction, one panel per feature, with R^2 in each title."""
    ncols = min(4, len(features))
    nrows = math.ceil(len(features) / ncols)
    fig = new_figure(2.4 * ncols + 0.4, 2.4 * nrows + 0.5)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (d, label) in zip(axes, features, strict=False):
        xd, rd = x[:, d], recon[:, d]
        lo = float(min(xd.min(), rd.min()))
        hi = float(max(xd.max(), rd.max()))
        ax.plot([lo, hi], [lo, hi], color="0.6", linewidth=1.0, linestyle="--")
        ax.scatter(xd, rd, s=5, alpha=0.5, linewidths=0, gid="reconstruction-scatter")
        total = float(((xd - xd.mean()) ** 2).sum())
        r2 = 1.0 - float(((xd - rd) ** 2).sum()) / total if total > 0 else float("nan")
        ax.set_title(f"{label}: R\u00b2 = {r2:.2f}", fontsize=9)
        ax.set_xlabel("x", fontsize=8)
        ax.set_ylabel("reconstruction", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(features) :]:
        ax.set_axis_off()
    return fig


def feature_maps(
    fig: Figure,
    values: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    grid: int,
    plane_labels: tuple[str, str],
    features: list[Feature],
) -> None:
    """One heat map per feature of the decoded means over the lattice (rows top down)."""
    axes = np.atleast_1d(fig.subplots(1, len(features), squeeze=False)).ravel()
    step1 = (a1[-1] - a1[0]) / max(grid - 1, 1)
    step2 = (a2[-1] - a2[0]) / max(grid - 1, 1)
    extent = (a1[0] - step1 / 2, a1[-1] + step1 / 2, a2[0] - step2 / 2, a2[-1] + step2 / 2)
    for ax, (d, label) in zip(axes, features, strict=True):
        image = values[:, d].reshape(grid, grid)  # row i is a2[grid - 1 - i]
        shown = ax.imshow(
            image, extent=extent, origin="upper", aspect="auto", interpolation="nearest"
        )
        fig.colorbar(shown, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
        ax.plot((a1[0] + a1[-1]) / 2, (a2[0] + a2[-1]) / 2, "+", color="tab:red", markersize=8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(plane_labels[0], fontsize=8)
        ax.set_ylabel(plane_labels[1], fontsize=8)
        ax.tick_params(labelsize=7)
