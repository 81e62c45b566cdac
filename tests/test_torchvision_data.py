"""KMNIST, EMNIST, CIFAR-10 and SVHN from tiny files written here in each format: shapes,
values, labels, split sizes, EMNIST's orientation, offline-first search and one-line errors.
Nothing is downloaded."""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae import torchvision_data as tvd
from pyrovae.data import DATASETS, DataNotFoundError, load_dataset

N_TRAIN, N_TEST = 50, 20
"""Fake files' sizes: validation is a fifth of a training file this small (10 images)."""


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of uint8 values (magic 0x08, then the number of dimensions)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def fake_grey(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def make_kmnist(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    raw = root / "KMNIST" / "raw"
    raw.mkdir(parents=True)
    out = {}
    for part, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        x, y = fake_grey(rng, n), rng.integers(0, 10, n).astype(np.uint8)
        write_idx(raw / f"{part}-images-idx3-ubyte", x)
        write_idx(raw / f"{part}-labels-idx1-ubyte", y)
        out[part] = (x, y)
    return {"x_test": out["t10k"][0], "y_test": out["t10k"][1]}


def make_emnist(
    root: Path, rng: np.random.Generator, split: str, suffix: str = "", folder: str = ""
) -> dict[str, np.ndarray]:
    """EMNIST's files hold each upright image transposed; returns the upright test images."""
    raw = root / "EMNIST" / "raw" / folder
    raw.mkdir(parents=True, exist_ok=True)
    k = tvd.EMNIST_SPLITS[f"emnist-{split}"]
    low = 1 if split == "letters" else 0
    out = {}
    for part, n in (("train", N_TRAIN), ("test", N_TEST)):
        upright = fake_grey(rng, n)
        y = rng.integers(low, low + k, n).astype(np.uint8)
        stored = upright.transpose(0, 2, 1)  # column by column
        write_idx(raw / f"emnist-{split}-{part}-images-idx3-ubyte{suffix}", stored)
        write_idx(raw / f"emnist-{split}-{part}-labels-idx1-ubyte{suffix}", y)
        out[part] = (upright, y)
    return {"x_test": out["test"][0], "y_test": out["test"][1]}


def write_cifar_batch(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with open(path, "wb") as f:
        pickle.dump({"data": x, "labels": [int(v) for v in y], "batch_label": "fake"}, f)


def make_cifar(root: Path, rng: np.random.Generator, labels_high: int = 10) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per_batch = N_TRAIN // 5
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        write_cifar_batch(folder / f"data_batch_{i}", x, rng.integers(0, labels_high, per_batch))
    x, y = rng.integers(0, 256, size=(N_TEST, 3072), dtype=np.uint8), rng.integers(0, 10, N_TEST)
    write_cifar_batch(folder / "test_batch", x, y)
    return {"x_test": x, "y_test": y}


def make_svhn(root: Path, rng: np.random.Generator, folder: str = "svhn") -> dict:
    import scipy.io

    where = root / folder
    where.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, n in (("train", N_TRAIN), ("test", N_TEST)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)  # X[h, w, c, n]
        y = rng.integers(1, 11, size=(n, 1)).astype(np.uint8)  # 10 is the digit 0
        y[:2, 0] = 10
        scipy.io.savemat(str(where / f"{part}_32x32.mat"), {"X": x, "y": y})
        out[part] = (x, y)
    x, y = out["test"]
    return {"x_test": x.transpose(3, 2, 0, 1), "y_test": np.where(y[:, 0] == 10, 0, y[:, 0])}


MAKERS = {
    "kmnist": make_kmnist,
    "emnist-balanced": lambda root, rng: make_emnist(root, rng, "balanced"),
    "emnist-letters": lambda root, rng: make_emnist(root, rng, "letters"),
    "emnist-digits": lambda root, rng: make_emnist(root, rng, "digits"),
    "cifar10": make_cifar,
    "svhn": make_svhn,
}
SHAPES = {"cifar10": (3, 32, 32), "svhn": (3, 32, 32)}
CLASSES = {"emnist-balanced": 47, "emnist-letters": 26}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PYROVAE_DATA", raising=False)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_every_new_name_has_fake_files():
    assert set(MAKERS) == set(DATASETS) - {"mnist", "fashion-mnist"}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_splits_shapes_kinds_and_values(name, tmp_path):
    root = tmp_path / "data"
    made = MAKERS[name](root, np.random.default_rng(0))
    before = listing(root)
    splits = load_dataset(name, root=root, download=False)
    shape = SHAPES.get(name, (1, 28, 28))
    colour = shape[0] == 3
    assert splits.name == name and splits.image_shape == shape
    assert splits.kind == ("8-bit" if colour else "unit")
    assert splits.num_classes == CLASSES.get(name, 10)
    assert splits.root == root.resolve()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, N_TEST)
    for split in (splits.train, splits.val, splits.test):
        assert split.x.shape[1] == int(np.prod(shape)) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.long
        assert 0 <= int(split.y.min()) and int(split.y.max()) < splits.num_classes
    # the test split is the test file, in order, in C,H,W order: 0..255 (colour) or /255
    expected = torch.from_numpy(made["x_test"].reshape(N_TEST, -1).astype(np.float32))
    torch.testing.assert_close(splits.test.x, expected if colour else expected / 255.0)
    low = 1 if name == "emnist-letters" else 0
    assert torch.equal(splits.test.y, torch.from_numpy(made["y_test"].astype(np.int64)) - low)
    if colour:  # integers kept as they are
        assert torch.equal(splits.train.x, splits.train.x.round()) and splits.train.x.max() > 1
    # train and validation partition the training file, with a fixed permutation
    both = torch.cat([splits.train.x, splits.val.x])
    assert torch.unique(both, dim=0).shape[0] == N_TRAIN
    assert torch.equal(load_dataset(name, root=root, download=False).val.x, splits.val.x)
    assert listing(root) == before  # the data root is not written to


def test_emnist_images_stand_upright_and_letters_start_at_zero(tmp_path):
    raw = tmp_path / "EMNIST" / "raw"
    raw.mkdir(parents=True)
    upright = np.zeros((N_TEST, 28, 28), dtype=np.uint8)
    upright[:, 2, 3:] = 255  # a horizontal bar near the top, from the fourth column on
    for part in ("train", "test"):
        write_idx(raw / f"emnist-letters-{part}-images-idx3-ubyte", upright.transpose(0, 2, 1))
        labels = np.arange(N_TEST) % 26 + 1  # a..z are 1..26 in the files
        write_idx(raw / f"emnist-letters-{part}-labels-idx1-ubyte", labels)
    test = load_dataset("emnist-letters", root=tmp_path, download=False).test
    image = test.x[0].reshape(28, 28)
    assert image[2, 3:].tolist() == [1.0] * 25 and image.sum() == 25  # a row, not a column
    assert torch.equal(test.x.reshape(-1, 28, 28), torch.from_numpy(upright).float() / 255)
    assert test.y.tolist() == (np.arange(N_TEST) % 26).tolist()


def test_svhn_label_ten_is_the_digit_zero_and_pixels_are_c_h_w(tmp_path):
    made = make_svhn(tmp_path, np.random.default_rng(1), folder="")  # files right in ROOT
    test = load_dataset("svhn", root=tmp_path, download=False).test
    assert test.y[:2].tolist() == [0, 0] and int(test.y.max()) <= 9
    c, h, w, i = 2, 7, 30, 5
    assert test.x[i].reshape(3, 32, 32)[c, h, w] == float(made["x_test"][i, c, h, w])


def test_compressed_emnist_is_extracted_into_the_cache(tmp_path):
    root = tmp_path / "data"
    made = make_emnist(root, np.random.default_rng(2), "digits", suffix=".gz", folder="gzip")
    before = listing(root)
    splits = load_dataset("emnist-digits", root=root, download=False)
    torch.testing.assert_close(
        splits.test.x, torch.from_numpy(made["x_test"].reshape(N_TEST, -1)).float() / 255.0
    )
    assert listing(root) == before
    cached = tmp_path / "cache" / "data" / "EMNIST" / "raw"
    assert (cached / "emnist-digits-test-images-idx3-ubyte").is_file()


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_missing_files_are_one_line_naming_them_and_where(name, tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        load_dataset(name, root=tmp_path, download=False)
    message = str(info.value)
    assert message.count("\n") == 0 and str(tmp_path) in message
    assert "--data-root DIR" in message and "omit --data-root" in message
    expected = {
        "kmnist": ["KMNIST/raw", "train-images-idx3-ubyte.gz"],
        "cifar10": ["cifar-10-batches-py", "data_batch_5", "test_batch"],
        "svhn": ["train_32x32.mat", "test_32x32.mat", "svhn/"],
    }.get(name, ["EMNIST/raw/", f"{name}-test-labels-idx1-ubyte"])
    assert all(part in message for part in expected), message
    # without --data-root the cache is looked in too and named
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "cache" / "data")):
        load_dataset(name, download=False)


def test_explicit_root_is_the_only_place_looked_in(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    make_cifar(elsewhere, np.random.default_rng(3))
    monkeypatch.setenv("PYROVAE_DATA", str(elsewhere))
    assert load_dataset("cifar10", download=False).root == elsewhere.resolve()
    with pytest.raises(DataNotFoundError, match="does not exist; pass the directory DIR"):
        load_dataset("cifar10", root=tmp_path / "missing", download=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="cifar10 not found under"):
        load_dataset("cifar10", root=tmp_path / "empty", download=False)


def test_malformed_files_are_named(tmp_path):
    make_cifar(tmp_path / "a", np.random.default_rng(4), labels_high=12)
    with pytest.raises(DataNotFoundError, match=r"data_batch_\d is not a valid file \(labels"):
        load_dataset("cifar10", root=tmp_path / "a", download=False)
    folder = tmp_path / "b" / "svhn"
    folder.mkdir(parents=True)
    for f in tvd.SVHN_FILES:
        (folder / f).write_bytes(b"not a mat file")
    with pytest.raises(DataNotFoundError, match=r"train_32x32.mat is not a valid file \(not an"):
        load_dataset("svhn", root=tmp_path / "b", download=False)


def _md5(path: Path) -> str:
    import hashlib

    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_archive_is_checked_by_md5_and_extracted_into_the_cache(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    source = tmp_path / "src"
    made = make_cifar(source, np.random.default_rng(5))
    root = tmp_path / "data"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(DataNotFoundError, match="cifar-10-python.tar.gz is corrupt"):
        load_dataset("cifar10", root=root, download=False)  # not the original's md5
    monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(archive))
    test = load_dataset("cifar10", root=root, download=False).test
    assert torch.equal(test.x, torch.from_numpy(made["x_test"]).float())
    assert listing(root) == ["cifar-10-python.tar.gz"]
    assert (tmp_path / "cache" / "data" / "cifar-10-batches-py" / "test_batch").is_file()


def test_emnist_archive_is_checked_by_md5_and_extracted_into_the_cache(tmp_path, monkeypatch):
    import zipfile

    from torchvision.datasets import EMNIST

    made = make_emnist(tmp_path / "src", np.random.default_rng(8), "balanced", suffix=".gz")
    root = tmp_path / "data"
    (root / "EMNIST" / "raw").mkdir(parents=True)
    archive = root / "EMNIST" / "raw" / "gzip.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # torchvision's archive: gzip/<file>.gz
        for f in sorted((tmp_path / "src" / "EMNIST" / "raw").iterdir()):
            zf.write(f, arcname=f"gzip/{f.name}")
    with pytest.raises(DataNotFoundError, match="gzip.zip is corrupt"):
        load_dataset("emnist-balanced", root=root, download=False)
    monkeypatch.setattr(EMNIST, "md5", _md5(archive))
    before = listing(root)
    test = load_dataset("emnist-balanced", root=root, download=False).test
    expected = torch.from_numpy(made["x_test"].reshape(N_TEST, -1)).float() / 255.0
    assert torch.equal(test.x, expected) and listing(root) == before


def _fake_download(made: dict):
    def download(target: Path) -> None:
        made["target"] = target
        make_cifar(target, np.random.default_rng(6))

    return download


def test_download_goes_to_the_root_or_else_the_cache(tmp_path, monkeypatch):
    made: dict = {}
    source = replace(tvd.TORCHVISION_DATASETS["cifar10"], download=_fake_download(made))
    monkeypatch.setitem(tvd.TORCHVISION_DATASETS, "cifar10", source)
    root = tmp_path / "data"
    root.mkdir()
    assert load_dataset("cifar10", root=root).root == root.resolve()
    assert made["target"].parent == root  # a staging folder, moved into place and removed
    assert listing(root)[0] == "cifar-10-batches-py" and len(listing(root)) == 7
    monkeypatch.setattr(tvd, "writable_or_creatable", lambda path: False)
    other = tmp_path / "read-only"
    other.mkdir()
    splits = load_dataset("cifar10", root=other)
    assert made["target"].parent == tmp_path / "cache" / "data" and listing(other) == []
    assert splits.root == (tmp_path / "cache" / "data").resolve()


def test_a_failed_download_is_one_line_with_its_cause(tmp_path, monkeypatch):
    import urllib.error

    def offline(target: Path) -> None:
        (target / "svhn").mkdir()
        (target / "svhn" / "train_32x32.mat").write_bytes(b"the first bytes")  # cut short
        raise urllib.error.URLError("Temporary failure in name resolution")

    source = replace(tvd.TORCHVISION_DATASETS["svhn"], download=offline)
    monkeypatch.setitem(tvd.TORCHVISION_DATASETS, "svhn", source)
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("svhn", root=tmp_path, download=True)
    message = str(info.value)
    assert message.count("\n") == 0
    assert "downloading svhn into" in message and "URLError" in message
    assert "name resolution" in message and "train_32x32.mat" in message
    assert [p for p in listing(tmp_path) if not p.startswith("cache")] == []  # nothing left


@pytest.mark.parametrize(
    ("name", "model", "x_dim", "y_dim"),
    [("cifar10", "vae", 3072, 10), ("emnist-letters", "cvae", 784, 26)],
)
def test_train_on_fake_files(name, model, x_dim, y_dim, tmp_path):
    from pyrovae.cli import main
    from pyrovae.models import LIKELIHOODS
    from pyrovae.runs import read_config, read_metrics

    MAKERS[name](tmp_path / "data", np.random.default_rng(7))
    if name == "cifar10":
        likelihood = "discretized-logistic" if "discretized-logistic" in LIKELIHOODS else "gaussian"
    else:
        likelihood = "bernoulli"
    out = tmp_path / "run"
    argv = ["train", "--dataset", name, "--data-root", str(tmp_path / "data"), "--model", model]
    argv += ["--epochs", "1", "--subset", "32", "--batch-size", "16", "--z-dim", "2"]
    argv += ["--hidden-dims", "16", "--likelihood", likelihood, "--device", "cpu"]
    assert main([*argv, "--quiet", "--out", str(out)]) == 0
    config = read_config(out)
    assert config.train.dataset == name and config.model.x_dim == x_dim
    assert config.model.y_dim == y_dim  # the data set's classes reach a CVAE
    assert list(config.model.image_shape) == list(SHAPES.get(name, (1, 28, 28)))
    metrics = read_metrics(out)
    assert len(metrics) == 1 and np.isfinite(metrics[0]["val_elbo"])
