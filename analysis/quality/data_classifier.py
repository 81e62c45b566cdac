"""A classifier of any labelled data, trained on its training split and cached, for the
label-based sample-quality scores (:mod:`pyrovae.analysis.quality.scores`) of data other than
MNIST and Fashion-MNIST (whose classifier, :mod:`.classifier`, is unchanged).

The network (:class:`DataClassifier`) standardizes each input value by the training split's
mean and standard deviation (kept as buffers), then

- images (C, H, W) with H, W >= 8: two 3x3 conv layers (32 and 64 channels, each followed by
  ReLU and 2x2 max-pooling), adaptive average pooling to 4x4, Linear(1024, 128), ReLU;
- anything else (vectors, tiny images): Linear(D, 256), ReLU, Linear(256, 128), ReLU;

then a linear head to the K classes. The 128 penultimate activations are the features of the
Frechet distance and of precision and recall (:mod:`.precision_recall`). Training: Adam with
a cosine learning-rate decay to 5%, ``epochs`` passes over the training split (at least
``min_steps`` steps, for small data), seeded; the validation split is scored after each
epoch and the test split at the end (``metadata["test_accuracy"]``).

The cache: ``cache_dir()/"classifier"/"<key>-<arch>-v<VERSION><recipe>.pt"``, where the key is
the dataset's name for pyrovae's own data sets (:data:`pyrovae.data.DATASETS`) and otherwise
the data's fingerprint (:attr:`pyrovae.user_data.UserData.fingerprint`) and a digest of the
three splits' rows: the fingerprint covers the values but not the split, and a classifier
trained on another split's training rows would have seen this split's test rows. Written
atomically, read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.progress import progress_bar
from pyrovae.checkpoint import load_checkpoint, save_checkpoint
from pyrovae.data import DATASETS, Split, Splits, cache_dir
from pyrovae.nets import check_positive_int, eval_in_batches

__all__ = [
    "DataClassifier",
    "DataClassifierConfig",
    "data_classifier_path",
    "estimate_training",
    "load_data_classifier",
    "splits_digest",
    "train_data_classifier",
]

#: Bump when the architecture or the training recipe changes: old cache files are ignored.
VERSION = 1
FEATURE_DIM = 128
MIN_CONV_SIDE = 8
SKIP_HINT = "--no-quality (EvaluationSettings(quality=False)) skips the sample-quality scores"


@dataclass(frozen=True)
class DataClassifierConfig:
    """Training recipe of :class:`DataClassifier`.

    Attributes:
        epochs: passes over the training split (more when ``min_steps`` asks for them).
        min_steps: the fewest Adam steps (small data sets get more epochs).
        batch_size: rows per Adam step.
        lr: Adam learning rate (cosine decay to 5% over training).
        seed: seeds the initialization and the shuffling (the global RNG is left alone).
    """

    epochs: int = 5
    min_steps: int = 500
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "min_steps", "batch_size"):
            check_positive_int(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, float | int) or not 0 < lr < math.inf:
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")


def _arch(image_shape: tuple[int, ...] | None) -> str:
    if image_shape is not None and min(image_shape[1:]) >= MIN_CONV_SIDE:
        return "conv"
    return "mlp"


class DataClassifier(nn.Module):
    """K-class classifier of flat rows (N, D) of any data (see the module docstring).

    ``forward(x)`` gives logits with gradients; :meth:`probs`, :meth:`features` and
    :meth:`predict` are batched and gradient-free, with the interface of
    :class:`~pyrovae.analysis.quality.classifier.MNISTClassifier`, so the scores of
    :mod:`~pyrovae.analysis.quality.scores` take either.

    Args:
        x_dim: D, values a row.
        num_classes: K >= 2.
        image_shape: (C, H, W) of image rows (flattened in that order), else None.
        mean, std: per-value standardization, shape (D,) (default 0 and 1).
    """

    feature_dim = FEATURE_DIM

    def __init__(
        self,
        x_dim: int,
        num_classes: int,
        image_shape: tuple[int, int, int] | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("x_dim", x_dim)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
            if len(image_shape) != 3 or math.prod(image_shape) != x_dim:
                raise ValueError(
                    f"image_shape {image_shape} does not hold x_dim={x_dim} values; give "
                    "(C, H, W) with C*H*W == x_dim, or None for vectors"
                )
        self.x_dim = x_dim
        self.num_classes = num_classes
        self.image_shape = image_shape
        self.arch = _arch(image_shape)
        self.register_buffer("mean", torch.zeros(x_dim) if mean is None else mean.float())
        self.register_buffer("std", torch.ones(x_dim) if std is None else std.float())
        if self.arch == "conv":
            channels = image_shape[0]  # type: ignore[index]
            self.body: nn.Module = nn.Sequential(
                nn.Conv2d(channels, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.AdaptiveAvgPool2d(4),
                nn.Flatten(),
                nn.Linear(64 * 16, FEATURE_DIM),
                nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(
                nn.Linear(x_dim, 256), nn.ReLU(), nn.Linear(256, FEATURE_DIM), nn.ReLU()
            )
        self.head = nn.Linear(FEATURE_DIM, num_classes)
        self.metadata: dict[str, Any] = {}

    def _check_shape(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a tensor of shape (N, {self.x_dim}), got {shape}; flatten rows "
                "with x.reshape(len(x), -1)"
            )

    def _check(self, x: torch.Tensor) -> torch.Tensor:
        self._check_shape(x)
        z = (x.to(self.mean.dtype) - self.mean) / self.std
        return z.reshape(-1, *self.image_shape) if self.arch == "conv" else z  # type: ignore[misc]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self._check(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, K) of rows ``x`` of shape (N, D) in the data's own units."""
        return self.head(self._features(x))

    def _batched(self, x: torch.Tensor, fn: Any, batch_size: int, out_dim: int) -> torch.Tensor:
        self._check_shape(x)
        return eval_in_batches(self, x, fn, batch_size, out_dim)

    def probs(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """p(class | x), shape (N, K), rows summing to one."""
        return self._batched(x, lambda b: torch.softmax(self(b), -1), batch_size, self.num_classes)

    def features(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Penultimate activations (after ReLU), shape (N, 128)."""
        return self._batched(x, self._features, batch_size, FEATURE_DIM)

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """Most probable class of each row, shape (N,)."""
        return self.probs(x, batch_size).argmax(-1)


def _accuracy(net: DataClassifier, split: Split) -> float | None:
    if len(split) == 0:
        return None
    pred = net.predict(split.x.to(net.mean.device))
    return (pred == split.y.to(pred.device)).double().mean().item()


def _check_labelled(data: Splits) -> None:
    if not isinstance(data, Splits):
        raise ValueError(
            f"data must be pyrovae.data.Splits, got {type(data).__name__}; read it with "
            "pyrovae.read_data(PATH).splits"
        )
    if data.num_classes < 2:
        raise ValueError(
            f"data {data.name!r} has {data.num_classes} class (unlabelled); a classifier needs "
            "labels: score samples with the two-sample test and precision/recall instead"
        )
    if len(data.train) < 2:
        raise ValueError(f"data {data.name!r} has {len(data.train)} training rows; need >= 2")


def train_data_classifier(
    data: Splits,
    config: DataClassifierConfig | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> DataClassifier:
    """Train a fresh :class:`DataClassifier` on ``data.train`` (nothing is cached); in eval
    mode, with its scores in ``metadata``."""
    _check_labelled(data)
    config = config or DataClassifierConfig()
    device = torch.device(device)
    x, y = data.train.x.float(), data.train.y.long()
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-6 * (1 + mean.abs()), std, torch.ones_like(std))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = DataClassifier(x.shape[1], data.num_classes, data.image_shape, mean, std)
    net = net.to(device)
    x, y = x.to(device), y.to(device)
    n = x.shape[0]
    batches = math.ceil(n / config.batch_size)
    epochs = max(config.epochs, math.ceil(config.min_steps / batches))
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * batches, eta_min=0.05 * config.lr
    )
    val_acc: list[float | None] = []
    start = time.perf_counter()
    with progress_bar(epochs * batches, f"{data.name} classifier", "batch", progress) as bar:
        for _ in range(epochs):
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
            val_acc.append(_accuracy(net, data.val))
    net.eval()
    net.metadata = {
        "version": VERSION,
        "dataset": data.name,
        "arch": net.arch,
        "x_dim": net.x_dim,
        "num_classes": net.num_classes,
        "image_shape": None if net.image_shape is None else list(net.image_shape),
        "epochs": epochs,
        "recipe": {**asdict(config), "lr": float(config.lr)},
        "num_train": n,
        "train_seconds": time.perf_counter() - start,
        "val_accuracy": val_acc,
        "test_accuracy": _accuracy(net, data.test),
        "num_test": len(data.test),
    }
    return net


def estimate_training(
    data: Splits, config: DataClassifierConfig | None = None, device: torch.device | str = "cpu"
) -> tuple[int, float]:
    """(Adam steps, seconds a step) of :func:`train_data_classifier` here, now: the steps
    from the recipe, the seconds from timing two steps of a throw-away network on a batch of
    training rows after one warm-up step (the global RNG is left alone)."""
    config = config or DataClassifierConfig()
    n = len(data.train)
    batches = math.ceil(n / config.batch_size)
    steps = max(config.epochs, math.ceil(config.min_steps / batches)) * batches
    x = data.train.x[: config.batch_size].float().to(device)
    y = data.train.y[: config.batch_size].long().to(device)
    with torch.random.fork_rng(devices=[]):
        net = DataClassifier(x.shape[1], data.num_classes, data.image_shape).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    seconds = 0.0
    for i in range(3):
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            seconds += (time.perf_counter() - start) / 2
    return steps, seconds


def splits_digest(data: Splits) -> str:
    """sha256 of the three splits' sizes, values (float32) and labels (int64), hex."""
    h = hashlib.sha256(b"pyrovae-splits;")
    for split in (data.train, data.val, data.test):
        h.update(f"{tuple(split.x.shape)};".encode())
        h.update(split.x.detach().cpu().float().contiguous().numpy().tobytes())
        h.update(split.y.detach().cpu().long().contiguous().numpy().tobytes())
    return h.hexdigest()


def _key(data: Splits, fingerprint: str | None) -> str:
    if fingerprint is None and data.name in DATASETS:
        return data.name
    fingerprint = fingerprint or getattr(data, "fingerprint", None)
    digest = splits_digest(data)
    return f"data-{fingerprint[:16]}-{digest[:8]}" if fingerprint else f"data-{digest[:16]}"


def _variant(config: DataClassifierConfig) -> str:
    default = asdict(DataClassifierConfig())
    return "".join(f"-{k}{v:g}" for k, v in asdict(config).items() if v != default[k])


def data_classifier_path(
    data: Splits, fingerprint: str | None = None, config: DataClassifierConfig | None = None
) -> Path:
    """Where :func:`load_data_classifier` caches the classifier of ``data`` (``$PYROVAE_CACHE``
    aware; see the module docstring for the key)."""
    config = config or DataClassifierConfig()
    arch = _arch(data.image_shape)
    name = f"{_key(data, fingerprint)}-{arch}-v{VERSION}{_variant(config)}.pt"
    return cache_dir() / "classifier" / name


def _save(path: Path, net: DataClassifier) -> None:
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    save_checkpoint(path, {"model": state, "metadata": net.metadata})


def _read(path: Path, device: torch.device | str) -> DataClassifier:
    state = load_checkpoint(path, map_location="cpu")
    meta = dict(state["metadata"])
    shape = meta.get("image_shape")
    image_shape = None if shape is None else tuple(shape)
    net = DataClassifier(meta["x_dim"], meta["num_classes"], image_shape)
    net.load_state_dict(state["model"])
    net.metadata = meta
    return net.to(device).eval()


def load_data_classifier(
    data: Splits,
    fingerprint: str | None = None,
    device: torch.device | str = "cpu",
    retrain: bool = False,
    config: DataClassifierConfig | None = None,
    progress: bool = False,
) -> DataClassifier:
    """The cached classifier of labelled ``data``, trained on ``data.train`` and cached when
    absent (one line on stderr before training and one with the test accuracy after).

    Args:
        data: labelled splits (``num_classes >= 2``), rows in the data's own units.
        fingerprint: the data's fingerprint (``UserData.fingerprint``); None: the dataset's
            name for pyrovae's own data sets, else a digest of the splits' rows.
        device: where the network lives (training runs there too).
        retrain: train again and overwrite the cache.
        config: the recipe (:class:`DataClassifierConfig`); non-default fields name the file.
        progress: show a bar over the training batches.

    Returns:
        A :class:`DataClassifier` in eval mode; ``metadata["test_accuracy"]`` its accuracy on
        ``data.test`` and ``metadata["cache"]`` the file.
    """
    _check_labelled(data)
    config = config or DataClassifierConfig()
    path = data_classifier_path(data, fingerprint, config)
    if path.is_file() and not retrain:
        net = _read(path, device)
        if net.x_dim == data.train.x.shape[1] and net.num_classes == data.num_classes:
            net.metadata["cache"] = str(path)
            return net
    n = len(data.train)
    steps, per_step = estimate_training(data, config, device)
    print(
        f"training a classifier of {data.name} ({data.num_classes} classes, {n:,} training "
        f"rows, {_arch(data.image_shape)}) for sample-quality scores: {steps:,} steps, about "
        f"{max(1, round(steps * per_step)):,} s on {device}, cached at {path}; {SKIP_HINT}",
        file=sys.stderr,
        flush=True,
    )
    net = train_data_classifier(data, config, device=device, progress=progress)
    _save(path, net)
    net.metadata["cache"] = str(path)
    acc = net.metadata["test_accuracy"]
    print(
        f"{data.name} classifier trained in {net.metadata['train_seconds']:.0f} s: test "
        f"accuracy {'-' if acc is None else format(acc, '.4f')}, cached at {path}",
        file=sys.stderr,
        flush=True,
    )
    return net
