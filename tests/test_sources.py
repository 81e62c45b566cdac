"""Latent sources: normalization, exact aggregates, fitted moments, mixtures and flows."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pyrovae import build_model
from pyrovae.analysis.sources import (
    SOURCES,
    AggregatePosterior,
    Encodings,
    GaussianSource,
    PriorSource,
    fit_flow,
    fit_gaussian,
    fit_gaussian_mixture,
    fit_per_class,
    fit_source,
    fit_sources,
)

X_DIM = 8


def tiny_vae(z_dim: int = 2, **overrides):
    config = dict(x_dim=X_DIM, z_dim=z_dim, hidden_dims=[16], likelihood="gaussian")
    config.update(overrides)
    return build_model(**config).eval()


def grid_mass(source, half_width: float = 8.0, steps: int = 400) -> float:
    """Integral of exp(log_prob) over a square, by the midpoint rule (2-D sources)."""
    h = 2 * half_width / steps
    ticks = -half_width + h * (torch.arange(steps) + 0.5)
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="ij"), -1)
    with torch.no_grad():
        return float(source.log_prob(grid).double().exp().sum() * h * h)


def banana(n: int) -> torch.Tensor:
    u = torch.randn(n, 2)
    return torch.stack([u[:, 0], 0.5 * u[:, 0] ** 2 + 0.3 * u[:, 1] - 1.0], 1)


def test_registry_holds_the_documented_names():
    expected = {"prior", "aggregate", "gaussian-loc", "gaussian-z", "gaussian-full", "gmm", "flow"}
    assert expected <= set(SOURCES)
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"unknown latent source 'vamp'.*'aggregate'"):
        fit_source("vamp", vae, torch.randn(5, X_DIM))
    with pytest.raises(ValueError, match="unknown latent source"):
        fit_sources(["prior", "nope"], vae, torch.randn(5, X_DIM))


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_source_samples_scores_and_normalizes(name):
    vae = tiny_vae()
    x = torch.randn(300, X_DIM)
    options = {"flow": {"num_steps": 5}}.get(name, {})  # any weights give a density
    source = fit_source(name, vae, x, **options)
    assert source.name == name and source.z_dim == 2
    z = source.sample(7)
    assert z.shape == (7, 2) and torch.isfinite(z).all()
    assert source.log_prob(torch.randn(3, 4, 2)).shape == (3, 4)
    assert grid_mass(source) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., 2\)"):
        source.log_prob(torch.randn(4, 3))


def test_fitted_gaussian_recovers_moments():
    loc = torch.tensor([1.0, -2.0])
    tril = torch.tensor([[1.5, 0.0], [0.8, 0.5]])
    truth = torch.distributions.MultivariateNormal(loc, scale_tril=tril)
    z = truth.sample((20_000,))
    full, diagonal = fit_gaussian(z), fit_gaussian(z, diagonal=True)
    torch.testing.assert_close(full.loc, loc, atol=0.05, rtol=0)
    torch.testing.assert_close(full.covariance, tril @ tril.T, atol=0.06, rtol=0)
    torch.testing.assert_close(diagonal.covariance, torch.diag(full.covariance.diagonal()))
    test = truth.sample((5,))
    torch.testing.assert_close(full.log_prob(test), truth.log_prob(test), atol=0.05, rtol=0)
    draws = full.sample(20_000)
    torch.testing.assert_close(draws.mean(0), loc, atol=0.05, rtol=0)


def test_gmm_recovers_well_separated_clusters():
    locs = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 7.0]])
    sizes = [3000, 1500, 1500]
    scales = [0.5, 1.0, 0.3]
    z = torch.cat(
        [loc + s * torch.randn(n, 2) for loc, s, n in zip(locs, scales, sizes, strict=True)]
    )
    gmm = fit_gaussian_mixture(z, num_components=3, seed=1)
    order = [int(torch.cdist(loc[None], gmm.locs).argmin()) for loc in locs]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(gmm.locs[order], locs, atol=0.1, rtol=0)
    torch.testing.assert_close(
        gmm.weights[order], torch.tensor([0.5, 0.25, 0.25]), atol=0.02, rtol=0
    )
    variances = gmm.covariances[order].diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(
        variances.sqrt(), torch.tensor(scales)[:, None].expand(3, 2), atol=0.05, rtol=0
    )
    again = fit_gaussian_mixture(z, num_components=3, seed=1)
    torch.testing.assert_close(again.locs, gmm.locs)  # seeded
    with pytest.raises(ValueError, match="covariance_floor"):
        fit_gaussian_mixture(z, covariance_floor=0.0)


def test_flow_fits_a_banana_far_better_than_a_gaussian():
    train, test = banana(20_000), banana(4000)
    state = torch.get_rng_state()
    flow = fit_flow(train, num_flows=4, num_steps=100, batch_size=512)
    assert torch.equal(state, torch.get_rng_state())  # fitting leaves the global RNG alone
    gauss = fit_gaussian(train)
    with torch.no_grad():
        gain = float(flow.log_prob(test).mean() - gauss.log_prob(test).mean())
    assert gain > 0.5
    assert not any(p.requires_grad for p in flow.parameters())
    draws = flow.sample(4000)
    # samples follow the curve x2 ~ 0.5 x1^2 - 1
    residual = draws[:, 1] - (0.5 * draws[:, 0] ** 2 - 1.0)
    assert residual.std() < 0.6


@pytest.mark.parametrize("tolerance", [0.0, 1e-6])
def test_aggregate_equals_brute_force_mixture(tolerance):
    vae = tiny_vae()
    x = torch.randn(37, X_DIM)
    # several chunks of points for the full sum
    aggregate = fit_source("aggregate", vae, x, chunk_size=50, tolerance=tolerance)
    z = torch.randn(5, 6, 2, dtype=torch.float64) * 2
    with torch.no_grad():
        q = vae.encoder(x)
        loc, scale = q.base_dist.loc.double(), q.base_dist.scale.double()
        terms = torch.distributions.Normal(loc, scale).log_prob(z[..., None, :]).sum(-1)
        brute = torch.logsumexp(terms, -1) - math.log(37)
        got = aggregate.log_prob(z)
    assert got.dtype == torch.float64
    # the documented accuracy: [log(1 - tolerance) - eps, eps] about log q(z), eps = 1e-9
    # nats plus float64 rounding (far below 1e-12 here)
    err = brute - got
    assert err.min().item() >= -1e-9 and err.max().item() <= -math.log1p(-tolerance) + 1e-9


def test_aggregate_of_a_flow_guide_equals_brute_force_mixture():
    vae = tiny_vae(z_dim=3, guide="flow")
    x = torch.randn(11, X_DIM)
    aggregate = fit_source("aggregate", vae, x)
    assert not aggregate.diagonal
    z = torch.randn(4, 3)
    with torch.no_grad():
        lp = torch.stack([vae.encoder(x[n : n + 1]).log_prob(z) for n in range(11)], -1)
        brute = torch.logsumexp(lp, -1) - math.log(11)
        torch.testing.assert_close(aggregate.log_prob(z), brute, atol=1e-5, rtol=0)
    assert aggregate.sample(6).shape == (6, 3)


def test_aggregate_subsampling_and_sampling_moments():
    vae = tiny_vae()
    x = torch.randn(200, X_DIM) * 3
    enc = Encodings(vae, x)
    aggregate = AggregatePosterior(enc, max_components=50)
    assert aggregate.num_components == 50
    full = AggregatePosterior(enc)
    mean, cov = enc.moments()
    draws = full.sample(40_000)
    torch.testing.assert_close(draws.mean(0).double(), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(draws.T).double(), cov, atol=0.03, rtol=0)


def test_moment_gaussians_match_the_aggregate():
    vae = tiny_vae(z_dim=3)
    x = torch.randn(500, X_DIM) * 2
    sources = fit_sources(["gaussian-loc", "gaussian-z", "gaussian-full"], vae, x)
    with torch.no_grad():
        loc, scale, _ = vae.encoder.encode(x)
    z = loc + scale * torch.randn(200, *loc.shape)  # many draws from q(z)
    z = z.reshape(-1, 3)
    torch.testing.assert_close(sources["gaussian-full"].loc, z.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(
        sources["gaussian-full"].covariance, torch.cov(z.T), atol=0.01, rtol=0
    )
    torch.testing.assert_close(sources["gaussian-z"].scale, z.std(0), atol=0.01, rtol=0)
    torch.testing.assert_close(sources["gaussian-loc"].loc, loc.mean(0))
    torch.testing.assert_close(sources["gaussian-loc"].scale, loc.std(0, correction=0))
    # the encoder variance makes q(z) wider than the spread of the means
    assert (sources["gaussian-z"].scale > sources["gaussian-loc"].scale).all()


@pytest.mark.parametrize("prior", ["normal", "mog", "flow"])
def test_prior_source_is_the_model_prior(prior):
    vae = tiny_vae(prior=prior)
    source = fit_source("prior", vae, torch.randn(3, X_DIM))
    z = torch.randn(4, 5, 2)
    with torch.no_grad():
        torch.testing.assert_close(source.log_prob(z), vae.prior().log_prob(z))
    assert not source.conditional and source.sample(3).shape == (3, 2)
    assert list(source.parameters()) == []  # the model keeps its prior


def test_conditional_prior_source_needs_labels_or_a_bound_class():
    vae = tiny_vae(model="cvae", prior="vamp", num_components=3, y_dim=4)
    source = PriorSource(vae)
    assert source.conditional
    y = F.one_hot(torch.tensor([0, 2]), 4).float()
    z = torch.randn(5, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(source.log_prob(z, y), vae.prior(y).log_prob(z))
        with pytest.raises(ValueError, match="conditional"):
            source.log_prob(z)
        bound = PriorSource(vae, label=2)
        torch.testing.assert_close(bound.log_prob(z[:, 1]), vae.prior(y[1]).log_prob(z[:, 1]))
    assert source.sample(2, y).shape == (2, 2) and bound.sample(3).shape == (3, 2)


def test_per_class_fits():
    vae = tiny_vae()
    labels = torch.arange(90) % 3
    x = torch.randn(90, X_DIM) + 3.0 * F.one_hot(labels, X_DIM).float()
    fits = fit_per_class("gaussian-full", vae, x, labels)
    assert sorted(fits) == [0, 1, 2]
    assert fits[1].name == "gaussian-full[1]"
    with torch.no_grad():
        loc, _, _ = vae.encoder.encode(x[labels == 1])
    torch.testing.assert_close(fits[1].loc, loc.mean(0), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="labels must be integer classes"):
        fit_per_class("gmm", vae, x, labels.float())
    cvae = tiny_vae(model="cvae", prior="vamp", num_components=3, y_dim=3)
    priors = fit_per_class("prior", cvae, x, labels)
    assert all(not p.conditional and p.label == c for c, p in priors.items())


def test_fit_inputs_are_checked():
    vae = tiny_vae()
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(num_data, 8\)"):
        fit_source("gmm", vae, torch.randn(10, 3))
    with pytest.raises(ValueError, match="y was given"):
        fit_source("prior", vae, torch.randn(10, X_DIM), torch.zeros(10, 3))
    with pytest.raises(ValueError, match=r"options given for \['flow'\]"):
        fit_sources(["gmm"], vae, torch.randn(10, X_DIM), options={"flow": {}})
    with pytest.raises(ValueError, match="at least 10 rows"):
        fit_gaussian_mixture(torch.randn(5, 2), num_components=10)
    with pytest.raises(ValueError, match="exactly one of scale"):
        GaussianSource(torch.zeros(2))


def test_sources_move_with_to_and_keep_their_state():
    vae = tiny_vae()
    sources = fit_sources(["aggregate", "gaussian-full", "gmm"], vae, torch.randn(50, X_DIM))
    z = torch.randn(4, 2)
    for source in sources.values():
        state = source.state_dict()
        assert state, source.name
        moved = source.to(torch.device("cpu"))
        torch.testing.assert_close(moved.log_prob(z), source.log_prob(z))


def test_one_dimensional_latents():
    z = torch.cat([torch.randn(2000, 1) - 3.0, 0.5 * torch.randn(2000, 1) + 2.0])
    flow = fit_flow(z, num_flows=2, num_steps=200, lr=3e-2)
    gmm = fit_gaussian_mixture(z, num_components=2)
    gauss = fit_gaussian(z)
    with torch.no_grad():
        assert flow.log_prob(z).mean() > gauss.log_prob(z).mean() + 0.2
        assert gmm.log_prob(z).mean() > gauss.log_prob(z).mean() + 0.2
        assert flow.sample(5).shape == (5, 1) and flow.log_prob(torch.zeros(3, 1)).shape == (3,)
        h = 0.01
        grid = torch.arange(-12.0, 12.0, h)[:, None] + h / 2
        assert float(flow.log_prob(grid).exp().sum() * h) == pytest.approx(1.0, abs=0.01)
