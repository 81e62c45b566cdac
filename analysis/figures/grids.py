"""Image grids: reconstructions, samples from each latent source, class-conditional samples.

Images of any shape (C, H, W) (:func:`pyrovae.images.image_shape_of`): grey for one channel,
colour for three, the channels side by side otherwise; values are drawn as the data's kind
says (:func:`pyrovae.images.to_display`: [0, 1] as is, 8-bit / 255, real values min-max
scaled per figure, which the title then says). A model of vectors gets the figures of
:mod:`._vectors` instead (marginals, pair plots, x against its reconstruction).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from pyrovae.analysis.figures import _vectors as V
from pyrovae.analysis.figures._common import (
    _check_model,
    _check_x,
    _check_y,
    _class_colours,
    _class_name,
    _decode,
    _digit_y,
    _display,
    _draw_from,
    _image_shape,
    _legend_style,
    _model_device,
    _new_figure,
    _show,
    _sources_dict,
    _tile,
    _tile_size,
    _with_note,
)


def _check_n(n: Any, default: int) -> int:
    if n is None:
        return default
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return n


def plot_reconstructions(
    vae: Any,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    n: int | None = None,
    kind: str | None = None,
    features: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """The first ``n`` rows of ``x`` above their reconstructions (decoder mean at the
    encoder mean, ``vae.reconstruct``). For a CVAE, ``y`` holds one-hot labels of ``x``.

    Images: ``n`` (default 10, or all rows of a smaller ``x``) inputs above their
    reconstructions. Vectors: for each of
    ``features`` (default the first 8) a scatter of x_d against its reconstruction over the
    first ``n`` rows (default up to 500), with R^2 in the title; ``feature_names`` (one per
    value, e.g. a CSV's columns) label them. ``kind`` (one of
    :data:`pyrovae.images.VALUE_KINDS`) overrides how image values are drawn.
    """
    _check_model(vae)
    x = _check_x(vae, x)
    shape = _image_shape(vae)
    n = _check_n(n, min(x.shape[0], 10 if shape is not None else V.VECTOR_ROWS))
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
    inputs = xs.detach().double().cpu().numpy()
    if shape is None:
        chosen = V.check_features(features, vae.x_dim, V.MAX_RECONSTRUCTION_FEATURES, feature_names)
        fig = V.reconstruction_figure(_new_figure, inputs, recon, chosen)
        fig.suptitle(
            f"x against its reconstruction (decoder mean at the encoder mean), {n} rows",
            fontsize=10,
        )
        return fig
    shown, note = _display(vae, np.concatenate([inputs, recon]), kind)
    h, w = _tile_size(shape)
    fig = _new_figure(max(4.0, 0.75 * n * (w / h)), 2.2 + (0.2 if note else 0.0))
    axes = fig.subplots(2, 1)
    _show(axes[0], _tile(shown[:n], shape, n))
    axes[0].set_title(_with_note("inputs", note), fontsize=10)
    _show(axes[1], _tile(shown[n:], shape, n))
    axes[1].set_title("reconstructions (decoder mean at the encoder mean)", fontsize=10)
    return fig


_SCORE_FORMATS = (
    ("loglik", "log-lik {:.1f}"),
    ("entropy", "entropy {:.2f}"),
    ("ambiguous", "ambiguous {:.0%}"),
    ("frechet", "Frechet {:.1f}"),
)


def _score_lines(name: str, scores: Mapping[str, Mapping[str, float]] | None) -> list[str]:
    if scores is None or name not in scores:
        return []
    parts = [fmt.format(scores[name][key]) for key, fmt in _SCORE_FORMATS if key in scores[name]]
    return [", ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]


def plot_samples(
    vae: Any,
    sources: Mapping[str, Any] | Sequence[Any],
    n: int | None = None,
    y: torch.Tensor | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
    x: torch.Tensor | None = None,
    kind: str | None = None,
    features: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """One grid of ``n`` decoded samples per latent source, side by side.

    Each panel shows ``vae.decoder.mean(source.sample(n), y)``. For a CVAE, ``y`` holds
    one-hot labels of shape (n, y_dim) used for every source. ``scores`` (optional,
    ``{name: {"loglik": ..., "entropy": ..., ...}}``, e.g. the comparison results) adds a
    line of numbers under each title. Images: ``n`` defaults to 64; ``kind`` overrides how
    values are drawn (:func:`pyrovae.images.to_display`), real values sharing one min-max
    scale over all panels.

    Vectors: the marginal histograms of ``features`` (default the first 4), real data ``x``
    (optional, grey) against the ``n`` (default 1000) decodes of each source (lines), and
    pair plots of the first three of them, labelled by ``feature_names`` where given; the
    scores go to the legend.
    """
    _check_model(vae)
    shape = _image_shape(vae)
    n = _check_n(n, 64 if shape is not None else V.VECTOR_SAMPLES)
    items = _sources_dict(sources)
    y = _check_y(vae, y, n)
    if x is not None:
        x = _check_x(vae, x)
    decoded = {
        name: _decode(vae, _draw_from(source, n, vae.z_dim, name), y)
        for name, source in items.items()
    }
    if shape is None:
        chosen = V.check_features(features, vae.x_dim, V.MAX_MARGINALS, feature_names)
        labels = {name: "; ".join([name, *_score_lines(name, scores)]) for name in decoded}
        real = None if x is None else x.detach().double().cpu().numpy()
        fig = V.samples_figure(_new_figure, real, decoded, labels, chosen)
        fig.suptitle(f"decoder means of {n} samples per latent source", fontsize=10)
        return fig
    shown, note = _display(vae, np.concatenate(list(decoded.values())), kind)
    ncols = math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    k = len(items)
    title_lines = 1
    if scores is not None:
        counts = [sum(key in v for key, _ in _SCORE_FORMATS) for v in scores.values()]
        title_lines += math.ceil(max(counts, default=0) / 2)
    h, w = _tile_size(shape)
    fig = _new_figure(max(3.0, 2.8 * k), 2.6 * nrows / ncols * (h / w) + 0.25 + 0.18 * title_lines)
    axes = np.atleast_1d(fig.subplots(1, k))
    for i, (ax, name) in enumerate(zip(axes, items, strict=True)):
        _show(ax, _tile(shown[i * n : (i + 1) * n], shape, ncols))
        ax.set_title("\n".join([name, *_score_lines(name, scores)]), fontsize=9)
    if note is not None:
        fig.suptitle(note, fontsize=8)
    return fig


def plot_class_samples(
    vae: Any,
    sources: Mapping[int, Any] | Sequence[Any] | Any | None = None,
    n: int | None = None,
    classifier: Any = None,
    kind: str | None = None,
    class_names: Sequence[str] | None = None,
    features: Sequence[int] | None = None,
    feature_names: Sequence[str] | None = None,
) -> Figure:
    """Class-conditional samples: row c shows ``n`` decodes for class c.

    - CVAE: z from ``sources`` (one source for all rows, a dict/list of one per class, or
      None for the prior p(z [| y])) decoded with y = c.
    - VAE: ``sources`` must hold one source per class (e.g.
      ``pyrovae.analysis.sources.fit_per_class("gaussian-full", vae, x, labels)``).

    With a ``classifier``, each row label also gives the fraction of the row that the
    classifier reads as c. Images: ``n`` defaults to 10 per class; ``kind`` as in
    :func:`plot_samples`. Vectors: pair plots of the first three ``features`` with ``n``
    (default 200) samples per class, coloured by class. ``class_names`` label the classes.
    """
    _check_model(vae)
    shape = _image_shape(vae)
    n = _check_n(n, 10 if shape is not None else 200)
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
    names = [_class_name(c, class_names) for c in classes]
    if classifier is not None:
        names = [f"{name} ({r:.0%})" for name, r in zip(names, read_as, strict=True)]
    what = "CVAE, y = row" if vae.conditional else "VAE, per-class latent sources"
    if shape is None:
        rows_of = dict(zip(classes, rows, strict=True))
        chosen = V.check_features(features, vae.x_dim, V.MAX_PAIR_FEATURES, feature_names)
        return _class_pairs(vae, rows_of, names, chosen, what, classifier is not None)
    shown, note = _display(vae, np.concatenate(rows), kind)
    h, w = _tile_size(shape)
    fig = _new_figure(0.55 * n * (w / h) + 1.6, 0.55 * len(classes) + 0.9)
    ax = fig.subplots()
    _show(ax, _tile(shown, shape, n))
    ticks = np.arange(len(classes)) * (h + 2) + (h - 1) / 2
    ax.set_yticks(ticks, names, **({} if len(classes) <= 20 else {"fontsize": 6}))
    if classifier is not None:
        ax.set_ylabel("class (share read as that class)")
    else:
        ax.set_ylabel("class")
    ax.tick_params(length=0)
    ax.set_title(_with_note(f"class-conditional samples ({what})", note), fontsize=10)
    return fig


def _class_pairs(
    vae: Any,
    rows: dict[int, np.ndarray],
    names: list[str],
    chosen: list[V.Feature],
    what: str,
    read: bool,
) -> Figure:
    """Vector data: pair plots of the samples of each class, coloured by class."""
    colours = _class_colours(max(rows) + 1)
    pairs = V.pairs_of(chosen)
    samples = {str(c): v for c, v in rows.items()}
    class_colours = [colours[c] for c in rows]
    fig = _new_figure(2.8 * max(len(pairs), 1) + 1.8, 3.2)
    axes = np.atleast_1d(fig.subplots(1, max(len(pairs), 1)))
    if pairs:
        for ax, pair in zip(axes, pairs, strict=True):
            V.draw_pair(ax, pair, None, samples, class_colours, max_points=500)
    else:  # one feature: its histogram per class
        for colour, v in zip(class_colours, samples.values(), strict=True):
            axes[0].hist(v[:, chosen[0][0]], bins=30, histtype="step", color=colour, density=True)
        axes[0].set_xlabel(chosen[0][1])
    handles = V.legend_handles(names, class_colours, real=False)
    fig.legend(
        handles=handles,
        loc="outside right upper",
        frameon=False,
        title="class (share read as it)" if read else "class",
        **_legend_style(len(handles)),
    )
    fig.suptitle(f"class-conditional samples ({what})", fontsize=10)
    return fig
