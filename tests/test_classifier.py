"""The MNIST classifier: the shipped weights (no training, checksum, accuracy, in the wheel),
shapes, training (announced first), the cache round trip, input checks."""

from __future__ import annotations

import fnmatch
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from pyrovae.analysis.quality import classifier as clf_mod
from pyrovae.analysis.quality.classifier import (
    SHIPPED_PATH,
    SHIPPED_SHA256,
    ClassifierConfig,
    MNISTClassifier,
    classifier_path,
    estimate_training_seconds,
    evaluate_accuracy,
    file_sha256,
    load_classifier,
    load_shipped_classifier,
    train_classifier,
    weights_sha256,
)
from pyrovae.checkpoint import CheckpointError
from pyrovae.data import Splits

try:
    import tomllib
except ImportError:  # Python 3.10: tomli comes with the dev extra's `build`
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


def small_splits(mnist, num_train: int = 8000) -> Splits:
    """A quick subset: enough for ~95% accuracy in two epochs, a few seconds on 2 cores."""
    return Splits(
        mnist.train.subset(num_train),
        mnist.val.subset(1000),
        mnist.test.subset(2000),
        mnist.name,
    )


QUICK = ClassifierConfig(epochs=2, lr=3e-3, batch_size=64)


@pytest.fixture(scope="module")
def quick_classifier(mnist, tmp_path_factory) -> MNISTClassifier:
    """Trained once per session: test_quality.py loads the same file from this cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYROVAE_CACHE", str(tmp_path_factory.getbasetemp() / "quick-classifier"))
        return load_classifier(data=small_splits(mnist), config=QUICK)


def test_untrained_shapes():
    net = MNISTClassifier()
    x = torch.rand(7, 784)
    assert net(x).shape == (7, 10)
    probs = net.probs(x, batch_size=3)
    assert probs.shape == (7, 10)
    assert torch.allclose(probs.sum(-1), torch.ones(7), atol=1e-5)
    assert net.features(x).shape == (7, MNISTClassifier.feature_dim)
    assert net.predict(x).shape == (7,)
    assert not net.probs(x).requires_grad
    assert net.metadata == {}
    assert net.probs(torch.rand(0, 784)).shape == (0, 10)
    assert net.features(torch.rand(0, 784)).shape == (0, MNISTClassifier.feature_dim)


def test_gradients_reach_every_parameter():
    net = MNISTClassifier()
    loss = torch.nn.functional.cross_entropy(net(torch.rand(4, 784)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_probs_and_features_keep_training_mode():
    net = MNISTClassifier().train()
    net.probs(torch.rand(2, 784))
    assert net.training


@pytest.mark.parametrize("bad", [torch.rand(3, 28, 28), torch.rand(3, 100), torch.rand(784)])
def test_bad_input_shape(bad):
    with pytest.raises(ValueError, match=r"x must be a tensor of images of shape \(N, 784\)"):
        MNISTClassifier().probs(bad)


def test_quick_training_learns(quick_classifier, mnist):
    meta = quick_classifier.metadata
    for key in ("test_accuracy", "val_accuracy", "train_seconds", "epochs", "version", "dataset"):
        assert key in meta
    assert meta["dataset"] == "mnist"
    assert meta["num_train"] == 8000
    assert len(meta["val_accuracy"]) == 2
    assert meta["test_accuracy"] > 0.93
    assert not quick_classifier.training
    acc = evaluate_accuracy(quick_classifier, mnist.test.subset(2000))
    assert acc == pytest.approx(meta["test_accuracy"])


def test_training_is_seeded_and_leaves_global_rng(mnist):
    tiny = small_splits(mnist, num_train=512)
    state = torch.get_rng_state()
    a = train_classifier(tiny, ClassifierConfig(epochs=1, seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    b = train_classifier(tiny, ClassifierConfig(epochs=1, seed=3))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def must_not_train(*args, **kwargs):
    raise AssertionError("the classifier must not be trained here")


def test_shipped_classifier_loads_without_training(mnist, tmp_path, monkeypatch):
    """The default MNIST recipe is the file in the package: nothing trains, nothing cached."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    monkeypatch.setattr(clf_mod, "train_classifier", must_not_train)
    net = load_classifier()
    again = load_classifier(data=mnist, config=ClassifierConfig())
    assert not list(tmp_path.rglob("*"))
    meta = net.metadata
    assert meta["dataset"] == "mnist" and meta["version"] == clf_mod.VERSION
    assert meta["recipe"] == asdict(ClassifierConfig()) and meta["seed"] == 0
    assert meta["num_train"] == len(mnist.train)
    assert meta["train_seconds"] > 0
    assert weights_sha256(net) == meta["weights_sha256"] == weights_sha256(again)
    assert not net.training
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_shipped_classifier_is_accurate(mnist):
    """On real MNIST test images (not seen in training): at least 97% of the first 1,000, and
    the whole test split as stated in its metadata."""
    net = load_shipped_classifier()
    assert evaluate_accuracy(net, mnist.test.subset(1000)) >= 0.97
    full = evaluate_accuracy(net, mnist.test)
    assert full >= 0.98
    assert full == pytest.approx(net.metadata["test_accuracy"], abs=2e-4)  # 2 images of 10k


def test_shipped_checksum_is_verified(tmp_path, monkeypatch):
    assert file_sha256(SHIPPED_PATH) == SHIPPED_SHA256
    copy = tmp_path / SHIPPED_PATH.name
    shutil.copyfile(SHIPPED_PATH, copy)
    with open(copy, "r+b") as f:  # one byte of the weights changed: still a loadable file
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(clf_mod, "SHIPPED_PATH", copy)
    monkeypatch.setattr(clf_mod, "train_classifier", must_not_train)
    with pytest.raises(CheckpointError) as err:
        load_classifier()
    message = str(err.value)
    assert "\n" not in message
    assert re.match(rf"{re.escape(str(copy))} has sha256 [0-9a-f]{{12}}\.\.\., not the ", message)
    assert "reinstall pyrovae" in message and "--no-quality" in message
    copy.unlink()
    with pytest.raises(FileNotFoundError, match=rf"shipped classifier {re.escape(str(copy))} is"):
        load_classifier()


def test_wheel_ships_the_weights():
    """pyproject.toml puts the shipped file into the wheel as package data: the package whose
    folder holds it is packaged, and its data patterns match the file."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    owners = [
        name
        for name, folder in setuptools["package-dir"].items()
        if (REPO / folder).resolve() == SHIPPED_PATH.parent
    ]
    assert len(owners) == 1, owners
    assert owners[0] in setuptools["packages"]
    patterns = setuptools["package-data"][owners[0]]
    assert any(fnmatch.fnmatch(SHIPPED_PATH.name, pattern) for pattern in patterns), patterns


def test_training_is_announced_before_it_starts(mnist, tmp_path, monkeypatch, capfd):
    """One line on stderr first (what, where, how long, how to skip), then the progress."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    tiny = small_splits(mnist, num_train=300)
    config = ClassifierConfig(epochs=2, batch_size=100)
    seen_before: list[str] = []

    def recording(*args, **kwargs):
        seen_before.append(capfd.readouterr().err)
        return train_classifier(*args, **kwargs)

    monkeypatch.setattr(clf_mod, "train_classifier", recording)
    capfd.readouterr()
    net = load_classifier(data=tiny, config=config, progress=True)
    after = capfd.readouterr().err
    path = classifier_path("mnist", "-epochs2-batch_size100")
    assert path.is_file()
    [notice] = seen_before
    assert notice.count("\n") == 1, notice
    assert notice.startswith("training the mnist classifier for sample-quality scores")
    assert "2 epochs over 300 images, about " in notice
    assert f"cached at {path}" in notice and "--no-quality" in notice
    assert re.search(r"about [\d.]+ (s|min|h) on cpu \(\d+ ms a batch of 100\)", notice), notice
    assert "mnist classifier" in after  # the progress of the 6 batches
    assert f"test accuracy {net.metadata['test_accuracy']:.4f}, cached at {path}" in after
    load_classifier(config=config)  # cached now: no second notice
    assert seen_before == [notice] and capfd.readouterr().err == ""


def test_estimate_counts_every_batch(mnist):
    tiny = small_splits(mnist, num_train=300)
    config = ClassifierConfig(epochs=3, batch_size=64)
    seconds, per_batch = estimate_training_seconds(tiny, config, subset=200, num_steps=1)
    steps = 3 * 4  # ceil(200 / 64) batches an epoch
    scored = 3 * len(tiny.val) + len(tiny.test)
    assert per_batch > 0
    assert seconds == pytest.approx(per_batch * (steps + scored / 64 / 3))


def test_cache_round_trip(mnist, tmp_path, monkeypatch):
    """Another recipe is trained once and cached under a name of its own."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    tiny = small_splits(mnist, num_train=1024)
    config = ClassifierConfig(epochs=1)
    path = classifier_path("mnist", "-epochs1")
    assert path.parent == tmp_path / "classifier"
    first = load_classifier(data=tiny, config=config)
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left no temp file
    assert not classifier_path("mnist").exists()

    monkeypatch.setattr(clf_mod, "train_classifier", must_not_train)
    second = load_classifier(config=config)
    assert second.metadata == first.metadata
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert load_classifier().metadata == load_shipped_classifier().metadata  # not this one
    with pytest.raises(AssertionError, match="must not be trained"):
        load_classifier(data=tiny, retrain=True)
    with pytest.raises(AssertionError, match="must not be trained"):
        load_classifier(data=tiny, config=ClassifierConfig(epochs=1, seed=1))
    with pytest.raises(AssertionError, match="must not be trained"):
        load_classifier(data=tiny, config=config, subset=512)


def test_load_rejects_mismatched_dataset(mnist):
    with pytest.raises(ValueError, match="dataset='fashion-mnist'.*pass dataset='mnist'"):
        load_classifier(data=small_splits(mnist, 16), dataset="fashion-mnist")


def test_config_and_data_checks(mnist):
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        ClassifierConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        ClassifierConfig(lr=-1.0)
    with pytest.raises(ValueError, match="data must be pyrovae.data.Splits"):
        train_classifier(mnist.train)
    with pytest.raises(ValueError, match="subset must be a positive integer"):
        train_classifier(mnist, subset=0)


@pytest.mark.slow
def test_full_recipe_rebuilds_the_shipped_classifier(mnist, tmp_path, monkeypatch):
    """The real recipe as benchmarks/train_classifier.py runs it (3 epochs on the 50k
    training split, one thread: 87 s on a busy 2-core machine): the shipped weights bit for
    bit on the CPU and torch that made them, else their test accuracy within 0.3%."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        net = load_classifier(data=mnist, retrain=True)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    print(f"classifier: test accuracy {net.metadata['test_accuracy']:.4f} in {seconds:.1f} s")
    assert net.metadata["test_accuracy"] >= 0.98
    assert classifier_path("mnist").is_file()
    shipped = load_shipped_classifier()
    meta = shipped.metadata
    stored = MNISTClassifier()
    dtype = getattr(torch, meta["weights_dtype"])
    stored.load_state_dict({k: v.to(dtype) for k, v in net.state_dict().items()})
    assert evaluate_accuracy(stored, mnist.test) == pytest.approx(meta["test_accuracy"], abs=3e-3)
    same_machine = (str(torch.__version__), torch.backends.cpu.get_cpu_capability()) == (
        meta["torch_version"],
        meta["cpu_capability"],
    )
    if same_machine:
        assert weights_sha256(stored) == meta["weights_sha256"]
