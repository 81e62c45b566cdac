"""Decoders p_theta(x | z[, y]): a network followed by a likelihood, returned as a distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

from pyrovae.convnets import decoder_net
from pyrovae.nets import cat_broadcast, check_positive_int, data_scaling

from .discretized import DiscretizedLogistic

__all__ = [
    "Decoder",
    "BernoulliDecoder",
    "ContinuousBernoulliDecoder",
    "GaussianDecoder",
    "DiscretizedLogisticDecoder",
    "StableContinuousBernoulli",
    "LIKELIHOODS",
]


class Decoder(nn.Module):
    """Base class: ``net([z, y]) -> parameters``, ``forward(z, y) -> Distribution`` over x.

    ``mean(z, y)`` returns the decoder's mean in data space (used for images).
    ``binarize`` tells the training loop whether the data are binarized first.

    ``net`` is an MLP of widths ``hidden_dims`` (``net="mlp"``), or for images of shape
    ``image_shape`` = (C, H, W) fully connected layers of widths ``hidden_dims`` followed by
    a residual transposed-convolutional net of widths ``channels`` (reversed) (``net="conv"``,
    :class:`~pyrovae.convnets.ConvDecoderNet`). Either gives ``params_per_pixel * x_dim``
    values, one flat block of x_dim per parameter (C, H, W order).
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
        *,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.x_dim = check_positive_int("x_dim", x_dim)
        self.y_dim = y_dim
        self.net = decoder_net(
            z_dim + y_dim,
            x_dim,
            hidden_dims,
            self.params_per_pixel,
            activation,
            net,
            image_shape,
            channels,
        )

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


class StableContinuousBernoulli(TorchDistribution):
    """The continuous Bernoulli on [0, 1], computed from its logits eta without clamping.

    With lambda = sigmoid(eta), p(x | lambda) = C(lambda) lambda^x (1 - lambda)^(1 - x) and
    C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) (= 2 at lambda = 1/2). Since
    1 - 2 lambda = -tanh(eta / 2), C = eta / tanh(eta / 2), and the density is the
    exponential family p(x | eta) = exp(eta x - A(eta)) with log partition

        A(eta) = log int_0^1 e^(eta x) dx = log((e^eta - 1) / eta)
               = softplus(eta) - log C(eta).

    With a = |eta| and d = x for eta < 0, d = 1 - x for eta > 0 (the distance from the
    mode),

        log p(x | eta) = -a d + log(a / (1 - e^(-a))),

    exact for any a (no overflow, no cancellation of large terms) and computed with expm1;
    for |eta| < 0.1 the Taylor series eta x - (eta/2 + eta^2/24 - eta^4/2880 +
    eta^6/181440) is used instead (truncation error < 1e-14). Mean and variance are
    A'(eta) = 1 / (1 - e^(-eta)) - 1/eta (= lambda / (2 lambda - 1) + 1 / (2 artanh(1 -
    2 lambda))) and A''(eta) = 1/eta^2 - e^(-a) / (1 - e^(-a))^2, also with series near
    0. Sampling inverts the CDF F(x) = expm1(eta x) / expm1(eta), so ``rsample`` is
    reparameterized. Gradients are finite at eta = 0 and at any finite |eta|.

    torch's ``ContinuousBernoulli`` clamps lambda at float32 eps, so its log C stops
    growing at |eta| ~ 16 (log C(-50) = 2.77 instead of log 50 = 3.91), an error of
    log(|eta| / 16) nats per saturated pixel (MNIST is mostly exact zeros).

    The continuous Bernoulli: fixing a pervasive error in variational autoencoders
    (Loaiza-Ganem & Cunningham, 2019), https://arxiv.org/abs/1907.06845
    """

    arg_constraints = {"logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    #: |eta| below which the power series replace the closed forms.
    SERIES_BAND = 0.1
    #: |eta| below which the CDF and its inverse use their first-order series.
    CDF_BAND = 1e-6

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None) -> None:
        (self.logits,) = broadcast_all(logits)
        super().__init__(self.logits.shape, validate_args=validate_args)

    def expand(
        self,
        batch_shape: torch.Size | Sequence[int],
        _instance: StableContinuousBernoulli | None = None,
    ) -> StableContinuousBernoulli:
        new = self._get_checked_instance(StableContinuousBernoulli, _instance)
        batch_shape = torch.Size(batch_shape)
        new.logits = self.logits.expand(batch_shape)
        super(StableContinuousBernoulli, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _split(
        self, band: float, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(small, eta where small else 0, |eta| where not small else 1): each branch of a
        ``torch.where`` sees only values where it is finite, so gradients stay finite."""
        eta = self.logits if dtype is None else self.logits.to(dtype)
        small = eta.abs() < band
        return (
            small,
            torch.where(small, eta, torch.zeros_like(eta)),
            torch.where(small, torch.ones_like(eta), eta.abs()),
        )

    @staticmethod
    def _log_mass_ratio(a: torch.Tensor) -> torch.Tensor:
        """log(a / (1 - e^(-a))) for a > 0."""
        return -torch.log(-torch.expm1(-a) / a)

    @property
    def log_normalizer(self) -> torch.Tensor:
        """log C(eta) = log(eta / tanh(eta / 2)) = log 2 + eta^2/12 - 7 eta^4/1440 + ..."""
        small, e, a = self._split(self.SERIES_BAND)
        e2 = e * e
        series = math.log(2.0) + e2 * (
            1 / 12 + e2 * (-7 / 1440 + e2 * (31 / 90720 - e2 * 127 / 4838400))
        )
        return torch.where(small, series, F.softplus(-a) + self._log_mass_ratio(a))

    def _log_partition(self) -> torch.Tensor:
        """A(eta) = log((e^eta - 1) / eta) = max(eta, 0) - log(a / (1 - e^(-a)))."""
        small, e, a = self._split(self.SERIES_BAND)
        e2 = e * e
        series = e / 2 + e2 * (1 / 24 + e2 * (-1 / 2880 + e2 / 181440))
        return torch.where(small, series, self.logits.clamp_min(0) - self._log_mass_ratio(a))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        small, e, a = self._split(self.SERIES_BAND)
        e2 = e * e
        series = e * value - (e / 2 + e2 * (1 / 24 + e2 * (-1 / 2880 + e2 / 181440)))
        distance = torch.where(self.logits > 0, 1 - value, value)
        return torch.where(small, series, self._log_mass_ratio(a) - a * distance)

    @property
    def mean(self) -> torch.Tensor:
        """1 / (1 - e^(-eta)) - 1/eta = 1/2 + eta/12 - eta^3/720 + eta^5/30240 - ...

        Computed in float64 (the closed form cancels near the series band), then cast back.
        """
        small, e, a = self._split(self.SERIES_BAND, torch.float64)
        e2 = e * e
        series = 0.5 + e * (1 / 12 + e2 * (-1 / 720 + e2 * (1 / 30240 - e2 / 1209600)))
        upper = 1 / -torch.expm1(-a) - 1 / a  # the mean for eta = a > 0
        mean = torch.where(small, series, torch.where(self.logits > 0, upper, 1 - upper))
        return mean.to(self.logits.dtype)

    @property
    def variance(self) -> torch.Tensor:
        """1/eta^2 - e^(-a) / (1 - e^(-a))^2 = 1/12 - eta^2/240 + eta^4/6048 - ...

        Computed in float64 (the closed form cancels near the series band), then cast back.
        """
        small, e, a = self._split(self.SERIES_BAND, torch.float64)
        e2 = e * e
        series = 1 / 12 + e2 * (-1 / 240 + e2 * (1 / 6048 - e2 / 172800))
        variance = torch.where(small, series, a.pow(-2) - torch.exp(-a) / torch.expm1(-a).pow(2))
        return variance.to(self.logits.dtype)

    def entropy(self) -> torch.Tensor:
        """H = A(eta) - eta E[x]."""
        return self._log_partition() - self.logits * self.mean

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        """F(x) = expm1(eta x) / expm1(eta), written for eta < 0 and mirrored
        (F(x; eta) = 1 - F(1 - x; -eta)) so that nothing overflows."""
        if self._validate_args:
            self._validate_sample(value)
        small, e, a = self._split(self.CDF_BAND)
        x = value
        upper = self.logits > 0
        t = torch.where(upper, 1 - x, x)
        lower_cdf = torch.expm1(-a * t) / torch.expm1(-a)  # F(t; -a)
        direct = torch.where(upper, 1 - lower_cdf, lower_cdf)
        return torch.where(small, x + e * x * (x - 1) / 2, direct).clamp(0, 1)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        """F^-1(u) = log1p(u expm1(eta)) / eta, mirrored for eta > 0 as in :meth:`cdf`."""
        small, e, a = self._split(self.CDF_BAND)
        u = value
        upper = self.logits > 0
        v = torch.where(upper, 1 - u, u)
        lower = torch.log1p(v * torch.expm1(-a)) / -a  # F^-1(v; -a)
        direct = torch.where(upper, 1 - lower, lower)
        return torch.where(small, u + e * u * (1 - u) / 2, direct).clamp(0, 1)

    def rsample(self, sample_shape: torch.Size | Sequence[int] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = torch.rand(shape, dtype=self.logits.dtype, device=self.logits.device)
        return self.icdf(u)

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)


class ContinuousBernoulliDecoder(Decoder):
    """Continuous Bernoulli likelihood for grey values in [0, 1].

    The density is :class:`StableContinuousBernoulli`, exact for saturated logits (torch's
    own clamps its normalizer at ``|logit| ~ 16``). The continuous Bernoulli: fixing a
    pervasive error in variational autoencoders (Loaiza-Ganem & Cunningham, 2019),
    https://arxiv.org/abs/1907.06845
    """

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        return StableContinuousBernoulli(logits=self.logits(z, y)).to_event(1)


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
        *,
        net: str = "mlp",
        image_shape: Sequence[int] | None = None,
        channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__(
            z_dim,
            x_dim,
            hidden_dims,
            y_dim,
            activation,
            net=net,
            image_shape=image_shape,
            channels=channels,
        )
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
        scale = self.scale.expand(loc.shape)
        scaling = data_scaling(self)
        if scaling is not None:  # N(m + s mu, s sigma) in the data's units
            loc, scale = scaling.loc + scaling.scale * loc, scaling.scale * scale
        return dist.Normal(loc, scale).to_event(1)


class DiscretizedLogisticDecoder(Decoder):
    """p(x | z) = prod_i DiscretizedLogistic(x_i; mu_i, s_i) over integers 0..255 (8-bit data).

    The network gives mu and log s per value (``params_per_pixel = 2``: all locations, then
    all log-scales); with a :class:`~pyrovae.nets.DataScaling` attached, both are in
    standardized units and mapped back, mu -> m + s_data mu, s -> s_data s. The scale is
    kept above ``min_scale`` (in standardized units). Salimans et al. (2017), PixelCNN++;
    Kingma et al. (2016), the IAF VAE (its decoder likelihood on CIFAR-10).
    """

    params_per_pixel = 2
    #: Smallest scale of a value, in the units the network works in.
    min_scale = 1e-3

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        loc, raw = self.logits(z, y).chunk(2, dim=-1)
        scale = F.softplus(raw) + self.min_scale
        scaling = data_scaling(self)
        if scaling is not None:
            loc, scale = scaling.loc + scaling.scale * loc, scaling.scale * scale
        return DiscretizedLogistic(loc, scale).to_event(1)


LIKELIHOODS: dict[str, type[Decoder]] = {
    "bernoulli": BernoulliDecoder,
    "continuous-bernoulli": ContinuousBernoulliDecoder,
    "gaussian": GaussianDecoder,
    "discretized-logistic": DiscretizedLogisticDecoder,
}
