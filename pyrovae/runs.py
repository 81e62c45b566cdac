"""Read a run directory back: its configuration, its metrics and the trained model."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovae.build import ModelConfig, build_model
from pyrovae.checkpoint import CheckpointError, UnreadableFileError, load_checkpoint, read_json
from pyrovae.models import VAE
from pyrovae.train import TrainConfig

__all__ = ["RunConfig", "read_config", "read_metrics", "load_run"]


@dataclass
class RunConfig:
    """The two halves of ``config.json``."""

    model: ModelConfig
    train: TrainConfig


def _run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a run directory (no config.json); "
            "create one with `pyrovae train --out DIR`"
        )
    return path


def read_config(run_dir: str | Path) -> RunConfig:
    """The run's ``config.json``: its ``"model"`` and ``"train"`` sections.

    Raises :class:`pyrovae.checkpoint.UnreadableFileError` (a ValueError, one line, naming
    the file) when the file is not JSON, lacks a section, or holds settings that are not
    valid.
    """
    path = _run_dir(run_dir) / "config.json"
    data = read_json(path)
    if not isinstance(data, dict):
        raise UnreadableFileError(
            f'{path} holds a JSON {type(data).__name__}, not the object with "model" and '
            '"train" sections that `pyrovae train` writes'
        )
    missing = [key for key in ("model", "train") if not isinstance(data.get(key), dict)]
    if missing:
        sections = " and ".join(f'"{key}"' for key in missing)
        raise UnreadableFileError(
            f"{path} lacks the {sections} section{'s' if len(missing) > 1 else ''} "
            "(a JSON object) that `pyrovae train` writes"
        )
    try:
        return RunConfig(ModelConfig.from_dict(data["model"]), TrainConfig.from_dict(data["train"]))
    except (TypeError, ValueError) as err:
        raise UnreadableFileError(f"{path}: {err}") from None


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of ``metrics.csv`` as dicts of floats (``epoch`` as int); a column that an
    older pyrovae did not write (empty in the rows of a resumed run) is left out."""
    path = _run_dir(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [
        {k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
        for row in rows
    ]


def _checkpoint_z_dim(
    saved: dict[str, torch.Tensor], built: dict[str, torch.Tensor], z_dim: int
) -> int | None:
    """The z_dim the checkpoint was trained with, read off a size that is ``z_dim`` in the
    model built from the config and differs in the checkpoint (None when none is)."""
    for key in sorted(set(saved) & set(built)):
        a, b = tuple(saved[key].shape), tuple(built[key].shape)
        if len(a) == len(b):
            for size_saved, size_built in zip(a, b, strict=True):
                if size_built == z_dim and size_saved != z_dim:
                    return size_saved
    return None


def _check_weights_fit(
    file: Path, saved: dict[str, Any], built: dict[str, torch.Tensor], config: ModelConfig
) -> None:
    """Raise :class:`CheckpointError` (one line: the file, the parameter, both shapes and
    the fix) when the checkpoint's weights do not fit the model ``config.json`` describes,
    instead of torch's dozen lines of size mismatches."""
    config_file = file.parent / "config.json"
    fix = f"restore the config.json the run was trained with, or train {file.parent} anew"
    missing = sorted(set(built) - set(saved))
    unexpected = sorted(set(saved) - set(built))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            more = " ..." if len(unexpected) > 3 else ""
            parts.append(f"has {', '.join(unexpected[:3])}{more}, which it does not build")
        raise CheckpointError(
            f"{file} does not fit the model {config_file} describes (prior {config.prior!r}, "
            f"guide {config.guide!r}): the checkpoint {' and '.join(parts)}; {fix}"
        )
    wrong = [
        key
        for key in sorted(built)
        if isinstance(saved[key], torch.Tensor) and saved[key].shape != built[key].shape
    ]
    if not wrong:
        return
    key = wrong[0]
    shapes = (
        f"{key} is {tuple(saved[key].shape)} in the checkpoint but "
        f"{tuple(built[key].shape)} in the model built from config.json"
    )
    others = f" (and {len(wrong) - 1} more parameters)" if len(wrong) > 1 else ""
    trained = _checkpoint_z_dim(saved, built, config.z_dim)
    cause = (
        f"; config.json says z_dim {config.z_dim} but the checkpoint was trained with "
        f"z_dim {trained}"
        if trained is not None
        else ""
    )
    raise CheckpointError(f"{file} does not fit {config_file}: {shapes}{others}{cause}; {fix}")


def load_run(
    run_dir: str | Path, device: torch.device | str = "cpu", checkpoint: str = "best"
) -> VAE:
    """Rebuild the model of a run and load its weights, in eval mode.

    Args:
        run_dir: a directory written by ``pyrovae train``.
        device: where to put the model.
        checkpoint: ``"best"`` (best validation ELBO; the default) or ``"last"``.

    The returned model carries ``model.config`` (its :class:`ModelConfig`),
    ``model.run_config`` (:class:`RunConfig`), ``model.run_dir`` and
    ``model.checkpoint_name`` (the file loaded: ``best.pt``, or ``checkpoint.pt`` for
    ``"last"`` and for a run without a best).
    """
    names = {"best": "best.pt", "last": "checkpoint.pt"}
    if checkpoint not in names:
        raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    path = _run_dir(run_dir)
    config = read_config(path)
    file = path / names[checkpoint]
    if checkpoint == "best" and not file.exists():
        file = path / names["last"]
    state = load_checkpoint(file, map_location=device)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(
            f'{file} holds no model weights (no "model" entry); it is not a checkpoint that '
            "`pyrovae train` wrote"
        )
    vae = build_model(config.model)
    _check_weights_fit(file, state["model"], vae.state_dict(), config.model)
    vae.load_state_dict(state["model"])
    vae.run_config = config
    vae.run_dir = path
    vae.checkpoint_name = file.name
    return vae.to(device).eval()
