"""MNIST loading: splits, binarization, read-only roots and the missing-data error."""

from __future__ import annotations

import pytest
import torch

from pyrovae.data import RAW_FILES, DataNotFoundError, binarize, fixed_binarization, load_dataset


def test_splits(mnist):
    assert (len(mnist.train), len(mnist.val), len(mnist.test)) == (50_000, 10_000, 10_000)
    for split in (mnist.train, mnist.val, mnist.test):
        assert split.x.shape[1] == 784 and split.x.dtype == torch.float32
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0
        assert split.y.dtype == torch.long and set(split.y.unique().tolist()) == set(range(10))
    # train and validation come from one set without overlap
    train_keys = {hash(row.numpy().tobytes()) for row in mnist.train.x[:2000]}
    assert not any(hash(row.numpy().tobytes()) in train_keys for row in mnist.val.x[:2000])


def test_split_is_fixed(mnist, mnist_root):
    again = load_dataset("mnist", root=mnist_root, download=False)
    assert torch.equal(again.val.y, mnist.val.y)


def test_binarization(mnist):
    x = mnist.test.x[:100]
    a, b = fixed_binarization(x), fixed_binarization(x)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    dynamic = torch.stack([binarize(x) for _ in range(200)]).mean(0)
    assert (dynamic - x).abs().max() < 0.15


def test_shared_root_is_not_written(mnist_root):
    before = sorted(p.name for p in (mnist_root / "MNIST" / "raw").iterdir())
    load_dataset("mnist", root=mnist_root, download=False)
    assert sorted(p.name for p in (mnist_root / "MNIST" / "raw").iterdir()) == before


def test_missing_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist", root=tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in message
    assert all(f"{name}.gz" in message for name in RAW_FILES)
    assert "--data-root DIR" in message


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; valid names are"):
        load_dataset("cifar")


def test_random_subsets_are_fixed_nested_and_representative(mnist):
    test = mnist.test
    small, large = test.sample_indices(200), test.sample_indices(2000)
    assert torch.equal(large[:200], small)  # the AIS images are among the IS images
    assert torch.equal(test.sample_indices(200), small)  # fixed
    assert len(set(large.tolist())) == 2000 and int(large.max()) < len(test)
    assert not torch.equal(small.sort().values, torch.arange(200))  # not the first 200
    # every digit appears about as often as in the whole split
    counts = torch.bincount(test.sample(2000).y, minlength=10).double() / 2000
    whole = torch.bincount(test.y, minlength=10).double() / len(test)
    assert (counts - whole).abs().max() < 0.03
    assert len(test.sample(50_000)) == len(test)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        test.sample(0)


def test_missing_explicit_root_is_an_error(tmp_path, monkeypatch, mnist_root):
    # the data are available through $PYROVAE_DATA, but an explicit root is not replaced
    monkeypatch.setenv("PYROVAE_DATA", str(mnist_root))
    missing = tmp_path / "no-such-dir"
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", root=missing, download=True)
    message = str(info.value)
    assert message.count("\n") == 0
    assert f"data root '{missing}' does not exist" in message
    assert "MNIST/raw/" in message and "omit --data-root" in message
    assert not missing.exists()
    monkeypatch.chdir(tmp_path)  # a relative root is shown with its absolute path
    with pytest.raises(DataNotFoundError, match=r"data root 'no-such-dir' \(/"):
        load_dataset("mnist", root="no-such-dir")


def test_explicit_root_without_files_does_not_fall_back(tmp_path, monkeypatch, mnist_root):
    monkeypatch.setenv("PYROVAE_DATA", str(mnist_root))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", root=tmp_path, download=False)
    message = str(info.value)
    assert message.count("\n") == 0
    assert str(tmp_path / "MNIST" / "raw") in message and str(mnist_root) not in message
    assert "omit --data-root" in message


def test_dataset_records_its_root(mnist, mnist_root, monkeypatch):
    assert mnist.root == mnist_root.resolve() and mnist.root.is_absolute()
    assert mnist.to("cpu").root == mnist.root
    monkeypatch.setenv("PYROVAE_DATA", str(mnist_root))
    assert load_dataset("mnist", download=False).root == mnist_root.resolve()


def test_download_error_names_file_urls_and_cause(tmp_path, monkeypatch):
    import socket
    import urllib.error
    import urllib.request

    from torchvision.datasets import MNIST

    def offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)  # torchvision's downloader
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", root=root, download=True)
    message = str(info.value)
    assert message.count("\n") == 0
    assert message.startswith("downloading train-images-idx3-ubyte.gz failed: tried ")
    for mirror in MNIST.mirrors:
        assert f"{mirror}train-images-idx3-ubyte.gz" in message
    cause = "URLError: <urlopen error [Errno -3] Temporary failure in name resolution>"
    assert cause in message
    assert f"into {root}/MNIST/raw/" in message and "PYROVAE_DATA" in message
    assert list((root / "MNIST" / "raw").iterdir()) == []  # no partial files left


def test_download_error_without_message_names_the_type(tmp_path, monkeypatch):
    import pyrovae.data

    def fail(url, folder, filename, md5):
        raise RuntimeError()

    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(pyrovae.data, "_fetch", fail)
    with pytest.raises(DataNotFoundError, match=r"\.gz \(RuntimeError\)"):
        load_dataset("fashion-mnist", root=tmp_path, download=True)
