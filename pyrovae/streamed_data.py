"""Array files too large for memory: read in chunks, split once into files, trained on from disk.

:func:`pyrovae.read_data` hands an ``.npy`` file, or an ``.npz`` archive whose ``x`` is
stored without compression (``np.savez``, not ``np.savez_compressed``), to
:func:`read_streamed`. When the file's values as float32 take more than
:func:`stream_above_bytes` (a quarter of the memory available, or ``$PYROVAE_STREAM_ABOVE``
bytes), the file is memory-mapped and never loaded whole:

1. one chunked pass checks that every value is finite (naming the first bad row), infers the
   kind and computes the fingerprint: the same sha256 digest as the in-memory path gives for
   the same data;
2. the rows are split by the same permutation and rule as the in-memory path, and each split
   is written once as a float32 ``.npy`` under ``cache_dir()/streamed/<fingerprint[:16]>-
   <split settings>/`` (to a temporary name, then renamed, so a file there is whole; reused
   while its fingerprint matches, rebuilt otherwise);
3. the splits' ``x`` are read-only memory-mapped tensors of those files, their ``y`` small
   tensors in memory.

Whole loading peaks at about 3 times the array's float32 size in anonymous memory (read,
float32 copy, split rows, standardization; ``benchmarks/data_memory.py``), so data above a
quarter of the available memory stream, leaving a quarter for the rest. The trainer keeps a
memory-mapped training split where it is (:func:`is_mapped`) and moves each batch to the
device.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import warnings
import weakref
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.data import Split, Splits
from pyrovae.data_paths import cache_dir
from pyrovae.memory_data import check_rows, check_test_rows

__all__ = [
    "MEMORY_SHARE",
    "STREAM_ABOVE_ENV",
    "available_memory_bytes",
    "is_mapped",
    "mapped_tensor",
    "read_streamed",
    "stream_above_bytes",
]

STREAM_ABOVE_ENV = "PYROVAE_STREAM_ABOVE"
"""Environment variable: stream data whose float32 size exceeds this many bytes (0: always)."""
MEMORY_SHARE = 4
"""Without ``$PYROVAE_STREAM_ABOVE``, data above 1/MEMORY_SHARE of the available memory
stream: whole loading peaks at about 3 times the data's float32 size."""
CHUNK_BYTES = 64 * 2**20
"""float32 bytes per chunk of rows read, checked, hashed or gathered at once."""

_MAPPED: dict[int, int] = {}
"""Start address -> end address of every memory map :func:`mapped_tensor` opened (and not
yet closed)."""


def available_memory_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo``, else the free physical pages (``os.sysconf``)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def stream_above_bytes() -> int:
    """The float32 size in bytes above which array files stream from disk:
    ``$PYROVAE_STREAM_ABOVE`` when set, else the available memory / :data:`MEMORY_SHARE`."""
    value = os.environ.get(STREAM_ABOVE_ENV)
    if value is None:
        return available_memory_bytes() // MEMORY_SHARE
    try:
        limit = int(value)
    except ValueError:
        limit = -1
    if limit < 0:
        raise ValueError(
            f"{STREAM_ABOVE_ENV}={value!r} is not a byte count; set it to a non-negative "
            "integer (0 streams every .npy/.npz file) or unset it"
        )
    return limit


def mapped_tensor(path: Path) -> torch.Tensor:
    """The array of the ``.npy`` file ``path`` as a read-only memory-mapped tensor.

    torch warns that it cannot protect a read-only array from writes: nothing in pyrovae
    writes into data in place, and the map is read-only (a write would fault rather than
    change the file), so that warning is silenced here, and only it.
    """
    a = np.load(path, mmap_mode="r", allow_pickle=False)
    start = a.ctypes.data
    _MAPPED[start] = start + a.nbytes
    weakref.finalize(a, _MAPPED.pop, start, None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def is_mapped(t: torch.Tensor) -> bool:
    """Whether ``t`` (or the tensor it is a view of) lies in a map of :func:`mapped_tensor`."""
    if t.device.type != "cpu" or t.numel() == 0:
        return False
    p = t.data_ptr()
    return any(start <= p < end for start, end in list(_MAPPED.items()))


# ----------------------------------------------------------------------------- reading


def _npz_member(p: Path, key: str) -> np.ndarray | None:
    """``key`` of an ``.npz`` archive memory-mapped, if stored without compression; None if
    the archive lacks it or compresses it (the in-memory path reads it then)."""
    try:
        with zipfile.ZipFile(p) as z:
            info = z.getinfo(f"{key}.npy")
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(p, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if local[:4] != b"PK\x03\x04":
            return None
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        try:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
        except ValueError:
            return None
        offset = f.tell()
    if dtype.hasobject or not shape or math.prod(shape) == 0:
        return None
    order = "F" if fortran else "C"
    return np.memmap(p, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)


def _open(p: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, Any] | None:
    """``x, x_test`` memory-mapped and ``y, y_test`` (small: read whole) of ``p``, or None
    when ``p`` cannot be mapped (the in-memory path reads it, or names what is wrong)."""
    if p.suffix.lower() == ".npy":
        try:
            x = np.load(p, mmap_mode="r", allow_pickle=False)
        except Exception:  # a bad header or pickled objects: the in-memory path names it
            return None
        return (x, None, None, None) if x.ndim > 0 and x.size else None
    x = _npz_member(p, "x")
    if x is None:
        return None
    try:
        with np.load(p, allow_pickle=False) as archive:
            keys = set(archive.files)
            y = archive["y"] if "y" in keys else None
            y_test = archive["y_test"] if "y_test" in keys else None
    except Exception:
        return None
    x_test = _npz_member(p, "x_test") if "x_test" in keys else None
    if "x_test" in keys and x_test is None:
        return None  # a compressed or empty test split: read whole
    return x, y, x_test, y_test


def _float_rows(a: np.ndarray) -> np.ndarray:
    """Rows of ``a`` as a C-contiguous float32 (n, D) array (as the in-memory path reads)."""
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused by row
        c = np.asarray(a).astype(np.float32)
    return np.ascontiguousarray(c.reshape(len(c), -1))


def _chunk_rows(width: int) -> int:
    return max(1, CHUNK_BYTES // (4 * max(1, width)))


def _scan(
    p: Path,
    parts: list[tuple[str, np.ndarray]],
    row_shape: tuple[int, ...],
    given_test: int,
    labelled: bool,
) -> tuple[str, Any]:
    """One chunked pass: refuse the first row holding NaN or infinity, infer the kind (as
    :func:`pyrovae.user_data._kind`) and hash the values (as
    :func:`pyrovae.user_data._fingerprint`; the labels are hashed by the caller)."""
    h = hashlib.sha256()
    h.update(f"pyrovae-user-data;{tuple(row_shape)};{given_test};{labelled}\n".encode())
    binary, integer, lo, hi, seen = True, True, math.inf, -math.inf, 0
    for name, a in parts:
        step = _chunk_rows(math.prod(a.shape[1:]))
        for start in range(0, len(a), step):
            c = _float_rows(a[start : start + step])
            bad = ~np.isfinite(c).all(axis=1)
            if bad.any():
                raise ValueError(
                    f"{p}: row {start + int(np.argmax(bad))} of '{name}' (0-based) holds NaN "
                    "or an infinite value; drop or fill it"
                )
            h.update(np.ascontiguousarray(c, dtype="<f4").data)
            seen += c.size
            if c.size:
                binary = binary and bool(((c == 0) | (c == 1)).all())
                lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
                integer = integer and bool((c == np.floor(c)).all())
    if seen == 0 or binary:
        kind = "binary"
    elif lo >= 0.0 and hi <= 1.0:
        kind = "unit"
    elif lo >= 0.0 and hi <= 255.0 and integer:
        kind = "8-bit"
    else:
        kind = "real"
    return kind, h


def _gather(parts: list[tuple[str, np.ndarray]], rows: np.ndarray) -> np.ndarray:
    """float32 rows ``rows`` (sorted, indices into the parts one after the other)."""
    out, offset = [], 0
    for _, a in parts:
        lo, hi = np.searchsorted(rows, [offset, offset + len(a)])
        if hi > lo:
            out.append(_float_rows(a[rows[lo:hi] - offset]))
        offset += len(a)
    return np.concatenate(out) if len(out) > 1 else out[0]


def _write_split(
    path: Path, parts: list[tuple[str, np.ndarray]], idx: np.ndarray, width: int
) -> None:
    """Rows ``idx`` of the parts, in that order, as a float32 ``.npy`` at ``path``: written
    under a temporary name, chunk by chunk (each gathered in ascending row order), synced,
    then renamed. Plain writes, not a writable memory map, so that a full disk is an
    ``OSError``, not a crash."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    header = {"descr": "<f4", "fortran_order": False, "shape": (len(idx), width)}
    try:
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, header)
            step = _chunk_rows(width)
            for start in range(0, len(idx), step):
                chunk = idx[start : start + step]
                order = np.argsort(chunk, kind="stable")
                rows = np.empty((len(chunk), width), dtype="<f4")
                rows[order] = _gather(parts, chunk[order])
                f.write(rows.data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_space(folder: Path, needed: int) -> None:
    """Refuse, before writing anything, split files larger than the free space of the disk
    that holds ``folder`` (or its first existing parent)."""
    where = folder
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if needed > free:
        raise OSError(
            f"{folder}: the streamed splits need {needed / 2**30:.2f} GiB but {free / 2**30:.2f} "
            "GiB are free there; free disk space or set PYROVAE_CACHE to a folder on a larger disk"
        )


def _prune(folder: Path, source: str, fingerprint: str) -> None:
    """Remove the split files of earlier versions of ``source`` (other fingerprints): data
    that changed are not trained on again (a run refuses them). A process that still maps
    them keeps reading them until it closes them."""
    for other in folder.parent.iterdir():
        stamp = other / "source.json"
        if other == folder or not stamp.is_file():
            continue
        try:
            seen = json.loads(stamp.read_text())
        except (OSError, ValueError):
            continue
        if seen.get("source") == source and seen.get("fingerprint") != fingerprint:
            shutil.rmtree(other, ignore_errors=True)


def _cached(path: Path, rows: int, width: int) -> bool:
    """Whether ``path`` holds a float32 (rows, width) array."""
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:
        return False
    return a.dtype == np.float32 and a.shape == (rows, width)


def read_streamed(
    p: Path,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    *,
    split: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]],
    labels: Callable[[Path, str, Any, int], np.ndarray],
) -> dict[str, Any] | None:
    """The fields of a :class:`~pyrovae.user_data.UserData` for the ``.npy``/``.npz`` file
    ``p`` read from disk in chunks, or None when it is small enough to load whole (or cannot
    be memory-mapped: a compressed archive, an empty array).

    ``split`` and ``labels`` are :mod:`pyrovae.user_data`'s split rule and label check, so
    that both paths split and refuse alike.
    """
    opened = _open(p)
    if opened is None:
        return None
    x, y, x_test, y_test = opened
    test_rows = 0 if x_test is None else len(x_test)
    if (len(x) + test_rows) * math.prod(x.shape[1:]) * 4 <= stream_above_bytes():
        return None
    for key, a in (("x", x), ("x_test", x_test)):
        if a is not None:
            check_rows(p, key, a)
    check_test_rows(p, x, x_test)
    if y_test is not None and x_test is None:
        raise ValueError(f"{p} has 'y_test' but no 'x_test'; store the test data as 'x_test'")
    if x_test is not None and (y is None) != (y_test is None):
        have, lack = ("y", "y_test") if y is not None else ("y_test", "y")
        raise ValueError(f"{p} has '{have}' but no '{lack}'; give labels for both splits or none")
    image_shape: tuple[int, ...] | None = None
    if x.ndim >= 3:
        image_shape = (1, *x.shape[1:]) if x.ndim == 3 else tuple(x.shape[1:])
    width = math.prod(x.shape[1:])
    parts = [("x", x)] + ([] if x_test is None else [("x_test", x_test)])
    n = len(x) + test_rows
    kind, h = _scan(p, parts, image_shape or (width,), test_rows, y is not None)
    if y is not None:
        y_all = labels(p, "y", y, len(x))
        if y_test is not None:
            y_all = np.concatenate([y_all, labels(p, "y_test", y_test, test_rows)])
        h.update(np.ascontiguousarray(y_all, dtype="<i8").data)
        num_classes: int | None = int(y_all.max()) + 1 if len(y_all) else 1
    else:
        y_all, num_classes = np.zeros(n, dtype=np.int64), None
    fingerprint = h.hexdigest()
    train_idx, val_idx, test_idx, rule = split(p, n, test_rows, val_fraction, test_fraction, seed)
    folder = (
        cache_dir()
        / "streamed"
        / f"{fingerprint[:16]}-v{val_fraction:g}-t{test_fraction:g}-s{seed}"
    )
    stamp = folder / "source.json"
    try:
        fresh = json.loads(stamp.read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):  # none yet, or damaged
        fresh = False
    yt = torch.from_numpy(y_all)
    indices = {"train": train_idx, "val": val_idx, "test": test_idx}
    missing = [
        k
        for k, idx in indices.items()
        if not fresh or not _cached(folder / f"{k}.npy", len(idx), width)
    ]
    _check_space(folder, sum(len(indices[k]) for k in missing) * width * 4)
    folder.mkdir(parents=True, exist_ok=True)
    if not fresh:
        stamp.unlink(missing_ok=True)
    made: dict[str, Split] = {}
    for name, idx in indices.items():
        path = folder / f"{name}.npy"
        if name in missing:
            _write_split(path, parts, idx.numpy(), width)
        made[name] = Split(mapped_tensor(path), yt[idx].clone())
    if not fresh:
        tmp = stamp.with_name(f".source.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint, "source": str(p.resolve())}))
        os.replace(tmp, stamp)
        _prune(folder, str(p.resolve()), fingerprint)
    splits = Splits(
        **made,
        name=p.name,
        num_classes=num_classes if num_classes is not None else 1,
        root=p.resolve(),
        image_shape=image_shape,  # type: ignore[arg-type]
        kind=kind,
    )
    return {
        "splits": splits,
        "kind": kind,
        "fingerprint": fingerprint,
        "split_rule": rule,
        "num_classes": num_classes,
        "image_shape": image_shape,
    }
