"""A small CNN MNIST classifier, shipped with pyrovae, used to score generated digits.

The classifier reads images of shape (N, 784) with pixels in [0, 1]. Its class
probabilities measure how legible samples are (:mod:`pyrovae.analysis.quality.scores`), and its
penultimate layer gives the features of a Frechet distance (the FID recipe with an MNIST
network instead of Inception: GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium (Heusel et al., 2017), https://arxiv.org/abs/1706.08500).

The weights of the default MNIST recipe (:class:`ClassifierConfig`) ship inside the package
(``weights/mnist-cnn-v1.pt``, float16, 418 kB), so scoring samples never trains anything:
test accuracy 0.9885 on the 10,000 MNIST test images (the float32 weights, 831 kB: 0.9885
too), made by ``python benchmarks/train_classifier.py`` (seed 0, CPU, one thread; 87 s of
training on a busy 2-core machine), which rebuilds the same weights bit for bit on the same
CPU and torch. The file is checked against :data:`SHIPPED_SHA256` whenever it is read.

Fashion-MNIST, other recipes and ``retrain=True`` train: one line on stderr says so first
(what, where it is cached, about how long, how to skip it), a progress bar follows, and the
weights are cached in ``cache_dir()/"classifier"/"<dataset>-cnn-v<VERSION><recipe>.pt"``
together with their metadata (test accuracy, training time, seed, recipe); they are
written atomically and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.progress import progress_bar
from pyrovae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyrovae.data import Split, Splits, cache_dir, load_dataset
from pyrovae.nets import check_positive_int, eval_in_batches

__all__ = [
    "SHIPPED_PATH",
    "SHIPPED_SHA256",
    "ClassifierConfig",
    "MNISTClassifier",
    "classifier_path",
    "estimate_training_seconds",
    "evaluate_accuracy",
    "file_sha256",
    "load_classifier",
    "load_shipped_classifier",
    "read_classifier",
    "save_classifier",
    "train_classifier",
    "weights_sha256",
]

#: Bump when the architecture or the training recipe changes: old cache files are ignored.
VERSION = 1
IMAGE_SIDE = 28
#: The weights of the default MNIST recipe, shipped as package data (pyproject.toml).
SHIPPED_PATH = Path(__file__).resolve().parent / "weights" / f"mnist-cnn-v{VERSION}.pt"
#: sha256 of :data:`SHIPPED_PATH`, checked on every read; ``benchmarks/train_classifier.py``
#: prints it for a new file.
SHIPPED_SHA256 = "ae6d4c3a9c061842be17f0145242599644f3dde75efafe22cab8766469742f94"
#: How to do without the classifier, named when it would have to be trained.
SKIP_HINT = "--no-quality (EvaluationSettings(quality=False)) skips the sample-quality scores"


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

    def _batched(self, x: torch.Tensor, fn: Any, batch_size: int, out_dim: int) -> torch.Tensor:
        self._check(x)
        return eval_in_batches(self, x, fn, batch_size, out_dim)

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
    training images (for quick checks). ``progress`` shows a bar over the batches on
    stderr (:func:`~pyrovae.analysis.progress.progress_bar`). The returned network is in
    eval mode and carries its scores in ``metadata``. On the CPU with a fixed number of
    threads the same arguments give the same weights bit for bit.
    """
    config = config or ClassifierConfig()
    train_split = _train_split(data, subset)
    device = torch.device(device)
    x = train_split.x.to(device)
    y = train_split.y.to(device)
    n = x.shape[0]
    batches = math.ceil(n / config.batch_size)
    gen = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = MNISTClassifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=config.epochs * batches, eta_min=0.05 * config.lr
    )
    val_acc: list[float] = []
    start = time.perf_counter()
    with progress_bar(config.epochs * batches, f"{data.name} classifier", "batch", progress) as bar:
        for epoch in range(config.epochs):
            net.train()
            perm = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n, config.batch_size):
                idx = perm[i : i + config.batch_size]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update()
            val_acc.append(evaluate_accuracy(net, data.val.to(device)))
            bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs}, val {val_acc[-1]:.4f}")
    seconds = time.perf_counter() - start
    net.eval()
    net.metadata = {
        "version": VERSION,
        "dataset": data.name,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "lr": float(config.lr),
        "seed": config.seed,
        "recipe": _recipe(config),
        "num_train": n,
        "device": device.type,
        "train_seconds": seconds,
        "val_accuracy": val_acc,
        "test_accuracy": evaluate_accuracy(net, data.test.to(device)),
        "torch_threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
    }
    return net


def _recipe(config: ClassifierConfig) -> dict[str, Any]:
    return {**asdict(config), "lr": float(config.lr)}


def _train_split(data: Splits, subset: int | None) -> Split:
    """``data.train`` (its first ``subset`` images), after checking ``data``."""
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
    if subset is None:
        return data.train
    return data.train.subset(check_positive_int("subset", subset))


def estimate_training_seconds(
    data: Splits,
    config: ClassifierConfig | None = None,
    device: torch.device | str = "cpu",
    subset: int | None = None,
    num_steps: int = 3,
) -> tuple[float, float]:
    """(seconds, seconds a batch): how long :func:`train_classifier` would take here, now.

    Times ``num_steps`` Adam steps of a throw-away network on random images (after one
    warm-up step; the global RNG is left alone), so a busy machine gives a longer estimate:
    ``epochs x batches x (seconds a batch)`` plus the validation and test passes, counted at
    a third of a training step an image (a forward pass without the backward).
    """
    config = config or ClassifierConfig()
    n = len(_train_split(data, subset))
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(config.batch_size, IMAGE_SIDE**2, generator=gen).to(device)
    y = torch.randint(MNISTClassifier.num_classes, (config.batch_size,), generator=gen).to(device)
    with torch.random.fork_rng(devices=[]):
        net = MNISTClassifier().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)

    def step() -> None:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()
    start = time.perf_counter()
    for _ in range(check_positive_int("num_steps", num_steps)):
        step()
    per_batch = (time.perf_counter() - start) / num_steps
    scored = config.epochs * len(data.val) + len(data.test)
    seconds = per_batch * (config.epochs * math.ceil(n / config.batch_size))
    return seconds + per_batch / config.batch_size / 3 * scored, per_batch


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of the bytes of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(net: MNISTClassifier) -> str:
    """The sha256 of the network's tensors (names, dtypes, shapes and bytes, in order): equal
    for equal weights whatever the file's metadata (training time) says."""
    digest = hashlib.sha256()
    for name, value in net.state_dict().items():
        value = value.detach().cpu().contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_classifier(
    path: str | os.PathLike[str], net: MNISTClassifier, dtype: torch.dtype = torch.float32
) -> None:
    """Write ``net``'s weights (as ``dtype``, on the CPU) and ``metadata`` atomically."""
    state = {
        "model": {k: v.detach().cpu().to(dtype) for k, v in net.state_dict().items()},
        "metadata": net.metadata,
    }
    save_checkpoint(path, state)


def read_classifier(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> MNISTClassifier:
    """The classifier that :func:`save_classifier` wrote (float32 weights, eval mode)."""
    state = load_checkpoint(path, map_location="cpu")
    net = MNISTClassifier()
    net.load_state_dict(state["model"])  # casts stored float16 weights to float32
    net.metadata = dict(state["metadata"])
    return net.to(device).eval()


def load_shipped_classifier(device: torch.device | str = "cpu") -> MNISTClassifier:
    """The default MNIST recipe's weights that ship with pyrovae, checked against
    :data:`SHIPPED_SHA256` (a one-line :class:`~pyrovae.checkpoint.CheckpointError` naming
    the file when they differ); ``metadata`` holds their test accuracy, seed, recipe and
    training time."""
    path = SHIPPED_PATH
    damaged = (
        "reinstall pyrovae (pip install --force-reinstall pyrovae); meanwhile "
        "--no-quality skips the sample-quality scores and load_classifier(retrain=True) "
        "trains the classifier afresh"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped classifier {path} is missing (the installation lacks its package "
            f"data); {damaged}"
        )
    found = file_sha256(path)
    if found != SHIPPED_SHA256:
        raise CheckpointError(
            f"{path} has sha256 {found[:12]}..., not the {SHIPPED_SHA256[:12]}... it ships "
            f"with, so it is damaged or replaced; {damaged}"
        )
    return read_classifier(path, device)


def classifier_path(dataset: str = "mnist", variant: str = "") -> Path:
    """Where the cached classifier for ``dataset`` lives (``$PYROVAE_CACHE`` aware)."""
    return cache_dir() / "classifier" / f"{dataset}-cnn-v{VERSION}{variant}.pt"


def _variant(config: ClassifierConfig, subset: int | None) -> str:
    """The cache name's suffix: the recipe's fields that differ from the default, e.g.
    ``-epochs2-lr0.003`` (empty for the default recipe)."""
    default = asdict(ClassifierConfig())
    parts = [f"-{k}{v:g}" for k, v in asdict(config).items() if v != default[k]]
    return "".join(parts) + ("" if subset is None else f"-subset{subset}")


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
    """The classifier for ``dataset``: the shipped weights for MNIST, trained and cached else.

    The default MNIST recipe (``config`` None or ``ClassifierConfig()``, no ``subset``, no
    ``retrain``) returns the weights that ship with pyrovae (:func:`load_shipped_classifier`)
    without reading ``data``. Anything else is read from the cache, or trained and cached
    when absent: a line on stderr says so before training starts (dataset, epochs, images,
    the cache file, an estimate from timing a few batches here, how to skip it), whatever
    ``progress`` is, and another line gives the test accuracy when it ends.

    Args:
        data: the splits to train on when needed (default: ``load_dataset(dataset, root)``).
            Their ``name`` must equal ``dataset``.
        root: data root passed to :func:`pyrovae.data.load_dataset` when ``data`` is None.
        device: where the returned network lives (training also runs there).
        retrain: train again and overwrite the cache even if a file exists (for the default
            MNIST recipe the shipped file stays what later calls return).
        dataset: ``"mnist"`` (default) or ``"fashion-mnist"``; names the cache file.
        config: training recipe (default :class:`ClassifierConfig`); the fields that differ
            from the default name the cache file, so each recipe has its own.
        progress: show a progress bar over the training batches.
        subset: train on the first ``subset`` training images only, with ``config`` (a
            small classifier for smoke tests, cached under its own name; check its
            ``metadata["test_accuracy"]``).

    Returns:
        An :class:`MNISTClassifier` in eval mode; ``metadata["test_accuracy"]`` is its
        accuracy on the test split (0.9885 for the shipped MNIST weights).
    """
    if data is not None and data.name != dataset:
        raise ValueError(
            f"data holds {data.name!r} but dataset={dataset!r}; pass dataset={data.name!r}"
        )
    config = config or ClassifierConfig()
    shipped_recipe = config == ClassifierConfig() and subset is None
    if dataset == "mnist" and shipped_recipe and not retrain:
        return load_shipped_classifier(device)
    path = classifier_path(dataset, _variant(config, subset))
    if path.is_file() and not retrain:
        return read_classifier(path, device)
    if data is None:
        data = load_dataset(dataset, root=root)
    if retrain:
        why = "retrain=True"
    elif dataset != "mnist":
        why = f"no {dataset} weights ship with pyrovae"
    else:
        why = "only the default recipe's weights ship with pyrovae"
    seconds, per_batch = estimate_training_seconds(data, config, device, subset)
    n = len(_train_split(data, subset))
    epochs = f"{config.epochs} epoch" + ("s" if config.epochs != 1 else "")
    print(
        f"training the {dataset} classifier for sample-quality scores ({why}): "
        f"{epochs} over {n:,} images, about {_duration(seconds)} on {device} "
        f"({per_batch * 1e3:.0f} ms a batch of {config.batch_size}), cached at {path}; "
        f"{SKIP_HINT}",
        file=sys.stderr,
        flush=True,
    )
    net = train_classifier(data, config, device=device, subset=subset, progress=progress)
    save_classifier(path, net)
    meta = net.metadata
    print(
        f"{dataset} classifier trained in {_duration(meta['train_seconds'])}: test accuracy "
        f"{meta['test_accuracy']:.4f}, cached at {path}",
        file=sys.stderr,
        flush=True,
    )
    return net
