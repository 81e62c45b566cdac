"""ELBO surgery: avg KL = I(x; z) + KL(q(z) || p(z)), checked on cases with known answers."""

from __future__ import annotations

import json
import math

import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyrovae import build_model
from pyrovae.analysis.sources.surgery import elbo_surgery
from pyrovae.models import VAE, GaussianDecoder, MixturePrior, StandardNormalPrior

X_DIM, Z_DIM = 4, 2


class LinearEncoder(nn.Module):
    """q(z | x) = N(x @ A + c, diag(scale^2)) with a fixed scale: posteriors we can write down."""

    def __init__(self, gain: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.x_dim, self.z_dim, self.y_dim = gain.shape[0], gain.shape[1], 0
        self.register_buffer("gain", gain)
        self.register_buffer("offset", offset)
        self.register_buffer("scale", scale)

    def encode(self, x, y=None):
        loc = x @ self.gain + self.offset
        return loc, self.scale.expand_as(loc), loc

    def forward(self, x, y=None):
        loc, scale, _ = self.encode(x)
        return dist.Normal(loc, scale).to_event(1)


def linear_vae(gain, offset, scale, prior=None) -> VAE:
    decoder = GaussianDecoder(Z_DIM, X_DIM, hidden_dims=(), scale="isotropic")
    return VAE(LinearEncoder(gain, offset, scale), decoder, prior or StandardNormalPrior(Z_DIM))


def normal_kl(loc: torch.Tensor, scale: torch.Tensor) -> float:
    """KL(N(loc, diag(scale^2)) || N(0, I))."""
    return float(0.5 * (loc.pow(2) + scale.pow(2) - 1 - 2 * scale.log()).sum())


def test_posteriors_that_ignore_x_have_zero_mutual_information():
    offset, scale = torch.tensor([0.5, -1.0]), torch.tensor([0.7, 1.3])
    vae = linear_vae(torch.zeros(X_DIM, Z_DIM), offset, scale)
    result = elbo_surgery(vae, torch.randn(300, X_DIM), num_marginal=2000)
    expected = normal_kl(offset, scale)
    assert result.kl_method == "analytic" and result.avg_kl_stderr == 0.0
    assert result.avg_kl == pytest.approx(expected, abs=1e-5)
    # q(z) = q(z | x) exactly, so log q(z) - log q(z | x) = 0 draw by draw
    assert result.mutual_information_direct == pytest.approx(0.0, abs=1e-5)
    assert result.marginal_kl == pytest.approx(expected, abs=4 * result.marginal_kl_stderr)
    assert result.active_units == 0
    torch.testing.assert_close(result.kl_per_dim.sum().item(), result.avg_kl)


def test_separated_posteriors_carry_log_n_nats():
    # two inputs (100 copies each) far apart with narrow posteriors: q(z) has two separate
    # modes and I(x; z) = log 2 (the bound log N = log 200 is not reached)
    x = torch.zeros(200, X_DIM)
    x[:100, 0], x[100:, 0] = 1.0, -1.0
    gain = torch.zeros(X_DIM, Z_DIM)
    gain[0, 0] = 5.0
    scale = torch.tensor([0.05, 0.05])
    result = elbo_surgery(linear_vae(gain, torch.zeros(Z_DIM), scale), x)
    assert result.mi_upper_bound == pytest.approx(math.log(200))
    assert result.mutual_information_direct == pytest.approx(math.log(2), abs=1e-6)
    expected_avg = normal_kl(torch.tensor([5.0, 0.0]), scale)
    assert result.avg_kl == pytest.approx(expected_avg, abs=1e-4)
    assert result.mutual_information == pytest.approx(
        math.log(2), abs=4 * result.mutual_information_stderr
    )
    assert result.active_units == 1
    assert result.activity[0] == pytest.approx(25.0 * 200 / 199) and result.activity[1] == 0


def aggregate_by_quadrature(loc: torch.Tensor, scale: torch.Tensor) -> tuple[float, float]:
    """KL(q(z) || N(0, I)) and the mass of q(z) = 1/N sum_n N(loc_n, diag(scale^2)) in 2-D,
    by the trapezoid rule on a grid of step scale / 2 (for Gaussians its error is about
    exp(-2 pi^2 (scale / step)^2) = e^-79, so the answer is exact to float64 rounding)."""
    loc, scale = loc.double(), scale.double()
    step = scale / 2
    low, high = loc.min(0).values - 10 * scale, loc.max(0).values + 10 * scale
    axes = [
        torch.arange(float(low[d]), float(high[d]), float(step[d]), dtype=torch.double)
        for d in (0, 1)
    ]
    grid = torch.cartesian_prod(*axes)  # (G, 2)
    components = dist.Normal(loc, scale).to_event(1)
    log_q = torch.cat([components.log_prob(z.unsqueeze(1)) for z in grid.split(1024)])
    log_q = torch.logsumexp(log_q, -1) - math.log(loc.shape[0])  # (G,)
    log_p = dist.Normal(0.0, 1.0).log_prob(grid).sum(-1)
    cell = float(step.prod())
    q = log_q.exp()
    return float((q * (log_q - log_p)).sum() * cell), float(q.sum() * cell)


def test_identity_terms_match_their_exact_values():
    """Each term of avg KL = I(x; z) + KL(q(z) || p(z)) against its exact value: the average
    KL in closed form, KL(q(z) || p(z)) of the N-component aggregate by quadrature, and I
    as their difference. The marginal KL and the direct I both score log q(z), so a wrong
    aggregate density (a dropped term, a wrong mixture weight) moves them off by its error,
    which the identity on the same draws would hide (log q(z) cancels there)."""
    torch.manual_seed(1)
    gain = torch.randn(X_DIM, Z_DIM)
    scale = torch.tensor([0.3, 0.6])
    vae = linear_vae(gain, torch.zeros(Z_DIM), scale)
    x = torch.randn(2000, X_DIM)
    result = elbo_surgery(vae, x, num_marginal=2000)
    loc = vae.encoder.encode(x)[0]
    marginal_kl, mass = aggregate_by_quadrature(loc, scale)
    assert mass == pytest.approx(1.0, abs=1e-10)
    avg_kl = sum(normal_kl(m.double(), scale.double()) for m in loc) / len(loc)
    mutual_information = avg_kl - marginal_kl
    assert 0.5 < mutual_information < math.log(2000)  # far from both ends
    assert result.avg_kl == pytest.approx(avg_kl, abs=1e-5)  # analytic
    tol = 4.0  # standard errors
    assert abs(result.marginal_kl - marginal_kl) <= tol * result.marginal_kl_stderr
    assert abs(result.mutual_information - mutual_information) <= (
        tol * result.mutual_information_stderr
    )
    assert abs(result.mutual_information_direct - mutual_information) <= (
        tol * result.mutual_information_direct_stderr
    )
    # errors of tenths of a nat, not of the size of a wrong term
    assert max(result.marginal_kl_stderr, result.mutual_information_direct_stderr) < 0.05
    assert result.mutual_information_direct <= result.mi_upper_bound
    assert result.active_units == 2


def test_monte_carlo_kl_agrees_with_the_analytic_one():
    torch.manual_seed(2)
    gain, scale = torch.randn(X_DIM, Z_DIM), torch.tensor([0.5, 0.8])
    x = torch.randn(1000, X_DIM)
    analytic = elbo_surgery(linear_vae(gain, torch.zeros(Z_DIM), scale), x)
    # a one-component mixture at 0 with unit scale is N(0, I), but has no registered KL
    mog = MixturePrior(Z_DIM, num_components=1)
    with torch.no_grad():
        mog.locs.zero_()
    mc = elbo_surgery(linear_vae(gain, torch.zeros(Z_DIM), scale, mog), x, num_particles=20)
    assert mc.kl_method == "monte-carlo" and mc.kl_per_dim is None
    assert mc.avg_kl == pytest.approx(analytic.avg_kl, abs=4 * mc.avg_kl_stderr)
    assert mc.marginal_kl == pytest.approx(analytic.marginal_kl, abs=1e-4)  # same draws


def test_cvae_with_conditional_prior_and_serialization():
    vae = build_model(
        model="cvae",
        prior="vamp",
        num_components=3,
        x_dim=6,
        z_dim=2,
        y_dim=3,
        hidden_dims=[8],
        likelihood="gaussian",
    ).eval()
    labels = torch.arange(60) % 3
    y = nn.functional.one_hot(labels, 3).float()
    result = elbo_surgery(vae, torch.randn(60, 6), y, num_particles=4)
    assert result.conditional_prior
    assert result.mi_upper_bound == pytest.approx(math.log(20))  # per class of 20
    data = json.loads(json.dumps(result.to_dict()))
    assert data["elbo"] == pytest.approx(result.reconstruction - result.avg_kl)
    assert len(data["activity"]) == 2
    with pytest.raises(ValueError, match="CVAE needs y"):
        elbo_surgery(vae, torch.randn(6, 6))
    with pytest.raises(ValueError, match="num_marginal"):
        elbo_surgery(vae, torch.randn(6, 6), y[:6], num_marginal=0)


@pytest.mark.parametrize("guide", ["diagonal", "flow"])
def test_guide_that_ignores_x_has_no_active_units(guide):
    """Active units count the spread of E_q[z | x] over data, not the Monte Carlo noise of
    a flow guide's estimated means (which alone exceeds the 0.01 threshold at 64 draws)."""
    from pyrovae.analysis.sources import fit_source

    vae = build_model(x_dim=12, z_dim=8, hidden_dims=[16], guide=guide).eval()
    with torch.no_grad():
        vae.encoder.trunk[0].weight.zero_()  # q(z | x) is the same for every x
        vae.encoder.head.bias[8:].fill_(0.5)  # wide enough for the noise to matter
    x = torch.bernoulli(torch.full((400, 12), 0.3))
    surgery = elbo_surgery(vae, x, seed=0)
    assert surgery.active_units == 0, surgery.activity
    loc = fit_source("gaussian-loc", vae, x)
    assert float(loc.scale.max()) < 0.05  # the spread of the true means is zero
