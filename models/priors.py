"""Priors p(z) (or p(z | y)) over the latent code; each call returns a Pyro distribution."""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from torch import nn

from pyrovae.nets import check_dims, check_positive_int

__all__ = ["StandardNormalPrior", "MixturePrior", "VampPrior", "FlowPrior", "PRIORS"]


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
        components = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class VampPrior(nn.Module):
    """p(z [| y]) = 1/K sum_k q_phi(z | u_k [, y]) with K learned pseudo-inputs u_k.

    VAE with a VampPrior (Tomczak & Welling, 2018), https://arxiv.org/abs/1705.07120.
    The pseudo-inputs live in [0, 1] (a sigmoid of free parameters) and are pushed
    through the encoder's diagonal Normal (for a flow encoder, the part before the flow).
    For a conditional model the prior is conditional: q_phi(z | u_k, y).
    """

    def __init__(self, encoder: nn.Module, num_components: int = 500) -> None:
        super().__init__()
        self.num_components = check_positive_int("num_components", num_components)
        self.z_dim = encoder.z_dim
        self.conditional = encoder.y_dim > 0
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
        if self.conditional:
            if y is None:
                raise ValueError("a conditional VampPrior needs y (one-hot labels)")
            # u: (K, x_dim), y: (..., y_dim) -> components of batch shape (..., K)
            u = u.expand(*y.shape[:-1], *u.shape)
            y = y.unsqueeze(-2).expand(*u.shape[:-1], y.shape[-1])
        loc, scale, _ = encoder.encode(u, y)
        components = dist.Normal(loc, scale).to_event(1)
        mix = dist.Categorical(logits=torch.zeros(loc.shape[:-1], device=loc.device))
        return dist.MixtureSameFamily(mix, components)


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
