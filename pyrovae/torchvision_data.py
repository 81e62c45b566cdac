"""EMNIST, CIFAR-10 and SVHN read from torchvision's own file layouts, offline first.

:func:`pyrovae.data.load_dataset` reads these names through :func:`read_torchvision`
(KMNIST has MNIST's layout and is read with it). A root is looked in where torchvision keeps
each data set:

- ``emnist-balanced`` (47 classes), ``emnist-letters`` (26), ``emnist-digits`` (10):
  ``ROOT/EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``, or
  the same files gzipped (in ``raw/`` or ``raw/gzip/``), or torchvision's archive
  ``raw/gzip.zip``;
- ``cifar10``: ``ROOT/cifar-10-batches-py/`` (``data_batch_1`` .. ``data_batch_5``,
  ``test_batch``), or the archive ``ROOT/cifar-10-python.tar.gz``;
- ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` in ``ROOT/svhn/`` (or ``ROOT/``).

Archives are checked against torchvision's md5 and extracted into the cache; a data root is
never written to. Files already extracted are checked by their structure (shapes, dtype, label
range), not by md5, so that any copy of the same format reads. A download goes through
torchvision (md5-checked) into the root when it is writable, else into the cache.

EMNIST's files store each image transposed (column by column); they are turned upright here.
EMNIST-letters labels 1..26 (a..z, upper and lower case merged) become 0..25. SVHN's label
10 (the digit 0) becomes 0, as torchvision does.
"""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyrovae.data_paths import (
    DataNotFoundError,
    cache_dir,
    default_data_root,
    writable_or_creatable,
)
from pyrovae.data_paths import cause as _cause

__all__ = ["TORCHVISION_DATASETS", "Raw", "TorchvisionSource", "read_torchvision"]

EMNIST_SPLITS = {"emnist-balanced": 47, "emnist-letters": 26, "emnist-digits": 10}
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


@dataclass
class Raw:
    """A data set as read: 8-bit images (N, C*H*W) flattened in C,H,W order, labels 0..K-1."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class TorchvisionSource:
    """How one data set is found, read and downloaded."""

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    layout: str
    """Where the files go under ROOT, for the error of a missing file."""
    find: Callable[[Path], Path | None]
    read: Callable[[Path], Raw]
    download: Callable[[Path], None]

    @property
    def kind(self) -> str:
        """Grey sets are scaled to [0, 1] as MNIST is; colour sets stay 8-bit integers."""
        return "unit" if self.image_shape[0] == 1 else "8-bit"


def _bad(path: Path, what: str) -> DataNotFoundError:
    return DataNotFoundError(f"{path} is not a valid file ({what}); replace it with the original")


def _check_labels(path: Path, y: np.ndarray, n: int, low: int, high: int) -> None:
    if y.shape != (n,):
        raise _bad(path, f"{y.shape[0] if y.ndim else 0} labels for {n} images")
    if n and (y.min() < low or y.max() > high):
        raise _bad(path, f"labels {int(y.min())}..{int(y.max())}, expected {low}..{high}")


def _md5_ok(path: Path, md5: str) -> None:
    from torchvision.datasets.utils import check_integrity

    if not check_integrity(str(path), md5):
        raise DataNotFoundError(
            f"{path} is corrupt (md5 mismatch); replace it with the original file"
        )


def _download_error(name: str, target: Path, layout: str, err: BaseException) -> DataNotFoundError:
    return DataNotFoundError(
        f"downloading {name} into {target} failed ({_cause(err)}); put {layout} under a "
        "directory DIR by hand and pass --data-root DIR (or set PYROVAE_DATA=DIR)"
    )


# ------------------------------------------------------------------------------ EMNIST
def _emnist_files(split: str) -> tuple[str, ...]:
    return tuple(
        f"emnist-{split}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for part in ("train", "test")
        for kind in ("images", "labels")
    )


def _find_emnist(split: str) -> Callable[[Path], Path | None]:
    """A folder holding the four extracted files, extracting ``.gz`` files or the archive
    ``gzip.zip`` into the cache when that is what ROOT/EMNIST/raw/ holds."""

    def find(root: Path) -> Path | None:
        raw = root / "EMNIST" / "raw"
        files = _emnist_files(split)
        if all((raw / f).is_file() for f in files):
            return raw
        target = cache_dir() / "data" / "EMNIST" / "raw"
        sources = {}
        for f in files:
            found = [p for p in (raw / f, raw / f"{f}.gz", raw / "gzip" / f"{f}.gz") if p.is_file()]
            if not found:
                break
            sources[f] = found[0]
        else:  # every file is here, compressed: extract into the cache once
            target.mkdir(parents=True, exist_ok=True)
            for f, src in sources.items():
                if not (target / f).is_file():
                    _copy(src, target / f)
            return target
        archive = raw / "gzip.zip"
        if not archive.is_file():
            return None
        if all((target / f).is_file() for f in files):
            return target  # extracted from this archive before
        from torchvision.datasets import EMNIST

        _md5_ok(archive, EMNIST.md5)
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as zf:
            for f in files:
                if not (target / f).is_file():
                    tmp = target / f".{f}.tmp"
                    with zf.open(f"gzip/{f}.gz") as fin, gzip.open(fin) as unz:
                        with open(tmp, "wb") as fout:
                            shutil.copyfileobj(unz, fout)
                    os.replace(tmp, target / f)
        return target

    return find


def _copy(src: Path, dst: Path) -> None:
    """``src`` (gunzipped if it ends in .gz) to ``dst``, through a temporary name."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    opener = gzip.open if src.suffix == ".gz" else open
    try:
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    except (OSError, EOFError) as err:
        tmp.unlink(missing_ok=True)
        raise _bad(src, _cause(err)) from err
    os.replace(tmp, dst)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

    try:
        t = read_sn3_pascalvincent_tensor(str(path), strict=False)
    except Exception as err:  # AssertionError, KeyError, RuntimeError on a malformed file
        raise _bad(path, f"not an IDX file: {_cause(err)}") from err
    if t.ndim != ndim or t.dtype.itemsize != 1:
        raise _bad(path, f"an IDX array of shape {tuple(t.shape)}, expected {ndim} dimensions")
    return t.numpy()


def _read_emnist(split: str, num_classes: int) -> Callable[[Path], Raw]:
    low = 1 if split == "letters" else 0

    def read(folder: Path) -> Raw:
        arrays = []
        files = _emnist_files(split)
        for i in (0, 2):
            images, labels = folder / files[i], folder / files[i + 1]
            x = _read_idx(images, 3)
            if x.shape[1:] != (28, 28):
                raise _bad(images, f"images of {x.shape[1:]}, expected 28 x 28")
            y = _read_idx(labels, 1).astype(np.int64)
            _check_labels(labels, y, len(x), low, low + num_classes - 1)
            # stored column by column: transpose each image to stand upright
            arrays += [np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(len(x), -1), y - low]
        return Raw(*arrays)

    return read


def _download_emnist(split: str) -> Callable[[Path], None]:
    def download(target: Path) -> None:
        from torchvision.datasets import EMNIST

        EMNIST(str(target), split=split, train=True, download=True)

    return download


# ------------------------------------------------------------------------------ CIFAR-10
def _find_cifar(root: Path) -> Path | None:
    folder = root / CIFAR_FOLDER
    if all((folder / f).is_file() for f in (*CIFAR_TRAIN, CIFAR_TEST)):
        return folder
    archive = root / "cifar-10-python.tar.gz"
    if not archive.is_file():
        return None
    cached = cache_dir() / "data" / CIFAR_FOLDER
    if all((cached / f).is_file() for f in (*CIFAR_TRAIN, CIFAR_TEST)):
        return cached  # extracted from this archive before
    from torchvision.datasets import CIFAR10

    _md5_ok(archive, CIFAR10.tgz_md5)
    tmp = cache_dir() / "data" / f".{CIFAR_FOLDER}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive, "r:gz") as tf:
        for f in (*CIFAR_TRAIN, CIFAR_TEST):
            member = tf.extractfile(f"{CIFAR_FOLDER}/{f}")
            if member is None:
                raise _bad(archive, f"no {CIFAR_FOLDER}/{f} inside")
            with open(tmp / f, "wb") as fout:
                shutil.copyfileobj(member, fout)
    shutil.rmtree(cached, ignore_errors=True)
    os.replace(tmp, cached)
    return cached


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        x = np.asarray(entry["data"])
        y = np.asarray(entry["labels"], dtype=np.int64)
    except Exception as err:  # UnpicklingError, KeyError, TypeError, ...
        raise _bad(path, f"not a CIFAR-10 batch: {_cause(err)}") from err
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise _bad(path, f"data of {x.dtype} {x.shape}, expected uint8 (N, 3072)")
    _check_labels(path, y, len(x), 0, 9)
    return x, y  # rows are already R, G, B planes of 32 x 32: C,H,W order


def _read_cifar(folder: Path) -> Raw:
    batches = [_read_cifar_batch(folder / f) for f in CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(folder / CIFAR_TEST)
    return Raw(
        np.concatenate([b[0] for b in batches]),
        np.concatenate([b[1] for b in batches]),
        x_test,
        y_test,
    )


def _download_cifar(target: Path) -> None:
    from torchvision.datasets import CIFAR10

    CIFAR10(str(target), train=True, download=True)


# ------------------------------------------------------------------------------ SVHN
def _find_svhn(root: Path) -> Path | None:
    for folder in (root / "svhn", root / "SVHN", root):
        if all((folder / f).is_file() for f in SVHN_FILES):
            return folder
    return None


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).astype(np.int64).reshape(-1)
    except Exception as err:  # ValueError, KeyError, MatReadError, ...
        raise _bad(path, f"not an SVHN .mat file: {_cause(err)}") from err
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _bad(path, f"X of {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    n = x.shape[3]
    _check_labels(path, y, n, 0, 10)
    y[y == 10] = 0  # the digit 0 is labelled 10 in the .mat files (torchvision does the same)
    # X[h, w, c, n] -> (n, c, h, w), flattened
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)).reshape(n, -1), y


def _read_svhn(folder: Path) -> Raw:
    return Raw(*_read_svhn_mat(folder / SVHN_FILES[0]), *_read_svhn_mat(folder / SVHN_FILES[1]))


def _download_svhn(target: Path) -> None:
    from torchvision.datasets import SVHN

    for split in ("train", "test"):
        SVHN(str(target / "svhn"), split=split, download=True)


# ------------------------------------------------------------------------------ registry
def _emnist_source(name: str, num_classes: int) -> TorchvisionSource:
    split = name.removeprefix("emnist-")
    files = _emnist_files(split)
    return TorchvisionSource(
        name=name,
        image_shape=(1, 28, 28),
        num_classes=num_classes,
        layout=f"{', '.join(files)} (or .gz, or torchvision's gzip.zip) in DIR/EMNIST/raw/",
        find=_find_emnist(split),
        read=_read_emnist(split, num_classes),
        download=_download_emnist(split),
    )


TORCHVISION_DATASETS: dict[str, TorchvisionSource] = {
    **{name: _emnist_source(name, k) for name, k in EMNIST_SPLITS.items()},
    "cifar10": TorchvisionSource(
        name="cifar10",
        image_shape=(3, 32, 32),
        num_classes=10,
        layout=f"{', '.join(CIFAR_TRAIN)}, {CIFAR_TEST} in DIR/{CIFAR_FOLDER}/ (or "
        "cifar-10-python.tar.gz in DIR/)",
        find=_find_cifar,
        read=_read_cifar,
        download=_download_cifar,
    ),
    "svhn": TorchvisionSource(
        name="svhn",
        image_shape=(3, 32, 32),
        num_classes=10,
        layout=f"{', '.join(SVHN_FILES)} in DIR/svhn/ (or DIR/)",
        find=_find_svhn,
        read=_read_svhn,
        download=_download_svhn,
    ),
}
"""The data sets of this module by name (``pyrovae.data.DATASETS`` lists every name,
:func:`pyrovae.data.load_dataset` reads them all)."""


def _download_into(target: Path, source: TorchvisionSource) -> None:
    """Download into a temporary folder inside ``target`` and move each file into place only
    when the whole download succeeded, so that a failed one leaves nothing that would pass
    for the data set's files (or for a corrupt archive) in ``target``."""
    staging = target / f".{source.name}.download"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        source.download(staging)
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            dest = target / path.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
    except Exception as err:  # URLError, HTTPError, OSError, RuntimeError (md5), ...
        raise _download_error(source.name, target, source.layout, err) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_torchvision(name: str, root: Path | None, download: bool) -> tuple[Raw, Path]:
    """The data set ``name`` as read and the absolute root it was found under.

    An explicit ``root`` is the only place looked in; without one, ``$PYROVAE_DATA`` (or the
    default root) and then the cache. When the files are nowhere and ``download`` is on, they
    are downloaded into the first place looked in, or the cache when that is not writable.
    """
    source = TORCHVISION_DATASETS[name]
    if root is not None:
        if not root.exists():
            shown = repr(str(root)) + ("" if root.is_absolute() else f" ({os.path.abspath(root)})")
            raise DataNotFoundError(
                f"data root {shown} does not exist; pass the directory DIR that holds "
                f"{source.layout}, or omit --data-root to use $PYROVAE_DATA or the cache"
            )
        searched = [root]
    else:
        searched = list(dict.fromkeys([default_data_root(), cache_dir() / "data"]))
    for candidate in searched:
        folder = source.find(candidate)
        if folder is not None:
            return source.read(folder), candidate.resolve()
    if not download:
        other = ", or omit --data-root to use $PYROVAE_DATA or the cache" if root else ""
        raise DataNotFoundError(
            f"{name} not found under {', '.join(str(r) for r in searched)} (download=False). "
            f"Put {source.layout} and pass --data-root DIR (or set PYROVAE_DATA=DIR){other}; "
            "when online, the files are downloaded there automatically"
        )
    target = searched[0] if writable_or_creatable(searched[0]) else cache_dir() / "data"
    _download_into(target, source)
    folder = source.find(target)
    if folder is None:
        raise DataNotFoundError(
            f"{name}: files still missing under {target} after the download; put "
            f"{source.layout} by hand and pass --data-root DIR"
        )
    return source.read(folder), target.resolve()
