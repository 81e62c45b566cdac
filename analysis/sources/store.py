"""Latent sources fitted for a run and kept with it in ``RUN/sources/NAME.pt``.

Fitting reads the run's training data as the model sees them, seeded; reading and writing
the files (tensors only, refused when stale) is :mod:`~pyrovae.analysis.sources.saved`,
whose names are importable from here too.

Per-class fits (one source per digit, :func:`~pyrovae.analysis.sources.fit_per_class`)
live in ``RUN/sources/NAME.per-class.pt``.

Example:
    >>> vae = pyrovae.load_run("runs/vae")
    >>> sources = load_sources("runs/vae", vae)      # what `pyrovae evaluate` saved
    >>> images = vae.generate(64, source=sources["gmm"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.encodings import model_inputs
from pyrovae.analysis.sources.fits import SOURCES, fit_per_class, fit_sources
from pyrovae.analysis.sources.saved import (
    FORMAT,
    StaleSourceError,
    load_source,
    model_fingerprint,
    save_source,
    save_sources,
    saved_source_names,
    source_from_state,
    source_path,
    source_state,
)
from pyrovae.build import lookup

__all__ = [
    "FORMAT",
    "StaleSourceError",
    "model_fingerprint",
    "source_path",
    "source_state",
    "source_from_state",
    "save_source",
    "load_source",
    "save_sources",
    "load_sources",
    "saved_source_names",
    "fit_record",
    "fit_run_sources",
    "fit_run_per_class",
    "saved_or_fit",
    "sample_latents",
]


def load_sources(
    run_dir: str | Path,
    vae: nn.Module | None = None,
    names: Iterable[str] | None = None,
    checkpoint: str = "best",
) -> dict[str, LatentSource]:
    """The sources saved with a run, ``{name: source}``, ready to sample from.

    Args:
        run_dir: the run directory (``pyrovae evaluate`` and ``pyrovae fit-sources`` save
            into ``RUN/sources/``).
        vae: the model the sources belong to (default: ``load_run(run_dir, checkpoint)``);
            every file must have been fitted to its weights.
        names: load only these (default: every saved source); a missing one is an error.
        checkpoint: which weights to load when ``vae`` is not given.
    """
    if vae is None:
        from pyrovae.runs import load_run

        vae = load_run(run_dir, checkpoint=checkpoint)
    saved = saved_source_names(run_dir)
    wanted = list(names) if names is not None else saved
    missing = [n for n in wanted if n not in saved]
    if missing:
        raise FileNotFoundError(
            f"no saved source {missing} in {str(Path(run_dir) / 'sources')!r} (saved: "
            f"{saved or 'none'}); fit them with `pyrovae fit-sources {run_dir} --sources "
            f"{' '.join(missing)}`"
        )
    return {name: load_source(source_path(run_dir, name), vae) for name in wanted}


# --------------------------------------------------------------------------- fitting for a run


def fit_record(vae: nn.Module, num_train: int, seed: int, per_class: bool) -> dict[str, Any]:
    """What a saved source records of its fit (its options are added per source)."""
    return {
        "num_train": int(num_train),
        "seed": int(seed),
        "per_class": per_class,
        "checkpoint": getattr(vae, "checkpoint_name", None),
    }


def fit_run_sources(
    vae: nn.Module,
    train: Any,
    names: Iterable[str],
    *,
    num_train: int | None = None,
    seed: int = 0,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    run_dir: str | Path | None = None,
) -> dict[str, LatentSource]:
    """Fit sources exactly as :func:`~pyrovae.analysis.evaluation.compare.compare_sources` does (the
    first ``num_train`` training data, binarized once, seeded by ``seed``) and, with
    ``run_dir``, save them there."""
    names = list(names)
    for name in names:  # before the data are binarized and encoded
        lookup(SOURCES, name, "latent source")
    x, y = model_inputs(vae, train, num_train, random_subset=False)
    opts = {name: {"seed": seed, **(options or {}).get(name, {})} for name in names}
    sources = fit_sources(names, vae, x, y, options=opts)
    if run_dir is not None:
        save_sources(run_dir, sources, vae, fit_record(vae, x.shape[0], seed, False), opts)
    return sources


def fit_run_per_class(
    vae: nn.Module,
    train: Any,
    name: str,
    *,
    num_train: int | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    run_dir: str | Path | None = None,
) -> dict[int, LatentSource]:
    """Fit ``name`` separately to each class's encodings (``{class: source}``) and, with
    ``run_dir``, save them to ``RUN/sources/NAME.per-class.pt``."""
    lookup(SOURCES, name, "latent source")
    x, _ = model_inputs(vae, train, num_train, random_subset=False)
    labels = (train.y if num_train is None else train.y[:num_train]).to(x.device)
    opts = {"seed": seed, **(options or {})}
    sources = fit_per_class(name, vae, x, labels, **opts)
    if run_dir is not None:
        record = {**fit_record(vae, x.shape[0], seed, True), "options": opts}
        save_source(source_path(run_dir, name, per_class=True), sources, vae, record)
    return sources


def saved_or_fit(
    run_dir: str | Path,
    vae: nn.Module,
    name: str,
    load_data: Callable[[], Any],
    *,
    per_class: bool = False,
    num_train: int | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> LatentSource | dict[int, LatentSource]:
    """The source ``name`` of a run: the saved one when it belongs to these weights (and,
    with ``num_train``, was fitted to that many images), else fitted now and saved.

    ``load_data()`` returns the run's :class:`~pyrovae.data.Splits`; it is called only when
    a fit is needed.
    """
    path = source_path(run_dir, name, per_class)
    reason = "not saved with the run yet"
    if path.is_file():
        try:
            source = load_source(path, vae)
        except StaleSourceError:
            reason = "the saved one belongs to other weights"
        else:
            record = next(iter(source.values())) if isinstance(source, dict) else source
            fitted = record.fitted_with.get("num_train")
            if num_train is None or fitted == num_train:
                log(f"using {path} (fitted to {fitted} training images)")
                return source
            reason = f"the saved one was fitted to {fitted} images"
    data = load_data()
    count = min(num_train or len(data.train), len(data.train))
    what = f"{name}{' per class' if per_class else ''}"
    log(f"fitting {what} to the encodings of {count} training images ({reason}); saving {path}")
    if per_class:
        return fit_run_per_class(
            vae, data.train, name, num_train=num_train, seed=seed, run_dir=run_dir
        )
    return fit_run_sources(
        vae, data.train, [name], num_train=num_train, seed=seed, run_dir=run_dir
    )[name]


def sample_latents(
    source: LatentSource | Mapping[int, LatentSource],
    num_samples: int,
    labels: torch.Tensor | None = None,
    vae: nn.Module | None = None,
) -> torch.Tensor:
    """``num_samples`` draws of z, shape (n, z_dim), on the model's device.

    ``source`` is one source, or per-class sources ``{class: source}`` (then draw i comes
    from the source of ``labels[i]``). A conditional prior is sampled given the one-hot
    ``labels``.
    """
    device = next(vae.parameters()).device if vae is not None else None
    if labels is not None and tuple(labels.shape) != (num_samples,):
        raise ValueError(f"labels must have shape ({num_samples},), got {tuple(labels.shape)}")
    if isinstance(source, Mapping):
        if labels is None:
            raise ValueError("per-class sources need labels: one class per draw")
        missing = sorted(set(labels.tolist()) - set(source))
        if missing:
            raise ValueError(f"no per-class source for classes {missing}; fitted: {sorted(source)}")
        z = None
        for c in sorted(set(labels.tolist())):
            rows = (labels == c).nonzero().squeeze(-1)
            draws = source[c].sample(rows.numel())
            if z is None:
                z = torch.empty(num_samples, draws.shape[-1], device=draws.device)
            z[rows.to(draws.device)] = draws
        return z.to(device) if device is not None else z
    if getattr(source, "conditional", False):
        if labels is None or vae is None:
            raise ValueError("a conditional prior needs labels and the model")
        y = torch.nn.functional.one_hot(labels.to(device), vae.y_dim).float()
        return source.sample(num_samples, y=y)
    z = source.sample(num_samples)
    return z.to(device) if device is not None else z
