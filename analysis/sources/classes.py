"""The latent source classes: prior, exact aggregated posterior, Gaussian, mixture, flow.

Below :mod:`~pyrovae.analysis.sources.fits` (which fits them) and re-exported, with the fits,
from :mod:`pyrovae.analysis.sources`; see there for the table of sources (Hoffman & Johnson,
2016, http://approximateinference.org/accepted/HoffmanJohnson2016.pdf).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.sources.helpers import is_diagonal_normal, seeded
from pyrovae.analysis.sources.mixture_pruning import (
    DEFAULT_TOLERANCE,
    DiagonalLogDensities,
    PrunedDiagonalMixture,
)
from pyrovae.nets import check_positive_int

if TYPE_CHECKING:  # .encodings builds on this module
    from pyrovae.analysis.sources.encodings import Encodings

__all__ = [
    "GaussianMixtureView",
    "LatentSource",
    "PriorSource",
    "AggregatePosterior",
    "GaussianSource",
    "MixtureSource",
    "FlowSource",
]

LOG_2PI = math.log(2 * math.pi)
VARIANCE_FLOOR = 1e-8
"""Added to the covariance of every fitted Gaussian (see GaussianSource.from_moments)."""


def _check_samples(name: str, z: torch.Tensor, min_rows: int = 2) -> torch.Tensor:
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] < min_rows:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(
            f"{name} must be a tensor of shape (num_samples, z_dim) with at least {min_rows} "
            f"rows, got {shape}"
        )
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} holds NaN or inf values; drop them before fitting")
    return z


@dataclass
class GaussianMixtureView:
    """A density over z written as r(z) = sum_c exp(log_weights_c) N(z; loc_c, Sigma_c).

    Attributes:
        log_weights: normalized log mixture weights, shape (C,).
        loc: component means, shape (C, z_dim).
        scale: component standard deviations (diagonal Sigma_c), shape (C, z_dim), or None.
        scale_tril: Cholesky factors of full Sigma_c, shape (C, z_dim, z_dim), or None.

    Exactly one of ``scale`` and ``scale_tril`` is set. Used by closed-form answers
    (:mod:`pyrovae.analysis.likelihood.exact`) and by source-adapted proposals
    (:mod:`pyrovae.analysis.likelihood.proposals`).
    """

    log_weights: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor | None = None
    scale_tril: torch.Tensor | None = None

    @property
    def num_components(self) -> int:
        return self.loc.shape[0]

    @property
    def covariance(self) -> torch.Tensor:
        """Sigma_c, shape (C, z_dim, z_dim)."""
        if self.scale is not None:
            return torch.diag_embed(self.scale.pow(2))
        return self.scale_tril @ self.scale_tril.transpose(-1, -2)


def gaussian_mixture_of(d: dist.Distribution) -> GaussianMixtureView | None:
    """The Gaussian-mixture form of an unbatched distribution over vectors, or None.

    Recognizes a diagonal Normal, a MultivariateNormal and a MixtureSameFamily of either
    (the 'mog' and 'vamp' priors); anything else, or a distribution with a batch shape
    (a conditional prior given labels), gives None.
    """
    if d.batch_shape != torch.Size() or len(d.event_shape) != 1:
        return None
    if is_diagonal_normal(d):
        base = d.base_dist
        zero = torch.zeros(1, device=base.loc.device)
        z_dim = d.event_shape[0]
        return GaussianMixtureView(
            zero, base.loc.expand(z_dim)[None], scale=base.scale.expand(z_dim)[None]
        )
    if isinstance(d, torch.distributions.MultivariateNormal):
        zero = torch.zeros(1, device=d.loc.device)
        return GaussianMixtureView(zero, d.loc[None], scale_tril=d.scale_tril[None])
    if isinstance(d, torch.distributions.MixtureSameFamily):
        comp = d.component_distribution
        log_weights = d.mixture_distribution.logits.log_softmax(-1)
        if is_diagonal_normal(comp):
            shape = comp.batch_shape + comp.event_shape
            base = comp.base_dist
            return GaussianMixtureView(
                log_weights, base.loc.expand(shape), scale=base.scale.expand(shape)
            )
        if isinstance(comp, torch.distributions.MultivariateNormal):
            return GaussianMixtureView(log_weights, comp.loc, scale_tril=comp.scale_tril)
    return None


class LatentSource(nn.Module):
    """Base class of a distribution over z with ``sample`` and batched ``log_prob``."""

    conditional = False

    def __init__(self, z_dim: int, name: str) -> None:
        super().__init__()
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.name = name

    def distribution(self) -> dist.Distribution:
        """The source as a distribution with event shape (z_dim,)."""
        raise NotImplementedError(
            f"{type(self).__name__} is not a torch distribution; use its sample and log_prob"
        )

    def sample(self, num_samples: int) -> torch.Tensor:
        """``num_samples`` draws, shape (num_samples, z_dim)."""
        check_positive_int("num_samples", num_samples)
        with torch.no_grad():
            return self.distribution().sample((num_samples,))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log r(z) for ``z`` of shape (..., z_dim); returns shape (...)."""
        return self.distribution().log_prob(self._check_z(z))

    def gaussian_mixture(self) -> GaussianMixtureView | None:
        """The source as a Gaussian mixture when it is one (else None), for exact answers
        and adapted proposals."""
        try:
            return gaussian_mixture_of(self.distribution())
        except NotImplementedError:
            return None

    def _check_z(self, z: torch.Tensor) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.dim() < 1 or z.shape[-1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (..., {self.z_dim}), got {shape}")
        return z

    def extra_repr(self) -> str:
        return f"name={self.name!r}, z_dim={self.z_dim}"


class PriorSource(LatentSource):
    """The model's own prior p(z), read from ``vae.prior`` at every call.

    The prior module stays owned by the model (it is not a submodule here), so the source
    lives wherever the model does. For a CVAE with a conditional prior p(z | y) the source
    is conditional: ``log_prob(z, y)`` and ``sample(n, y)`` need one-hot labels, unless a
    class was bound with ``label`` (as :func:`fit_per_class` does).
    """

    def __init__(self, vae: nn.Module, label: int | None = None, name: str = "prior") -> None:
        super().__init__(vae.z_dim, name)
        self._vae = [vae]  # outside the module tree: the model owns its prior
        prior_conditional = bool(getattr(vae.prior, "conditional", False))
        if prior_conditional and label is not None and not 0 <= label < vae.y_dim:
            raise ValueError(f"label must be in [0, {vae.y_dim}), got {label!r}")
        self.label = label if prior_conditional else None
        self.conditional = prior_conditional and label is None

    def distribution(self, y: torch.Tensor | None = None) -> dist.Distribution:
        vae = self._vae[0]
        if not getattr(vae.prior, "conditional", False):
            return vae.prior()
        if self.label is not None:
            device = next(vae.parameters()).device
            y = F.one_hot(torch.tensor(self.label, device=device), vae.y_dim).float()
        if y is None:
            raise ValueError(
                f"the prior of this CVAE is conditional; pass y, one-hot labels of shape "
                f"(..., {vae.y_dim}), or bind a class with PriorSource(vae, label=c)"
            )
        return vae.prior(y)

    def sample(self, num_samples: int, y: torch.Tensor | None = None) -> torch.Tensor:
        check_positive_int("num_samples", num_samples)
        with torch.no_grad():
            prior = self.distribution(y)
            return prior.sample() if prior.batch_shape else prior.sample((num_samples,))

    def log_prob(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.distribution(y).log_prob(self._check_z(z))

    def gaussian_mixture(self) -> GaussianMixtureView | None:
        if self.conditional:
            return None
        return gaussian_mixture_of(self.distribution())


class AggregatePosterior(LatentSource):
    """The exact aggregated posterior q(z) = 1/N sum_n q(z | x_n).

    ``sample`` picks n uniformly and draws from q(z | x_n). ``log_prob`` is a logsumexp
    over all N components. For a diagonal Normal encoder the stored ``loc``/``scale`` are
    used, in float64: the quadratic form is a matrix product in coordinates centred on the
    mean of the locs (a pair costs 2 z_dim multiply-adds and one exp) wherever a bound on
    its rounding is at most 1e-9 nats, and each term is computed directly elsewhere (means
    far apart relative to their scales; :mod:`~pyrovae.analysis.sources.mixture_pruning`). On the
    CPU, components that provably carry less than ``tolerance`` of a point's mass are
    skipped (:class:`~pyrovae.analysis.sources.mixture_pruning.PrunedDiagonalMixture`: exact upper
    bounds over kd-tree boxes of the points, 10 to 33 times faster at z <= 10, 8 to 9 at
    z = 50). ``tolerance=0`` (and any GPU) sums all components, streamed over chunks of
    ``chunk_size`` (point, component) pairs. For float64 z, any means and scales >= 1e-150, the
    value lies within [log q(z) + log(1 - tolerance) - eps, log q(z) + eps], eps = 1e-9
    nats plus float64 rounding (relative 1e-15 of ``|log q(z)|`` and of the log scales; see
    the module). Any other guide is summed exactly over all N components as well. The IAF
    flow guide (:class:`~pyrovae.guides.FlowEncoder`) is scored by
    :class:`~pyrovae.analysis.sources.flow_pairs.FlowPairs`: the encoder runs once per datum (cached
    while its parameters are unchanged) and each (point, datum) pair costs one pass of the
    flow's networks instead of z_dim (5 to 7 us a pair at z = 50, 400-400, on one core,
    against 360 to 830 us through the flow's own ``log_prob``); that is still N x (points)
    pairs, half a minute per hundred points on 50,000 encodings, so
    :func:`~pyrovae.analysis.sources.fit_source` keeps a random 20 by default
    (:data:`pyrovae.settings.AGGREGATE_COMPONENTS`). Any other guide, and the flow guide
    when gradients are on (AIS), is scored through ``q(z | x_n).log_prob(z)``, the
    encoder run once per call on chunks of ``chunk_size / 16`` pairs.

    Args:
        encodings: the posteriors q(z | x_n) (see :class:`Encodings`).
        max_components: keep a random subset of this many data (seeded by ``seed``).
        seed: seed of the subset.
        chunk_size: (point, component) pairs per step of the full sum.
        name: the source's name.
        tolerance: largest share of a point's mass that pruning may drop on the CPU (its
            log error is at most this); 0 sums every component.
    """

    def __init__(
        self,
        encodings: Encodings,
        max_components: int | None = None,
        seed: int | None = 0,
        chunk_size: int = 2**22,
        name: str = "aggregate",
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        super().__init__(encodings.z_dim, name)
        self.chunk_size = check_positive_int("chunk_size", chunk_size)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
            raise ValueError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
        if not 0 <= tolerance < 1:
            raise ValueError(
                f"tolerance must lie in [0, 1) (0 sums every component), got {tolerance!r}"
            )
        self.tolerance = float(tolerance)
        # what the log-density derives from loc and scale, built on first use
        self._pruned: PrunedDiagonalMixture | None = None
        self._dense: DiagonalLogDensities | None = None
        keep = None
        if max_components is not None:
            check_positive_int("max_components", max_components)
            if max_components < encodings.num_data:
                with seeded(seed):
                    keep = torch.randperm(encodings.num_data)[:max_components]
                keep = keep.to(encodings.device)
        self.diagonal = encodings.diagonal
        self._encoder: list[nn.Module] = []
        if self.diagonal:
            loc, scale = encodings.loc, encodings.scale
            if keep is not None:
                loc, scale = loc[keep], scale[keep]
            self.register_buffer("loc", loc.float())
            self.register_buffer("scale", scale.float())
        else:
            x, y = encodings.x, encodings.y
            if keep is not None:
                x = x[keep]
                y = None if y is None else y[keep]
            self.register_buffer("x", x)
            self.register_buffer("y", y)
            self._encoder = [encodings.vae.encoder]  # owned by the model
            self.batch_size = encodings.batch_size
        self._flow_pairs: Any = None  # FlowPairs of x, built on first use

    @property
    def num_components(self) -> int:
        return (self.loc if self.diagonal else self.x).shape[0]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._pruned = self._dense = self._flow_pairs = None  # derived from the tensors
        super()._load_from_state_dict(*args, **kwargs)

    def gaussian_mixture(self) -> GaussianMixtureView | None:
        """N equally weighted diagonal Normals (None for a guide that is not diagonal)."""
        if not self.diagonal:
            return None
        n = self.num_components
        log_weights = torch.full((n,), -math.log(n), device=self.loc.device)
        return GaussianMixtureView(log_weights, self.loc, scale=self.scale)

    def _posterior(self, idx: torch.Tensor | slice) -> dist.Distribution:
        y = None if self.y is None else self.y[idx]
        return self._encoder[0](self.x[idx], y)

    def sample(self, num_samples: int) -> torch.Tensor:
        check_positive_int("num_samples", num_samples)
        with torch.no_grad():
            device = self.loc.device if self.diagonal else self.x.device
            idx = torch.randint(self.num_components, (num_samples,), device=device)
            if self.diagonal:
                return self.loc[idx] + self.scale[idx] * torch.randn_like(self.loc[idx])
            return self._posterior(idx).sample()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        z = self._check_z(z)
        flat = z.reshape(-1, self.z_dim)
        n = self.num_components
        if self.diagonal and self.tolerance > 0 and flat.device.type == "cpu":
            log_q = self.pruned_mixture()(flat) - math.log(n)
            return log_q.to(z.dtype).reshape(z.shape[:-1])
        if not self.diagonal and not torch.is_grad_enabled():
            scorer = self.flow_pairs()
            if scorer is not None:
                log_q = scorer.logsumexp(flat) - math.log(n)
                return log_q.to(z.dtype).reshape(z.shape[:-1])
        pairs = self.chunk_size if self.diagonal else max(1, self.chunk_size // 16)
        rows = max(1, pairs // (n if self.diagonal else min(n, self.batch_size)))
        posteriors = None if self.diagonal else self._posteriors()
        out = []
        for start in range(0, flat.shape[0], rows):
            chunk = flat[start : start + rows]
            if self.diagonal:  # differentiable (HMC needs d/dz), to any order
                out.append(self._dense_terms().log_sum(chunk.double()))
            else:
                out.append(self._generic_logsumexp(chunk, posteriors))
        log_q = torch.cat(out) - math.log(n)
        return log_q.to(z.dtype).reshape(z.shape[:-1])

    def flow_pairs(self) -> Any:
        """The one-pass scorer of the flow guide's pairs
        (:class:`~pyrovae.analysis.sources.flow_pairs.FlowPairs`), or None for a guide it does not
        know (and for a diagonal one)."""
        from pyrovae.analysis.sources.flow_pairs import FlowPairs, supports

        scorer = self._flow_pairs
        if scorer is not None and scorer.x is self.x and scorer.y is self.y:
            return scorer
        if self.diagonal or not supports(self._encoder[0]):
            return None
        scorer = self._flow_pairs = FlowPairs(self._encoder[0], self.x, self.y, self.batch_size)
        return scorer

    def _dense_terms(self) -> DiagonalLogDensities:
        """The full sum's float64 terms (the expanded form where its rounding bound is at
        most 1e-9 nats, direct elsewhere, as in the pruned sum), built once per device:
        only the dense path needs them."""
        dense = self._dense
        if dense is None or dense.table.device != self.loc.device:
            dense = self._dense = DiagonalLogDensities(self.loc, self.scale)
        return dense

    def pruned_mixture(self) -> PrunedDiagonalMixture:
        """The pruned sum over this source's components (built once per device)."""
        pruned = self._pruned
        if pruned is None or pruned.table.device != self.loc.device:
            pruned = PrunedDiagonalMixture(self.loc, self.scale, self.tolerance)
            self._pruned = pruned
        return pruned

    def _posteriors(self) -> list[dist.Distribution]:
        """q(z | x_n) for all components, in batches of ``batch_size`` (one encoder pass
        per call of log_prob, shared by its chunks of points)."""
        starts = range(0, self.num_components, self.batch_size)
        return [self._posterior(slice(s, s + self.batch_size)) for s in starts]

    def _generic_logsumexp(
        self, chunk: torch.Tensor, posteriors: list[dist.Distribution]
    ) -> torch.Tensor:
        total = None
        for q in posteriors:
            m = q.batch_shape[0]
            lp = q.log_prob(chunk.unsqueeze(1).expand(chunk.shape[0], m, self.z_dim))
            part = torch.logsumexp(lp.double(), dim=-1)
            total = part if total is None else torch.logaddexp(total, part)
        return total


class GaussianSource(LatentSource):
    """N(loc, Sigma) with Sigma = diag(scale^2) (``scale``) or L L^T (``scale_tril``)."""

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor | None = None,
        scale_tril: torch.Tensor | None = None,
        name: str = "gaussian",
    ) -> None:
        super().__init__(loc.shape[-1], name)
        if (scale is None) == (scale_tril is None):
            raise ValueError("give exactly one of scale (diagonal) or scale_tril (full)")
        self.register_buffer("loc", loc.float())
        self.register_buffer("scale", None if scale is None else scale.float())
        self.register_buffer("scale_tril", None if scale_tril is None else scale_tril.float())

    @classmethod
    def from_moments(
        cls,
        mean: torch.Tensor,
        cov: torch.Tensor,
        diagonal: bool,
        variance_floor: float = VARIANCE_FLOOR,
        name: str = "gaussian",
    ) -> GaussianSource:
        """The Gaussian with this mean and covariance (only its diagonal if ``diagonal``).

        ``variance_floor * I`` is added to the covariance, so that a latent dim the
        encoder ignores (zero spread of its means) still gives a proper density.
        """
        if not variance_floor >= 0:
            raise ValueError(f"variance_floor must be >= 0, got {variance_floor!r}")
        eye = torch.eye(cov.shape[-1], dtype=torch.double, device=cov.device)
        cov = cov.double() + variance_floor * eye
        if diagonal:
            return cls(mean, scale=cov.diagonal().sqrt(), name=name)
        return cls(mean, scale_tril=torch.linalg.cholesky(cov), name=name)

    @property
    def covariance(self) -> torch.Tensor:
        if self.scale is not None:
            return torch.diag(self.scale.pow(2))
        return self.scale_tril @ self.scale_tril.T

    def distribution(self) -> dist.Distribution:
        if self.scale is not None:
            return dist.Normal(self.loc, self.scale).to_event(1)
        return dist.MultivariateNormal(self.loc, scale_tril=self.scale_tril)


class MixtureSource(LatentSource):
    """sum_c pi_c N(z; loc_c, L_c L_c^T): a Gaussian mixture with full covariances."""

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        scale_trils: torch.Tensor,
        name: str = "gmm",
    ) -> None:
        super().__init__(locs.shape[-1], name)
        self.register_buffer("logits", logits.float())
        self.register_buffer("locs", locs.float())
        self.register_buffer("scale_trils", scale_trils.float())

    @property
    def weights(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    @property
    def covariances(self) -> torch.Tensor:
        return self.scale_trils @ self.scale_trils.transpose(-1, -2)

    def distribution(self) -> dist.Distribution:
        components = dist.MultivariateNormal(self.locs, scale_tril=self.scale_trils)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class FlowSource(LatentSource):
    """A Real NVP flow: z = loc + scale * f_L o ... o f_1(u), u ~ N(0, I).

    Each f_l is an affine coupling layer (Pyro's ``affine_coupling``: half of the
    coordinates are scaled and shifted by a network of the other half), with the order of
    the coordinates reversed between layers; ``loc``/``scale`` standardize the data. For
    z_dim = 1 the layers are element-wise splines. Density and sampling are one pass each.
    Density estimation using Real NVP (Dinh et al., 2017), https://arxiv.org/abs/1605.08803
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        num_flows: int = 6,
        hidden_dims: Sequence[int] | None = None,
        name: str = "flow",
    ) -> None:
        z_dim = loc.shape[-1]
        super().__init__(z_dim, name)
        self.num_flows = check_positive_int("num_flows", num_flows)
        hidden = list(hidden_dims) if hidden_dims is not None else [max(64, 4 * z_dim)] * 2
        self.hidden_dims = tuple(hidden)
        self.register_buffer("loc", loc.float())
        self.register_buffer("scale", scale.float())
        self.register_buffer("base_loc", torch.zeros(z_dim, device=loc.device))
        self.register_buffer("base_scale", torch.ones(z_dim, device=loc.device))
        self.register_buffer("reverse", torch.arange(z_dim - 1, -1, -1, device=loc.device))
        if z_dim == 1:
            layers = [T.Spline(1) for _ in range(num_flows)]
        else:
            layers = [T.affine_coupling(z_dim, hidden_dims=hidden) for _ in range(num_flows)]
        self.layers = nn.ModuleList(layers)

    def distribution(self) -> dist.Distribution:
        transforms: list[Any] = []
        for i, layer in enumerate(self.layers):
            if i > 0 and self.z_dim > 1:
                transforms.append(T.Permute(self.reverse))
            transforms.append(layer)
        transforms.append(T.AffineTransform(self.loc, self.scale, event_dim=1))
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        return dist.TransformedDistribution(base, transforms)
