"""The parts of a user's Pyro model/guide pair, read by tracing, as pyrovae's components.

:func:`~pyrovae.pyro_pair.from_pyro` builds its VAE from these: the prior p(z) (the
model's latent site on zero data), the likelihood p(x | z) (the model's observed site with
the latent site conditioned on z) and the amortized guide q(z | x) (the guide's latent
site), each a module whose ``forward`` traces the user's function, hidden from every outer
handler and leaving the random number generators as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import nn

__all__ = [
    "MOMENT_DRAWS",
    "PairHolder",
    "PyroDecoder",
    "PyroEncoder",
    "PyroPrior",
    "diagonal_normal",
    "hidden_trace",
    "rng_kept",
]

MOMENT_DRAWS = 256
"""Draws that estimate the moments of a guide without closed-form ones (see
:meth:`PyroEncoder.encode`)."""


class _FirstRow(TorchDistribution):
    """A distribution of batch shape (1, ...) seen without its leading batch dim: the prior
    read off a trace on one datum, as p(z) of no datum."""

    arg_constraints: dict[str, Any] = {}

    def __init__(self, base: dist.Distribution) -> None:
        self.base = base
        super().__init__(base.batch_shape[1:], base.event_shape, validate_args=False)

    @property
    def support(self) -> Any:
        return self.base.support

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return self.base.has_rsample

    def _squeeze(self, value: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return value.squeeze(len(shape))

    def sample(self, sample_shape: torch.Size | Sequence[int] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        return self._squeeze(self.base.sample(shape), shape)

    def rsample(self, sample_shape: torch.Size | Sequence[int] = ()) -> torch.Tensor:
        shape = torch.Size(sample_shape)
        return self._squeeze(self.base.rsample(shape), shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        event = len(self.event_shape)
        return self.base.log_prob(value.unsqueeze(-1 - event - len(self.batch_shape))).squeeze(
            -1 - len(self.batch_shape)
        )

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean[0]

    @property
    def variance(self) -> torch.Tensor:
        return self.base.variance[0]


class PairHolder(nn.Module):
    """Holds the user's modules (so that ``.to``, ``.parameters()`` and freezing reach them),
    the values of the pair's other ``pyro.param`` sites as buffers (so that they move with
    the model and enter its fingerprint), and a zero-size parameter, so that a pair without
    modules still has a device."""

    def __init__(self, modules: Sequence[nn.Module], params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.user = nn.ModuleList(modules)
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        self.param_names = sorted(params)  # Pyro's names may hold dots: buffers are numbered
        for i, name in enumerate(self.param_names):
            self.register_buffer(f"param{i}", params[name].detach().clone())

    def param(self, name: str) -> torch.Tensor:
        return getattr(self, f"param{self.param_names.index(name)}")


def hidden_trace(fn: Callable[..., Any], *args: Any) -> poutine.Trace:
    """A trace of ``fn(*args)`` hidden from every outer handler, and leaving the random
    number generators as they were (reading a distribution off a trace draws its site's
    value, which must not shift the draws of the estimator that asked for it)."""
    device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    with rng_kept(device), poutine.block():
        return poutine.trace(fn).get_trace(*args)


def rng_kept(device: torch.device | None) -> AbstractContextManager[Any]:
    """Draws inside leave the CPU's generator, and ``device``'s if it is a GPU, as they were."""
    cuda = device is not None and device.type == "cuda"
    return torch.random.fork_rng(devices=[device] if cuda else [])


class PyroEncoder(nn.Module):
    """q(z | x[, y]): the distribution of the guide's latent site, by tracing the guide."""

    def __init__(
        self,
        guide: Callable[..., Any],
        site: str,
        x_dim: int,
        z_dim: int,
        y_dim: int,
        holder: PairHolder,
    ) -> None:
        super().__init__()
        self.guide, self.site = guide, site
        self.x_dim, self.z_dim, self.y_dim = x_dim, z_dim, y_dim
        self.holder = holder

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        args = (x,) if y is None else (x, y)
        return hidden_trace(self.guide, *args).nodes[self.site]["fn"]

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loc, scale, loc)``: a diagonal Normal guide's own location and scale; for any
        other guide (a full-covariance Normal, a flow) the mean and standard deviation of
        q(z | x) per dimension, which stand in for them where an analysis needs a point
        encoding or a diagonal start (the latent-space figures, the per-datum guides q*).
        The hidden layer is not known: the location stands in for it too."""
        q = self(x, y)
        normal = diagonal_normal(q)
        if normal is not None:
            return normal.loc, normal.scale, normal.loc
        loc, scale = _moments(q)
        return loc, scale, loc

    def gaussian(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        loc, scale, _ = self.encode(x, y)
        return dist.Normal(loc, scale).to_event(1)


class PyroDecoder(nn.Module):
    """p(x | z[, y]): the distribution of the model's observed site, with its latent site
    conditioned on z (any leading dims, e.g. (K, B, z_dim) particles). ``labels_follow_z``:
    the model needs its labels y expanded over z's leading dims (found when the pair is
    read)."""

    def __init__(
        self,
        model: Callable[..., Any],
        latent: str,
        observed: str,
        x_dim: int,
        z_dim: int,
        y_dim: int,
        binarize: bool,
        holder: PairHolder,
        labels_follow_z: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.latent, self.observed = model, latent, observed
        self.x_dim, self.z_dim, self.y_dim = x_dim, z_dim, y_dim
        self.binarize = binarize
        self.holder = holder
        self.labels_follow_z = labels_follow_z

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        batch = z.shape[-2] if z.dim() >= 2 else 1
        x = torch.zeros(batch, self.x_dim, dtype=z.dtype, device=z.device)
        if y is not None and self.labels_follow_z:  # over z's leading dims (particles, chains)
            y = y.expand(*z.shape[:-1], self.y_dim)
        elif y is not None and y.dim() == 1:
            y = y.expand(batch, -1)
        args = (x,) if y is None else (x, y)
        conditioned = poutine.condition(self.model, data={self.latent: z})
        return hidden_trace(conditioned, *args).nodes[self.observed]["fn"]

    def mean(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self(z, y).mean


class PyroPrior(nn.Module):
    """p(z) (p(z | y) for a CVAE): the distribution of the model's latent site, read by
    tracing the model on zero data. Without labels, or with one label vector (y_dim,), it is
    the prior of one datum without a batch; with labels (N, y_dim), batch (N,), one per row.
    ``conditional`` is True when the model's prior depends on the labels (found when the
    pair is read)."""

    def __init__(
        self,
        model: Callable[..., Any],
        latent: str,
        x_dim: int,
        z_dim: int,
        y_dim: int,
        holder: PairHolder,
        conditional: bool = False,
    ) -> None:
        super().__init__()
        self.model, self.latent = model, latent
        self.x_dim, self.z_dim, self.y_dim = x_dim, z_dim, y_dim
        self.holder = holder
        self.conditional = conditional

    def forward(self, y: torch.Tensor | None = None) -> dist.Distribution:
        device = self.holder.anchor.device
        if not self.y_dim:
            return _FirstRow(self._site(torch.zeros(1, self.x_dim, device=device)))
        if y is None:  # any label will do for a prior that does not depend on it
            y = torch.zeros(self.y_dim, device=device)
            y[0] = 1.0
        if y.dim() == 1:
            x = torch.zeros(1, self.x_dim, device=device)
            return _FirstRow(self._site(x, y[None]))
        if y.dim() != 2:
            raise ValueError(
                f"y must be one label vector ({self.y_dim},) or labels (N, {self.y_dim}), got "
                f"{tuple(y.shape)}"
            )
        return self._site(torch.zeros(y.shape[0], self.x_dim, device=device), y)

    def _site(self, *args: torch.Tensor) -> dist.Distribution:
        return hidden_trace(self.model, *args).nodes[self.latent]["fn"]


def diagonal_normal(d: dist.Distribution) -> dist.Normal | None:
    """The Normal under an ``Independent`` of event dim 1, else None."""
    if isinstance(d, dist.Independent) and d.reinterpreted_batch_ndims == 1:
        base = d.base_dist
        if isinstance(base, dist.Normal):
            return base
    return None


def _moments(q: dist.Distribution) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of ``q`` per dimension: closed forms where the
    distribution has them, else from :data:`MOMENT_DRAWS` draws with a fixed seed (the
    random number generators left as they were)."""
    with torch.no_grad():
        try:
            loc, scale = q.mean, q.stddev
            if torch.isfinite(loc).all() and torch.isfinite(scale).all():
                return loc, scale
        except NotImplementedError:  # e.g. a flow: no closed-form moments
            pass
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        devices = list(range(torch.cuda.device_count())) if cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)  # seeds every device's generator
            draws = q.sample((MOMENT_DRAWS,))
        return draws.mean(0), draws.std(0)
