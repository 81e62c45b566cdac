"""MNIST and Fashion-MNIST as whole tensors on the training device, with fixed splits.

Files are read through torchvision. A root holds ``MNIST/raw/`` (or
``FashionMNIST/raw/``) with the four IDX files, gzipped or not. Archives are checked
against their md5 and extracted into the cache (``$PYROVAE_CACHE``): a data root is
never written to.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "DATASETS",
    "RAW_FILES",
    "DataNotFoundError",
    "Split",
    "Splits",
    "binarize",
    "cache_dir",
    "default_data_root",
    "fixed_binarization",
    "load_dataset",
]

DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NUM_TRAIN = 50_000
SPLIT_SEED = 0
BINARIZE_SEED = 1234
SUBSET_SEED = 2024
"""Seed of the fixed random order in which :meth:`Split.sample` picks held-out data."""


class DataNotFoundError(FileNotFoundError):
    """The dataset files are neither on disk nor downloadable."""


def cache_dir() -> Path:
    """``$PYROVAE_CACHE`` or ``~/.cache/pyrovae``: where copies and classifiers are kept."""
    return Path(os.environ.get("PYROVAE_CACHE", Path.home() / ".cache" / "pyrovae"))


def default_data_root() -> Path:
    """``$PYROVAE_DATA`` if set, else ``<cache>/data``."""
    env = os.environ.get("PYROVAE_DATA")
    return Path(env) if env else cache_dir() / "data"


@dataclass
class Split:
    """One split: ``x`` in [0, 1] of shape (N, 784) and integer labels ``y`` of shape (N,)."""

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
    """Train (50,000), validation (10,000, from the official training set) and test (10,000)."""

    train: Split
    val: Split
    test: Split
    name: str
    num_classes: int = 10

    def to(self, device: torch.device | str) -> Splits:
        return Splits(
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.name,
            self.num_classes,
        )


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw pixels x_i ~ Bernoulli(x_i): dynamic binarization (Salakhutdinov & Murray, 2008)."""
    return torch.bernoulli(x, generator=generator)


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


def _not_found(dataset: str, roots: list[Path], reason: str) -> DataNotFoundError:
    folder = DATASETS[dataset]
    where = ", ".join(str(r / folder / "raw") for r in roots)
    files = ", ".join(f"{f}.gz" for f in RAW_FILES)
    return DataNotFoundError(
        f"{dataset} not found: looked in {where} ({reason}). Put the four files {files} "
        f"into DIR/{folder}/raw/ and pass --data-root DIR (or set PYROVAE_DATA=DIR); "
        "when online, the files are downloaded there automatically"
    )


def _read(dataset: str, root: Path | None, download: bool):
    from torchvision import datasets

    cls = getattr(datasets, DATASETS[dataset])
    folder = DATASETS[dataset]
    candidates = [root] if root is not None else [default_data_root()]
    for candidate in candidates + [cache_dir() / "data"]:
        ready = _prepare_raw(candidate, folder, dict(cls.resources))
        if ready is not None:
            return cls(str(ready), train=True, download=False), cls(
                str(ready), train=False, download=False
            )
    if not download:
        raise _not_found(dataset, candidates, "download=False")
    target = candidates[0] if _writable_or_creatable(candidates[0]) else cache_dir() / "data"
    try:
        return cls(str(target), train=True, download=True), cls(
            str(target), train=False, download=True
        )
    except Exception as err:  # torchvision raises RuntimeError/URLError when offline
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _not_found(dataset, candidates, f"download failed: {first_line}") from None


def _writable_or_creatable(path: Path) -> bool:
    while not path.exists():
        path = path.parent
    return os.access(path, os.W_OK)


def load_dataset(
    dataset: str = "mnist",
    root: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> Splits:
    """Load ``dataset`` as whole tensors on ``device``.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        root: a directory holding ``MNIST/raw/`` (default: ``$PYROVAE_DATA`` or the cache).
        device: where the tensors live (the training device).
        download: try to download when the files are absent.

    The 50,000/10,000 train/validation split of the official training set uses a fixed
    permutation (seed 0); the official 10,000 test images are the test split.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid names are {sorted(DATASETS)}")
    root_path = Path(root).expanduser() if root is not None else None
    if root_path is not None and root_path.exists() and not root_path.is_dir():
        raise ValueError(f"data root {str(root_path)!r} is not a directory; pass --data-root DIR")
    train_set, test_set = _read(dataset, root_path, download)

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        x = ds.data.reshape(len(ds.data), -1).to(torch.float32) / 255.0
        return x, ds.targets.clone().long()

    x, y = tensors(train_set)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    train_idx, val_idx = perm[:NUM_TRAIN], perm[NUM_TRAIN:]
    x_test, y_test = tensors(test_set)
    splits = Splits(
        train=Split(x[train_idx], y[train_idx]),
        val=Split(x[val_idx], y[val_idx]),
        test=Split(x_test, y_test),
        name=dataset,
    )
    return splits.to(device)


def fixed_binarization(x: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """One binarization of ``x`` from a fixed seed, so evaluations are comparable."""
    gen = torch.Generator().manual_seed(seed)
    return binarize(x.cpu(), generator=gen).to(x.device)
