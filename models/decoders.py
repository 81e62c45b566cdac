"""Decoders p_theta(x | z[, y]): a network followed by a likelihood, returned as a distribution."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.nets import MLP, cat_broadcast, check_positive_int

__all__ = [
    "Decoder",
    "BernoulliDecoder",
    "ContinuousBernoulliDecoder",
    "GaussianDecoder",
    "LIKELIHOODS",
]


class Decoder(nn.Module):
    """Base class: ``net([z, y]) -> parameters``, ``forward(z, y) -> Distribution`` over x.

    ``mean(z, y)`` returns the decoder's mean in data space (used for images).
    ``binarize`` tells the training loop whether the data are binarized first.
    """

    binarize = False
    params_per_pixel = 1

    def __init__(
        self,
        z_dim: int,
        x_dim: int,
        hidden_dims: Sequence[int] = (400, 400),
        y_dim: int = 0,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.x_dim = check_positive_int("x_dim", x_dim)
        self.y_dim = y_dim
        self.net = MLP(z_dim + y_dim, self.params_per_pixel * x_dim, hidden_dims, activation)

    def logits(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(cat_broadcast(z, y))

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self(z, y).mean


class BernoulliDecoder(Decoder):
    """p(x | z) = prod_i Bernoulli(x_i; sigmoid(f_theta(z))_i) on binarized pixels."""

    binarize = True

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        return dist.Bernoulli(logits=self.logits(z, y)).to_event(1)

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, y))


class ContinuousBernoulliDecoder(Decoder):
    """Continuous Bernoulli likelihood for grey values in [0, 1].

    The continuous Bernoulli: fixing a pervasive error in variational autoencoders
    (Loaiza-Ganem & Cunningham, 2019), https://arxiv.org/abs/1907.06845
    """

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=self.logits(z, y)).to_event(1)


class GaussianDecoder(Decoder):
    """p(x | z) = N(x; f_theta(z), diag(s^2)) with a learned scale s.

    ``scale="pixel"`` learns one scale per pixel, ``"isotropic"`` a single one; both are
    kept above ``min_scale``. With ``hidden_dims=()`` the decoder is linear and, with the
    standard Normal prior, the model is probabilistic PCA (Tipping & Bishop, 1999), whose
    marginal p(x) = N(b, W W^T + s^2 I) is known exactly.
    """

    def __init__(
        self,
        z_dim: int,
        x_dim: int,
        hidden_dims: Sequence[int] = (400, 400),
        y_dim: int = 0,
        activation: str = "relu",
        scale: str = "pixel",
        min_scale: float = 1e-2,
        init_scale: float = 0.3,
    ) -> None:
        super().__init__(z_dim, x_dim, hidden_dims, y_dim, activation)
        if scale not in ("pixel", "isotropic"):
            raise ValueError(f"scale must be 'pixel' or 'isotropic', got {scale!r}")
        if not (0 <= min_scale < init_scale):
            raise ValueError(
                f"need 0 <= min_scale < init_scale, got min_scale={min_scale}, "
                f"init_scale={init_scale}"
            )
        self.min_scale = float(min_scale)
        self.scale_kind = scale
        raw = torch.log(torch.expm1(torch.tensor(init_scale - min_scale)))
        self.raw_scale = nn.Parameter(raw.expand(x_dim if scale == "pixel" else 1).clone())

    @property
    def scale(self) -> torch.Tensor:
        return F.softplus(self.raw_scale) + self.min_scale

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        loc = self.logits(z, y)
        return dist.Normal(loc, self.scale.expand(loc.shape)).to_event(1)


LIKELIHOODS: dict[str, type[Decoder]] = {
    "bernoulli": BernoulliDecoder,
    "continuous-bernoulli": ContinuousBernoulliDecoder,
    "gaussian": GaussianDecoder,
}
