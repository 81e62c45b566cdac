"""The user's own data files as :class:`~pyrovae.data.Splits`, with a fingerprint and its kind.

:func:`read_data` reads

- ``.npy``: one array; ``.npz``: arrays ``x`` and optionally ``y``, ``x_test``, ``y_test``;
- ``.pt``: a tensor, or a dict of tensors with the same keys (``torch.load(weights_only=True)``);
- ``.csv``: numbers under a header row, ``label_column`` naming an optional integer label column;
- a folder in torchvision's ImageFolder layout: one subfolder per class holding PNG/JPEG files
  (other files are ignored), grey or colour, class ``k`` being the ``k``-th subfolder name in
  sorted order.

Arrays are (N, D) vectors, (N, H, W) grey images or (N, C, H, W) images. Every split holds
``x`` as float32 of shape (N, D) (images flattened in C, H, W order, their shape kept in
:attr:`UserData.image_shape`) and ``y`` as int64 labels 0..K-1. Unlabelled data get ``y`` all
zeros, ``splits.num_classes == 1`` and ``UserData.num_classes is None``.

Values are kept as read: 8-bit data (integers 0..255, as in PNG files) stay 0..255 and are not
divided by 255, since the likelihood chosen later decides how to treat them. The kind is
inferred from all the values: ``"binary"`` (only 0 and 1), ``"unit"`` (in [0, 1]), ``"8-bit"``
(integers in 0..255, some above 1) or ``"real"`` (anything else), checked in that order.

Split rule: data that come with a test split (``x_test`` in an ``.npz``/``.pt``, or an image
folder holding ``train/`` and ``test/``) keep it, and validation is ``val_fraction`` of the
other rows; otherwise the test split is ``test_fraction`` and validation ``val_fraction`` of all
rows. Sizes are rounded to the nearest integer, at least 1 each, and the rows are drawn by one
random permutation seeded with ``seed`` (the same seed gives the same splits); at least one
training row must remain, else the data are refused.

The fingerprint is the sha256 of the float32 values, the row shape, the labels and the given
test split's size, so the same data give the same fingerprint whatever file format holds them.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.data import Split, Splits
from pyrovae.memory_data import check_rows, check_test_rows, rows_from, to_numpy
from pyrovae.streamed_data import read_streamed

__all__ = ["KINDS", "UserData", "read_data"]

KINDS = ("binary", "unit", "8-bit", "real")
"""The kinds of data :func:`read_data` tells apart, from the most to the least particular."""
ARRAY_SUFFIXES = (".npy", ".npz", ".pt", ".csv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_KEYS = ("x", "y", "x_test", "y_test")
MEMORY = Path("<memory>")
"""The path recorded for data given as arrays, tensors or a Dataset in Python."""


@dataclass
class UserData:
    """Data read by :func:`read_data`: the splits and what was learnt about the data."""

    splits: Splits
    kind: str
    """One of :data:`KINDS`, inferred from all the values."""
    fingerprint: str
    """Hex sha256 of the values, row shape, labels and given test size (not of the split)."""
    split_rule: str
    """How the rows were split, in one sentence with the sizes and the seed."""
    num_classes: int | None
    """The number of classes K, the largest label + 1 (or the number of class subfolders), or
    None for unlabelled data."""
    image_shape: tuple[int, int, int] | None
    """(C, H, W) of images, None for vectors."""
    path: Path
    """The absolute file or folder read."""
    class_names: tuple[str, ...] | None = None
    """Class names of an image folder (its subfolders, sorted), else None."""
    column_names: tuple[str, ...] | None = None
    """The feature columns' names of a CSV file (its header, less the label column), else
    None."""
    streamed: bool = False
    """Whether the splits' x are memory-mapped files (:mod:`pyrovae.streamed_data`)."""

    def describe(self) -> str:
        """One line: rows, row shape, kind, classes, split sizes and the fingerprint's start."""
        s = self.splits
        n = len(s.train) + len(s.val) + len(s.test)
        shape = self.image_shape or (s.train.x.shape[1],)
        classes = "unlabelled" if self.num_classes is None else f"{self.num_classes} classes"
        return (
            f"{self.path.name}: {n} rows of shape {tuple(shape)}, {self.kind}, {classes}; "
            f"train {len(s.train)} / val {len(s.val)} / test {len(s.test)}; "
            f"fingerprint {self.fingerprint[:12]}"
            + ("; streamed from disk" if self.streamed else "")
        )


def read_data(
    path: str | Path | Any,
    *,
    y: Any = None,
    label_column: str | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> UserData:
    """Read an array file, a CSV or an image folder into train/validation/test splits.

    Args:
        path: a ``.npy``, ``.npz``, ``.pt`` or ``.csv`` file, or an ImageFolder directory;
            or, in Python, the data themselves: an array or tensor of rows, or a
            ``torch.utils.data.Dataset`` of ``x`` or ``(x, y)`` items (read whole, see
            :mod:`pyrovae.memory_data`); their recorded path is ``<memory>``.
        y: the labels of data given as an array or tensor (None: unlabelled).
        label_column: the CSV column holding integer labels (CSV only; default: unlabelled).
        image_size: resize every image to ``image_size`` x ``image_size`` (image folders only;
            needed when the images differ in size).
        val_fraction: the share of rows (outside a given test split) for validation, in (0, 1).
        test_fraction: the share of rows for the test split when the data bring none, in (0, 1).
        seed: the seed of the permutation that draws the splits.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: one line naming the file (and row or column), the value and the fix.
    """
    if not isinstance(path, (str, os.PathLike)):
        if label_column is not None or image_size is not None:
            raise ValueError(
                "label_column and image_size apply to files; give labels of in-memory data as y"
            )
        _check_fractions(val_fraction, test_fraction)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        rows, labels = rows_from(path, y)
        x = _numeric(MEMORY, "x", rows)
        return _assemble(MEMORY, x, labels, None, None, None, val_fraction, test_fraction, seed)
    if y is not None:
        raise ValueError(
            f"y applies to data given as arrays, not to the file {path}; store labels in the "
            "file (y, a label column or class subfolders)"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(
            f"data path {str(path)!r} does not exist; pass an .npy, .npz, .pt or .csv file "
            "or an image folder"
        )
    _check_fractions(val_fraction, test_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    suffix = p.suffix.lower()
    if label_column is not None and (p.is_dir() or suffix != ".csv"):
        raise ValueError(
            f"label_column={label_column!r} applies to .csv files only, not {p}; leave it out "
            "(arrays carry labels as y, image folders as subfolders)"
        )
    if image_size is not None and not p.is_dir():
        raise ValueError(
            f"image_size={image_size!r} applies to image folders only, not {p}; leave it out"
        )
    class_names = columns = None
    if p.is_dir():
        x, y, x_test, y_test, class_names = _read_image_folder(p, image_size)
    elif suffix == ".csv":
        x, y, columns = _read_csv(p, label_column)
        x_test = y_test = None
    elif suffix in (".npy", ".npz", ".pt"):
        read = suffix != ".pt" and read_streamed(  # too large for memory: from disk
            p, val_fraction, test_fraction, seed, split=_split, labels=_labels
        )
        if read:
            return UserData(**read, path=p.resolve(), streamed=True)
        x, y, x_test, y_test = _read_arrays(p, suffix)
    else:
        raise ValueError(
            f"{p}: unknown file type {p.suffix!r}; pass an .npy, .npz, .pt or .csv file or an "
            "image folder (one subfolder of PNG/JPEG files per class)"
        )
    user = _assemble(p, x, y, x_test, y_test, class_names, val_fraction, test_fraction, seed)
    user.column_names = columns
    return user


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1 to leave training rows, got "
            f"{val_fraction!r} + {test_fraction!r}; lower them"
        )


# ----------------------------------------------------------------------------- arrays


def _read_arrays(
    p: Path, suffix: str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``x, y, x_test, y_test`` of an ``.npy``, ``.npz`` or ``.pt`` file."""
    if suffix == ".npy":
        return _numeric(p, "x", _load_npy(p)), None, None, None
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as archive:
                found = {key: archive[key] for key in archive.files}
        except Exception as err:  # BadZipFile, ValueError (pickled objects), OSError
            raise ValueError(
                f"{p} is not a readable .npz archive ({_cause(err)}); save it with np.savez"
            ) from None
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError, RuntimeError, EOFError
            raise ValueError(
                f"{p} is not a tensor file torch.load(weights_only=True) can read "
                f"({_cause(err)}); save a tensor or a dict of tensors with torch.save"
            ) from None
        if isinstance(obj, torch.Tensor):
            return _numeric(p, "x", to_numpy(obj)), None, None, None
        if not isinstance(obj, dict):
            raise ValueError(
                f"{p} holds a {type(obj).__name__}; save a tensor or a dict with keys 'x' "
                "and optionally 'y', 'x_test', 'y_test'"
            )
        found = {str(k): to_numpy(v) if isinstance(v, torch.Tensor) else v for k, v in obj.items()}
    if "x" not in found:
        raise ValueError(
            f"{p} has no 'x' among its keys {sorted(found)}; store the data under 'x' "
            "(labels under 'y', a test split under 'x_test' and 'y_test')"
        )
    for key in _KEYS:
        if key in found and not isinstance(found[key], np.ndarray):
            raise ValueError(
                f"{p}: '{key}' is a {type(found[key]).__name__}, not a tensor; store a tensor"
            )
    x, y = _numeric(p, "x", found["x"]), found.get("y")
    x_test, y_test = found.get("x_test"), found.get("y_test")
    if x_test is not None:
        x_test = _numeric(p, "x_test", x_test)
    if y_test is not None and x_test is None:
        raise ValueError(f"{p} has 'y_test' but no 'x_test'; store the test data as 'x_test'")
    if x_test is not None and (y is None) != (y_test is None):
        have, lack = ("y", "y_test") if y is not None else ("y_test", "y")
        raise ValueError(f"{p} has '{have}' but no '{lack}'; give labels for both splits or none")
    return x, y, x_test, y_test


def _load_npy(p: Path) -> np.ndarray:
    try:
        return np.load(p, allow_pickle=False)
    except Exception as err:  # ValueError (pickled objects, bad header), OSError
        raise ValueError(
            f"{p} is not a readable .npy array ({_cause(err)}); save a numeric array with np.save"
        ) from None


def _numeric(p: Path, key: str, a: np.ndarray) -> np.ndarray:
    """``a`` as float32 of shape (N, D), (N, H, W) or (N, C, H, W)."""
    check_rows(p, key, a)
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused later by row
        return a.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------- CSV


def _read_csv(
    p: Path, label_column: str | None
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """The feature columns as (N, D) float32, the label column, if named, and the feature
    columns' names."""
    with open(p, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f), None)
    if not header or all(not cell.strip() for cell in header):
        raise ValueError(f"{p} is empty; give a header row of column names, then rows of numbers")
    names = [cell.strip() for cell in header]
    if all(_is_number(name) for name in names):
        raise ValueError(
            f"{p} line 1 holds numbers {header[:3]}..., not column names; add a header row"
        )
    if label_column is not None and label_column not in names:
        raise ValueError(
            f"{p}: label_column {label_column!r} is not a column; the columns are {names}"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": checked below
            values = np.loadtxt(
                p,
                delimiter=",",
                skiprows=1,
                dtype=np.float64,
                ndmin=2,
                comments=None,
                encoding="utf-8-sig",
            )
        lines = None
        if values.size and values.shape[1] != len(names):
            raise ValueError("column count")
    except ValueError:
        values, lines = _parse_csv_slowly(p, names)  # quoted cells, or an error to name
    if values.size == 0:
        values = values.reshape(0, len(names))
    _check_finite_csv(p, values, names, lines)
    if label_column is None:
        return values.astype(np.float32), None, tuple(names)
    j = names.index(label_column)
    labels = values[:, j]
    bad = (labels != np.round(labels)) | (labels < 0)
    if bad.any():
        i = int(np.argmax(bad))
        line = (lines or _parse_csv_slowly(p, names)[1])[i]
        raise ValueError(
            f"{p} line {line}, label column {label_column!r}: {labels[i].item()!r} is not an "
            "integer 0..K-1; give integer class labels from 0"
        )
    features = tuple(name for k, name in enumerate(names) if k != j)
    return np.delete(values, j, axis=1).astype(np.float32), labels, features


def _parse_csv_slowly(p: Path, names: list[str]) -> tuple[np.ndarray, list[int]]:
    """Cell by cell, for the line and column of the first bad cell; also the line numbers."""
    rows: list[list[float]] = []
    lines: list[int] = []
    with open(p, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise ValueError(
                    f"{p} line {line} has {len(row)} cells, the header has {len(names)}; "
                    f"give every row {len(names)} cells"
                )
            parsed = []
            for name, cell in zip(names, row, strict=True):
                try:
                    parsed.append(float(cell))
                except ValueError:
                    raise ValueError(
                        f"{p} line {line}, column {name!r}: {cell!r} is not a number; "
                        "give numbers only"
                    ) from None
            rows.append(parsed)
            lines.append(line)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names)), lines


def _check_finite_csv(
    p: Path, values: np.ndarray, names: list[str], lines: list[int] | None
) -> None:
    with np.errstate(over="ignore"):
        bad = ~np.isfinite(values.astype(np.float32))
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        if lines is None:  # the fast parse kept no line numbers: rows are the non-blank lines
            lines = _parse_csv_slowly(p, names)[1]
        raise ValueError(
            f"{p} line {lines[i]}, column {names[j]!r}: {values[i, j].item()!r} is not finite "
            "(NaN or beyond float32); drop or fill that value"
        )


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- images


def _read_image_folder(
    root: Path, image_size: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[str, ...]]:
    """``x, y, x_test, y_test, class names`` of an ImageFolder tree (or its train/ and test/)."""
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    subfolders = _subfolders(root)
    if {d.name for d in subfolders} == {"train", "test"}:
        classes = tuple(d.name for d in _subfolders(root / "train"))
        extra = sorted({d.name for d in _subfolders(root / "test")} - set(classes))
        if extra:
            raise ValueError(
                f"{root / 'test'} has classes {extra} that {root / 'train'} lacks; give train/ "
                "a subfolder for every class"
            )
        files = _image_files(root / "train", classes, every_class=True)
        n_train = len(files)
        files += _image_files(root / "test", classes, every_class=False)
    else:
        classes = tuple(d.name for d in subfolders)
        files = _image_files(root, classes, every_class=True)
        n_train = len(files)
    images = _load_images([f for f, _ in files], image_size)
    labels = np.asarray([k for _, k in files], dtype=np.int64)
    if n_train == len(files):
        return images, labels, None, None, classes
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], classes


def _subfolders(folder: Path) -> list[Path]:
    found = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise ValueError(
            f"{folder} has no class subfolders; put the images of each class in a subfolder "
            "(ImageFolder layout), or pass an array or CSV file"
        )
    return found


def _image_files(
    folder: Path, classes: tuple[str, ...], every_class: bool
) -> list[tuple[Path, int]]:
    """(file, class index) of every PNG/JPEG in ``folder/<class>/``, sorted by class and name;
    with ``every_class``, each class must have at least one (as torchvision's ImageFolder)."""
    files = []
    for k, name in enumerate(classes):
        sub = folder / name
        found = sorted(
            f
            for f in (sub.iterdir() if sub.is_dir() else ())
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")
        )
        if every_class and not found:
            raise ValueError(f"{sub} holds no PNG/JPEG files; add images or remove the folder")
        files += [(f, k) for f in found]
    if not files:
        raise ValueError(f"{folder} holds no PNG/JPEG files in its class subfolders; add images")
    return files


def _load_images(files: list[Path], image_size: int | None) -> np.ndarray:
    """(N, C, H, W) uint8-valued float32: C = 1 if all are grey, else 3 (grey repeated)."""
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    for f in files:
        try:
            with Image.open(f) as im:
                grey = im.mode in ("1", "L", "LA", "I", "I;16", "F")
                im = im.convert("L" if grey else "RGB")
                if image_size is not None:
                    im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                a = np.asarray(im)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{f} is not a readable image ({_cause(err)}); replace it") from None
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        if arrays[-1].shape[1:] != arrays[0].shape[1:]:
            (h0, w0), (h, w) = arrays[0].shape[1:], arrays[-1].shape[1:]
            raise ValueError(
                f"{f} is {w}x{h} pixels but {files[0]} is {w0}x{h0}; pass image_size=N to "
                "resize every image to N x N"
            )
    channels = max(a.shape[0] for a in arrays)
    return np.stack([np.repeat(a, channels // a.shape[0], axis=0) for a in arrays]).astype(
        np.float32
    )


# ----------------------------------------------------------------------------- splits


def _assemble(
    p: Path,
    x: np.ndarray,
    y: np.ndarray | None,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    class_names: tuple[str, ...] | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> UserData:
    """Check the values and labels, split the rows and record what is known of the data."""
    check_test_rows(p, x, x_test)
    image_shape: tuple[int, int, int] | None = None
    if x.ndim >= 3:
        image_shape = (1, *x.shape[1:]) if x.ndim == 3 else x.shape[1:]  # type: ignore[assignment]
    given_test = 0 if x_test is None else len(x_test)
    x_all = x if x_test is None else np.concatenate([x, x_test])
    x_all = np.ascontiguousarray(
        x_all.reshape(len(x_all), math.prod(x.shape[1:])), dtype=np.float32
    )
    names = ("x", "x_test") if x_test is not None else ("x", "x")
    _check_finite(p, x_all, len(x), names)
    labelled = y is not None
    if labelled:
        y_all = _labels(p, "y", y, len(x))
        if y_test is not None:
            y_all = np.concatenate([y_all, _labels(p, "y_test", y_test, given_test)])
        num_classes: int | None = int(y_all.max()) + 1 if len(y_all) else 1
        if class_names is not None:
            num_classes = len(class_names)
    else:
        y_all = np.zeros(len(x_all), dtype=np.int64)
        num_classes = None
    train_idx, val_idx, test_idx, rule = _split(
        p, len(x_all), given_test, val_fraction, test_fraction, seed
    )
    xt, yt = torch.from_numpy(x_all), torch.from_numpy(y_all)
    kind = _kind(x_all)
    splits = Splits(
        train=Split(xt[train_idx], yt[train_idx]),
        val=Split(xt[val_idx], yt[val_idx]),
        test=Split(xt[test_idx], yt[test_idx]),
        name=p.name,
        num_classes=num_classes if num_classes is not None else 1,
        root=p.resolve() if p != MEMORY else None,
        image_shape=image_shape,
        kind=kind,
    )
    return UserData(
        splits=splits,
        kind=kind,
        fingerprint=_fingerprint(
            x_all, image_shape or x_all.shape[1:], y_all if labelled else None, given_test
        ),
        split_rule=rule,
        num_classes=num_classes,
        image_shape=image_shape,
        path=p.resolve() if p != MEMORY else MEMORY,
        class_names=class_names,
    )


def _check_finite(p: Path, x: np.ndarray, n_first: int, names: tuple[str, str]) -> None:
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        name, row = (names[0], i) if i < n_first else (names[1], i - n_first)
        raise ValueError(
            f"{p}: row {row} of '{name}' (0-based) holds NaN or an infinite value; drop or fill it"
        )


def _labels(p: Path, key: str, y: Any, n: int) -> np.ndarray:
    """``y`` as int64 labels 0..K-1 of shape (n,)."""
    if isinstance(y, torch.Tensor):
        y = to_numpy(y)
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"{p}: '{key}' has dtype {y.dtype}; give integer labels 0..K-1")
    if y.shape != (n,):
        raise ValueError(
            f"{p}: '{key}' has shape {y.shape} for {n} rows of data; give one label per row, "
            f"shape ({n},)"
        )
    bad = ~np.isfinite(y) | (y != np.round(y)) | (y < 0) if y.dtype.kind == "f" else y < 0
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{p}: label {y[i].item()!r} in row {i} of '{key}' (0-based) is not an integer "
            "0..K-1; give integer class labels from 0"
        )
    return y.astype(np.int64)


def _split(
    p: Path, n: int, given_test: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Indices of train, validation and test rows (the given test rows are the last ones)."""
    rest = n - given_test
    n_test = given_test or max(1, _round(test_fraction * n))
    n_val = max(1, _round(val_fraction * rest))
    n_train = rest - n_val - (0 if given_test else n_test)
    if n_train < 1:
        where = "outside the given test split " if given_test else ""
        raise ValueError(
            f"{p} has {rest} rows {where}but the splits need at least {rest - n_train + 1} "
            f"(test {n_test}, validation {n_val}, training 1); give more rows"
        )
    perm = torch.randperm(rest, generator=torch.Generator().manual_seed(seed))
    if given_test:
        test_idx = torch.arange(rest, n)
        rule = (
            f"test: the {given_test} rows given as the test split; validation: {n_val} of "
            f"the other {rest} rows ({val_fraction:g}) by a random permutation (seed {seed})"
        )
    else:
        test_idx, perm = perm[:n_test], perm[n_test:]
        rule = (
            f"random permutation (seed {seed}) of {n} rows: test {n_test} ({test_fraction:g}), "
            f"validation {n_val} ({val_fraction:g}), training the other {n_train}"
        )
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    return train_idx, val_idx, test_idx, rule


def _round(v: float) -> int:
    """Round half up (Python's round() goes to the even integer)."""
    return math.floor(v + 0.5)


def _kind(x: np.ndarray) -> str:
    """The most particular of :data:`KINDS` the values fit."""
    if x.size == 0 or ((x == 0) | (x == 1)).all():
        return "binary"
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        return "unit"
    if lo >= 0.0 and hi <= 255.0 and (x == np.floor(x)).all():
        return "8-bit"
    return "real"


def _fingerprint(
    x: np.ndarray, row_shape: tuple[int, ...], y: np.ndarray | None, given_test: int
) -> str:
    """sha256 of the row shape, the given test size, the float32 values and int64 labels."""
    h = hashlib.sha256()
    h.update(f"pyrovae-user-data;{tuple(row_shape)};{given_test};{y is not None}\n".encode())
    h.update(np.ascontiguousarray(x, dtype="<f4").tobytes())
    if y is not None:
        h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.hexdigest()


def _cause(err: BaseException) -> str:
    """``Type: message`` of an exception on one line."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__
