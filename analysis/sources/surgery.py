"""ELBO surgery: the KL term of the ELBO split into mutual information and marginal KL.

On a data set of N points with aggregated posterior q(z) = 1/N sum_n q(z | x_n),

    1/N sum_n KL(q(z | x_n) || p(z)) = I_q(x; z) + KL(q(z) || p(z)),

where the mutual information of the joint q(x, z) = q(z | x) / N is at most log N.
ELBO surgery: yet another way to carve up the variational evidence lower bound (Hoffman &
Johnson, 2016), http://approximateinference.org/accepted/HoffmanJohnson2016.pdf.
Active units as in Importance Weighted Autoencoders (Burda et al., 2016),
https://arxiv.org/abs/1509.00519.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import kl_divergence

from pyrovae.analysis.sources.classes import AggregatePosterior, PriorSource
from pyrovae.analysis.sources.encodings import Encodings, check_data
from pyrovae.analysis.sources.helpers import is_diagonal_normal, seeded
from pyrovae.nets import check_positive_int
from pyrovae.traces import importance_terms

__all__ = ["ElboSurgery", "elbo_surgery", "ACTIVITY_THRESHOLD"]

ACTIVITY_THRESHOLD = 0.01


@dataclass
class ElboSurgery:
    """The terms of ELBO surgery on a data set, in nats per datum.

    Standard errors are Monte Carlo errors for the given data: 0 for an analytic KL
    averaged over all data; for a Monte Carlo average KL, std over data / sqrt(N) (an
    upper bound, as it includes the spread between data).

    Attributes:
        reconstruction: 1/N sum_n E_q[log p(x_n | z)] (Monte Carlo).
        avg_kl: 1/N sum_n KL(q(z | x_n) || p(z)).
        avg_kl_stderr: its standard error.
        kl_method: ``"analytic"`` (a registered KL) or ``"monte-carlo"``.
        marginal_kl: KL(q(z) || p(z)) = E_q(z)[log q(z) - log p(z)], by Monte Carlo, with
            log q(z) the exact mixture over all N encodings.
        marginal_kl_stderr: its standard error.
        mutual_information: I_q(x; z) = avg_kl - marginal_kl.
        mutual_information_stderr: sqrt(avg_kl_stderr^2 + marginal_kl_stderr^2).
        mutual_information_direct: E[log q(z | x_n) - log q(z)] on the marginal draws: an
            independent estimate, always <= log N draw by draw; the gap to
            ``mutual_information`` shows the Monte Carlo error of the identity.
        mutual_information_direct_stderr: its standard error, std over the draws / sqrt(M).
        mi_upper_bound: log N (for a conditional prior, sum_c N_c / N log N_c).
        active_units: number of dims with Cov_n(E_q[z_d | x_n]) > ``activity_threshold``.
        activity: Cov_n(E_q[z_d | x_n]) per latent dim, shape (z_dim,); for a guide whose
            means are Monte Carlo averages (a flow), with their noise variance taken off.
        kl_per_dim: average KL per latent dim, shape (z_dim,), when both the posterior
            and the prior are diagonal Normals (then it sums to ``avg_kl``); else None,
            as the KL of a non-factorized pair does not split over dims.
        num_data: N.
        num_marginal: draws used for the marginal KL.
        conditional_prior: True when p(z | y) is conditional (a CVAE): then q(z) and the
            marginal KL are per class, KL(q(z | y) || p(z | y)) averaged over y, and the
            mutual information is I_q(x; z | y).
    """

    reconstruction: float
    avg_kl: float
    avg_kl_stderr: float
    kl_method: str
    marginal_kl: float
    marginal_kl_stderr: float
    mutual_information: float
    mutual_information_stderr: float
    mutual_information_direct: float
    mutual_information_direct_stderr: float
    mi_upper_bound: float
    active_units: int
    activity: torch.Tensor
    kl_per_dim: torch.Tensor | None
    num_data: int
    num_marginal: int
    conditional_prior: bool

    @property
    def elbo(self) -> float:
        """reconstruction - avg_kl."""
        return self.reconstruction - self.avg_kl

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tensors as lists), with ``elbo`` added."""
        out = asdict(self)
        out["activity"] = self.activity.tolist()
        out["kl_per_dim"] = None if self.kl_per_dim is None else self.kl_per_dim.tolist()
        out["elbo"] = self.elbo
        return out


def _stderr(values: torch.Tensor) -> float:
    return float(values.std() / math.sqrt(values.numel())) if values.numel() > 1 else math.nan


def _analytic_kl(
    enc: Encodings, prior: PriorSource
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Per-datum KL (N,) and per-dim KL (N, z_dim) or None, from registered KL formulas."""
    total: list[torch.Tensor] = []
    per_dim: list[torch.Tensor] | None = []
    for start in enc.starts():
        q = enc.posterior(start, start + enc.batch_size)
        p = prior.distribution(None if enc.y is None else enc.y[start : start + enc.batch_size])
        try:
            total.append(kl_divergence(q, p))
        except NotImplementedError:
            return None
        if per_dim is not None and is_diagonal_normal(q) and is_diagonal_normal(p):
            per_dim.append(kl_divergence(q.base_dist, p.base_dist).expand_as(q.base_dist.loc))
        else:
            per_dim = None
    return torch.cat(total), None if per_dim is None else torch.cat(per_dim)


def elbo_surgery(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    num_particles: int = 1,
    num_marginal: int = 10_000,
    activity_threshold: float = ACTIVITY_THRESHOLD,
    batch_size: int = 1000,
    seed: int | None = 0,
) -> ElboSurgery:
    """ELBO surgery of ``vae`` on ``x`` (the training set, as the model sees it).

    The average KL is analytic when torch has a registered KL for the (posterior, prior)
    pair (diagonal Normal guide and prior), else a Monte Carlo average of
    log q(z | x) - log p(z) over ``num_particles`` draws per datum from Pyro traces, which
    also give the reconstruction term. The marginal KL uses ``num_marginal`` draws
    z ~ q(z) (a random datum, then z ~ q(z | x_n)), scored by the exact aggregate over all
    N encodings: cost num_marginal x N density evaluations.

    Args:
        vae: the model.
        x: data (N, x_dim), binarized for a Bernoulli decoder.
        y: one-hot labels (N, y_dim) for a CVAE.
        num_particles: draws per datum for the Monte Carlo terms.
        num_marginal: draws for the marginal KL (at most N are used).
        activity_threshold: a unit is active when Cov_n(E_q[z_d | x_n]) exceeds it.
        batch_size: data per encoder/decoder pass.
        seed: seed for all draws (the global RNG is restored); None uses the global RNG.
    """
    check_data(vae, x, y)
    check_positive_int("num_particles", num_particles)
    check_positive_int("num_marginal", num_marginal)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"ELBO surgery needs at least 2 data, got {n}")
    with torch.no_grad(), seeded(seed, x.device):
        enc = Encodings(vae, x, y, batch_size=check_positive_int("batch_size", batch_size))
        prior = PriorSource(vae)
        marginal, direct, bound = _marginal_terms(vae, enc, prior, num_marginal)
        recon, kl_mc = [], []
        for start in enc.starts():
            yb = None if y is None else y[start : start + batch_size]
            terms = importance_terms(
                vae.model, vae.guide, x[start : start + batch_size], yb, num_particles=num_particles
            )
            recon.append(terms.log_likelihood.mean(0))
            kl_mc.append((terms.log_guide - terms.log_prior).mean(0))
        reconstruction = float(torch.cat(recon).double().mean())
        analytic = _analytic_kl(enc, prior)
        if analytic is not None:
            kl, per_dim = analytic
            avg_kl, avg_kl_stderr, method = float(kl.double().mean()), 0.0, "analytic"
            kl_per_dim = None if per_dim is None else per_dim.double().mean(0).cpu()
        else:
            kl = torch.cat(kl_mc).double()
            avg_kl, avg_kl_stderr, method = float(kl.mean()), _stderr(kl), "monte-carlo"
            kl_per_dim = None
        means = enc.means().double()
        # a flow guide's means are Monte Carlo averages: take their noise off the variance
        activity = (means.var(0) - enc.mean_noise().double()).clamp_min(0).cpu()
    mi = avg_kl - float(marginal.mean())
    return ElboSurgery(
        reconstruction=reconstruction,
        avg_kl=avg_kl,
        avg_kl_stderr=avg_kl_stderr,
        kl_method=method,
        marginal_kl=float(marginal.mean()),
        marginal_kl_stderr=_stderr(marginal),
        mutual_information=mi,
        mutual_information_stderr=math.hypot(avg_kl_stderr, _stderr(marginal)),
        mutual_information_direct=float(direct.mean()),
        mutual_information_direct_stderr=_stderr(direct),
        mi_upper_bound=bound,
        active_units=int((activity > activity_threshold).sum()),
        activity=activity,
        kl_per_dim=kl_per_dim,
        num_data=n,
        num_marginal=marginal.numel(),
        conditional_prior=prior.conditional,
    )


def _marginal_terms(
    vae: nn.Module, enc: Encodings, prior: PriorSource, num_marginal: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Per-draw log q(z) - log p(z) and log q(z | x_n) - log q(z), and the bound on MI."""
    n = enc.num_data
    if prior.conditional:
        labels = enc.y.argmax(-1)
        groups = [labels == c for c in torch.unique(labels)]
    else:
        groups = [torch.ones(n, dtype=torch.bool, device=enc.device)]
    chosen = torch.zeros(n, dtype=torch.bool, device=enc.device)
    chosen[torch.randperm(n, device=enc.device)[: min(num_marginal, n)]] = True
    marginal, direct, bound = [], [], 0.0
    for members in groups:
        size = int(members.sum())
        bound += size / n * math.log(size)
        picked = chosen & members
        if not picked.any():
            continue
        group = Encodings(vae, enc.x[members], None if enc.y is None else enc.y[members])
        aggregate = AggregatePosterior(group)
        y = None if enc.y is None else enc.y[picked]
        here = Encodings(vae, enc.x[picked], y)
        z = here.sample(1, seed=None)
        log_q = aggregate.log_prob(z)
        log_p = prior.log_prob(z, y)
        log_q_given_x = torch.cat(
            [
                here.posterior(s, s + here.batch_size).log_prob(z[s : s + here.batch_size])
                for s in here.starts()
            ]
        )
        marginal.append((log_q - log_p).double())
        direct.append((log_q_given_x - log_q).double())
    return torch.cat(marginal).cpu(), torch.cat(direct).cpu(), bound
