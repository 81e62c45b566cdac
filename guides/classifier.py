"""The label classifier q_phi(y | x) of the semi-supervised M2."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.convnets import encoder_trunk
from pyrovae.nets import check_dims, check_positive_int, data_scaling

__all__ = ["LabelClassifier"]


class LabelClassifier(nn.Module):
    """Logits of q_phi(y | x) over ``y_dim`` classes: the encoder's trunk (an MLP of widths
    ``hidden_dims``, or the residual convolutional net for ``net="conv"``) and a linear head.
    x is flat, (..., x_dim), standardized first when a
    :class:`~pyrovae.nets.DataScaling` is attached (as the encoder's is).

    Semi-Supervised Learning with Deep Generative Models (Kingma et al., 2014), section 3.1.2.
    """

    def __init__(
        self,
        x_dim: int,
        y_dim: int,
        hidden_dims: Sequence[int] = (500,),
        activation: str = "relu",
        *,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.x_dim = check_positive_int("x_dim", x_dim)
        self.y_dim = check_positive_int("y_dim", y_dim)
        if self.y_dim < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got y_dim={y_dim}")
        hidden_dims = check_dims("hidden_dims", hidden_dims)
        if not hidden_dims:
            raise ValueError("hidden_dims of a classifier must hold at least one width, got ()")
        self.trunk = encoder_trunk(x_dim, hidden_dims, 0, activation, net, image_shape, channels)
        self.head = nn.Linear(hidden_dims[-1], y_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaling = data_scaling(self)
        if scaling is not None:
            x = scaling.normalize(x)
        return self.head(self.trunk(x))
