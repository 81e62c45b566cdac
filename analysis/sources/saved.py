"""Saved latent sources, read and written: ``RUN/sources/NAME.pt``, tensors only.

A source file holds the source's class, its constructor settings, its tensors (the
``state_dict``), the options it was fitted with and a fingerprint of the model weights
whose encoder it was fitted to; it is read with ``torch.load(weights_only=True)``, so it
can never run code. Loading rebuilds the source and loads the same tensors, so a reloaded
source samples and scores bit-identically. A file whose fingerprint differs from the
model's (the run was trained further, or another checkpoint is loaded) is refused as
stale rather than silently used.

This module needs only the source classes, so the model can load a saved source by name
(``vae.generate(64, source="gmm")`` on a model from :func:`pyrovae.load_run`);
fitting sources for a run is in :mod:`~pyrovae.analysis.sources.store`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from pyrovae.analysis.sources.classes import (
    AggregatePosterior,
    FlowSource,
    GaussianSource,
    LatentSource,
    MixtureSource,
    PriorSource,
)
from pyrovae.analysis.sources.mixture_pruning import DEFAULT_TOLERANCE
from pyrovae.checkpoint import load_checkpoint, save_checkpoint
from pyrovae.settings import SOURCE_NAMES

__all__ = [
    "FORMAT",
    "PER_CLASS_SUFFIX",
    "StaleSourceError",
    "model_fingerprint",
    "source_path",
    "source_state",
    "source_from_state",
    "save_source",
    "load_source",
    "save_sources",
    "saved_source_names",
]

FORMAT = 1
"""Version of the source file layout."""
PER_CLASS_SUFFIX = ".per-class"


class StaleSourceError(ValueError):
    """A saved source was fitted to other model weights than the ones loaded."""


def model_fingerprint(vae: nn.Module) -> str:
    """SHA-256 of the model's weights (every tensor of its ``state_dict``, in key order)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(vae.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        # a fresh dense copy: ``contiguous()`` keeps the stride 0 of a size-1 dim, which
        # ``view(torch.uint8)`` refuses (an isotropic decoder scale)
        dense = tensor.detach().cpu().clone(memory_format=torch.contiguous_format)
        digest.update(dense.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def source_path(run_dir: str | Path, name: str, per_class: bool = False) -> Path:
    """``RUN/sources/NAME.pt`` (``NAME.per-class.pt`` for per-class fits)."""
    if name not in SOURCE_NAMES:
        raise ValueError(f"unknown latent source {name!r}; valid names are {sorted(SOURCE_NAMES)}")
    return Path(run_dir) / "sources" / f"{name}{PER_CLASS_SUFFIX if per_class else ''}.pt"


# --------------------------------------------------------------------------- one source


def _pack_x(x: torch.Tensor) -> dict[str, Any]:
    """Binary data are stored as uint8 (exact, a quarter of the bytes)."""
    if bool(((x == 0) | (x == 1)).all()):
        return {"x_uint8": x.to(torch.uint8).cpu()}
    return {"x": x.cpu()}


def source_state(source: LatentSource) -> dict[str, Any]:
    """The source as plain data: ``{"kind", "name", "z_dim", "init", "tensors"}``."""
    kind = type(source).__name__
    init: dict[str, Any] = {}
    tensors = {k: v.detach().cpu() for k, v in source.state_dict().items()}
    if isinstance(source, PriorSource):
        init = {"label": source.label}
    elif isinstance(source, AggregatePosterior):
        init = {
            "diagonal": source.diagonal,
            "chunk_size": source.chunk_size,
            "tolerance": source.tolerance,
        }
        if not source.diagonal:
            tensors = _pack_x(source.x)
            if source.y is not None:
                tensors["y"] = source.y.cpu()
            init["batch_size"] = source.batch_size
    elif isinstance(source, FlowSource):
        init = {"num_flows": source.num_flows, "hidden_dims": list(source.hidden_dims)}
    elif not isinstance(source, GaussianSource | MixtureSource):
        raise ValueError(
            f"cannot save a {kind}: saving knows PriorSource, AggregatePosterior, "
            "GaussianSource, MixtureSource and FlowSource"
        )
    return {
        "kind": kind,
        "name": source.name,
        "z_dim": source.z_dim,
        "init": init,
        "tensors": tensors,
    }


def _aggregate_from_state(state: Mapping[str, Any], vae: nn.Module) -> AggregatePosterior:
    init, tensors = state["init"], state["tensors"]
    if init["diagonal"]:
        fake = SimpleNamespace(
            diagonal=True,
            loc=tensors["loc"],
            scale=tensors["scale"],
            z_dim=state["z_dim"],
            num_data=tensors["loc"].shape[0],
        )
    else:
        x = tensors["x_uint8"].float() if "x_uint8" in tensors else tensors["x"]
        fake = SimpleNamespace(
            diagonal=False,
            x=x,
            y=tensors.get("y"),
            vae=vae,
            batch_size=init["batch_size"],
            z_dim=state["z_dim"],
            num_data=x.shape[0],
        )
    source = AggregatePosterior(
        fake,
        chunk_size=init["chunk_size"],
        name=state["name"],
        tolerance=init.get("tolerance", DEFAULT_TOLERANCE),
    )
    if init["diagonal"]:  # files of older versions also hold the dense sum's derived terms
        source.load_state_dict({k: tensors[k] for k in ("loc", "scale")})
    return source


def source_from_state(state: Mapping[str, Any], vae: nn.Module | None = None) -> LatentSource:
    """Rebuild a source from :func:`source_state` (``vae`` for 'prior' and a flow-guide
    aggregate, which use the model's own prior and encoder). Returned on the CPU."""
    kind, tensors, init = state["kind"], state["tensors"], state["init"]
    if (
        kind in ("PriorSource", "AggregatePosterior")
        and vae is None
        and (kind == "PriorSource" or not init["diagonal"])
    ):
        raise ValueError(f"rebuilding a {kind} needs the model: pass vae")
    name = state["name"]
    if kind == "PriorSource":
        return PriorSource(vae, label=init["label"], name=name)
    if kind == "AggregatePosterior":
        return _aggregate_from_state(state, vae)
    if kind == "GaussianSource":
        return GaussianSource(
            tensors["loc"],
            scale=tensors.get("scale"),
            scale_tril=tensors.get("scale_tril"),
            name=name,
        )
    if kind == "MixtureSource":
        return MixtureSource(tensors["logits"], tensors["locs"], tensors["scale_trils"], name=name)
    if kind == "FlowSource":
        source = FlowSource(
            tensors["loc"], tensors["scale"], init["num_flows"], init["hidden_dims"], name=name
        )
        source.load_state_dict(tensors)
        return source.eval().requires_grad_(False)
    raise ValueError(f"unknown source kind {kind!r} in a saved source")


def _file_state(
    sources: LatentSource | Mapping[int, LatentSource],
    vae: nn.Module,
    fitted_with: Mapping[str, Any],
) -> dict[str, Any]:
    if isinstance(sources, LatentSource):
        body: dict[str, Any] = {"source": source_state(sources)}
    else:
        body = {"per_class": {int(c): source_state(s) for c, s in sources.items()}}
    return {
        "format": FORMAT,
        "model_fingerprint": model_fingerprint(vae),
        "fitted_with": dict(fitted_with),
        **body,
    }


def save_source(
    path: str | Path,
    source: LatentSource | Mapping[int, LatentSource],
    vae: nn.Module,
    fitted_with: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``source`` (or per-class sources ``{class: source}``) atomically to ``path``.

    ``fitted_with`` records how it was fitted (e.g. ``{"num_train": 50000, "seed": 0,
    "options": {...}}``); plain numbers, strings, lists and dicts only.
    """
    path = Path(path)
    save_checkpoint(path, _file_state(source, vae, fitted_with or {}))
    return path


def _read(path: Path, vae: nn.Module | None) -> dict[str, Any]:
    state = load_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(
            f"{str(path)!r} is not a pyrovae source file of format {FORMAT}; delete it and "
            "refit (pyrovae fit-sources RUN)"
        )
    if vae is not None and state["model_fingerprint"] != model_fingerprint(vae):
        raise StaleSourceError(
            f"{str(path)!r} was fitted to other model weights than those loaded (another "
            "checkpoint, or the run was trained further); refit it with "
            "`pyrovae fit-sources RUN`"
        )
    return state


def load_source(
    path: str | Path, vae: nn.Module | None = None
) -> LatentSource | dict[int, LatentSource]:
    """Read a file of :func:`save_source`, on the model's device when ``vae`` is given.

    With ``vae`` the file's fingerprint must match the model's weights
    (:class:`StaleSourceError` otherwise). The result carries ``fitted_with``.
    """
    path = Path(path)
    state = _read(path, vae)
    device = next(vae.parameters()).device if vae is not None else torch.device("cpu")
    if "per_class" in state:
        out: dict[int, LatentSource] = {}
        for c, entry in state["per_class"].items():
            out[int(c)] = source_from_state(entry, vae).to(device)
            out[int(c)].fitted_with = state["fitted_with"]
        return out
    source = source_from_state(state["source"], vae).to(device)
    source.fitted_with = state["fitted_with"]
    return source


def saved_source_names(run_dir: str | Path) -> list[str]:
    """Names of the (pooled) sources saved in ``RUN/sources/``."""
    folder = Path(run_dir) / "sources"
    if not folder.is_dir():
        return []
    names = [p.name[:-3] for p in folder.glob("*.pt") if PER_CLASS_SUFFIX not in p.name]
    return sorted(n for n in names if n in SOURCE_NAMES)


def save_sources(
    run_dir: str | Path,
    sources: Mapping[str, LatentSource],
    vae: nn.Module,
    fitted_with: Mapping[str, Any] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Path]:
    """Save each source of ``{name: source}`` to ``RUN/sources/NAME.pt``.

    ``fitted_with`` is recorded in every file, with ``options[name]`` under ``"options"``.
    """
    paths = []
    for name, source in sources.items():
        record = {**(fitted_with or {}), "options": dict((options or {}).get(name, {}))}
        paths.append(save_source(source_path(run_dir, name), source, vae, record))
    return paths
