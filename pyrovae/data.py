"""torchvision's image data sets as whole tensors on the training device, with fixed splits.

MNIST, Fashion-MNIST and KMNIST are read through torchvision: a root holds ``MNIST/raw/``
(or ``FashionMNIST/raw/``, ``KMNIST/raw/``) with the four IDX files, gzipped or not.
EMNIST, CIFAR-10 and SVHN are read from torchvision's layouts by
:mod:`pyrovae.torchvision_data`. Archives are checked against their md5 and extracted into
the cache (``$PYROVAE_CACHE``): a data root is never written to.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from pyrovae.data_paths import DataNotFoundError, cache_dir, default_data_root
from pyrovae.data_paths import cause as _cause
from pyrovae.data_paths import writable_or_creatable as _writable_or_creatable

__all__ = [
    "DATASETS",
    "RAW_FILES",
    "DataNotFoundError",
    "Split",
    "Splits",
    "binarize",
    "binarize_with",
    "cache_dir",
    "default_data_root",
    "fixed_binarization",
    "load_dataset",
]

IDX_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
"""Data sets in MNIST's layout: name -> torchvision class (and folder) name."""
DATASETS = {
    **IDX_DATASETS,
    "emnist-balanced": "EMNIST",
    "emnist-letters": "EMNIST",
    "emnist-digits": "EMNIST",
    "cifar10": "cifar-10-batches-py",
    "svhn": "svhn",
}
"""Every data set :func:`load_dataset` reads: name -> the folder its files are kept in."""
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NUM_VAL = 10_000
"""Validation images taken from the official training set (a fifth of it when smaller)."""
SPLIT_SEED = 0
BINARIZE_SEED = 1234
SUBSET_SEED = 2024
"""Seed of the fixed random order in which :meth:`Split.sample` picks held-out data."""


@dataclass
class Split:
    """One split: float32 rows ``x`` of shape (N, D) (images flattened in C,H,W order) and
    integer labels ``y`` of shape (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))

    def subset(self, n: int) -> Split:
        """The first ``n`` data."""
        return Split(self.x[:n], self.y[:n])

    def sample_indices(self, n: int, seed: int = SUBSET_SEED) -> torch.Tensor:
        """Indices of a fixed random subset of ``n`` data (all of them for n >= len).

        The first ``n`` of one seeded permutation, so a smaller subset lies inside a
        larger one (the images given to AIS are among those given to importance sampling).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return order[: min(n, len(self))].to(self.x.device)

    def sample(self, n: int, seed: int = SUBSET_SEED) -> Split:
        """A fixed random subset of ``n`` data (see :meth:`sample_indices`), not the first n,
        which are not representative of a whole MNIST split."""
        idx = self.sample_indices(n, seed)
        return Split(self.x[idx], self.y[idx])


@dataclass
class Splits:
    """Train, validation (a fixed-seed part of the official training set) and test splits:
    50,000 / 10,000 / 10,000 for MNIST (every data set's sizes: :func:`load_dataset`)."""

    train: Split
    val: Split
    test: Split
    name: str
    num_classes: int = 10
    root: Path | None = None
    """The absolute data root the files were found under (e.g. the directory holding
    ``MNIST/raw/``), to record in a run's config; None for splits built by hand."""
    image_shape: tuple[int, int, int] | None = None
    """(C, H, W) of image rows (flattened in that order), None for vectors."""
    kind: str | None = None
    """``"binary"``, ``"unit"`` (in [0, 1]), ``"8-bit"`` (integers 0..255) or ``"real"``;
    None when not known (splits built by hand)."""

    def to(self, device: torch.device | str) -> Splits:
        return replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw pixels x_i ~ Bernoulli(x_i): dynamic binarization (Salakhutdinov & Murray, 2008)."""
    return torch.bernoulli(x, generator=generator)


def binarize_with(x: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Bernoulli(x_i) pixels from given uniforms u_i ~ U(0, 1): 1 where u_i < x_i. The same
    law as :func:`binarize`, with the random numbers in the caller's hands (training draws
    them for a whole batch, so that a datum's pixels do not depend on who computes it)."""
    return (uniforms < x).to(x.dtype)


def _has_raw(folder: Path) -> bool:
    return all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in RAW_FILES)


def _prepare_raw(root: Path, folder_name: str, md5s: dict[str, str]) -> Path | None:
    """Return a root whose ``<folder_name>/raw`` holds the extracted files, or None.

    A root that already holds extracted files is used as it is. Archives are checked
    against their md5 and extracted into the cache, never next to the user's files.
    """
    from torchvision.datasets.utils import check_integrity

    raw = root / folder_name / "raw"
    if not _has_raw(raw):
        return None
    if all((raw / f).exists() for f in RAW_FILES):
        return root
    target_root = cache_dir() / "data"
    target = target_root / folder_name / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for f in RAW_FILES:
        if (target / f).exists():
            continue
        src = raw / f if (raw / f).exists() else raw / f"{f}.gz"
        if src.suffix == ".gz" and not check_integrity(str(src), md5s.get(src.name)):
            raise DataNotFoundError(
                f"{src} is corrupt (md5 mismatch); replace it with the original file"
            )
        tmp = target / f".{f}.tmp"
        opener = gzip.open if src.suffix == ".gz" else open
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, target / f)
    return target_root


def _not_found(
    dataset: str, roots: list[Path], reason: str, explicit: bool = False
) -> DataNotFoundError:
    folder = DATASETS[dataset]
    where = ", ".join(str(r / folder / "raw") for r in roots)
    files = ", ".join(f"{f}.gz" for f in RAW_FILES)
    other = ", or omit --data-root to use $PYROVAE_DATA or the cache" if explicit else ""
    return DataNotFoundError(
        f"{dataset} not found: looked in {where} ({reason}). Put the four files {files} "
        f"into DIR/{folder}/raw/ and pass --data-root DIR (or set PYROVAE_DATA=DIR){other}; "
        "when online, the files are downloaded there automatically"
    )


def _missing_root(dataset: str, root: Path) -> DataNotFoundError:
    shown = repr(str(root))
    if not root.is_absolute():
        shown += f" ({os.path.abspath(root)})"
    return DataNotFoundError(
        f"data root {shown} does not exist; pass the directory that holds "
        f"{DATASETS[dataset]}/raw/, or omit --data-root to use $PYROVAE_DATA or the cache"
    )


def _fetch(url: str, folder: Path, filename: str, md5: str | None) -> None:
    """Download ``url`` to ``folder / filename``, checked against ``md5``."""
    from torchvision.datasets.utils import download_url

    download_url(url, str(folder), filename=filename, md5=md5)


def _download(dataset: str, root: Path, cls: Any) -> None:
    """Download the dataset's archives into ``root/<Folder>/raw/``, trying every mirror.

    Each file goes to a temporary name first, so a failed download leaves nothing that
    would pass for the file. Raises :class:`DataNotFoundError` naming the file, the URLs
    tried and why each failed.
    """
    folder = DATASETS[dataset]
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for filename, md5 in cls.resources:
        if (raw / filename).exists():
            continue
        tried = []
        for mirror in cls.mirrors:
            url = f"{mirror}{filename}"
            part = f".{filename}.part"
            try:
                _fetch(url, raw, part, md5)
            except Exception as err:  # URLError, HTTPError, OSError, RuntimeError (md5), ...
                (raw / part).unlink(missing_ok=True)
                tried.append(f"{url} ({_cause(err)})")
                continue
            os.replace(raw / part, raw / filename)
            break
        else:
            files = ", ".join(f"{f}.gz" for f in RAW_FILES)
            raise DataNotFoundError(
                f"downloading {filename} failed: tried {'; '.join(tried)}. Put the four files "
                f"{files} into {root}/{folder}/raw/ by hand, or set PYROVAE_DATA=DIR to a "
                f"directory holding {folder}/raw/"
            )


def _read(dataset: str, root: Path | None, download: bool) -> tuple[Any, Any, Path]:
    """The train and test sets and the root whose raw files they were read from.

    An explicit ``root`` is the only place looked in; without one, ``$PYROVAE_DATA`` (or
    the default root) and then the cache.
    """
    from torchvision import datasets

    cls = getattr(datasets, DATASETS[dataset])
    folder = DATASETS[dataset]
    if root is not None:
        if not root.exists():
            raise _missing_root(dataset, root)
        candidates = [root]
        searched = [root]
    else:
        candidates = [default_data_root()]
        searched = list(dict.fromkeys([default_data_root(), cache_dir() / "data"]))
    for candidate in searched:
        ready = _prepare_raw(candidate, folder, dict(cls.resources))
        if ready is not None:
            return _open(cls, ready) + (candidate.resolve(),)
    if not download:
        raise _not_found(dataset, candidates, "download=False", explicit=root is not None)
    target = candidates[0] if _writable_or_creatable(candidates[0]) else cache_dir() / "data"
    _download(dataset, target, cls)
    ready = _prepare_raw(target, folder, dict(cls.resources))
    if ready is None:
        raise _not_found(dataset, [target], "incomplete after download", root is not None)
    return _open(cls, ready) + (target.resolve(),)


def _open(cls: Any, root: Path) -> tuple[Any, Any]:
    return cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)


def load_dataset(
    dataset: str = "mnist",
    root: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> Splits:
    """Load ``dataset`` as whole tensors on ``device``.

    Args:
        dataset: a name of :data:`DATASETS`: ``"mnist"``, ``"fashion-mnist"``, ``"kmnist"``
            (grey, 28 x 28, 10 classes); ``"emnist-balanced"`` (47 classes),
            ``"emnist-letters"`` (26, labels 0..25 for a..z: the files' 1..26 minus one),
            ``"emnist-digits"`` (10), grey 28 x 28 and turned upright; ``"cifar10"`` and
            ``"svhn"`` (colour, 3 x 32 x 32, 10 classes; SVHN's digit 0 is label 0).
        root: a directory holding the files in torchvision's layout, e.g. ``MNIST/raw/``
            (see :mod:`pyrovae.torchvision_data`; default: ``$PYROVAE_DATA`` or the cache).
            Given explicitly, it is the only place looked in: a root that does not exist,
            or that lacks the files while ``download`` is off, raises
            :class:`DataNotFoundError`.
        device: where the tensors live (the training device).
        download: try to download when the files are absent.

    The returned :class:`Splits` record in ``root`` the absolute directory the files were
    read from.

    Grey data sets are scaled to [0, 1] (``kind="unit"``); colour ones keep their integer
    values 0..255 as float32 (``kind="8-bit"``), for a discretized likelihood. Rows are
    images flattened in C,H,W order (``image_shape``).

    Validation is a fixed permutation's (seed 0) last 10,000 images of the official training
    set (a fifth of a training file under 50,000 images); the official test set is the
    test split. Train / validation / test: MNIST, Fashion-MNIST and KMNIST 50,000 / 10,000 /
    10,000; EMNIST-balanced 102,800 / 10,000 / 18,800; EMNIST-letters 114,800 / 10,000 /
    20,800; EMNIST-digits 230,000 / 10,000 / 40,000; CIFAR-10 40,000 / 10,000 / 10,000;
    SVHN 63,257 / 10,000 / 26,032 (its "extra" images are not used).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names are {sorted(DATASETS)}")
    root_path = Path(root).expanduser() if root is not None else None
    if root_path is not None and root_path.exists() and not root_path.is_dir():
        raise ValueError(f"data root {str(root_path)!r} is not a directory; pass --data-root DIR")
    if dataset in IDX_DATASETS:
        train_set, test_set, source_root = _read(dataset, root_path, download)
        x, y = train_set.data, train_set.targets.clone().long()
        x_test, y_test = test_set.data, test_set.targets.clone().long()
        image_shape, num_classes = (1, 28, 28), 10
    else:
        from pyrovae.torchvision_data import TORCHVISION_DATASETS, read_torchvision

        raw, source_root = read_torchvision(dataset, root_path, download)
        x, y = torch.from_numpy(raw.x_train), torch.from_numpy(raw.y_train)
        x_test, y_test = torch.from_numpy(raw.x_test), torch.from_numpy(raw.y_test)
        image_shape = TORCHVISION_DATASETS[dataset].image_shape
        num_classes = TORCHVISION_DATASETS[dataset].num_classes
    grey = image_shape[0] == 1

    def values(images: torch.Tensor) -> torch.Tensor:
        """uint8 images as float32 rows: grey in [0, 1], colour kept 0..255."""
        x = images.reshape(len(images), -1).to(torch.float32)
        return x.div_(255.0) if grey else x

    num_val = min(NUM_VAL, len(x) // 5)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train_idx, val_idx = perm[: len(x) - num_val], perm[len(x) - num_val :]
    splits = Splits(  # rows picked as uint8, then converted: a quarter of the copying
        train=Split(values(x[train_idx]), y[train_idx]),
        val=Split(values(x[val_idx]), y[val_idx]),
        test=Split(values(x_test), y_test),
        name=dataset,
        num_classes=num_classes,
        root=source_root,
        image_shape=image_shape,
        kind="unit" if grey else "8-bit",
    )
    return splits.to(device)


def fixed_binarization(x: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """One binarization of ``x`` from a fixed seed, so evaluations are comparable."""
    gen = torch.Generator().manual_seed(seed)
    return binarize(x.cpu(), generator=gen).to(x.device)
