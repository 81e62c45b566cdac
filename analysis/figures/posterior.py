"""Pictures of a reference posterior p(z | x) against the amortized guide q(z | x).

For z = 2 the posterior density itself is drawn on a grid: log p(x | z) + log p(z) from the
model's own trace (so any prior or decoder works), normalized over the grid, shaded by its
highest-density regions (the smallest regions holding 50% and 90% of the mass). For z > 2
the picture is the pair plot of the two dims where guide and posterior differ most, scored
per dim by ``|mean shift| + |log std ratio|`` (both in posterior units, from
:func:`~pyrovae.analysis.posterior.nuts.guide_vs_posterior`); the posterior's marginal there is
a Gaussian kernel density estimate of the NUTS draws (Scott's bandwidth, n^(-1/6) times
each dim's std). On top: the guide's 50% and 90% regions (exact for a diagonal Normal, or
for any guide at z = 2; a kernel estimate of its draws otherwise) and the NUTS draws.

The gap figure plots each datum's amortization gap against its approximation gap
(Cremer et al., 2018): points above the diagonal are data where amortization costs more
than the family's limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import nn

from pyrovae.analysis.figures._common import _class_word, _new_figure
from pyrovae.analysis.posterior.nuts import ReferencePosterior, _one_datum, unregistered
from pyrovae.analysis.sources.helpers import is_diagonal_normal, seeded
from pyrovae.traces import score_latents

__all__ = [
    "HDR_MASSES",
    "hdr_levels",
    "differing_dims",
    "log_posterior_grid",
    "draw_posterior",
    "plot_posterior",
    "plot_posteriors",
    "plot_gaps",
]

HDR_MASSES = (0.5, 0.9)
"""Masses of the highest-density regions drawn for posterior and guide."""
GUIDE_DRAWS = 2000
"""Draws of a guide whose marginal is estimated by kernel density."""
_POSTERIOR_COLOURS = ("#c6dbef", "#4292c6")  # the 90% region, then the 50% region
_GUIDE_COLOUR = "#e6550d"


def hdr_levels(density: np.ndarray, masses: Sequence[float] = HDR_MASSES) -> list[float]:
    """Density thresholds t_m whose superlevel sets {density >= t_m} hold the masses ``masses``
    of a density given on a grid of equal cells; ascending (as ``contour`` wants them)."""
    flat = np.sort(np.asarray(density, dtype=float).ravel())[::-1]
    total = flat.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("density must be finite, non-negative and not all zero")
    cumulative = np.cumsum(flat) / total
    levels = {float(flat[min(np.searchsorted(cumulative, m), flat.size - 1)]) for m in masses}
    return sorted(levels)


def differing_dims(summary: Mapping[str, Any]) -> tuple[int, int]:
    """The two latent dims (ascending) where the guide differs most from the posterior:
    the largest ``|mean_shift_d| + |log std_ratio_d|`` of a ``guide_vs_posterior`` summary."""
    shift = np.abs(np.asarray(summary["mean_shift"], dtype=float))
    ratio = np.abs(np.log(np.asarray(summary["std_ratio"], dtype=float)))
    score = np.nan_to_num(shift + ratio, nan=np.inf)
    if score.size < 2:
        raise ValueError("a pair plot needs at least two latent dims")
    first, second = np.argsort(-score, kind="stable")[:2]
    return (int(min(first, second)), int(max(first, second)))


@torch.no_grad()
def log_posterior_grid(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None, points: torch.Tensor
) -> torch.Tensor:
    """log p(z | x) at ``points`` (G, z_dim) of an equal-cell grid, up to log cell area:
    log p(x | z) + log p(z) from the model's trace, normalized over the points."""
    x1, y1 = _one_datum(vae, x, y)
    with unregistered(vae):
        terms = score_latents(vae.model, None, {"z": points.to(x1)[:, None, :]}, x1, y1)
    log_joint = (terms.log_likelihood + terms.log_prior)[:, 0].double().cpu()
    return log_joint - torch.logsumexp(log_joint, 0)


def _kde(draws: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Gaussian kernel density of 2-D ``draws`` (M, 2) at ``points`` (G, 2), Scott's bandwidth."""
    h = draws.std(0) * draws.shape[0] ** (-1.0 / 6.0)
    h = np.where(h > 0, h, 1e-6)
    d = torch.as_tensor((points[:, None, :] - draws[None, :, :]) / h)
    log_k = -0.5 * (d**2).sum(-1) - math.log(2 * math.pi * h[0] * h[1])
    return (torch.logsumexp(log_k, 1) - math.log(draws.shape[0])).exp().numpy()


@torch.no_grad()
def _guide_density(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    dims: tuple[int, int],
    points: np.ndarray,
    seed: int | None,
) -> np.ndarray:
    x1, y1 = _one_datum(vae, x, y)
    with unregistered(vae):
        q = vae.encoder(x1, y1)
    pts = torch.as_tensor(points).to(x1)
    if is_diagonal_normal(q):
        loc = q.base_dist.loc[0, list(dims)]
        scale = q.base_dist.scale.expand_as(q.base_dist.loc)[0, list(dims)]
        log_q = torch.distributions.Normal(loc, scale).log_prob(pts).sum(-1)
        return log_q.double().exp().cpu().numpy()
    if vae.z_dim == 2:
        return q.log_prob(pts[:, None, :])[:, 0].double().exp().cpu().numpy()
    with seeded(seed, x1.device):
        draws = q.sample((GUIDE_DRAWS,))[:, 0][:, list(dims)].double().cpu().numpy()
    return _kde(draws, points)


def _bounds(
    draws: np.ndarray, guide_mean: np.ndarray, guide_std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    low = np.minimum(np.percentile(draws, 0.5, axis=0), guide_mean - 3 * guide_std)
    high = np.maximum(np.percentile(draws, 99.5, axis=0), guide_mean + 3 * guide_std)
    pad = 0.15 * np.maximum(high - low, 1e-6)
    return low - pad, high + pad


def draw_posterior(
    ax: Axes,
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    reference: ReferencePosterior,
    summary: Mapping[str, Any],
    *,
    grid_size: int = 80,
    max_draws: int = 400,
    seed: int | None = 0,
) -> tuple[int, int]:
    """Draw the posterior, the guide's regions and the NUTS draws of one datum on ``ax``.

    ``summary`` is the datum's :func:`~pyrovae.analysis.posterior.nuts.guide_vs_posterior`.
    Returns the two dims drawn (0 and 1 for z = 2, else :func:`differing_dims`).
    """
    if grid_size < 10:
        raise ValueError(f"grid_size must be at least 10, got {grid_size!r}")
    dims = (0, 1) if vae.z_dim == 2 else differing_dims(summary)
    flat = reference.draws.double().reshape(-1, reference.draws.shape[-1]).numpy()
    pair = flat[:, list(dims)]
    guide_mean = np.asarray(summary["guide_mean"], dtype=float)[list(dims)]
    guide_std = np.asarray(summary["guide_std"], dtype=float)[list(dims)]
    low, high = _bounds(pair, guide_mean, guide_std)
    u = np.linspace(low[0], high[0], grid_size)
    v = np.linspace(low[1], high[1], grid_size)
    uu, vv = np.meshgrid(u, v)
    points = np.stack([uu.ravel(), vv.ravel()], 1)
    if vae.z_dim == 2:
        posterior = log_posterior_grid(vae, x, y, torch.as_tensor(points)).exp().numpy()
    else:
        posterior = _kde(pair, points)
    posterior = posterior.reshape(uu.shape)
    levels = hdr_levels(posterior)
    ax.contourf(
        uu,
        vv,
        posterior,
        levels=[*levels, posterior.max() * (1 + 1e-9)],
        colors=_POSTERIOR_COLOURS[-len(levels) :],
    )
    guide = _guide_density(vae, x, y, dims, points, seed).reshape(uu.shape)
    ax.contour(uu, vv, guide, levels=hdr_levels(guide), colors=_GUIDE_COLOUR, linewidths=1.2)
    gen = np.random.default_rng(0)
    shown = pair if len(pair) <= max_draws else pair[gen.choice(len(pair), max_draws, False)]
    ax.scatter(shown[:, 0], shown[:, 1], s=2, c="black", alpha=0.35, linewidths=0)
    ax.set_xlabel(f"z[{dims[0]}]")
    ax.set_ylabel(f"z[{dims[1]}]")
    return dims


def _legend(fig: Figure, exact: bool) -> None:
    what = "posterior" if exact else "posterior marginal (kernel estimate of the draws)"
    handles = [
        Patch(color=_POSTERIOR_COLOURS[1], label=f"{what}: 50% region"),
        Patch(color=_POSTERIOR_COLOURS[0], label="90% region"),
        Line2D([], [], color=_GUIDE_COLOUR, label="guide q(z | x): 50% and 90% regions"),
        Line2D([], [], color="black", marker=".", linestyle="", alpha=0.5, label="NUTS draws"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False, fontsize=8)


def _panel_title(
    index: int | None, label: int | None, reference: ReferencePosterior, word: str = "class"
) -> str:
    head = " ".join(
        part
        for part in (
            None if index is None else f"test #{index}",
            None if label is None else f"({word} {label})",
        )
        if part
    )
    reasons = getattr(reference, "flag_reasons", None) or []
    flag = (
        f", FLAGGED: {' '.join(reasons)}" if reasons else (", FLAGGED" if reference.flagged else "")
    )
    return f"{head}\nR-hat {reference.r_hat_max:.3f}{flag}".strip()


def plot_posterior(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    reference: ReferencePosterior,
    summary: Mapping[str, Any],
    title: str | None = None,
    **kwargs: Any,
) -> Figure:
    """One datum's posterior against its guide (see :func:`draw_posterior`)."""
    fig = _new_figure(4.6, 4.8)
    ax = fig.add_subplot()
    dims = draw_posterior(ax, vae, x, y, reference, summary, **kwargs)
    ax.set_title(title or _panel_title(None, None, reference), fontsize=9)
    _legend(fig, exact=vae.z_dim == 2)
    if dims != (0, 1) or vae.z_dim > 2:
        fig.suptitle(
            f"the two of {vae.z_dim} dims where guide and posterior differ most", fontsize=9
        )
    return fig


def plot_posteriors(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    references: Sequence[ReferencePosterior],
    summaries: Sequence[Mapping[str, Any]],
    indices: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    columns: int = 3,
    class_word: str | None = None,
    **kwargs: Any,
) -> Figure:
    """A panel per datum (rows of ``x``, labels ``y``): :func:`draw_posterior` for each.

    Panel titles name each datum's label as a ``class_word`` (default "digit" for MNIST,
    "class" for any other data).
    """
    n = len(references)
    if n == 0 or len(summaries) != n or x.shape[0] != n:
        raise ValueError(
            f"need one row of x, one reference and one summary per datum, got {x.shape[0]}, "
            f"{n} and {len(summaries)}"
        )
    if columns < 1:
        raise ValueError(f"columns must be a positive integer, got {columns!r}")
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig = _new_figure(3.2 * cols, 3.1 * rows + 0.7)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        draw_posterior(
            ax, vae, x[i], None if y is None else y[i], references[i], summaries[i], **kwargs
        )
        ax.set_title(
            _panel_title(
                None if indices is None else indices[i],
                None if labels is None else labels[i],
                references[i],
                class_word or _class_word(vae),
            ),
            fontsize=8,
        )
        ax.tick_params(labelsize=7)
    _legend(fig, exact=vae.z_dim == 2)
    if vae.z_dim > 2:
        fig.suptitle(
            f"Each panel: the two of {vae.z_dim} latent dims where guide and posterior differ most",
            fontsize=9,
        )
    return fig


def _per_datum_gaps(diagnostics: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    rows = [e.get("gaps") for e in diagnostics.get("data", []) if isinstance(e, Mapping)]
    pairs = [
        (g["approximation_gap"], g["amortization_gap"])
        for g in rows
        if isinstance(g, Mapping) and "approximation_gap" in g and "amortization_gap" in g
    ]
    if not pairs:
        raise ValueError("diagnostics holds no per-datum gaps (its 'data' entries need 'gaps')")
    values = np.asarray(pairs, dtype=float)
    return values[:, 0], values[:, 1]


def plot_gaps(diagnostics: Mapping[str, Any]) -> Figure:
    """Amortization against approximation gap per datum, from a ``diagnostics.json`` dict;
    and, when NUTS ran, the coverage of the guide's 90% intervals per datum."""
    approx, amort = _per_datum_gaps(diagnostics)
    coverage = [
        (e["guide"]["coverage_90_mean"], bool(e.get("flagged")))
        for e in diagnostics.get("data", [])
        if isinstance(e, Mapping) and isinstance(e.get("guide"), Mapping)
    ]
    fig = _new_figure(9.0 if coverage else 4.8, 4.2)
    ax = fig.add_subplot(1, 2 if coverage else 1, 1)
    ax.scatter(approx, amort, s=12, color="#3182bd", alpha=0.7, linewidths=0, label="one image")
    top = max(float(np.nanmax(approx)), float(np.nanmax(amort)), 0.0)
    bottom = min(float(np.nanmin(approx)), float(np.nanmin(amort)), 0.0)
    pad = 0.06 * (top - bottom) + 1e-3
    top, bottom = top + pad, bottom - pad
    ax.plot([bottom, top], [bottom, top], color="grey", linestyle="--", linewidth=0.8)
    n = len(approx)
    se = (
        (approx.std(ddof=1) / math.sqrt(n), amort.std(ddof=1) / math.sqrt(n))
        if n > 1
        else (0.0, 0.0)
    )
    ax.errorbar(
        approx.mean(),
        amort.mean(),
        xerr=1.96 * se[0],
        yerr=1.96 * se[1],
        color="black",
        marker="D",
        markersize=5,
        capsize=3,
        label="mean (1.96 SE)",
    )
    ax.set_xlim(bottom, top)
    ax.set_ylim(bottom, top)
    ax.set_xlabel("approximation gap log p(x) - ELBO(q*), nats")
    ax.set_ylabel("amortization gap ELBO(q*) - ELBO(q), nats")
    ax.set_title(f"Inference gaps of {n} images (above the line: amortization larger)", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    if coverage:
        ax2 = fig.add_subplot(1, 2, 2)
        values = np.asarray([c for c, _ in coverage])
        flagged = np.asarray([f for _, f in coverage])
        order = np.arange(len(values))
        ax2.scatter(order[~flagged], values[~flagged], s=14, color="#3182bd", label="mixed chains")
        if flagged.any():
            ax2.scatter(
                order[flagged],
                values[flagged],
                s=14,
                color="#de2d26",
                marker="x",
                label="flagged (R-hat, ESS or divergences)",
            )
        ax2.axhline(0.9, color="grey", linestyle="--", linewidth=0.8, label="0.9 (calibrated)")
        ax2.set_ylim(0, 1.02)
        ax2.set_xlabel("image (classes in turn)")
        ax2.set_ylabel("share of posterior draws in the guide's 90% interval")
        ax2.set_title("Coverage of the guide's intervals, mean over dims", fontsize=9)
        ax2.legend(frameon=False, fontsize=8, loc="lower left")
    return fig
