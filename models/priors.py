"""Priors p(z) (or p(z | y)) over the latent code; each call returns a Pyro distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from pyrovae.nets import check_dims, check_positive_int

__all__ = [
    "StandardNormalPrior",
    "MixturePrior",
    "VampPrior",
    "FlowPrior",
    "DiagonalNormalMixture",
    "MIXTURE_CHUNK_ELEMENTS",
    "PRIORS",
]

MIXTURE_CHUNK_ELEMENTS = 2**24
"""Elements (draws x components x z_dim) of one intermediate tensor in the log density of
a mixture prior: 64 MiB in float32. The Normal log density holds about three such tensors
at once, so one ``log_prob`` call stays near 200 MiB however many draws it scores (500
components and z_dim = 50 take 16,000 draws to 1.6 GB per intermediate unchunked). Read
at each call; a :class:`DiagonalNormalMixture` may carry its own ``max_elements``."""


class DiagonalNormalMixture(dist.MixtureSameFamily):
    """p(z) = sum_k w_k N(z; m_k, diag(s_k^2)) whose ``log_prob`` streams over draws.

    log p(z) = logsumexp_k [log w_k + log N(z; m_k, diag(s_k^2))] is computed on chunks
    of draws so that no (draws x components x z_dim) intermediate exceeds
    ``max_elements`` (default :data:`MIXTURE_CHUNK_ELEMENTS`): the chunks are split along
    the leading dims of the broadcast batch (sample, particle, then data), each is scored
    exactly as torch's ``MixtureSameFamily`` scores it, and the rows are joined. Every row
    is the same sequence of operations as unchunked, so the values are the same. Under
    autograd the chunks' intermediates are kept for the backward pass, as unchunked.
    Otherwise a ``MixtureSameFamily`` (its ``component_distribution`` is the diagonal
    Normal, its ``mixture_distribution`` the Categorical), so sampling and the Gaussian
    mixture views of :mod:`pyrovae.analysis.sources` are unchanged.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        max_elements: int | None = None,
        validate_args: bool | None = None,
    ) -> None:
        self.max_elements = max_elements
        super().__init__(
            dist.Categorical(logits=logits),
            dist.Normal(loc, scale).to_event(1),
            validate_args=validate_args,
        )

    def expand(
        self,
        batch_shape: torch.Size | Sequence[int],
        _instance: DiagonalNormalMixture | None = None,
    ) -> DiagonalNormalMixture:
        new = self._get_checked_instance(DiagonalNormalMixture, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.max_elements = self.max_elements
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        normal = self.component_distribution.base_dist
        log_weights = torch.log_softmax(self.mixture_distribution.logits, dim=-1)
        budget = self.max_elements or MIXTURE_CHUNK_ELEMENTS
        return _mixture_log_prob(self._pad(value), normal.loc, normal.scale, log_weights, budget)


def _mixture_log_prob(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_weights: torch.Tensor,
    budget: int,
) -> torch.Tensor:
    """logsumexp_k [log_weights + sum_d log N(z_d; loc_kd, scale_kd)] over chunks of rows.

    Shapes: z (..., 1, D), loc and scale (..., K, D), log_weights (..., K), broadcasting
    to a leading shape L; returns shape L. Splits along the first dim of L while one
    piece holds more than ``budget`` elements of (L, K, D), then along the next.
    """
    lead = torch.broadcast_shapes(
        z.shape[:-2], loc.shape[:-2], scale.shape[:-2], log_weights.shape[:-1]
    )
    pair = torch.broadcast_shapes(loc.shape[-2:], scale.shape[-2:])  # (K, D)
    if not lead or math.prod(lead) * math.prod(pair) <= budget:
        log_density = dist.Normal(loc, scale, validate_args=False).log_prob(z).sum(-1)
        return torch.logsumexp(log_density + log_weights, dim=-1)
    depth = len(lead)
    # give every tensor all the leading dims, so that they can be sliced alike
    z, loc, scale = (t.reshape((1,) * (depth + 2 - t.dim()) + t.shape) for t in (z, loc, scale))
    log_weights = log_weights.reshape((1,) * (depth + 1 - log_weights.dim()) + log_weights.shape)
    parts = (z, loc, scale, log_weights)
    if lead[0] == 1:  # nothing to split here: go one dim deeper
        return _mixture_log_prob(*(t[0] for t in parts), budget).unsqueeze(0)
    per_row = math.prod(lead[1:]) * math.prod(pair)
    step = max(1, budget // per_row)
    chunks = [
        _mixture_log_prob(
            *(t if t.shape[0] == 1 else t[start : start + step] for t in parts), budget
        )
        for start in range(0, lead[0], step)
    ]
    return torch.cat(chunks, dim=0)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    conditional = False

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    @classmethod
    def from_config(cls, encoder: nn.Module, num_components: int, num_flows: int) -> nn.Module:
        """Build from the shared model options (see :class:`pyrovae.build.ModelConfig`)."""
        return cls(encoder.z_dim)

    def forward(self, y: torch.Tensor | None = None) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class MixturePrior(nn.Module):
    """p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)) with learned weights, means and scales."""

    conditional = False

    def __init__(self, z_dim: int, num_components: int = 10) -> None:
        super().__init__()
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.num_components = check_positive_int("num_components", num_components)
        # Spread the initial means so the components do not start identical.
        self.locs = nn.Parameter(torch.randn(num_components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(num_components, z_dim))
        self.logits = nn.Parameter(torch.zeros(num_components))

    @classmethod
    def from_config(cls, encoder: nn.Module, num_components: int, num_flows: int) -> nn.Module:
        return cls(encoder.z_dim, num_components=num_components)

    def forward(self, y: torch.Tensor | None = None) -> dist.Distribution:
        return DiagonalNormalMixture(self.logits, self.locs, self.log_scales.exp())


class VampPrior(nn.Module):
    """p(z [| y]) = 1/K sum_k q_phi(z | u_k [, y]) with K learned pseudo-inputs u_k.

    VAE with a VampPrior (Tomczak & Welling, 2018), https://arxiv.org/abs/1705.07120.
    The pseudo-inputs live in [0, 1] (a sigmoid of free parameters) and are pushed
    through the encoder's diagonal Normal (for a flow encoder, the part before the flow).
    For a conditional model the prior is conditional: q_phi(z | u_k, y); with
    ``over_labels`` (the semi-supervised M2, whose p(z) does not depend on y) it is the
    mixture over every pseudo-input and every label, 1/(K C) sum_k sum_c q_phi(z | u_k, c).
    """

    def __init__(
        self, encoder: nn.Module, num_components: int = 500, over_labels: bool = False
    ) -> None:
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.z_dim = encoder.z_dim
        self.over_labels = bool(over_labels) and encoder.y_dim > 0
        self.conditional = encoder.y_dim > 0 and not self.over_labels
        # Stored outside the module tree: the encoder is owned (and saved) by the VAE.
        self._encoder = [encoder]
        self.pseudo_logits = nn.Parameter(0.5 * torch.randn(num_components, encoder.x_dim) - 2.0)

    @classmethod
    def from_config(cls, encoder: nn.Module, num_components: int, num_flows: int) -> nn.Module:
        return cls(encoder, num_components=num_components)

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.pseudo_logits)

    def forward(self, y: torch.Tensor | None = None) -> dist.Distribution:
        encoder = self._encoder[0]
        u = self.pseudo_inputs
        if self.over_labels:  # p(z) = 1/(K C) sum_k sum_c q(z | u_k, c): K C components
            classes = encoder.y_dim
            labels = torch.eye(classes, device=u.device, dtype=u.dtype)
            y = labels.repeat_interleave(u.shape[0], 0)
            u = u.repeat(classes, 1)
        elif self.conditional:
            if y is None:
                raise ValueError("a conditional VampPrior needs y (one-hot labels)")
            # u: (K, x_dim), y: (..., y_dim) -> components of batch shape (..., K)
            u = u.expand(*y.shape[:-1], *u.shape)
            y = y.unsqueeze(-2).expand(*u.shape[:-1], y.shape[-1])
        loc, scale, _ = encoder.encode(u, y)
        return DiagonalNormalMixture(torch.zeros(loc.shape[:-1], device=loc.device), loc, scale)


class FlowPrior(nn.Module):
    """p(z) = N(0, I) pushed through masked autoregressive flow (MAF) steps.

    The steps are inverted affine autoregressive transforms, so that log p(z) of any z
    (which the model needs at every step) is one network pass per step; sampling is
    sequential. Masked Autoregressive Flow for Density Estimation (Papamakarios et al.,
    2017), https://arxiv.org/abs/1705.07057. Built on Pyro's own transforms so the
    library needs no further dependency.
    """

    conditional = False

    def __init__(
        self, z_dim: int, num_flows: int = 4, hidden_dims: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.z_dim = check_positive_int("z_dim", z_dim)
        self.num_flows = check_positive_int("num_flows", num_flows)
        if z_dim < 2:
            raise ValueError(
                f"a flow prior needs z_dim >= 2 (autoregressive steps), got z_dim={z_dim}; "
                "use the 'normal' or 'mog' prior for z_dim=1"
            )
        hidden_dims = check_dims("hidden_dims", hidden_dims or (max(4 * z_dim, 32),) * 2)
        self.flows = nn.ModuleList(
            T.affine_autoregressive(z_dim, hidden_dims=list(hidden_dims)) for _ in range(num_flows)
        )
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))
        self.register_buffer("reverse", torch.arange(z_dim - 1, -1, -1))

    @classmethod
    def from_config(cls, encoder: nn.Module, num_components: int, num_flows: int) -> nn.Module:
        return cls(encoder.z_dim, num_flows=num_flows)

    def forward(self, y: torch.Tensor | None = None) -> dist.Distribution:
        transforms: list[T.Transform] = []
        for i, flow in enumerate(self.flows):
            if i > 0:
                transforms.append(T.Permute(self.reverse))
            transforms.append(flow.inv)
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, transforms)


PRIORS: dict[str, type[nn.Module]] = {
    "normal": StandardNormalPrior,
    "mog": MixturePrior,
    "vamp": VampPrior,
    "flow": FlowPrior,
}
