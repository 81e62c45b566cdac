"""The cached MNIST classifier: shapes, training, the cache round trip, input checks."""

from __future__ import annotations

import time

import pytest
import torch

from pyrovae.analysis import classifier as clf_mod
from pyrovae.analysis.classifier import (
    ClassifierConfig,
    MNISTClassifier,
    classifier_path,
    evaluate_accuracy,
    load_classifier,
    train_classifier,
)
from pyrovae.data import Splits


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


def test_cache_round_trip(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    tiny = small_splits(mnist, num_train=1024)
    path = classifier_path("mnist")
    assert path.parent == tmp_path / "classifier"
    first = load_classifier(data=tiny, config=ClassifierConfig(epochs=1))
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))  # the atomic write left no temp file

    def must_not_train(*args, **kwargs):
        raise AssertionError("a cached classifier must not be retrained")

    monkeypatch.setattr(clf_mod, "train_classifier", must_not_train)
    second = load_classifier()
    assert second.metadata == first.metadata
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    with pytest.raises(AssertionError, match="must not be retrained"):
        load_classifier(data=tiny, retrain=True)


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
def test_full_classifier_reaches_98_percent(mnist, tmp_path, monkeypatch):
    """The real recipe: 3 epochs on the 50k training split (about 35 s on 2 idle cores)."""
    monkeypatch.setenv("PYROVAE_CACHE", str(tmp_path))
    start = time.perf_counter()
    net = load_classifier(data=mnist, retrain=True)
    seconds = time.perf_counter() - start
    print(f"classifier: test accuracy {net.metadata['test_accuracy']:.4f} in {seconds:.1f} s")
    assert net.metadata["test_accuracy"] >= 0.98
    assert evaluate_accuracy(net, mnist.test) >= 0.98
    assert classifier_path("mnist").is_file()
