"""Synthetic data out: decoded samples written as arrays, CSV or an image folder, in the data's
own units, with a JSON record of where they came from.

:func:`draw_samples` decodes latent draws into x in the data's units: the decoder's mean
E[x | z] (``draw="mean"``) or a draw x ~ p(x | z) (``draw="sample"``), both mapped back from
any standardization by the decoder itself. :func:`write_samples` writes them:

- ``.npy``: one array, (n, C, H, W) for images, (n, D) for vectors; MNIST-format images of the
  built-in data sets keep the (n, 28, 28) layout of torchvision's ``MNIST.data`` (and of this
  file before images came in other shapes). Labels go to ``NAME.labels.npy`` (int64, (n,)).
- ``.npz``: arrays ``x`` (as for ``.npy``) and, with labels, ``y``: the layout
  ``pyrovae train --data`` reads, so synthetic data can be trained on or evaluated directly.
- ``.csv``: a header, then one row per sample; columns ``x0 .. x{D-1}`` (images flattened in
  C, H, W order), then the label column (``label``, or the run's ``label_column``).
- a folder (``DIR/``, or a path without a suffix): PNG files in torchvision's ImageFolder
  layout, one subfolder per class when there are labels (``0``, ``1``, ... zero-padded so that
  their sorted order is the label order), else one subfolder ``samples``; grey (1 channel),
  RGB (3) or RGBA (4).
- ``.png``: a grid of the samples (:func:`pyrovae.images.save_images`), for looking at.

Units: 8-bit data (integers 0..255) are written as integers: a mean is rounded, a draw of a
discretized likelihood already is one; both are stored as uint8 (as integers in CSV) when they
lie in 0..255, else kept as float32 integers and reported, never clipped. Bernoulli draws
(0/1) are uint8. Everything else is float32 in the data's units, unclipped (values of [0, 1]
data that a Gaussian decoder puts outside [0, 1] are kept and counted). Only PNG files
(folder and grid) clip to their 0..255 pixels, and a folder says how many values it clipped;
real-valued data (no fixed range) are not written as PNG files.

Beside the output, ``FILE.json`` (``DIR/samples.json`` for a folder) records the run, the
checkpoint, the source, the seed, n, the draw, the label rule, the files, dtype and shape,
pyrovae's version and the data's fingerprint when the run has one.

Every file is written atomically and a folder appears whole (written under a temporary name
and renamed), so an interrupted export leaves no half-written file; refused inputs
(:func:`output_format`, :func:`check_exportable`) are refused before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.checkpoint import atomic_write_bytes, write_json
from pyrovae.images import MNIST_SHAPE, image_shape_of, save_images, value_kind_of

__all__ = [
    "DRAWS",
    "FORMATS",
    "ExportError",
    "check_exportable",
    "draw_samples",
    "output_format",
    "record_path",
    "write_samples",
]

DRAWS = ("mean", "sample")
"""What a sample is: the decoder's mean E[x | z], or a draw from p(x | z)."""
FORMATS = {".npy": "npy", ".npz": "npz", ".csv": "csv", ".png": "png"}
"""Output suffixes and their formats; a folder (``DIR/``) is the format ``"folder"``."""
FOLDER_RECORD = "samples.json"
UNLABELLED_FOLDER = "samples"
PNG_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class ExportError(ValueError):
    """An output that is refused before anything is written (one line: flag, value, fix)."""


def output_format(out: str | os.PathLike[str]) -> str:
    """The format ``out`` asks for (``npy``, ``npz``, ``csv``, ``png`` or ``folder``).

    A path ending in a slash, an existing folder or a path without a suffix is an image folder,
    which must be new or empty. Raises :class:`ExportError` otherwise.
    """
    text = os.fspath(out)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir() or (path.suffix == "" and path.name):
        if path.exists() and not path.is_dir():
            raise ExportError(
                f"--out {text!r} is an existing file, not a folder; give a new or empty folder "
                "(DIR/) for an image folder, or a name ending in .npy, .npz, .csv or .png"
            )
        if path.is_dir() and any(path.iterdir()):
            raise ExportError(
                f"--out {text!r} is a folder that already holds files; give a new or empty "
                "folder (nothing is overwritten)"
            )
        return "folder"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ExportError(
            f"--out must end in .png or .npy, .npz or .csv, or be a folder (DIR/) for an image "
            f"folder of PNG files, got {text!r}"
        )
    return fmt


def record_path(out: str | os.PathLike[str], fmt: str | None = None) -> Path:
    """Where the JSON record of an output goes: ``FILE.json`` beside a file (``s.npy.json``),
    ``DIR/samples.json`` inside a folder."""
    fmt = fmt or output_format(out)
    path = Path(out)
    return path / FOLDER_RECORD if fmt == "folder" else path.with_name(path.name + ".json")


def _labels_path(out: Path) -> Path:
    return out.with_name(out.stem + ".labels.npy")


def check_exportable(
    fmt: str,
    out: str | os.PathLike[str],
    image_shape: tuple[int, int, int] | None,
    kind: str | None,
) -> None:
    """Refuse (:class:`ExportError`) an image output for vectors, PNG files of real values or
    of a channel count PNG cannot hold; before anything is drawn or written."""
    if fmt in ("folder", "png") and image_shape is None:
        raise ExportError(
            f"--out {os.fspath(out)!r} writes images, but the model's data are vectors; write "
            ".npy, .npz or .csv"
        )
    if fmt == "folder":
        if kind == "real":
            raise ExportError(
                f"--out {os.fspath(out)!r} writes PNG files of 0..255 pixels, but the data are "
                "real-valued (no fixed range); write .npy, .npz or .csv to keep their units"
            )
        if image_shape is not None and image_shape[0] not in PNG_MODES:
            raise ExportError(
                f"--out {os.fspath(out)!r}: PNG files hold 1, 3 or 4 channels, the images have "
                f"{image_shape[0]}; write .npy or .npz"
            )


@torch.no_grad()
def draw_samples(
    vae: torch.nn.Module,
    num_samples: int,
    *,
    source: Any = None,
    labels: torch.Tensor | None = None,
    draw: str = "mean",
    seed: int | None = None,
) -> torch.Tensor:
    """``num_samples`` rows x in the data's own units, shape (n, x_dim).

    z comes from ``source`` (a latent source, or per-class sources ``{class: source}`` as
    :func:`pyrovae.analysis.sources.store.sample_latents` takes them; the prior p(z | y) when
    None); x is ``vae.decoder.mean(z, y)`` for ``draw="mean"`` or a draw of
    ``vae.decoder(z, y)`` for ``draw="sample"``. ``labels`` (int, shape (n,)) are the classes
    y of a CVAE (required) or pick the per-class source of each row. ``seed`` seeds Pyro (and
    torch) first when given.
    """
    import pyro

    from pyrovae.analysis.sources.store import sample_latents

    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {DRAWS}, got {draw!r}")
    if seed is not None:
        pyro.set_rng_seed(seed)
    device = next(vae.parameters()).device
    y = None
    if getattr(vae, "conditional", False):
        if labels is None:
            raise ValueError(f"a CVAE draws given labels: pass labels of shape ({num_samples},)")
        y = torch.nn.functional.one_hot(labels.to(device), vae.y_dim).to(torch.get_default_dtype())
    if source is None:
        prior = vae.prior(y)
        z = prior.sample() if prior.batch_shape else prior.sample((num_samples,))
    else:
        z = sample_latents(source, num_samples, labels, vae)
    if draw == "mean":
        return vae.decoder.mean(z, y)
    return vae.decoder(z, y).sample()


def _in_units(
    x: np.ndarray, kind: str | None, draw: str, log: Callable[[str], None]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The values to store and what was done to them: 8-bit rounded (uint8 when in 0..255),
    Bernoulli draws as uint8, the rest float32 as they are."""
    x = np.asarray(x, dtype=np.float64)
    if kind == "8-bit":
        r = np.rint(x)
        outside = int(((r < 0) | (r > 255)).sum())
        if outside:
            log(
                f"{outside} values lie outside 0..255 (from {r.min():.0f} to {r.max():.0f}); "
                "kept as they are, stored as float32 integers, not uint8"
            )
            return r.astype(np.float32), {"rounded": True, "outside_range": outside}
        return r.astype(np.uint8), {"rounded": True, "outside_range": 0}
    if draw == "sample" and x.size and bool(((x == 0) | (x == 1)).all()):
        return x.astype(np.uint8), {}  # Bernoulli draws
    if kind in ("binary", "unit"):
        outside = int(((x < 0) | (x > 1)).sum())
        if outside:
            log(
                f"{outside} values lie outside [0, 1], the data's range (from {x.min():.3g} to "
                f"{x.max():.3g}); kept as they are"
            )
        return x.astype(np.float32), {"outside_range": outside}
    return x.astype(np.float32), {}


def _pixels(
    values: np.ndarray, kind: str | None, log: Callable[[str], None]
) -> tuple[np.ndarray, dict[str, Any]]:
    """uint8 pixels 0..255 for PNG: 8-bit values rounded, others (in [0, 1]) times 255 and
    rounded; values beyond clipped (PNG holds nothing else), and said so."""
    v = values.astype(np.float64)
    if kind != "8-bit":
        v = v * 255.0
    v = np.rint(v)
    clipped = int(((v < 0) | (v > 255)).sum())
    if clipped:
        log(f"{clipped} values lie outside the pixels' 0..255 and were clipped to fit PNG")
    return np.clip(v, 0, 255).astype(np.uint8), {"clipped": clipped}


def _png(pixels: np.ndarray) -> bytes:
    """One (C, H, W) uint8 image as PNG bytes."""
    from PIL import Image

    c = pixels.shape[0]
    array = pixels[0] if c == 1 else pixels.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")  # L, RGB or RGBA
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _csv(
    values: np.ndarray, labels: np.ndarray | None, names: Sequence[str], label_column: str
) -> bytes:
    text = io.StringIO()
    header = [*names, label_column] if labels is not None else list(names)
    csv.writer(text, lineterminator="\n").writerow(header)
    fmt = "%d" if np.issubdtype(values.dtype, np.integer) else "%.9g"  # float32 round-trips
    table = values.astype(np.float64) if fmt == "%.9g" else values.astype(np.int64)
    formats = [fmt] * values.shape[1]
    if labels is not None:
        table = np.column_stack([table, labels.astype(table.dtype)])
        formats.append("%d")
    np.savetxt(text, table, fmt=formats, delimiter=",")
    return text.getvalue().encode("utf-8")


def _write_folder(
    out: Path,
    pixels: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    record: dict[str, Any],
) -> list[Path]:
    """The ImageFolder tree under a temporary name beside ``out``, then renamed to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    width = max(6, len(str(len(pixels) - 1)))
    try:
        folders = (
            [class_names[c] for c in labels.tolist()]
            if labels is not None
            else [UNLABELLED_FOLDER] * len(pixels)
        )
        counts: dict[str, int] = {}
        for i, (image, folder) in enumerate(zip(pixels, folders, strict=True)):
            (tmp / folder).mkdir(exist_ok=True)
            (tmp / folder / f"{i:0{width}d}.png").write_bytes(_png(image))
            counts[folder] = counts.get(folder, 0) + 1
        record["files"] = {f"{folder}/": count for folder, count in sorted(counts.items())}
        (tmp / FOLDER_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o777 & ~_umask())
        if out.is_dir():
            out.rmdir()  # empty (checked before): rename needs the name free
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out, out / FOLDER_RECORD]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _run_record(vae: Any) -> dict[str, Any]:
    """What a loaded run says about itself: directory, checkpoint, data fingerprint."""
    run = getattr(vae, "run_config", None)
    train = getattr(run, "train", None)
    run_dir = getattr(vae, "run_dir", None)
    return {
        "run_dir": str(Path(run_dir).resolve()) if run_dir is not None else None,
        "checkpoint": getattr(vae, "checkpoint_name", None),
        "data_fingerprint": getattr(train, "data_fingerprint", None),
        "dataset": getattr(train, "data", None) or getattr(train, "dataset", None),
    }


def _class_names(vae: Any, num_classes: int) -> list[str]:
    """Subfolder names: the run's class names when it records them, else 0, 1, ... padded."""
    train = getattr(getattr(vae, "run_config", None), "train", None)
    names = getattr(train, "class_names", None)
    if names and len(names) >= num_classes:
        return [str(n) for n in names]
    width = len(str(num_classes - 1))
    return [f"{c:0{width}d}" for c in range(num_classes)]


def _column_names(vae: Any, x_dim: int) -> list[str]:
    """The data's own column names when the run records them, else ``x0 .. x{D-1}``."""
    train = getattr(getattr(vae, "run_config", None), "train", None)
    names = getattr(train, "column_names", None)
    if names and len(names) == x_dim:
        return [str(n) for n in names]
    return [f"x{i}" for i in range(x_dim)]


def _mnist_layout(vae: Any, image_shape: tuple[int, int, int] | None) -> bool:
    """(n, 28, 28) arrays for MNIST-format images of a built-in data set (not the user's)."""
    train = getattr(getattr(vae, "run_config", None), "train", None)
    return image_shape == MNIST_SHAPE and not getattr(train, "data", None)


def write_samples(
    x: torch.Tensor | np.ndarray,
    out: str | os.PathLike[str],
    *,
    vae: Any = None,
    labels: torch.Tensor | np.ndarray | None = None,
    draw: str = "mean",
    image_shape: tuple[int, int, int] | None = None,
    kind: str | None = None,
    num_classes: int | None = None,
    record: Mapping[str, Any] | None = None,
    nrow: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write samples ``x`` (n, D) in the data's units to ``out``; the files written.

    The format follows ``out`` (see the module's docstring). ``vae`` (a model, typically from
    :func:`pyrovae.load_run`) supplies the image shape, the kind of values, the column and
    class names and the run's record; ``image_shape`` and ``kind`` (one of ``binary``,
    ``unit``, ``8-bit``, ``real``) override it. ``labels`` (ints, (n,)) are written with the
    samples; ``num_classes`` (default: the largest label + 1) names the class subfolders.
    ``record`` adds entries to the JSON record (source, seed, label rule, ...). Notes about
    values beyond the data's range go to ``log``.

    Raises:
        ExportError: a refused ``out`` (nothing written).
        ValueError: ``x`` or ``labels`` of the wrong shape.
    """
    from pyrovae import __version__

    fmt = output_format(out)
    path = Path(out)
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {DRAWS}, got {draw!r}")
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.ndim != 2:
        raise ValueError(f"x must be samples of shape (n, D), got {array.shape}")
    n, x_dim = array.shape
    if image_shape is not None:
        shape = image_shape
    else:
        shape = image_shape_of(vae) if vae is not None else None
    shape = tuple(int(s) for s in shape) if shape is not None else None
    if shape is not None and int(np.prod(shape)) != x_dim:
        raise ValueError(f"image_shape {shape} does not hold D = {x_dim} values per sample")
    kind = kind if kind is not None else (value_kind_of(vae) if vae is not None else None)
    check_exportable(fmt, out, shape, kind)
    y = None
    if labels is not None:
        y = (labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels).astype(
            np.int64
        )
        if y.shape != (n,) or (n and y.min() < 0):
            raise ValueError(f"labels must be {n} integers >= 0, got shape {y.shape}")
    classes = num_classes if num_classes is not None else (int(y.max()) + 1 if y is not None else 0)

    if fmt == "folder":
        values, notes = _pixels(array, kind, log)
    elif fmt == "png":  # a picture: save_images brings the values to [0, 1] by their kind
        values, notes = array.astype(np.float32), {}
    else:
        values, notes = _in_units(array, kind, draw, log)
    stored = values
    if fmt in ("npy", "npz", "folder", "png") and shape is not None:
        stored = values.reshape(n, *shape)
    if fmt in ("npy", "npz") and _mnist_layout(vae, shape):
        stored = stored[:, 0]
    entry: dict[str, Any] = {
        **(_run_record(vae) if vae is not None else {}),
        **dict(record or {}),
        "n": n,
        "draw": draw,
        "kind": kind,
        "image_shape": list(shape) if shape is not None else None,
        "format": fmt,
        "dtype": str(stored.dtype) if fmt not in ("folder", "png") else "PNG",
        "shape": list(stored.shape),
        "labels": y is not None,
        "pyrovae_version": __version__,
        **notes,
    }
    train = getattr(getattr(vae, "run_config", None), "train", None)
    label_column = getattr(train, "label_column", None) or "label"
    rec = record_path(path, fmt)

    if fmt == "folder":
        names = _class_names(vae, classes) if y is not None else []
        if y is not None:
            entry["class_folders"] = names[:classes]
        return _write_folder(path, stored, y, names, entry)
    written: list[Path] = []
    if fmt == "png":
        kw = {"nrow": nrow, "image_shape": shape, "kind": kind}
        save_images(torch.from_numpy(values), path, **kw)
        entry["files"] = [path.name]
        written.append(path)
    elif fmt == "npy":
        if y is not None:
            atomic_write_bytes(_labels_path(path), _npy(y))
        atomic_write_bytes(path, _npy(stored))
        if y is None and _labels_path(path).is_file():
            _labels_path(path).unlink()  # an earlier export's labels no longer belong to it
        written += [path, *([_labels_path(path)] if y is not None else [])]
        entry["files"] = [p.name for p in written]
    elif fmt == "npz":
        buf = io.BytesIO()
        np.savez(buf, **({"x": stored, "y": y} if y is not None else {"x": stored}))
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
        entry["files"] = [path.name]
    else:  # csv
        names = _column_names(vae, x_dim)
        if y is not None and label_column in names:
            label_column = f"{label_column}_"
        entry["columns"] = [*names[:3], "...", names[-1]] if x_dim > 4 else names
        if y is not None:
            entry["label_column"] = label_column
        atomic_write_bytes(path, _csv(stored, y, names, label_column))
        written.append(path)
        entry["files"] = [path.name]
    write_json(rec, entry)
    return [*written, rec]
