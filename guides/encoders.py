"""Amortized encoders q_phi(z | x[, y]): a diagonal Normal and an IAF flow on top of it."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.convnets import encoder_trunk
from pyrovae.nets import (
    cat_broadcast,
    check_dims,
    check_positive_int,
    data_scaling,
)

__all__ = ["DiagonalNormalEncoder", "FlowEncoder", "GUIDES", "MIN_SCALE"]

MIN_SCALE = 1e-4


class DiagonalNormalEncoder(nn.Module):
    """q_phi(z | x, y) = N(z; loc_phi(x, y), diag(scale_phi(x, y)^2)).

    The trunk is an MLP of widths ``hidden_dims`` (``net="mlp"``), or for images of shape
    ``image_shape`` = (C, H, W) a residual convolutional net of widths ``channels`` followed
    by fully connected layers of widths ``hidden_dims`` (``net="conv"``,
    :class:`~pyrovae.convnets.ConvEncoderTrunk`); x stays flat, (..., x_dim), either way.

    Auto-Encoding Variational Bayes (Kingma & Welling, 2014), https://arxiv.org/abs/1312.6114
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (400, 400),
        y_dim: int = 0,
        activation: str = "relu",
        *,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.x_dim = check_positive_int("x_dim", x_dim)
        self.z_dim = check_positive_int("z_dim", z_dim)
        hidden_dims = check_dims("hidden_dims", hidden_dims)
        if not hidden_dims:
            raise ValueError("hidden_dims of an encoder must hold at least one width, got ()")
        if isinstance(y_dim, bool) or not isinstance(y_dim, int) or y_dim < 0:
            raise ValueError(f"y_dim must be a non-negative integer, got {y_dim!r}")
        self.y_dim = y_dim
        self.hidden_dim = hidden_dims[-1]
        self.trunk = encoder_trunk(
            x_dim, hidden_dims, y_dim, activation, net, image_shape, channels
        )
        self.head = nn.Linear(self.hidden_dim, 2 * z_dim)

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(loc, scale, hidden)`` for a batch ``x`` of shape ``(..., x_dim)``
        (standardized first when a :class:`~pyrovae.nets.DataScaling` is attached)."""
        scaling = data_scaling(self)
        if scaling is not None:
            x = scaling.normalize(x)
        h = self.trunk(cat_broadcast(x, y))
        loc, raw = self.head(h).chunk(2, dim=-1)
        return loc, F.softplus(raw) + MIN_SCALE, h

    def gaussian(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        """The diagonal Normal part of the posterior (for a flow encoder, before the flow)."""
        loc, scale, _ = self.encode(x, y)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        return self.gaussian(x, y)


class FlowEncoder(DiagonalNormalEncoder):
    """q_phi(z | x) = IAF_K o ... o IAF_1 applied to the diagonal Normal of the encoder.

    Each step is an affine autoregressive transform conditioned on the encoder's last
    hidden layer, as in Improving Variational Inference with Inverse Autoregressive Flow
    (Kingma et al., 2016), https://arxiv.org/abs/1606.04934. Sampling and the density of
    a sample are both one pass; the density at an arbitrary z needs z_dim passes.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (400, 400),
        y_dim: int = 0,
        activation: str = "relu",
        num_flows: int = 2,
        flow_hidden_dims: Sequence[int] | None = None,
        *,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            x_dim,
            z_dim,
            hidden_dims,
            y_dim,
            activation,
            net=net,
            image_shape=image_shape,
            channels=channels,
        )
        check_positive_int("num_flows", num_flows)
        if flow_hidden_dims is None:
            flow_hidden_dims = (max(2 * z_dim, 32),)
        flow_hidden_dims = check_dims("flow_hidden_dims", flow_hidden_dims)
        if z_dim < 2:
            raise ValueError(
                f"a flow encoder needs z_dim >= 2 (autoregressive steps), got z_dim={z_dim}; "
                "use the 'diagonal' guide for z_dim=1"
            )
        self.flows = nn.ModuleList(
            T.conditional_affine_autoregressive(
                z_dim, self.hidden_dim, hidden_dims=list(flow_hidden_dims)
            )
            for _ in range(num_flows)
        )
        self.num_flows = num_flows

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        loc, scale, h = self.encode(x, y)
        base = dist.Normal(loc, scale).to_event(1)
        transforms: list[T.Transform] = []
        for i, flow in enumerate(self.flows):
            if i > 0:
                transforms.append(
                    T.Permute(torch.arange(self.z_dim - 1, -1, -1, device=loc.device))
                )
            transforms.append(flow.condition(h))
        return dist.TransformedDistribution(base, transforms)


GUIDES: dict[str, type[DiagonalNormalEncoder]] = {
    "diagonal": DiagonalNormalEncoder,
    "flow": FlowEncoder,
}
