"""Data given in Python (arrays, tensors or a ``torch.utils.data.Dataset``) as user data.

:func:`pyrovae.read_data` reads anything that is not a path with :func:`rows_from`; the
rows are then checked, split and fingerprinted exactly as those of a file (see
:mod:`pyrovae.user_data`). A
Dataset is read whole, item by item, its items being ``x`` or ``(x, y)`` with ``x`` a
tensor or array of any shape (the same for every item) and ``y`` an integer label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["check_rows", "check_test_rows", "rows_from", "to_numpy"]


def rows_from(data: Any, y: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows and labels (None: unlabelled) of data given in memory (see the module)."""
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.Tensor):
        if y is not None:
            raise ValueError("y was given with a Dataset; let its items be (x, y) pairs instead")
        return _from_dataset(data)
    return _array("data", data), (None if y is None else _array("y", y))


def check_rows(p: Path, key: str, a: np.ndarray) -> None:
    """Refuse, naming ``p`` and ``key``, an array that is not numbers of shape (N, D),
    (N, H, W) or (N, C, H, W) (the rule of every reader: in memory, whole or streamed)."""
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{p}: '{key}' has dtype {a.dtype}; store numbers (float or integer)")
    if a.ndim not in (2, 3, 4):
        raise ValueError(
            f"{p}: '{key}' has shape {a.shape}; give (N, D) vectors, (N, H, W) or (N, C, H, W) "
            "images"
        )


def check_test_rows(p: Path, x: np.ndarray, x_test: np.ndarray | None) -> None:
    """Refuse a given test split whose rows are not shaped as the other rows."""
    if x_test is not None and x_test.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"{p}: x_test rows have shape {x_test.shape[1:]}, x rows {x.shape[1:]}; give both "
            "the same row shape"
        )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A tensor as a NumPy array on the CPU (half precision widened to float32)."""
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy()


def _array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return to_numpy(value)
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    raise ValueError(
        f"{name} is a {type(value).__name__}; give a path, an array or tensor of rows, or a "
        "torch.utils.data.Dataset"
    )


def _from_dataset(ds: torch.utils.data.Dataset) -> tuple[np.ndarray, np.ndarray | None]:
    """Stack the items of ``ds``: rows, and labels when the items are (x, y) pairs."""
    try:
        n = len(ds)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            f"the Dataset {type(ds).__name__} has no len(); give a map-style Dataset"
        ) from None
    if n == 0:
        raise ValueError(f"the Dataset {type(ds).__name__} is empty; give one with rows")
    rows, labels = [], []
    paired = None
    for i in range(n):
        item = ds[i]
        is_pair = isinstance(item, (tuple, list)) and len(item) == 2
        if paired is None:
            paired = is_pair
        elif paired != is_pair:
            raise ValueError(
                f"item {i} of the Dataset is {'an (x, y) pair' if is_pair else 'not a pair'} "
                "unlike item 0; give items of one form"
            )
        x = _array(f"item {i}'s x", item[0] if is_pair else item)
        if rows and x.shape != rows[0].shape:
            raise ValueError(
                f"item {i} of the Dataset has shape {x.shape}, item 0 {rows[0].shape}; give "
                "items of one shape (resize images first)"
            )
        rows.append(x)
        if is_pair:
            label = item[1]
            labels.append(label.item() if isinstance(label, torch.Tensor) else label)
    stacked = np.stack(rows)
    if stacked.ndim == 1 or stacked.ndim > 4:
        raise ValueError(
            f"the Dataset's items have shape {rows[0].shape}; give (D,), (H, W) or (C, H, W)"
        )
    return stacked, (np.asarray(labels) if paired else None)
