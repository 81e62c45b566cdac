"""The SVI training loop: :class:`Trainer`, its configuration and the run directory it writes.

Below :mod:`pyrovae.distributed` (whose data-parallel trainer subclasses :class:`Trainer`)
and :mod:`pyrovae.train` (the :func:`~pyrovae.train.train` entry point, which re-exports
every name here); see :mod:`pyrovae.train` for the run directory's files.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyrovae.build import ModelConfig, lookup
from pyrovae.checkpoint import atomic_write_text, load_checkpoint, save_checkpoint, write_json
from pyrovae.data import Split, Splits, binarize_with, fixed_binarization
from pyrovae.models import VAE
from pyrovae.nets import check_positive_int
from pyrovae.objectives import make_objective
from pyrovae.schedules import LR_SCHEDULES, learning_rate
from pyrovae.streamed_data import is_mapped, stream_above_bytes
from pyrovae.traces import ValidateFirst, importance_terms

__all__ = [
    "ELBOS",
    "METRIC_COLUMNS",
    "NONFINITE_CHECK_EVERY",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "elbo_per_datum",
    "make_adam",
    "one_hot",
    "resolve_device",
]

METRIC_COLUMNS = ("epoch", "train_elbo", "val_elbo", "kl_weight", "seconds", "lr")
ELBOS = ("trace", "meanfield", "iwae")
VALIDATION_CHUNK = 2000
"""Data per pass of :func:`elbo_per_datum` (the validation ELBO); a data-parallel run scores
the validation split in the same chunks, so that its draws are those of one process."""


NONFINITE_CHECK_EVERY = 50
"""Steps between reads of the device-side non-finite-loss flag (and at the end of an epoch):
the only host reads of a training step, so a GPU is never made to wait at every step. A
loss that became NaN is reported with its step; the steps after it change only the model
in memory, never a checkpoint."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left untouched."""


class _NonFiniteWatch:
    """The first step of an epoch whose loss was not finite, and that loss, kept on the
    device (``record`` reads nothing back; ``check`` does, once)."""

    def __init__(self, device: torch.device) -> None:
        self.step = torch.full((), -1, dtype=torch.long, device=device)
        self.loss = torch.zeros((), device=device)

    def record(self, loss: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(loss) & (self.step < 0)
        self.step = torch.where(first, step, self.step)
        self.loss = torch.where(first, loss.detach().to(self.loss.dtype), self.loss)

    def check(self, epoch: int, out_dir: Path) -> None:
        step = int(self.step)
        if step >= 0:
            raise NonFiniteLossError(
                f"the loss became {self.loss.item()} at epoch {epoch}, step {step + 1}; "
                f"{out_dir / 'checkpoint.pt'} still holds the last good epoch. "
                "Try a smaller --lr or --clip-norm, or a KL warm-up"
            )


@dataclass
class TrainConfig:
    """Optimization settings (stored in ``config.json`` next to the model's).

    Attributes:
        epochs: passes over the training split.
        batch_size: data per SVI step.
        lr: Adam learning rate (the base rate of ``lr_schedule``).
        lr_schedule: ``"constant"`` (the default) or ``"burda"`` (stage i = 0..7 lasts 3^i
            epochs at lr * 10^(-i/7), 3,280 epochs in all; :mod:`pyrovae.schedules`).
        adam_eps: Adam's epsilon (1e-8, PyTorch's default; Burda et al. 2016 use 1e-4).
        elbo: ``"meanfield"`` (TraceMeanField_ELBO, analytic KL where one is registered; the
            default), ``"trace"`` (Trace_ELBO) or ``"iwae"`` (importance-weighted bound).
        num_particles: particles per datum (vectorized); the K of the IWAE bound (K >= 2:
            with K = 1 the bound is the ELBO).
        kl_warmup: epochs over which the weight of the latent terms rises linearly to 1.
        clip_norm: clip the global gradient norm to this value (None: no clipping).
        seed: seeds torch, Python and Pyro; with the same seed two runs agree.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        jit: compile the ELBO with Pyro's ``JitTrace_ELBO`` / ``JitTraceMeanField_ELBO``
            (trace/meanfield, no warm-up; the last incomplete batch of an epoch is dropped).
        subset: use only the first ``subset`` training examples.
        dataset: a built-in data set (``pyrovae.settings.DATASET_NAMES``; ``"mnist"`` when
            neither it nor ``data`` is given); None when ``data`` names the user's own file.
        data_root: where the data were read from (informational).
        data: the user's own data (a file or image folder, absolute path), read by
            :func:`pyrovae.user_data.read_data` with the next five settings; None for a
            built-in data set.
        label_column, image_size, val_fraction, test_fraction, split_seed: how ``data`` is
            read and split (see :func:`~pyrovae.user_data.read_data`).
        data_fingerprint: the fingerprint of the data the run was trained on; data read
            later for the run must have the same (:func:`pyrovae.run_data.open_data`).
        data_kind: the kind of values inferred from the data (``binary``, ``unit``,
            ``8-bit`` or ``real``).
        class_names, column_names: an image folder's class names and a CSV file's feature
            column names (None when the data have none), for figures and written samples.
        labels: the semi-supervised M2 (``--model m2``) only: how many training images keep
            their label, the same number of each class (None: all of them).
        label_seed: the seed of the draw of the labelled images.
        aux_weight: M2's alpha, the weight of -log q(y | x) per labelled image (None:
            15 N / N_l; see :mod:`pyrovae.semi_supervised`).
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"
    adam_eps: float = 1e-8
    elbo: str = "meanfield"
    num_particles: int = 1
    kl_warmup: int = 0
    clip_norm: float | None = None
    seed: int = 0
    device: str = "auto"
    jit: bool = False
    subset: int | None = None
    dataset: str | None = None
    data_root: str | None = None
    data: str | None = None
    label_column: str | None = None
    image_size: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0
    data_fingerprint: str | None = None
    data_kind: str | None = None
    class_names: list[str] | None = None
    column_names: list[str] | None = None
    labels: int | None = None
    label_seed: int = 0
    aux_weight: float | None = None

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("num_particles", self.num_particles)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        lookup(dict.fromkeys(LR_SCHEDULES), self.lr_schedule, "lr_schedule")
        eps = self.adam_eps
        if isinstance(eps, bool) or not (isinstance(eps, (int, float)) and 0 < eps < math.inf):
            raise ValueError(f"adam_eps must be a positive number, got {eps!r}")
        lookup(dict.fromkeys(ELBOS), self.elbo, "elbo")
        if self.elbo == "iwae" and self.num_particles < 2:
            raise ValueError(
                f"elbo 'iwae' with num_particles={self.num_particles} is the plain ELBO; "
                "pass --num-particles K with K >= 2 (e.g. 5), or use --elbo meanfield"
            )
        if (
            isinstance(self.kl_warmup, bool)
            or not isinstance(self.kl_warmup, int)
            or (self.kl_warmup < 0)
        ):
            raise ValueError(f"kl_warmup must be a non-negative integer, got {self.kl_warmup!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(
                f"clip_norm must be positive (or None for no clipping), got {self.clip_norm!r}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.subset is not None:
            check_positive_int("subset", self.subset)
        if self.dataset is not None and self.data is not None:
            raise ValueError(
                f"give either dataset (a built-in data set) or data (a file or folder), not "
                f"both: got dataset={self.dataset!r}, data={self.data!r}"
            )
        if self.dataset is None and self.data is None:
            self.dataset = "mnist"
        if self.image_size is not None:
            check_positive_int("image_size", self.image_size)
        if self.labels is not None:
            check_positive_int("labels", self.labels)
        if isinstance(self.label_seed, bool) or not isinstance(self.label_seed, int):
            raise ValueError(f"label_seed must be an integer, got {self.label_seed!r}")
        aux = self.aux_weight
        if aux is not None and (
            isinstance(aux, bool) or not isinstance(aux, (int, float)) or not 0 <= aux < math.inf
        ):
            raise ValueError(
                f"aux_weight (--aux-weight) must be a number >= 0, got {aux!r}; 0 turns the "
                "classification term off"
            )
        if self.jit and (self.elbo == "iwae" or self.kl_warmup > 0):
            raise ValueError(
                "jit works with elbo 'trace' or 'meanfield' and no KL warm-up; "
                f"got elbo={self.elbo!r}, kl_warmup={self.kl_warmup}: drop --jit"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown train config keys {unknown}; valid keys are {sorted(known)}")
        return cls(**data)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was asked for but CUDA is not available; use --device cpu"
        )
    return torch.device(device)


class _LatentScale(Messenger):
    """Multiply the density of every latent sample site by ``scale`` (KL warm-up)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and self.scale != 1.0:
            msg["scale"] = msg["scale"] * self.scale


def make_adam(
    params: Iterable[torch.nn.Parameter], lr: float, device: torch.device, eps: float = 1e-8
) -> torch.optim.Adam:
    """Adam with the fused kernel on CPU and CUDA (one kernel for all parameters).

    The update is Adam's; the default per-tensor loop costs about 2 ms a step for the
    default 400-400 VAE on two CPU cores, 15% of the whole step, the fused one a quarter
    of that.
    """
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=device.type in ("cpu", "cuda"))


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float one-hot labels of shape (N, num_classes) for integer labels of shape (N,)."""
    return F.one_hot(labels, num_classes).to(torch.get_default_dtype())


def model_inputs(vae: VAE, split: Split, binarized: torch.Tensor | None = None):
    """``(x, y)`` for ``vae``: y one-hot for a CVAE, else None."""
    x = split.x if binarized is None else binarized
    y = one_hot(split.y, vae.y_dim) if vae.conditional else None
    return x, y


@torch.no_grad()
def elbo_per_datum(
    vae: VAE, x: torch.Tensor, y: torch.Tensor | None = None, chunk_size: int = VALIDATION_CHUNK
) -> torch.Tensor:
    """Single-sample ELBO log p(x, z) - log q(z | x), z ~ q(z | x), for each row of ``x``."""
    out = []
    for start in range(0, x.shape[0], chunk_size):
        xb = x[start : start + chunk_size]
        yb = None if y is None else y[start : start + chunk_size]
        out.append(importance_terms(vae.model, vae.guide, xb, yb).log_weights[0])
    return torch.cat(out)


def _forget_other_models(prefix: str = "vae$$$") -> None:
    """Drop the parameters that an earlier model registered under the name ``vae``.

    Every model registers itself with ``pyro.module("vae", ...)``; a second model trained
    in the same process would otherwise be handed the first one's tensors by the param
    store, and a JIT ELBO traces with those (an error: tensors that require grad cannot be
    constants of the graph). Other entries of the store are left alone.
    """
    store = pyro.get_param_store()
    for name in [n for n in store.keys() if n.startswith(prefix)]:
        del store[name]


class Trainer:
    """Owns the optimizer, the objective and the run directory of one training run."""

    metric_columns: tuple[str, ...] = METRIC_COLUMNS
    """The columns of ``metrics.csv``."""

    streamed = False
    """Whether the training split is memory-mapped (:mod:`pyrovae.streamed_data`) and stays
    on the CPU, each batch gathered from it and moved to the device."""

    def __init__(
        self,
        vae: VAE,
        data: Splits,
        config: TrainConfig,
        out_dir: str | Path,
        model_config: ModelConfig | None = None,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.device = self._resolve_device()
        self.vae = vae.to(self.device)
        self.model_config = model_config or getattr(vae, "config", None)
        if self.model_config is None:
            raise ValueError("model_config is needed to write config.json; build with build_model")
        self.binarize = getattr(vae.decoder, "binarize", False)
        self._place_data(data)
        self.out_dir = Path(out_dir)
        self.progress = progress and self.is_writer
        self.optimizer = make_adam(self.vae.parameters(), config.lr, self.device, config.adam_eps)
        self.objective = make_objective(config)
        _forget_other_models()
        self.latent_scale = _LatentScale()
        if config.kl_warmup > 0:
            self.model = self.latent_scale(self.vae.model)
            self.guide = self.latent_scale(self.vae.guide)
        else:  # one handler less on Pyro's stack at every site
            self.model, self.guide = self.vae.model, self.vae.guide
        self.epoch = 0
        self.metrics: list[dict[str, float]] = []
        self.best_val_elbo = -math.inf
        self._validate = ValidateFirst()

    def _resolve_device(self) -> torch.device:
        return resolve_device(self.config.device)

    def _place_data(self, data: Splits) -> None:
        """The training split (its first ``subset`` examples) and the validation split, on
        the device; the validation images binarized once, with a fixed seed. A memory-mapped
        training split stays where it is (its labels go to the device), and so does its
        validation split when above :func:`~pyrovae.streamed_data.stream_above_bytes`."""
        self.streamed = is_mapped(data.train.x)
        if self.streamed:
            val_x = data.val.x
            if val_x.nbytes <= stream_above_bytes():
                val_x = val_x.to(self.device)
            self.data = replace(
                data,
                train=Split(data.train.x, data.train.y.to(self.device)),
                val=Split(val_x, data.val.y.to(self.device)),
            )
        else:
            self.data = data.to(self.device)
        self.train_split = (
            self.data.train.subset(self.config.subset) if self.config.subset else self.data.train
        )
        self.val_x = fixed_binarization(self.data.val.x) if self.binarize else self.data.val.x

    @property
    def is_writer(self) -> bool:
        """Whether this process writes the run directory (one process: always)."""
        return True

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "format": 1,
            "epoch": self.epoch,
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "best_val_elbo": self.best_val_elbo,
            "metrics": self.metrics,
        }
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.vae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)
        self.epoch = int(state["epoch"])
        self.best_val_elbo = float(state["best_val_elbo"])
        self.metrics = list(state["metrics"])

    def kl_weight(self, epoch: int, fraction: float) -> float:
        """Linear warm-up: (epoch - 1 + fraction) / kl_warmup, capped at 1."""
        if self.config.kl_warmup == 0:
            return 1.0
        return min(1.0, (epoch - 1 + fraction) / self.config.kl_warmup)

    # ----------------------------------------------------------------- files
    def write_config(self) -> None:
        if not self.is_writer:
            return
        write_json(
            self.out_dir / "config.json",
            {"model": self.model_config.to_dict(), "train": asdict(self.config)},
        )

    def write_metrics(self) -> None:
        if not self.is_writer:
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.metric_columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.metrics)
        atomic_write_text(self.out_dir / "metrics.csv", buf.getvalue())

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` with the optimizer and RNG state it holds."""
        state = load_checkpoint(self.out_dir / "checkpoint.pt", map_location=self.device)
        self.load_state_dict(state)

    # ----------------------------------------------------------------- loop
    def _begin_epoch(self, perm: torch.Tensor, batch_size: int) -> None:
        """Called with the epoch's data order before its first step (a streamed run keeps a
        CPU copy of it, so that no step waits for the device to read its indices)."""
        if self.streamed:
            self._perm_cpu = perm.cpu()

    def _gather(self, step: int) -> torch.Tensor:
        """The rows of step ``step``'s batch from the memory-mapped training split, moved to
        the device. Read in the batch's order: reading them in ascending order was no faster
        with the page cache dropped (``benchmarks/data_memory.py``)."""
        bs = self.config.batch_size
        return self.train_split.x[self._perm_cpu[step * bs : (step + 1) * bs]].to(self.device)

    def _step_inputs(
        self, step: int, idx: torch.Tensor, y_all: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, float, AbstractContextManager[Any]]:
        """The step's ``(x, y, loss weight, draws)`` for the global batch ``idx`` (step
        ``step`` of the epoch): the data this process computes, the factor of their summed
        loss, and the context the step's random draws are made in."""
        x = self._gather(step) if self.streamed else self.train_split.x[idx]
        if self.binarize:  # dynamic binarization, from uniforms (as DistributedTrainer draws)
            x = binarize_with(x, torch.rand(x.shape, device=x.device))
        y = None if y_all is None else y_all[idx]
        return x, y, 1.0 / idx.numel(), nullcontext()

    def _loss_sum(self, *args: torch.Tensor) -> torch.Tensor:
        """The negative ELBO summed over the data of ``args``."""
        return self.objective.differentiable_loss(self.model, self.guide, *args)

    def _global_totals(self, total: torch.Tensor, seen: int) -> tuple[float, int]:
        return total.item(), seen

    def learning_rate(self, epoch: int) -> float:
        """The rate of ``epoch`` under the run's ``lr_schedule``."""
        return learning_rate(self.config.lr_schedule, self.config.lr, epoch)

    def run_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training split at the schedule's learning rate of ``epoch``;
        returns (mean objective per datum, seconds)."""
        self.vae.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(epoch)
        n, bs = self.num_train, self.config.batch_size
        y_all = self._labels()
        # A compiled ELBO has static shapes: with --jit the last, incomplete batch is dropped.
        steps = n // bs if self.config.jit and n >= bs else math.ceil(n / bs)
        start = time.perf_counter()
        perm = torch.randperm(n, device=self.device)
        self._begin_epoch(perm, bs)
        total = torch.zeros((), device=self.device)
        watch = _NonFiniteWatch(self.device)
        seen = 0
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch}/{self.config.epochs}",
            leave=False,
            disable=True if not self.progress else None,  # None: only on a terminal
            dynamic_ncols=True,
        )
        for step in bar:
            idx = perm[step * bs : (step + 1) * bs]
            x, y, weight, draws = self._step_inputs(step, idx, y_all)
            self.latent_scale.scale = self.kl_weight(epoch, step / steps)
            # Distribution arguments are validated on the first step of a run only: it
            # catches shape and support mistakes, and costs ~10% of a step afterwards.
            args = (x,) if y is None else (x, y)  # no None argument: torch.jit traces tensors
            with self._validate(), draws:
                loss_sum = self._loss_sum(*args)
            loss = loss_sum * weight
            self._descend(loss, watch, epoch, step)
            if weight:  # a process with no data in this batch computed a zero-weight stand-in
                total += loss_sum.detach()
                seen += x.shape[0]
            if self.progress and step % 20 == 0:
                bar.set_postfix(elbo=f"{-loss.item() / weight / x.shape[0] if weight else 0:.2f}")
        watch.check(epoch, self.out_dir)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        total_sum, count = self._global_totals(total, seen)
        return -(total_sum / count), seconds

    def _descend(self, loss: torch.Tensor, watch: _NonFiniteWatch, epoch: int, step: int) -> None:
        """One optimizer step down ``loss`` (clipped with ``clip_norm``), its finiteness
        recorded on the device and read every :data:`NONFINITE_CHECK_EVERY` steps."""
        watch.record(loss, step)
        if (step + 1) % NONFINITE_CHECK_EVERY == 0:
            watch.check(epoch, self.out_dir)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), self.config.clip_norm)
        self.optimizer.step()

    @property
    def num_train(self) -> int:
        """Training examples of the run (all processes together)."""
        return len(self.train_split)

    def _labels(self) -> torch.Tensor | None:
        if not self.vae.conditional:
            return None
        return one_hot(self.train_split.y, self.vae.y_dim)

    def validate(self) -> float:
        self.vae.eval()
        x, y = model_inputs(self.vae, self.data.val, self.val_x)
        if x.device.type != self.device.type:  # a streamed validation split, in chunks
            c = VALIDATION_CHUNK
            parts = [
                elbo_per_datum(
                    self.vae, x[i : i + c].to(self.device), None if y is None else y[i : i + c]
                )
                for i in range(0, x.shape[0], c)
            ]
            return torch.cat(parts).mean().item()
        return elbo_per_datum(self.vae, x, y).mean().item()

    def fit(self, resume: bool = False) -> list[dict[str, float]]:
        """Train until ``config.epochs``, writing the run directory after every epoch."""
        if resume:
            self.resume()
        else:
            if (self.out_dir / "checkpoint.pt").exists():
                raise FileExistsError(
                    f"{self.out_dir} already holds a run; pass --resume to continue it or "
                    "choose another --out"
                )
            pyro.set_rng_seed(self.config.seed)
        if self.is_writer:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        # The loop optimizes self.vae.parameters() directly; Pyro's param store is only
        # needed by the JIT-compiled ELBO, which reads parameters from it.
        register_params = self.vae.register_params
        self.vae.register_params = self.config.jit
        try:
            self._fit_epochs()
        finally:
            self.vae.register_params = register_params
        return self.metrics

    def _save(self, name: str, state: dict[str, Any]) -> None:
        if self.is_writer:
            save_checkpoint(self.out_dir / name, state)

    def _fit_epochs(self) -> None:
        for epoch in range(self.epoch + 1, self.config.epochs + 1):
            train_elbo, seconds = self.run_epoch(epoch)
            val_elbo = self.validate()
            self.epoch = epoch
            row = {
                "epoch": epoch,
                "train_elbo": train_elbo,
                "val_elbo": val_elbo,
                "kl_weight": self.kl_weight(epoch, 1.0),
                "seconds": seconds,
                "lr": self.learning_rate(epoch),
                **self._epoch_extras(),
            }
            self.metrics.append(row)
            if self._improves(row):
                best = {"format": 1, "epoch": epoch, "model": self.vae.state_dict()}
                self._save("best.pt", {**best, **self._best_record(row)})
            self._save("checkpoint.pt", self.state_dict())
            self.write_metrics()
            if self.progress:
                tqdm.write(self._epoch_line(row))

    def _epoch_extras(self) -> dict[str, float]:
        """Further columns of the epoch's row of ``metrics.csv`` (none here)."""
        return {}

    def _improves(self, row: dict[str, float]) -> bool:
        """Whether the epoch of ``row`` is the best so far (then kept as ``best.pt``): the
        highest validation ELBO."""
        if row["val_elbo"] > self.best_val_elbo:
            self.best_val_elbo = row["val_elbo"]
            return True
        return False

    def _best_record(self, row: dict[str, float]) -> dict[str, float]:
        """What ``best.pt`` records beside the weights."""
        return {"val_elbo": row["val_elbo"]}

    def _epoch_line(self, row: dict[str, float]) -> str:
        return (
            f"epoch {row['epoch']:3d}  train ELBO {row['train_elbo']:9.3f}  val ELBO "
            f"{row['val_elbo']:9.3f}  {row['seconds']:6.1f} s"
        )
