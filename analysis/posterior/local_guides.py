"""The per-datum guides q*(z | x_n) that measure the approximation gap: a guide family of
the amortized guide's kind (diagonal Normal, full-covariance Normal, IAF flow) with its own
parameters for each datum, fitted with the model's weights held fixed, and the ELBO of any
guide (Cremer et al. 2018, Inference Suboptimality in Variational Autoencoders)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import AutoContinuous, AutoDiagonalNormal, AutoNormalizingFlow
from pyro.infer.autoguide.initialization import init_to_median
from pyro.nn import PyroParam
from pyro.poutine.runtime import get_plates
from torch import nn
from torch.distributions import constraints

from pyrovae.analysis.likelihood.ais import guide_initial
from pyrovae.analysis.likelihood.loglik import default_draws_per_pass
from pyrovae.analysis.posterior.nuts import frozen, latent_model
from pyrovae.analysis.sources.helpers import seeded
from pyrovae.guides import FlowEncoder
from pyrovae.nets import check_positive_int
from pyrovae.traces import importance_terms

__all__ = ["OptimalGuide", "guide_elbo"]


class _DiagonalAffine(pyro.distributions.torch_transform.TransformModule):
    """z = loc + exp(log_scale) * u with learnable loc and log_scale (z_dim,)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.loc = nn.Parameter(loc.detach().clone())
        self.log_scale = nn.Parameter(scale.detach().log().clone())

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return self.loc + self.log_scale.exp() * u

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.loc) * torch.exp(-self.log_scale)

    def log_abs_det_jacobian(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.log_scale.expand(u.shape).sum(-1)


class _FixedContext(nn.Module):
    """A conditional autoregressive net with its context held fixed: an unconditional
    autoregressive net with the same (learnable) weights."""

    def __init__(self, net: nn.Module, context: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("context", context.detach().clone())

    @property
    def permutation(self) -> torch.Tensor:
        return self.net.permutation

    def get_permutation(self) -> torch.Tensor:
        return self.net.get_permutation()

    def forward(self, z: torch.Tensor) -> Any:
        return self.net(z, context=self.context)


def _flow_transform(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None
) -> T.ComposeTransformModule:
    """The flow of q* for one datum (batch of one), initialized at the amortized q."""
    encoder = vae.encoder
    z_dim = vae.z_dim
    reverse = T.Permute(torch.arange(z_dim - 1, -1, -1, device=x.device))
    with torch.no_grad():
        if isinstance(encoder, FlowEncoder):
            loc, scale, hidden = encoder.encode(x, y)
        else:
            init = guide_initial(vae, x, y)
            loc, scale, hidden = init.base_dist.loc, init.base_dist.scale, None
    parts: list[Any] = [_DiagonalAffine(loc[0], scale[0])]
    if hidden is not None:
        for i, flow in enumerate(encoder.flows):
            if i > 0:
                parts.append(reverse)
            net = _FixedContext(copy.deepcopy(flow.nn), hidden[0])
            parts.append(T.AffineAutoregressive(net, **flow.kwargs))
    else:  # two IAF steps, each followed by a reversal (identity overall at the start)
        for _ in range(2):
            step = T.affine_autoregressive(z_dim, hidden_dims=[max(2 * z_dim, 32)]).to(x.device)
            with torch.no_grad():  # a zero output layer makes the step the identity map
                step.arn.layers[-1].weight.zero_()
                step.arn.layers[-1].bias.zero_()
            parts += [step, reverse]
    return T.ComposeTransformModule(parts)


def _plate_shape() -> tuple[int, ...]:
    """The batch shape that the enclosing vectorized plates ask of a sample site."""
    frames = [f for f in get_plates() if f.vectorized and f.dim is not None]
    shape = [1] * max((-f.dim for f in frames), default=0)
    for f in frames:
        shape[f.dim] = f.size
    return tuple(shape)


def _check_real_support(autoguide: AutoContinuous) -> None:
    """q* lives on z itself (no constraining transform): the prior's support must be R^d."""
    support = autoguide.prototype_trace.nodes["z"]["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is not constraints.real:
        raise ValueError(f"the prior's support must be all of R^z_dim for q*, got {support}")


class OptimalGuide:
    """q*(z | x_n) for each datum of ``x``: the best member of a family, fitted by SVI.

    ``autoguides`` holds the fitted Pyro autoguides (one ``AutoDiagonalNormal`` over the
    batch, or one ``AutoNormalizingFlow`` per datum), ``losses`` the negative ELBO summed
    over the data at each SVI step, and ``kept_start`` (B,) which data kept their starting
    point because the fit did not improve on it. Calling the object is a Pyro guide for
    ``vae.model(x, y)`` with the library's layout (site ``"z"`` in ``plate("data")``), so
    :func:`pyrovae.traces.importance_terms` works with it.
    """

    def __init__(
        self,
        vae: nn.Module,
        family: str,
        autoguides: list[AutoContinuous],
        losses: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor | None,
    ) -> None:
        self.vae = vae
        self.family = family
        self.autoguides = autoguides
        self.losses = losses
        self.x, self.y = x, y
        self.z_dim = vae.z_dim
        self.kept_start = torch.zeros(x.shape[0], dtype=torch.bool)

    @property
    def num_data(self) -> int:
        return self.x.shape[0]

    def distribution(self) -> dist.Distribution:
        """q* as one distribution with batch shape (B,), event shape (z_dim,): a diagonal
        Normal for the diagonal family (for the flow family use :meth:`sample`)."""
        if self.family != "diagonal":
            raise ValueError("only the diagonal family has q* as one batch distribution")
        with pyro.settings.context(module_local_params=True):
            guide = self.autoguides[0]
            loc = guide.loc.reshape(self.num_data, self.z_dim)
            scale = guide.scale.reshape(self.num_data, self.z_dim)
        return dist.Normal(loc, scale).to_event(1)

    def sample(self, num_draws: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_draws`` reparameterized draws z ~ q*(z | x_n) per datum and log q*(z | x_n):
        shapes (num_draws, B, z_dim) and (num_draws, B)."""
        if self.family == "diagonal":
            q = self.distribution()
            z = q.rsample((num_draws,))
            return z, q.log_prob(z)
        draws, log_q = [], []
        with pyro.settings.context(module_local_params=True):
            for guide in self.autoguides:
                q = guide.get_posterior()
                z = q.rsample((num_draws,))
                draws.append(z)
                log_q.append(q.log_prob(z))
        return torch.stack(draws, 1), torch.stack(log_q, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """The Pyro guide: z ~ q*(z | x_n) in ``plate("data")`` for the fitted data ``x``
        (``y`` is accepted for the model's signature); vectorized particle plates work."""
        if x.shape[0] != self.num_data:
            raise ValueError(f"q* was fitted to {self.num_data} data, got x of shape {x.shape}")
        with pyro.plate("data", self.num_data):
            if self.family == "diagonal":
                pyro.sample("z", self.distribution())
                return
            shape = _plate_shape()
            z, log_q = self.sample(math.prod(shape[:-1]))
            z = z.reshape(*shape, self.z_dim)
            pyro.sample("z", dist.Delta(z, log_density=log_q.reshape(shape), event_dim=1))

    def elbo(
        self, num_draws: int = 1000, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-datum ELBO(q*) and its Monte Carlo standard error from ``num_draws`` draws,
        float64 (B,) each (see :func:`guide_elbo`)."""
        with seeded(seed, self.x.device):
            return guide_elbo(self.vae, self, self.x, self.y, num_draws)


def _init_at(loc: torch.Tensor) -> Callable[[dict[str, Any]], torch.Tensor]:
    def init_loc_fn(site: dict[str, Any]) -> torch.Tensor:
        if site["name"] == "z":
            return loc
        return init_to_median(site)

    return init_loc_fn


def _loss_fn(num_particles: int) -> Trace_ELBO:
    return Trace_ELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


def _guide_pairs(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None, family: str
) -> list[tuple[Callable[[], None], AutoContinuous]]:
    """The (model, autoguide) pairs of q* (one for the batch, or one per datum for a
    flow), set up at the amortized guide; call under ``module_local_params``."""
    pairs: list[tuple[Callable[[], None], AutoContinuous]] = []
    if family == "diagonal":
        init = guide_initial(vae, x, y)
        model = latent_model(vae, x, y)
        guide = AutoDiagonalNormal(model, init_loc_fn=_init_at(init.base_dist.loc))
        with torch.no_grad():
            guide()  # sets the guide up: its loc is the amortized mean
        guide.scale = PyroParam(
            init.base_dist.scale.reshape(-1).clone(), AutoDiagonalNormal.scale_constraint
        )
        pairs.append((model, guide))
    else:
        for n in range(x.shape[0]):
            xn, yn = x[n : n + 1], None if y is None else y[n : n + 1]
            model = latent_model(vae, xn, yn)
            transform = _flow_transform(vae, xn, yn)
            guide = AutoNormalizingFlow(model, lambda _, t=transform: t)
            with torch.no_grad():
                guide()  # sets the guide up and registers the flow's parameters
            pairs.append((model, guide))
    for _, guide in pairs:
        _check_real_support(guide)
    return pairs


def guide_elbo(
    vae: nn.Module,
    guide: Callable[..., None],
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_draws: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-datum ELBO of ``guide`` (a Pyro guide for ``vae.model(x, y)``) and its Monte
    Carlo standard error sd(log w) / sqrt(K) from K = ``num_draws`` draws, float64 (B,)."""
    check_positive_int("num_draws", num_draws)
    model = frozen(vae, vae.model)
    per_pass = max(1, default_draws_per_pass(x.device) // x.shape[0])
    total = torch.zeros(x.shape[0], dtype=torch.double)
    squares = torch.zeros(x.shape[0], dtype=torch.double)
    done = 0
    with torch.no_grad():
        while done < num_draws:
            k = min(per_pass, num_draws - done)
            lw = importance_terms(model, guide, x, y, num_particles=k).log_weights
            lw = lw.double().cpu()
            total += lw.sum(0)
            squares += lw.pow(2).sum(0)
            done += k
    mean = total / num_draws
    var = (squares / num_draws - mean.pow(2)).clamp_min(0) * num_draws / max(num_draws - 1, 1)
    return mean, (var / num_draws).sqrt()
