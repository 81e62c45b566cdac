"""Image grids: reconstructions, samples from each latent source, class-conditional samples."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from pyrovae.analysis.figures._common import (
    _check_model,
    _check_x,
    _check_y,
    _decode,
    _digit_y,
    _draw_from,
    _image_side,
    _model_device,
    _new_figure,
    _show,
    _sources_dict,
    _tile,
)


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
