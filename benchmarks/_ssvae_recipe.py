"""Pyro's SS-VAE tutorial recipe for M2, written in plain Pyro: the reference that
benchmarks/semi_supervised.py trains beside pyrovae's M2 on the same labelled images.

The recipe, as Pyro's example ``examples/vae/ss_vae_M2.py`` and its tutorial run it:

- three MLPs of one hidden layer (``hidden`` wide, softplus): q(y | x) (softmax), q(z | x, y)
  (its location and the exponential of its log-scale) and p(x | y, z), whose sigmoid means
  score the grey pixels with the Bernoulli cross-entropy sum_i x_i log p_i + (1 - x_i)
  log(1 - p_i) (the pixels are not binarized; this is not a density on [0, 1]);
- Adam, learning rate 4.2e-4, betas (0.95, 0.999), batches of 200;
- each step takes ONE batch: the labelled batches spread evenly among the unlabelled ones,
  each epoch a pass over both; an unlabelled step follows the gradient of the unlabelled
  bound U(x) summed over the batch, the label enumerated in parallel (``TraceEnum_ELBO``); a
  labelled step follows the labelled bound L(x, y), then, as a separate step of the same
  optimizer, ``aux_weight`` times the cross-entropy of q(y | x) summed over the batch
  (the tutorial's multiplier: 46; with 0 that step is left out).

The best epoch is the one of the highest validation accuracy of q(y | x), as for pyrovae's M2.
Kingma et al. 2014, "Semi-Supervised Learning with Deep Generative Models", eqs. 6-9.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.quality.label_classifier import label_error
from pyrovae.data import Splits

TUTORIAL_AUX_WEIGHT = 46.0


def _mlp(width_in: int, hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, hidden), nn.Softplus(), nn.Linear(hidden, width_out))


class TutorialM2(nn.Module):
    """p(y) p(z) p(x | y, z) and q(y | x) q(z | x, y) of the recipe (see the module)."""

    def __init__(self, x_dim: int, y_dim: int, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.y_dim, self.z_dim = y_dim, z_dim
        self.classifier = _mlp(x_dim, hidden, y_dim)
        self.encoder = _mlp(x_dim + y_dim, hidden, 2 * z_dim)
        self.decoder = _mlp(z_dim + y_dim, hidden, x_dim)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0).to_event(1)
            z = pyro.sample("z", prior)
            uniform = dist.OneHotCategorical(logits=x.new_zeros(x.shape[0], self.y_dim))
            y = pyro.sample("y", uniform, obs=y)
            shape = torch.broadcast_shapes(z.shape[:-1], y.shape[:-1])
            z, y = z.expand(*shape, self.z_dim), y.expand(*shape, self.y_dim)
            logits = self.decoder(torch.cat([z, y], -1))
            pixels = dist.Bernoulli(logits=logits, validate_args=False).to_event(1)
            pyro.sample("x", pixels, obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        with pyro.plate("data", x.shape[0]):
            if y is None:
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.classifier(x)))
            xs = x.expand(*y.shape[:-1], x.shape[-1])
            loc, log_scale = self.encoder(torch.cat([xs, y], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x).argmax(-1)


def _labelled_positions(steps_u: int, steps_l: int) -> set[int]:
    """The steps of an epoch (of ``steps_u + steps_l``) that take a labelled batch: spread
    evenly, the first one step in."""
    total = steps_u + steps_l
    return {min(total - 1, 1 + (k * total) // steps_l) for k in range(steps_l)}


def train_recipe(
    data: Splits,
    labelled: torch.Tensor,
    num_train: int,
    epochs: int,
    *,
    z_dim: int = 50,
    hidden: int = 500,
    aux_weight: float = TUTORIAL_AUX_WEIGHT,
    lr: float = 4.2e-4,
    beta1: float = 0.95,
    batch: int = 200,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train the recipe on the first ``num_train`` training images, ``labelled`` (indices
    into them) keeping their labels; returns the test error of q(y | x) at the epoch of best
    validation accuracy (``label_error``'s dict) with ``val_accuracy`` and ``best_epoch``."""
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    x_all, y_all = data.train.x[:num_train].to(device), data.train.y[:num_train].to(device)
    net = TutorialM2(x_all.shape[1], data.num_classes, z_dim, hidden).to(device)
    val_x, val_y = data.val.x.to(device), data.val.y.to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=(beta1, 0.999))
    enumerated, labelled_elbo = TraceEnum_ELBO(max_plate_nesting=1), Trace_ELBO()
    guide = config_enumerate(net.guide, "parallel", expand=True)
    mask = torch.ones(num_train, dtype=torch.bool)
    mask[labelled] = False
    unlabelled = mask.nonzero().flatten()
    steps_u, steps_l = math.ceil(len(unlabelled) / batch), math.ceil(len(labelled) / batch)
    positions = _labelled_positions(steps_u, steps_l)

    def descend(loss: torch.Tensor) -> None:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    best, state, best_epoch = -1.0, None, 0
    for epoch in range(1, epochs + 1):
        order_u = unlabelled[torch.randperm(len(unlabelled))]
        order_l = labelled[torch.randperm(len(labelled))]
        next_u = next_l = 0
        for step in range(steps_u + steps_l):
            if step in positions:
                idx = order_l[next_l * batch : (next_l + 1) * batch]
                next_l += 1
                x, y = x_all[idx], F.one_hot(y_all[idx], data.num_classes).to(x_all.dtype)
                descend(labelled_elbo.differentiable_loss(net.model, net.guide, x, y))
                if aux_weight:  # the tutorial's run without the term takes no such step
                    cross_entropy = F.cross_entropy(net.classifier(x), y_all[idx], reduction="sum")
                    descend(aux_weight * cross_entropy)
            else:
                idx = order_u[next_u * batch : (next_u + 1) * batch]
                next_u += 1
                descend(enumerated.differentiable_loss(net.model, guide, x_all[idx]))
        with torch.no_grad():
            accuracy = float((net.classify(val_x) == val_y).float().mean())
        if accuracy > best:
            best, best_epoch = accuracy, epoch
            state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    error = label_error(net, data.test, binarize=False)  # the recipe reads grey pixels
    return {**error, "val_accuracy": best, "best_epoch": best_epoch}
