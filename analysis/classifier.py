"""A small CNN MNIST classifier, trained once and cached, used to score generated digits.

The classifier reads images of shape (N, 784) with pixels in [0, 1]. Its class
probabilities measure how legible samples are (:mod:`pyrovae.analysis.quality`), and its
penultimate layer gives the features of a Frechet distance (the FID recipe with an MNIST
network instead of Inception: GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium (Heusel et al., 2017), https://arxiv.org/abs/1706.08500).

Weights live in ``cache_dir()/"classifier"/"<dataset>-cnn-v<VERSION>.pt"`` together with
their metadata (test accuracy, training time, seed); they are written atomically and read
back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.checkpoint import load_checkpoint, save_checkpoint
from pyrovae.data import Split, Splits, cache_dir, load_dataset
from pyrovae.nets import check_positive_int

__all__ = [
    "ClassifierConfig",
    "MNISTClassifier",
    "classifier_path",
    "evaluate_accuracy",
    "load_classifier",
    "train_classifier",
]

#: Bump when the architecture or the training recipe changes: old cache files are ignored.
VERSION = 1
IMAGE_SIDE = 28


@dataclass(frozen=True)
class ClassifierConfig:
    """Training recipe of the cached classifier.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per Adam step.
        lr: Adam learning rate (decayed by a cosine schedule to 5% over training).
        seed: seeds the initialization and the shuffling (the global RNG is left alone).
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        lr = self.lr
        if (
            isinstance(lr, bool)
            or not isinstance(lr, float | int)
            or not (math.isfinite(lr) and lr > 0)
        ):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")


class MNISTClassifier(nn.Module):
    """Two 3x3 conv layers (16 and 32 channels, each followed by 2x2 max-pooling), then an
    MLP 1568 -> 128 -> 10.

    ``forward(x)`` returns logits (with gradients, for training); :meth:`probs` and
    :meth:`features` are batched, gradient-free evaluations for scoring.

    Attributes:
        metadata: what the cache stores next to the weights (``test_accuracy``,
            ``val_accuracy``, ``train_seconds``, ``epochs``, ``dataset``, ``version``, ...);
            empty for an untrained network.
    """

    num_classes = 10
    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, self.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.metadata: dict[str, Any] = {}

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != IMAGE_SIDE**2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a tensor of images of shape (N, {IMAGE_SIDE**2}) in [0, 1], got "
                f"{shape}; flatten images with x.reshape(len(x), -1)"
            )
        return x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of shape (N, 10) for images ``x`` of shape (N, 784)."""
        return self.head(self.conv(self._check(x)))

    @torch.no_grad()
    def _batched(self, x: torch.Tensor, fn: Any, batch_size: int, out_dim: int) -> torch.Tensor:
        self._check(x)
        check_positive_int("batch_size", batch_size)
        was_training = self.training
        self.eval()
        try:
            out = [fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        finally:
            self.train(was_training)
        if not out:
            param = next(self.parameters())
            return torch.empty(0, out_dim, device=param.device, dtype=param.dtype)
        return torch.cat(out)

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self(x), dim=-1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self._check(x))

    def probs(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Class probabilities p(class | x), shape (N, 10), rows summing to one."""
        return self._batched(x, self._probs, batch_size, self.num_classes)

    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate-layer activations (after ReLU), shape (N, 128): the Frechet features."""
        return self._batched(x, self._features, batch_size, self.feature_dim)

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Most probable class of each image, shape (N,)."""
        return self.probs(x, batch_size).argmax(dim=-1)


def evaluate_accuracy(classifier: MNISTClassifier, split: Split, batch_size: int = 1000) -> float:
    """Fraction of ``split.x`` whose predicted class equals ``split.y``."""
    if len(split) == 0:
        raise ValueError("split is empty; pass a split holding at least one image")
    pred = classifier.predict(split.x, batch_size)
    return (pred == split.y.to(pred.device)).double().mean().item()


def train_classifier(
    data: Splits,
    config: ClassifierConfig | None = None,
    device: torch.device | str = "cpu",
    subset: int | None = None,
    progress: bool = False,
) -> MNISTClassifier:
    """Train a fresh :class:`MNISTClassifier` on ``data.train`` (nothing is cached).

    Adam with a cosine learning-rate decay; the validation split is scored after each
    epoch and the test split at the end. ``subset`` keeps only the first ``subset``
    training images (for quick checks). The returned network is in eval mode and
    carries its scores in ``metadata``.
    """
    config = config or ClassifierConfig()
    if not isinstance(data, Splits):
        raise ValueError(
            f"data must be pyrovae.data.Splits, got {type(data).__name__}; "
            "load it with pyrovae.load_dataset('mnist')"
        )
    if data.num_classes != MNISTClassifier.num_classes:
        raise ValueError(
            f"the classifier has {MNISTClassifier.num_classes} classes but data.num_classes is "
            f"{data.num_classes}; pass MNIST or Fashion-MNIST splits"
        )
    train_split = (
        data.train if subset is None else data.train.subset(check_positive_int("subset", subset))
    )
    device = torch.device(device)
    x = train_split.x.to(device)
    y = train_split.y.to(device)
    n = x.shape[0]
    steps = config.epochs * math.ceil(n / config.batch_size)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = MNISTClassifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.05 * config.lr)
    val_acc: list[float] = []
    start = time.perf_counter()
    for epoch in range(config.epochs):
        net.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for i in range(0, n, config.batch_size):
            idx = perm[i : i + config.batch_size]
            loss = F.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * idx.numel()
        val_acc.append(evaluate_accuracy(net, data.val.to(device)))
        if progress:
            print(
                f"classifier epoch {epoch + 1}/{config.epochs}: loss {total / n:.4f}, "
                f"val accuracy {val_acc[-1]:.4f}"
            )
    seconds = time.perf_counter() - start
    net.eval()
    net.metadata = {
        "version": VERSION,
        "dataset": data.name,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": float(config.lr),
        "seed": config.seed,
        "num_train": n,
        "train_seconds": seconds,
        "val_accuracy": val_acc,
        "test_accuracy": evaluate_accuracy(net, data.test.to(device)),
        "torch_threads": torch.get_num_threads(),
    }
    return net


def classifier_path(dataset: str = "mnist", variant: str = "") -> Path:
    """Where the cached classifier for ``dataset`` lives (``$PYROVAE_CACHE`` aware)."""
    return cache_dir() / "classifier" / f"{dataset}-cnn-v{VERSION}{variant}.pt"


def load_classifier(
    data: Splits | None = None,
    root: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    retrain: bool = False,
    dataset: str = "mnist",
    config: ClassifierConfig | None = None,
    progress: bool = False,
    subset: int | None = None,
) -> MNISTClassifier:
    """The cached classifier for ``dataset``, trained if absent (about 30 s on 2 idle CPU cores).

    Args:
        data: the splits to train on when needed (default: ``load_dataset(dataset, root)``).
            Their ``name`` must equal ``dataset``.
        root: data root passed to :func:`pyrovae.data.load_dataset` when ``data`` is None.
        device: where the returned network lives (training also runs there).
        retrain: train again and overwrite the cache even if a file exists.
        dataset: ``"mnist"`` (default) or ``"fashion-mnist"``; names the cache file.
        config: training recipe (default :class:`ClassifierConfig`); a cached file is used
            whatever recipe made it (see ``metadata``), so pass ``retrain=True`` to apply one.
        progress: print one line per training epoch.
        subset: train on the first ``subset`` training images only, with ``config`` (a
            small classifier for smoke tests, cached under its own name; check its
            ``metadata["test_accuracy"]``).

    Returns:
        An :class:`MNISTClassifier` in eval mode; ``metadata["test_accuracy"]`` is its
        accuracy on the test split (about 0.99 for MNIST).
    """
    if data is not None and data.name != dataset:
        raise ValueError(
            f"data holds {data.name!r} but dataset={dataset!r}; pass dataset={data.name!r}"
        )
    variant = ""
    if subset is not None:
        epochs = (config or ClassifierConfig()).epochs
        variant = f"-subset{subset}-epochs{epochs}"
    path = classifier_path(dataset, variant)
    if path.is_file() and not retrain:
        state = load_checkpoint(path, map_location=device)
        net = MNISTClassifier().to(device)
        net.load_state_dict(state["model"])
        net.metadata = dict(state["metadata"])
        return net.eval()
    if data is None:
        data = load_dataset(dataset, root=root)
    net = train_classifier(data, config, device=device, subset=subset, progress=progress)
    state = {
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "metadata": net.metadata,
    }
    save_checkpoint(path, state)
    return net
