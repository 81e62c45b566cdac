"""Bounded memory of mixture priors and of the log-likelihood estimator: same values, in chunks."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from torch.nn import functional as F

from pyrovae import build_model
from pyrovae.analysis.likelihood import loglik
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods, source_cost
from pyrovae.analysis.sources import MixtureSource, PriorSource
from pyrovae.models import priors
from pyrovae.models.priors import DiagonalNormalMixture

K, D = 7, 5


@pytest.fixture
def normal_calls(monkeypatch):
    """Elements of every (draws x components x z_dim) Normal log density evaluated."""
    sizes: list[int] = []
    original = torch.distributions.Normal.log_prob

    def spy(self, value):
        out = original(self, value)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch.distributions.Normal, "log_prob", spy)
    return sizes


def reference(logits, loc, scale):
    components = dist.Normal(loc, scale).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)


@pytest.mark.parametrize("budget", [1, 5, 35, 36, 300, 10**9])
def test_mixture_log_prob_is_chunked_and_identical(budget, normal_calls):
    torch.manual_seed(0)
    logits, loc, scale = torch.randn(K), torch.randn(K, D), torch.rand(K, D) + 0.3
    z = torch.randn(13, 11, D, requires_grad=True)
    expected = reference(logits, loc, scale).log_prob(z)
    (expected_grad,) = torch.autograd.grad(expected.sum(), z)
    normal_calls.clear()
    mixture = DiagonalNormalMixture(logits, loc, scale, max_elements=budget)
    for d in (mixture, mixture.expand((13, 11))):  # as a Pyro plate expands it
        got = d.log_prob(z)
        assert torch.equal(got, expected)
        (grad,) = torch.autograd.grad(got.sum(), z)
        assert torch.equal(grad, expected_grad)
    assert max(normal_calls) <= max(budget, K * D)  # one draw is never split
    # still a MixtureSameFamily of diagonal Normals (sources read it as a Gaussian mixture)
    assert isinstance(mixture, torch.distributions.MixtureSameFamily)
    assert mixture.sample((4,)).shape == (4, D)


@pytest.mark.parametrize("budget", [1, 36, 1000])
def test_conditional_mixture_is_chunked_over_particles_and_data(budget, normal_calls):
    torch.manual_seed(0)
    batch = 11
    loc, scale = torch.randn(batch, K, D), torch.rand(batch, K, D) + 0.3
    z = torch.randn(13, batch, D)
    expected = reference(torch.zeros(batch, K), loc, scale).log_prob(z)
    normal_calls.clear()
    got = DiagonalNormalMixture(torch.zeros(batch, K), loc, scale, max_elements=budget)
    assert torch.equal(got.log_prob(z), expected)
    assert torch.equal(got.expand((13, batch)).log_prob(z), expected)
    assert max(normal_calls) <= max(budget, K * D)


@pytest.mark.parametrize("model", ["vae", "cvae"])
@pytest.mark.parametrize("prior", ["vamp", "mog"])
def test_model_priors_bound_their_intermediates(model, prior, monkeypatch, normal_calls):
    vae = build_model(
        model=model, prior=prior, x_dim=12, z_dim=3, y_dim=4, hidden_dims=[16], num_components=6
    ).eval()
    x = torch.bernoulli(torch.rand(5, 12))
    y = F.one_hot(torch.arange(5) % 4, 4).float() if model == "cvae" else None
    options = dict(num_samples=40, seed=3, progress=False, khat=False)
    whole = estimate_source_log_likelihoods(vae, x, {"prior": None}, y, **options)["prior"]
    monkeypatch.setattr(priors, "MIXTURE_CHUNK_ELEMENTS", 6 * 3 * 7)  # 7 draws a chunk
    normal_calls.clear()
    chunked = estimate_source_log_likelihoods(vae, x, {"prior": None}, y, **options)["prior"]
    assert torch.equal(chunked.per_datum, whole.per_datum)
    assert torch.equal(chunked.elbo, whole.elbo)
    # the guide's Normal is (draws, z_dim) = 200 x 3; the prior's pieces are 7 x 6 x 3
    assert max(normal_calls) <= 40 * 5 * 3


class CountingMixture(MixtureSource):
    """A full-covariance mixture source that records how many draws each call scores."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z[..., 0].numel())
        return super().log_prob(z)


def test_sources_are_scored_in_chunks_with_the_same_values(monkeypatch):
    torch.manual_seed(0)
    vae = build_model(x_dim=12, z_dim=3, hidden_dims=[16]).eval()
    x = torch.bernoulli(torch.rand(6, 12))
    tril = torch.linalg.cholesky(torch.eye(3) + 0.3 * torch.ones(3, 3)).expand(4, 3, 3)
    gmm = CountingMixture(torch.randn(4), torch.randn(4, 3), tril.clone())
    assert source_cost(gmm, 3) == 4 * 3
    sources = {"prior": None, "gmm": gmm, "self": PriorSource(vae)}
    options = dict(num_samples=50, draws_per_pass=200, seed=1, progress=False)
    whole = estimate_source_log_likelihoods(vae, x, sources, **options)
    assert max(gmm.calls) == 200  # a pass: 4 data x 50 draws
    gmm.calls.clear()
    monkeypatch.setattr(loglik, "SOURCE_BUDGET_BYTES", 4 * (4 * 3) * 9)  # 9 draws a call
    chunked = estimate_source_log_likelihoods(vae, x, sources, **options)
    assert max(gmm.calls) == 9
    for name in sources:
        # per draw the same operations: equal up to float rounding of batched kernels
        torch.testing.assert_close(chunked[name].per_datum, whole[name].per_datum)
        torch.testing.assert_close(chunked[name].elbo, whole[name].elbo)
    torch.testing.assert_close(chunked["self"].per_datum, chunked["prior"].per_datum)


def test_conditional_sources_are_chunked_over_particles(monkeypatch):
    torch.manual_seed(0)
    cvae = build_model(
        model="cvae", prior="vamp", x_dim=12, z_dim=3, y_dim=4, hidden_dims=[16], num_components=5
    ).eval()
    x = torch.bernoulli(torch.rand(6, 12))
    y = F.one_hot(torch.arange(6) % 4, 4).float()
    calls: list[tuple[int, ...]] = []
    source = PriorSource(cvae)
    original = source.log_prob

    def counting(z, y=None):
        calls.append(tuple(z.shape))
        return original(z, y)

    monkeypatch.setattr(source, "log_prob", counting)
    assert source.conditional and source_cost(source, 3) == 3
    sources = {"prior": None, "source": source}
    options = dict(num_samples=30, seed=2, progress=False, proposal="guide")
    whole = estimate_source_log_likelihoods(cvae, x, sources, y, **options)
    assert calls == [(30, 6, 3)]
    calls.clear()
    monkeypatch.setattr(loglik, "SOURCE_BUDGET_BYTES", 4 * 3 * 6 * 4)  # 4 particles x 6 data
    chunked = estimate_source_log_likelihoods(cvae, x, sources, y, **options)
    assert calls == [(4, 6, 3)] * 7 + [(2, 6, 3)]
    for name in sources:
        torch.testing.assert_close(chunked[name].per_datum, whole[name].per_datum)
    torch.testing.assert_close(chunked["source"].per_datum, chunked["prior"].per_datum)
