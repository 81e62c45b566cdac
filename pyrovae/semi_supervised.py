"""Training the semi-supervised M2 on a few labelled and many unlabelled images.

The paper's protocol (Kingma et al. 2014, section 4.1): ``labels`` training images keep
their labels, the same number of each class, drawn with ``label_seed``; the other training
images are unlabelled. The objective per epoch is

    J = sum_unlabelled U(x) + sum_labelled [L(x, y) + alpha log q(y | x)],

the unlabelled bound U with the label summed out by enumeration (``TraceEnum_ELBO``), the
labelled bound L with it observed, and the classification term that trains q(y | x) on the
labelled images too (eq. 9, alpha; the default weighs the labelled images' cross-entropy,
summed, as 15 N: ``aux_weight = 15 N / N_l`` per labelled image, where Kingma et al. take
0.1 N). Each step takes a batch of unlabelled and a batch of labelled images (the labelled
ones cycled, reshuffled every pass) and follows the gradient of J / N estimated from them.
The best checkpoint is the one of the highest validation accuracy of q(y | x).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from pyro.infer import JitTrace_ELBO, JitTraceEnum_ELBO, Trace_ELBO, TraceEnum_ELBO
from torch.nn import functional as F
from tqdm.auto import tqdm

from pyrovae.data import Splits, binarize_with
from pyrovae.objectives import quiet_jit_trace
from pyrovae.trainer import (
    METRIC_COLUMNS,
    Trainer,
    _NonFiniteWatch,
    one_hot,
)

__all__ = [
    "SEMI_SUPERVISED_COLUMNS",
    "SemiSupervisedTrainer",
    "choose_labelled",
    "default_aux_weight",
    "label_accuracy",
    "label_hits",
]

SEMI_SUPERVISED_COLUMNS = (
    *METRIC_COLUMNS,
    "labelled_elbo",
    "unlabelled_elbo",
    "val_accuracy",
)
"""``metrics.csv`` of an M2 run: the ELBO per labelled and per unlabelled training image of
the epoch (``train_elbo`` is J / N per image, the classification term included), and the
accuracy of q(y | x) on the validation split."""

AUX_FRACTION = 15.0
"""alpha = 15 N on the mean cross-entropy over the labelled images. Kingma et al. take 0.1 N;
with it the unlabelled bound pulls q(y | x) toward the generative model's own, poorer,
classification (docs/semi_supervised.md has the measurements)."""


def default_aux_weight(num_data: int, num_labelled: int) -> float:
    """alpha per labelled image: ``AUX_FRACTION`` N on the mean over labelled images,
    ``AUX_FRACTION`` N / N_l on their sum (3,000 for 100 labels of 20,000 images, 250 for
    3,000 of 50,000)."""
    return AUX_FRACTION * num_data / num_labelled


def choose_labelled(
    labels: torch.Tensor, num_labels: int, num_classes: int, seed: int = 0
) -> torch.Tensor:
    """Indices (sorted) of ``num_labels`` images, ``num_labels / num_classes`` of each class,
    drawn without replacement with ``seed``.

    Raises:
        ValueError: one line naming the count and the fix: more labels than images, a count
            that does not divide over the classes, or a class with too few images.
    """
    n = labels.shape[0]
    if num_labels > n:
        raise ValueError(
            f"--labels {num_labels} is more than the {n} training images; pass at most {n}"
        )
    if num_labels % num_classes:
        lower = num_labels - num_labels % num_classes
        raise ValueError(
            f"--labels {num_labels} does not divide over the {num_classes} classes (the same "
            f"number of each); pass a multiple of {num_classes}, e.g. {lower or num_classes} "
            f"or {lower + num_classes}"
        )
    per_class = num_labels // num_classes
    gen = torch.Generator().manual_seed(seed)
    cpu = labels.cpu()
    chosen = []
    for c in range(num_classes):
        members = (cpu == c).nonzero().flatten()
        if members.numel() < per_class:
            raise ValueError(
                f"--labels {num_labels} asks for {per_class} images of class {c}, but the "
                f"training split holds {members.numel()}; pass fewer labels"
            )
        chosen.append(members[torch.randperm(members.numel(), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values


@torch.no_grad()
def label_hits(vae: Any, x: torch.Tensor, labels: torch.Tensor, chunk: int = 4096) -> int:
    """How many rows of ``x`` q(y | x) labels right (its most probable class), in chunks
    moved to the model's device."""
    device = next(vae.parameters()).device
    return sum(
        int((vae.classify(x[i : i + chunk].to(device)) == labels[i : i + chunk].to(device)).sum())
        for i in range(0, x.shape[0], chunk)
    )


def label_accuracy(vae: Any, x: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``x`` whose most probable class under q(y | x) is the true one."""
    return label_hits(vae, x, labels) / max(1, x.shape[0])


@contextlib.contextmanager
def _quiet_compile(compiling: bool) -> Iterator[None]:
    """While the first step compiles the ELBOs (``--jit``): torch's Bernoulli log density
    compares its inputs' sizes, which the tracer warns it records as constants; they are
    constant here (every compiled step has the same batch shapes), so that warning is
    silenced for that step alone, as is torch's deprecation notice of the tracer."""
    if not compiling:
        yield
        return
    with warnings.catch_warnings(), quiet_jit_trace():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


class SemiSupervisedTrainer(Trainer):
    """:class:`~pyrovae.trainer.Trainer` for :class:`~pyrovae.models.M2`: labelled and unlabelled
    batches, the label enumerated where it is missing (see the module)."""

    metric_columns = SEMI_SUPERVISED_COLUMNS

    def __init__(self, vae: Any, data: Splits, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(vae, data, config, *args, **kwargs)
        self.best_val_accuracy = -math.inf
        options = {"max_plate_nesting": 1, "num_particles": config.num_particles}
        if config.num_particles > 1:
            options["vectorize_particles"] = True
        # the label summed out where it is missing; where it is observed nothing is
        # enumerated, and the plain ELBO of the same sites is the labelled bound
        enum = JitTraceEnum_ELBO if config.jit else TraceEnum_ELBO
        plain = JitTrace_ELBO if config.jit else Trace_ELBO
        self.unlabelled_objective = enum(**options)
        self.labelled_objective = plain(**options)
        if config.elbo == "meanfield" and self.progress:
            print(
                "m2: the ELBO's z terms are Monte Carlo estimates (TraceEnum_ELBO, which sums "
                "the label out, has no analytic KL): --elbo meanfield trains as --elbo trace"
            )
        labels = self.train_split.y
        if config.labels is None:  # every training image keeps its label
            self.labelled = torch.arange(labels.shape[0], device=labels.device)
        else:
            self.labelled = choose_labelled(labels, config.labels, vae.y_dim, config.label_seed).to(
                labels.device
            )
        mask = torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
        mask[self.labelled] = False
        self.unlabelled = mask.nonzero().flatten()
        self.aux_weight = (
            config.aux_weight
            if config.aux_weight is not None
            else default_aux_weight(labels.shape[0], self.labelled.numel())
        )

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_val_accuracy": self.best_val_accuracy}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_val_accuracy = float(state["best_val_accuracy"])

    # ----------------------------------------------------------------- loop
    def _batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows ``idx`` of the training split on the device, dynamically binarized for
        a Bernoulli likelihood (a memory-mapped split is read on the CPU)."""
        if self.streamed:
            x = self.train_split.x[idx.cpu()].to(self.device)
        else:
            x = self.train_split.x[idx]
        if self.binarize:
            x = binarize_with(x, torch.rand(x.shape, device=x.device))
        return x

    def labelled_loss(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(-sum L(x, y), -sum log q(y | x))`` over a labelled batch: the negative labelled
        ELBO (log p(y) included) and the classification term that ``aux_weight`` weighs."""
        loss = self.labelled_objective.differentiable_loss(
            self.model, self.guide, x, one_hot(labels, self.vae.y_dim)
        )
        return loss, F.cross_entropy(self.vae.classifier(x), labels, reduction="sum")

    def _labelled_order(self, steps: int, batch: int) -> torch.Tensor:
        """The labelled images of each step: passes over them, each in a fresh order."""
        n = self.labelled.numel()
        passes = math.ceil(steps * batch / n)
        perms = [self.labelled[torch.randperm(n, device=self.device)] for _ in range(passes)]
        return torch.cat(perms)

    def run_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the unlabelled images (over the labelled ones when every image is
        labelled), a labelled batch beside each unlabelled one; returns (J / N per image,
        seconds) and keeps the labelled and unlabelled ELBOs of the epoch."""
        self.vae.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(epoch)
        bs = self.config.batch_size
        n_u, n_l = self.unlabelled.numel(), self.labelled.numel()
        total_n = n_u + n_l
        bs_l = min(bs, n_l)
        driver = n_u if n_u else n_l
        steps = driver // bs if self.config.jit and driver >= bs else math.ceil(driver / bs)
        start = time.perf_counter()
        order_u = self.unlabelled[torch.randperm(n_u, device=self.device)] if n_u else None
        order_l = self._labelled_order(steps, bs_l)
        sums = torch.zeros(3, device=self.device)  # J, sum of L, sum of U
        counts = [0, 0]  # labelled, unlabelled images seen
        watch = _NonFiniteWatch(self.device)
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch}/{self.config.epochs}",
            leave=False,
            disable=True if not self.progress else None,
            dynamic_ncols=True,
        )
        for step in bar:
            idx_l = order_l[step * bs_l : (step + 1) * bs_l]
            x_l = self._batch(idx_l)
            labels_l = self.train_split.y[idx_l]
            with self._validate(), _quiet_compile(step == 0 and self.config.jit):
                loss_l, aux = self.labelled_loss(x_l, labels_l)
                objective = (n_l / x_l.shape[0]) * (loss_l + self.aux_weight * aux)
                if order_u is not None:
                    x_u = self._batch(order_u[step * bs : (step + 1) * bs])
                    loss_u = self.unlabelled_objective.differentiable_loss(
                        self.model, self.guide, x_u
                    )
                    objective = objective + (n_u / x_u.shape[0]) * loss_u
            loss = objective / total_n
            self._descend(loss, watch, epoch, step)
            sums[0] += loss.detach()
            sums[1] += loss_l.detach()
            counts[0] += x_l.shape[0]
            if order_u is not None:
                sums[2] += loss_u.detach()
                counts[1] += x_u.shape[0]
        watch.check(epoch, self.out_dir)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        j, labelled, unlabelled = sums.tolist()
        self._epoch_elbos = (
            -labelled / counts[0],
            -unlabelled / counts[1] if counts[1] else math.nan,
        )
        return -j / steps, seconds

    @torch.no_grad()
    def validate(self) -> float:
        """The unlabelled bound U(x) per validation image (one draw of z per label), and,
        kept for the metrics, the accuracy of q(y | x) on the validation split."""
        self.vae.eval()
        x, labels = self.val_x, self.data.val.y
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        total = 0.0
        chunk = 2000
        for i in range(0, x.shape[0], chunk):
            xb = x[i : i + chunk].to(self.device)
            total += elbo.loss(self.vae.model, self.vae.guide, xb)
        self._val_accuracy = label_accuracy(self.vae, x, labels)
        return -total / x.shape[0]

    def _epoch_extras(self) -> dict[str, float]:
        labelled, unlabelled = self._epoch_elbos
        return {
            "labelled_elbo": labelled,
            "unlabelled_elbo": unlabelled,
            "val_accuracy": self._val_accuracy,
        }

    def _improves(self, row: dict[str, float]) -> bool:
        """The highest validation accuracy of q(y | x) (ties: the higher validation ELBO)."""
        accuracy, val_elbo = row["val_accuracy"], row["val_elbo"]
        better = accuracy > self.best_val_accuracy or (
            accuracy == self.best_val_accuracy and val_elbo > self.best_val_elbo
        )
        if better:
            self.best_val_accuracy, self.best_val_elbo = accuracy, val_elbo
        return better

    def _best_record(self, row: dict[str, float]) -> dict[str, float]:
        return {"val_elbo": row["val_elbo"], "val_accuracy": row["val_accuracy"]}

    def _epoch_line(self, row: dict[str, float]) -> str:
        return (
            f"epoch {row['epoch']:3d}  train J/N {row['train_elbo']:9.3f}  labelled ELBO "
            f"{row['labelled_elbo']:9.3f}  unlabelled ELBO {row['unlabelled_elbo']:9.3f}  "
            f"val accuracy {100 * row['val_accuracy']:6.2f}%  {row['seconds']:6.1f} s"
        )
