"""Source-adapted proposals and the defensive-mixture estimator, checked on exact PPCA answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pyrovae import build_model
from pyrovae.analysis.likelihood.exact import ppca_log_marginal, ppca_posterior, ppca_vae
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods
from pyrovae.analysis.likelihood.proposals import (
    GaussianMixtureProposal,
    adapted_proposal,
    guide_gaussian,
    likelihood_message,
    prior_gaussian,
    source_view,
    uses_guide,
)
from pyrovae.analysis.sources import GaussianSource, PriorSource, fit_sources
from pyrovae.traces import score_latents

X_DIM, ACTIVE, INACTIVE, NOISE = 8, 3, 3, 0.5
Z_DIM = ACTIVE + INACTIVE
GAUSSIAN_SOURCES = ["prior", "aggregate", "gaussian-loc", "gaussian-z", "gaussian-full", "gmm"]


def ppca_weight(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W with 3 orthogonal active columns and 3 zero columns (inactive dims), and b."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, ACTIVE, generator=gen))
    w = torch.cat([q * torch.tensor([2.0, 1.5, 1.0]), torch.zeros(X_DIM, INACTIVE)], 1)
    return w, 0.1 * torch.randn(X_DIM, generator=gen)


def sample(vae, n: int) -> torch.Tensor:
    with torch.no_grad():
        return vae.decoder(torch.randn(n, Z_DIM)).sample()


def mc_stderr(log_weights: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log(mean w) per row: sd(w) / (sqrt(K) mean(w))."""
    w = (log_weights - log_weights.max(1, keepdim=True).values).exp()
    return w.std(1) / (math.sqrt(w.shape[1]) * w.mean(1))


@pytest.fixture(scope="module")
def fitted():
    """PPCA with an exact and a 1.5x too wide, shifted guide; every Gaussian source of each."""
    out = {}
    for kind, kwargs in [("exact", {}), ("wide", {"widen": 1.5, "shift": 0.3})]:
        vae = ppca_vae(*ppca_weight(), NOISE, **kwargs)
        torch.manual_seed(1)
        train = sample(vae, 1500)
        out[kind] = vae, fit_sources(GAUSSIAN_SOURCES, vae, train, options={"gmm": {"seed": 0}})
    return out


def test_gaussian_loc_is_narrow_in_inactive_dims(fitted):
    _, sources = fitted["exact"]
    scale = sources["gaussian-loc"].scale
    assert (scale[ACTIVE:] < 1e-3).all() and (scale[:ACTIVE] > 0.5).all()


@pytest.mark.parametrize("kind", ["exact", "wide"])
@pytest.mark.parametrize("proposal", ["adapted", "separate"])
def test_every_gaussian_source_matches_its_exact_marginal(fitted, kind, proposal):
    vae, sources = fitted[kind]
    torch.manual_seed(2)
    x = sample(vae, 12)
    results = estimate_source_log_likelihoods(
        vae, x, sources, num_samples=3000, keep_log_weights=True, proposal=proposal, seed=0
    )
    for name, result in results.items():
        exact = ppca_log_marginal(vae, x, None if name == "prior" else sources[name])
        se = mc_stderr(result.log_weights)
        err = (result.per_datum - exact).abs()
        assert (err < 5 * se + 1e-3).all(), (name, err, se)
        mean_se = float(se.pow(2).sum().sqrt() / len(se))
        assert abs(result.mean - float(exact.mean())) < 5 * mean_se + 1e-3, name
        assert result.proposal == "adapted"


def test_guide_alone_fails_for_a_narrow_source(fitted):
    """The failure the adapted proposals fix: q(z | x) puts no draws where gaussian-loc lives."""
    vae, sources = fitted["exact"]
    x = sample(vae, 6)
    narrow = {"gaussian-loc": sources["gaussian-loc"]}
    guide = estimate_source_log_likelihoods(vae, x, narrow, num_samples=500, proposal="guide")
    exact = ppca_log_marginal(vae, x, sources["gaussian-loc"])
    assert (guide["gaussian-loc"].per_datum < exact - 100).all()
    assert guide["gaussian-loc"].khat_fraction() == 1.0


@pytest.mark.parametrize("name", ["gaussian-loc", "gaussian-full", "gmm", "aggregate"])
def test_adapted_proposal_is_the_exact_posterior_for_ppca(fitted, name):
    """With the exact guide, l(z) r(z) normalized is p_r(z | x): every weight equals p_r(x)."""
    vae, sources = fitted["exact"]
    x = sample(vae, 5)
    message = likelihood_message(guide_gaussian(vae, x, None), prior_gaussian(vae, x, None))
    view = source_view(sources[name])
    g = adapted_proposal(message, view, max_components=view.num_components)
    z = g.sample((50,))
    assert z.shape == (50, 5, Z_DIM)
    terms = score_latents(vae.model, None, {"z": z.float()}, x)
    log_w = terms.log_likelihood.double() + sources[name].log_prob(z.float()).double()
    log_w = log_w - g.log_prob(z.float())
    exact = ppca_log_marginal(vae, x, sources[name])
    torch.testing.assert_close(log_w, exact.expand_as(log_w), atol=2e-3, rtol=0)


def test_likelihood_message_is_exact_for_ppca():
    w, b = ppca_weight()
    vae = ppca_vae(w, b, NOISE)
    x = sample(vae, 4)
    message = likelihood_message(guide_gaussian(vae, x, None), prior_gaussian(vae, x, None))
    s2 = NOISE**2
    torch.testing.assert_close(
        message.precision, (w.double().pow(2).sum(0) / s2).expand(4, Z_DIM), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        message.shift, (x.double() - b.double()) @ w.double() / s2, atol=1e-4, rtol=1e-4
    )
    gain, offset, cov = ppca_posterior(w, b, NOISE)
    assert torch.allclose(cov, torch.diag(cov.diagonal()), atol=1e-7)
    expected = s2 / (w.double().pow(2).sum(0) + s2)
    torch.testing.assert_close(cov.diagonal(), expected)
    assert gain.shape == (Z_DIM, X_DIM) and offset.shape == (Z_DIM,)


def test_mixture_proposal_density_and_draws():
    torch.manual_seed(0)
    logits = torch.randn(3, 4).double()
    loc = torch.randn(3, 4, 2).double()
    scale = 0.5 + torch.rand(3, 4, 2).double()
    g = GaussianMixtureProposal(logits, loc, scale=scale)
    full = GaussianMixtureProposal(logits, loc, scale_tril=torch.diag_embed(scale))
    z = torch.randn(7, 3, 2).double()
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=logits),
        torch.distributions.Independent(torch.distributions.Normal(loc, scale), 1),
    )
    torch.testing.assert_close(g.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(full.log_prob(z), reference.log_prob(z))
    for mixture in (g, full):
        torch.testing.assert_close(mixture.mean, reference.mean)
        torch.testing.assert_close(mixture.variance, reference.variance)
    draws = g.sample((20000,))
    assert draws.shape == (20000, 3, 2)
    torch.testing.assert_close(draws.mean(0), reference.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(draws.var(0), reference.variance, atol=0.1, rtol=0.05)
    zg = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(g.log_prob(zg).sum(), zg)
    assert torch.isfinite(grad).all()


def test_truncated_mixture_keeps_the_heaviest_components(fitted):
    vae, sources = fitted["exact"]
    x = sample(vae, 3)
    message = likelihood_message(guide_gaussian(vae, x, None), prior_gaussian(vae, x, None))
    view = source_view(sources["aggregate"])
    full = adapted_proposal(message, view, max_components=view.num_components)
    top = adapted_proposal(message, view, max_components=16)
    assert top.num_components == 16 and full.num_components == view.num_components
    heaviest = full.logits.topk(16, dim=-1).values
    torch.testing.assert_close(top.logits, (heaviest - heaviest.logsumexp(-1, keepdim=True)))


def test_non_gaussian_sources_and_guides_get_a_valid_proposal():
    """A flow guide, a flow source and a CVAE: finite estimates, the guide where it must."""
    vae = build_model(z_dim=3, hidden_dims=[16], guide="flow").eval()
    x = torch.bernoulli(torch.full((5, vae.x_dim), 0.3))
    train = torch.bernoulli(torch.full((200, vae.x_dim), 0.3))
    sources = fit_sources(
        ["prior", "gaussian-loc", "flow"], vae, train, options={"flow": {"num_steps": 20}}
    )
    assert uses_guide(vae, sources["prior"]) and not uses_guide(vae, sources["flow"])
    assert sources["flow"].gaussian_mixture() is None
    assert source_view(sources["flow"]).num_components == 10
    # the flow's view is fitted to seeded draws: the same whatever the global random state
    torch.manual_seed(1)
    first = source_view(sources["flow"], seed=3)
    torch.manual_seed(2)
    second = source_view(sources["flow"], seed=3)
    torch.testing.assert_close(first.loc, second.loc, rtol=0, atol=0)
    results = estimate_source_log_likelihoods(vae, x, sources, num_samples=40, seed=0)
    for result in results.values():
        assert torch.isfinite(result.per_datum).all()
    cvae = build_model(model="cvae", z_dim=2, hidden_dims=[16]).eval()
    y = F.one_hot(torch.arange(5) % 10, 10).float()
    gauss = GaussianSource(torch.zeros(2), scale=torch.full((2,), 0.5))
    both = estimate_source_log_likelihoods(
        cvae, x, {"prior": PriorSource(cvae), "narrow": gauss}, y, num_samples=30, seed=0
    )
    assert all(torch.isfinite(r.per_datum).all() for r in both.values())


def test_bad_proposal_arguments():
    vae = ppca_vae(*ppca_weight(), NOISE)
    x = sample(vae, 2)
    with pytest.raises(ValueError, match="proposal must be one of"):
        estimate_source_log_likelihoods(vae, x, {"prior": None}, proposal="prior")
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match="defensive"):
            estimate_source_log_likelihoods(vae, x, {"prior": None}, defensive=bad)
    with pytest.raises(ValueError, match="scale"):
        GaussianMixtureProposal(torch.zeros(1, 1), torch.zeros(1, 1, 2))


@pytest.mark.parametrize("proposal", ["guide", "adapted", "separate"])
def test_elbo_is_the_guides_under_every_proposal(proposal):
    """The reported ELBO is E_q[log p(x, z) - log q(z | x)] of the guide (exact for PPCA),
    not L_1 of whichever proposal drew z: checked within its Monte Carlo error."""
    from pyrovae.analysis.likelihood.exact import ppca_elbo

    vae = ppca_vae(*ppca_weight(), NOISE, widen=1.5, shift=0.3)
    torch.manual_seed(2)
    x = sample(vae, 200)
    gmm = fit_sources(["gmm"], vae, sample(vae, 1500), options={"gmm": {"seed": 0}})["gmm"]
    result = estimate_source_log_likelihoods(
        vae, x, {"prior": None, "gmm": gmm}, num_samples=200, proposal=proposal, seed=0
    )["prior"]
    exact = ppca_elbo(vae, x)
    diff = result.elbo - exact
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff)) + 1e-9
    # and it lies below log p(x) by KL(q || p(z | x)), far more than the estimate's error
    gap = ppca_log_marginal(vae, x) - exact
    assert float(gap.mean()) > 0.5


def test_ppca_elbo_is_log_marginal_for_the_exact_guide():
    from pyrovae.analysis.likelihood.exact import ppca_elbo

    vae = ppca_vae(*ppca_weight(), NOISE)
    x = sample(vae, 20)
    assert torch.allclose(ppca_elbo(vae, x), ppca_log_marginal(vae, x), atol=1e-4)


def test_sample_rows_follows_its_uniform_and_normal():
    """Given the uniform and the normal, the component is the inverse CDF of the uniform
    (component 0 holds the first 0.3 of the mass) and the draw loc + scale * normal."""
    from pyrovae.analysis.likelihood.proposals import GaussianMixtureProposal

    logits = torch.tensor([[0.3, 0.7]]).log().expand(3, 2)
    loc = torch.tensor([[[-5.0, 0.0], [5.0, 1.0]]]).expand(3, 2, 2)
    scale = torch.tensor([[[1.0, 2.0], [0.5, 0.25]]]).expand(3, 2, 2)
    mixture = GaussianMixtureProposal(logits, loc, scale)
    rows = torch.tensor([0, 1, 2, 2])
    uniform = torch.tensor([0.3 - 1e-6, 0.3 + 1e-6, 0.01, 0.99])
    normal = torch.tensor([[1.0, -1.0], [1.0, -1.0], [0.0, 2.0], [2.0, 0.0]])
    expected = torch.tensor([[-4.0, -2.0], [5.5, 0.75], [-5.0, 4.0], [6.0, 1.0]])
    for _ in range(3):  # no other randomness: the same every time
        torch.testing.assert_close(mixture.sample_rows(rows, uniform, normal), expected)
