"""Atomic, code-free checkpoints: written to a temp file and renamed, read with weights_only."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "UnreadableFileError",
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_checkpoint",
    "load_checkpoint",
    "write_json",
    "read_json",
]


class UnreadableFileError(ValueError):
    """A file that exists but does not hold what it should (bad JSON, a missing section).

    The message names the file and what is wrong, on one line. It is a ValueError, so the
    command line reports it as ``pyrovae CMD: error: <message>``.
    """


class CheckpointError(UnreadableFileError):
    """A checkpoint that was not loaded: it holds objects beyond plain data (refused unread,
    so no code ran), or it is truncated or corrupt."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: Path, write: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file."""
    _atomic(Path(path), lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON value in ``path``; :class:`UnreadableFileError` (naming the file and the
    position of the error) when it is not UTF-8 JSON."""
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise UnreadableFileError(
                f"{path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}; "
                "fix or restore the file"
            ) from None
        except UnicodeDecodeError as err:
            raise UnreadableFileError(
                f"{path} is not UTF-8 text (byte {err.start}); it is not a JSON file pyrovae wrote"
            ) from None


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` atomically (plain tensors, numbers, strings, lists, dicts)."""
    _atomic(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(
    path: str | os.PathLike[str], map_location: torch.device | str = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a checkpoint can never run code.

    Raises :class:`CheckpointError` (a ValueError, one line) for a file that holds other
    objects than tensors, numbers, strings and containers of them (refused before anything
    in it is built) and for a truncated or corrupt file. Its message never suggests
    loading the file unsafely, and torch's own error (which does) is not chained.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {str(path)!r}; train a run first with `pyrovae train --out DIR`"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = str(err).startswith("Weights only load failed")
        if refused and ("GLOBAL" in str(err) or _is_zip(path)):
            raise CheckpointError(_refused(path, str(err))) from None
        cause = _damage(path, err)  # e.g. bytes that are no pickle at all
    except RuntimeError as err:
        if not re.search(r"PytorchStreamReader|zip archive|corrupt", str(err)):
            raise
        cause = _damage(path, err)
    except (EOFError, KeyError, IndexError, ValueError, struct.error) as err:
        cause = _damage(path, err)
    raise CheckpointError(
        f"{path} is not a complete checkpoint (truncated or corrupt: {cause}); pyrovae writes "
        "checkpoints whole, so it was damaged afterwards (a copy cut short?): copy it again, "
        "or write it anew"
    )


def _refused(path: Path, message: str) -> str:
    """The message for a file that the weights-only unpickler refused."""
    found = re.search(r"GLOBAL (\S+) was not an allowed global", message)
    if found:
        what = f"objects other than tensors, numbers and strings ({found.group(1)})"
    else:
        reason = re.search(r"WeightsUnpickler error:\s*([^\n.]+)", message)
        what = "data that a safe load does not read" + (
            f" ({reason.group(1).strip()})" if reason else ""
        )
    return (
        f"{path} holds {what}, so it was not loaded (a pyrovae checkpoint never does; "
        "it may not come from pyrovae)"
    )


def _is_zip(path: Path) -> bool:
    """Whether the file starts like the zip archive that ``torch.save`` writes."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _damage(path: Path, err: BaseException) -> str:
    """A short cause for a damaged checkpoint (torch's message is long, and advises)."""
    if path.stat().st_size == 0:
        return "the file is empty"
    if isinstance(err, RuntimeError):  # "PytorchStreamReader failed reading zip archive: ..."
        first = str(err).split(". ")[0].strip().rstrip(".")
        return first.removeprefix("PytorchStreamReader ")
    if not _is_zip(path):
        return "not a torch.save archive"
    if isinstance(err, EOFError):
        return "its data end early"
    text = str(err).splitlines()[0][:80] if str(err) else ""
    return f"{type(err).__name__}" + (f": {text}" if text else "")
