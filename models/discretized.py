"""The discretized logistic likelihood of 8-bit data, and log-likelihoods in bits per dimension.

Each dimension of x takes an integer value k in {0, ..., K-1} (K = 256 for 8-bit images),
with the probability that a logistic variable of location mu and scale s falls in the bin
[k - 1/2, k + 1/2], the two end bins taking the tails (Salimans et al., 2017, PixelCNN++;
Kingma et al., 2016, the IAF VAE):

    P(k) = sigma((k + 1/2 - mu) / s) - sigma((k - 1/2 - mu) / s)      0 < k < K-1
    P(0) = sigma((1/2 - mu) / s),  P(K-1) = 1 - sigma((K - 3/2 - mu) / s).

The probabilities telescope to exactly 1. The log of an interior bin is computed as
log sigma(u) + log(1 - sigma(l)) + log(1 - exp(l - u)) with u, l the scaled bin edges, which
loses no precision when both edges lie far in the same tail or the bin is narrow next to s.

Papers on natural images report -log p(x) / (D log 2), bits per dimension, for D = C H W
values in {0, ..., 255}: :func:`bits_per_dim`.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

__all__ = ["DiscretizedLogistic", "bits_per_dim"]


class DiscretizedLogistic(TorchDistribution):
    """Independent discretized logistics over {0, ..., num_bins - 1}, one per element of
    ``loc`` (batch shape = the broadcast shape of ``loc`` and ``scale``; use ``.to_event``
    for a vector). Values are integers held in a floating-point tensor, in data units."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        num_bins: int = 256,
        validate_args: bool | None = None,
    ) -> None:
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
        self.loc, self.scale = broadcast_all(loc, scale)
        self.num_bins = num_bins
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_bins - 1)

    def expand(self, batch_shape: torch.Size, _instance=None) -> DiscretizedLogistic:
        new = self._get_checked_instance(DiscretizedLogistic, _instance)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.num_bins = self.num_bins
        super(DiscretizedLogistic, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        upper = (value + 0.5 - self.loc) / self.scale
        lower = (value - 0.5 - self.loc) / self.scale
        log_below_upper = -F.softplus(-upper)  # log sigma(u)
        log_above_lower = -F.softplus(lower)  # log (1 - sigma(l))
        # l - u = -1/s < 0, so -expm1(l - u) is in (0, 1]: exact for narrow bins too
        interior = log_below_upper + log_above_lower + torch.log(-torch.expm1(lower - upper))
        first = value <= 0
        last = value >= self.num_bins - 1
        return torch.where(first, log_below_upper, torch.where(last, log_above_lower, interior))

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """P(X <= value) at integer values."""
        cdf = torch.sigmoid((value + 0.5 - self.loc) / self.scale)
        return torch.where(value >= self.num_bins - 1, torch.ones_like(cdf), cdf)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Round a logistic draw to the nearest bin and clamp to the end bins: each bin then
        receives exactly its probability (the end bins their tails)."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device)
            u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
            draw = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return draw.round().clamp(0, self.num_bins - 1)

    @property
    def mean(self) -> torch.Tensor:
        """E[X] = sum_{k=0}^{K-2} P(X > k), summed bin by bin (no (..., K) tensor)."""
        total = torch.zeros_like(self.loc)
        for k in range(self.num_bins - 1):
            total = total + torch.sigmoid((self.loc - k - 0.5) / self.scale)
        return total

    @property
    def variance(self) -> torch.Tensor:
        """Var X = E[X^2] - E[X]^2, with E[X^2] = sum_{k=0}^{K-2} (2k + 1) P(X > k)."""
        second = torch.zeros_like(self.loc)
        for k in range(self.num_bins - 1):
            second = second + (2 * k + 1) * torch.sigmoid((self.loc - k - 0.5) / self.scale)
        return (second - self.mean**2).clamp_min(0)


def bits_per_dim(log_px: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """-log p(x) / (D log 2): a log-likelihood in nats of a D-dimensional datum (e.g.
    D = C H W values of an 8-bit image), in bits per dimension."""
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    return -log_px / (num_dims * math.log(2))
