"""Where data files are looked for and kept, and the error of files that are not there.

Shared by :mod:`pyrovae.data` and :mod:`pyrovae.torchvision_data` (re-exported by the first).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "cache_dir", "cause", "default_data_root", "writable_or_creatable"]


class DataNotFoundError(FileNotFoundError):
    """The dataset files are neither on disk nor downloadable."""


def cache_dir() -> Path:
    """``$PYROVAE_CACHE`` or ``~/.cache/pyrovae``: where copies and classifiers are kept."""
    return Path(os.environ.get("PYROVAE_CACHE", Path.home() / ".cache" / "pyrovae"))


def default_data_root() -> Path:
    """``$PYROVAE_DATA`` if set, else ``<cache>/data``."""
    env = os.environ.get("PYROVAE_DATA")
    return Path(env) if env else cache_dir() / "data"


def cause(err: BaseException) -> str:
    """``Type: message`` of an exception on one line (the type alone if it says nothing)."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def writable_or_creatable(path: Path) -> bool:
    """Whether ``path`` could be written: its first existing ancestor is writable."""
    while not path.exists():
        path = path.parent
    return os.access(path, os.W_OK)
