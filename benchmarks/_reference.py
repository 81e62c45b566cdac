"""A plain PyTorch VAE of the same shape as pyrovae's default, the reference for benchmarks,
and the interleaved timer the benchmarks share."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class PlainVAE(nn.Module):
    """784 -> hidden -> (loc, scale) -> z -> reversed hidden -> 784 logits, ReLU (or
    ``activation``, an ``nn`` module class)."""

    def __init__(
        self, x_dim: int = 784, z_dim: int = 50, hidden_dims=(400, 400), activation=nn.ReLU
    ) -> None:
        super().__init__()
        enc, width = [], x_dim
        for h in hidden_dims:
            enc += [nn.Linear(width, h), activation()]
            width = h
        self.enc = nn.Sequential(*enc, nn.Linear(width, 2 * z_dim))
        dec, width = [], z_dim
        for h in reversed(hidden_dims):
            dec += [nn.Linear(width, h), activation()]
            width = h
        self.dec = nn.Sequential(*dec, nn.Linear(width, x_dim))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Single-sample ELBO per datum with the analytic Gaussian KL."""
        loc, raw = self.enc(x).chunk(2, dim=-1)
        scale = F.softplus(raw) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec(z)
        log_lik = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum(-1) - scale.log().sum(-1)
        return log_lik - kl


def train_epoch(
    model: PlainVAE,
    opt,
    x: torch.Tensor,
    batch_size: int = 128,
    elbo: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> float:
    """One epoch with dynamic binarization, data and permutation on x's device; returns
    seconds (after the device has finished). ``elbo`` replaces ``model.elbo`` (a compiled
    one, say)."""
    elbo = model.elbo if elbo is None else elbo
    n = x.shape[0]
    _synchronize(x.device)
    start = time.perf_counter()
    perm = torch.randperm(n, device=x.device)
    for step in range(math.ceil(n / batch_size)):
        xb = torch.bernoulli(x[perm[step * batch_size : (step + 1) * batch_size]])
        loss = -elbo(xb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _synchronize(x.device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def test_elbo(model: PlainVAE, x: torch.Tensor, num_draws: int = 10) -> float:
    """Mean single-sample ELBO per datum, averaged over ``num_draws`` draws."""
    return torch.stack([model.elbo(x) for _ in range(num_draws)]).mean().item()


@torch.no_grad()
def log_likelihood(model: PlainVAE, x: torch.Tensor, num_samples: int, chunk: int = 250) -> float:
    """Mean importance-sampled log p(x) with the encoder as proposal, written by hand."""
    out = []
    for xb in x.split(chunk):
        loc, raw = model.enc(xb).chunk(2, dim=-1)
        scale = F.softplus(raw) + 1e-4
        q = torch.distributions.Normal(loc, scale)
        log_w = []
        for k in range(0, num_samples, 100):
            z = q.sample((min(100, num_samples - k),))
            logits = model.dec(z)
            log_lik = -F.binary_cross_entropy_with_logits(
                logits, xb.expand_as(logits), reduction="none"
            ).sum(-1)
            log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
            log_w.append(log_lik + log_prior - q.log_prob(z).sum(-1))
        log_w = torch.cat(log_w)
        out.append(torch.logsumexp(log_w, 0) - math.log(num_samples))
    return torch.cat(out).mean().item()


def train_plain(x: torch.Tensor, epochs: int, seed: int = 0, **kwargs) -> PlainVAE:
    torch.manual_seed(seed)
    model = PlainVAE(**kwargs).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        train_epoch(model, opt, x)
    return model


def wall_times(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Wall times of each function; the functions take turns in every round, so a load
    change on a shared machine hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def benchmark_model(run_dir: str | None, device: torch.device) -> nn.Module:
    """The run at ``run_dir``, or a freshly built VAE of the core configuration (z=50,
    hidden 400 400, random weights), in eval mode on ``device``; seeds torch with 0."""
    from pyrovae import build_model, load_run

    torch.manual_seed(0)
    if run_dir:
        return load_run(run_dir, device=device)
    return build_model(z_dim=50, hidden_dims=[400, 400]).to(device).eval()
