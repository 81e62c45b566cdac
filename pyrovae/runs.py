"""Read a run directory back: its configuration, its metrics and the trained model."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

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
    vae.load_state_dict(state["model"])
    vae.run_config = config
    vae.run_dir = path
    vae.checkpoint_name = file.name
    return vae.to(device).eval()
