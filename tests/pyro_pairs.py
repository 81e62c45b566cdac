"""Pairs written as a user writes them, for the tests of from_pyro: probabilistic PCA as
plain Pyro functions with their own site and plate names ("latent", "obs", plate "rows"),
for exact answers, and Pyro's own SVI loop for the VAEs the tests write."""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch

D, Z, NOISE = 5, 2, 0.5


def ppca_pair(
    w: torch.Tensor, b: torch.Tensor, posterior: Callable[[torch.Tensor], dist.Distribution]
) -> tuple[Callable[[torch.Tensor], None], Callable[[torch.Tensor], None]]:
    """The model z ~ N(0, I), x | z ~ N(W z + b, NOISE^2 I) and the guide whose latent site
    is ``posterior(x)`` (a distribution of batch (B,) over vectors of Z)."""

    def model(x):
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(torch.zeros(Z), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z @ w.T + b, NOISE).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("rows", x.shape[0]):
            pyro.sample("latent", posterior(x))

    return model, guide


def mc_stderr(log_weights: torch.Tensor) -> torch.Tensor:
    """The Monte Carlo standard error of log mean_k w_k per datum, by the delta method, for
    log-weights of shape (B, K)."""
    w = (log_weights - log_weights.max(1, keepdim=True).values).exp()
    return w.std(1) / (math.sqrt(w.shape[1]) * w.mean(1))


def train_with_svi(net: torch.nn.Module, x: torch.Tensor, batch_size: int = 100) -> None:
    """One pass of Pyro's own SVI (Trace_ELBO, pyro.optim.Adam at 1e-3) over ``x``."""
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    svi = SVI(net.model, net.guide, Adam({"lr": 1e-3}), loss=Trace_ELBO())
    for start in range(0, x.shape[0], batch_size):
        svi.step(x[start : start + batch_size])
