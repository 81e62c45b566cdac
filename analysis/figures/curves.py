"""Numbers as charts: training curves, held-out log-likelihoods, KL per latent dimension."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pyrovae.analysis.figures._common import _PRIOR_COLOUR, _new_figure
from pyrovae.analysis.likelihood.evidence_numbers import Z95, _ais, ais_difference


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

    With extents e_i = ``|c_i|`` + h_i and the lower median m of the e_i, rows with
    ``|c_i| <= B = max(floor, factor * m)`` are in range; the limits span 0 and every in-range
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
    when both hold ``per_datum``; :func:`~pyrovae.analysis.likelihood.evidence.ais_difference`). The
    prior is the zero line (without a ``"prior"`` source, the first source is). A row
    is green or red only where ``|d| > 1.96 SE``; hollow markers are unreliable estimates
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


def plot_ksweep(sources: Mapping[str, Mapping[str, Any]]) -> Figure:
    """L_K against K (log scale) per source, from the ``"ksweep"`` entries of an evaluation.

    An AIS estimate, where present, is drawn as a diamond to the right of the last K; a
    source still rising in K is marked in its legend entry.
    """
    rows = {
        name: entry["ksweep"]
        for name, entry in sources.items()
        if isinstance(entry, Mapping) and isinstance(entry.get("ksweep"), Mapping)
    }
    if not rows:
        raise ValueError(
            "no source has a 'ksweep' entry; evaluate the run again with this version "
            "(pyrovae evaluate) to record L_K for K = 1, 10, 100, 1000"
        )
    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    ax = fig.subplots()
    top = 1
    for i, (name, sweep) in enumerate(rows.items()):
        ks = sorted(int(k) for k in sweep)
        values = [float(sweep[str(k)]) for k in ks]
        top = max(top, ks[-1])
        label = name + ("  (still rising)" if sources[name].get("converged") is False else "")
        (line,) = ax.plot(ks, values, marker="o", ms=4, lw=1.5, label=label, color=f"C{i % 10}")
        ais = _ais(sources[name])
        if ais is not None:
            ax.errorbar(
                [ks[-1] * 2.5], [ais[0]], yerr=[ais[1]], fmt="D", color=line.get_color(), ms=5
            )
    ax.set_xscale("log")
    ax.set_xlabel("K, importance samples per datum (diamonds: AIS)")
    ax.set_ylabel("L_K [nats per datum]")
    ax.set_xlim(0.7, top * 4)
    values = [float(v) for sweep in rows.values() for v in sweep.values()]
    finite = np.array([v for v in values if math.isfinite(v)])
    if finite.size:
        hi = float(finite.max())
        lo = max(float(finite.min()), hi - 25.0)  # keep a very poor L_1 from flattening it
        ax.set_ylim(lo - 0.5, hi + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Convergence of the importance-sampling estimate in K")
    return fig
