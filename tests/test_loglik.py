"""Importance-sampled log-likelihood and PSIS diagnostics, checked on probabilistic PCA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from pyrovae import build_model
from pyrovae.analysis.likelihood.datum_noise import DatumNoise
from pyrovae.analysis.likelihood.exact import ppca_log_marginal, ppca_vae
from pyrovae.analysis.likelihood.loglik import (
    LogLikelihood,
    _mixture_draws,
    estimate_log_likelihood,
    estimate_source_log_likelihoods,
    iwae_bound,
)
from pyrovae.analysis.likelihood.proposals import (
    adapted_proposal,
    guide_gaussian,
    likelihood_message,
    prior_gaussian,
    source_view,
)
from pyrovae.analysis.likelihood.psis import khat_fraction, psis_khat
from pyrovae.analysis.sources import GaussianSource, PriorSource
from pyrovae.guides import DiagonalNormalEncoder
from pyrovae.models import VAE, GaussianDecoder, StandardNormalPrior

X_DIM, Z_DIM, NOISE = 6, 2, 0.5


def ppca(exact_guide: bool = False, shift: float = 0.0, widen: float = 1.0) -> VAE:
    """Probabilistic PCA as a VAE: linear Gaussian decoder with isotropic noise.

    With ``exact_guide`` the decoder gets orthogonal columns and the encoder is set to the
    exact posterior N(G (x - b), diag(s^2 / (|w_j|^2 + s^2))), G = (W^T W + s^2 I)^-1 W^T,
    written with the library's own ReLU encoder through relu(a) - relu(-a) = a; ``shift``
    moves its mean and ``widen`` multiplies its scale (an inexact but safe proposal).
    """
    decoder = GaussianDecoder(Z_DIM, X_DIM, hidden_dims=(), scale="isotropic", init_scale=NOISE)
    encoder = DiagonalNormalEncoder(X_DIM, Z_DIM, hidden_dims=(2 * X_DIM,))
    vae = VAE(encoder, decoder, StandardNormalPrior(Z_DIM))
    if exact_guide:
        linear = decoder.net[0]
        q, _ = torch.linalg.qr(torch.randn(X_DIM, Z_DIM))
        w = q * torch.tensor([2.0, 1.0])
        with torch.no_grad():
            linear.weight.copy_(w)
            s2 = decoder.scale.pow(2)
            gain = torch.linalg.solve(w.T @ w + s2 * torch.eye(Z_DIM), w.T)  # (Z, X)
            post_scale = (s2 / (w.pow(2).sum(0) + s2)).sqrt()
            trunk, head = encoder.trunk[0], encoder.head
            trunk.weight.copy_(torch.cat([torch.eye(X_DIM), -torch.eye(X_DIM)]))
            trunk.bias.zero_()
            head.weight.zero_()
            head.weight[:Z_DIM].copy_(torch.cat([gain, -gain], 1))
            head.bias[:Z_DIM].copy_(-gain @ linear.bias + shift)
            head.bias[Z_DIM:].copy_(torch.log(torch.expm1(widen * post_scale - 1e-4)))
    return vae.eval()


def ppca_marginal(vae: VAE, x: torch.Tensor, loc=None, cov=None) -> torch.Tensor:
    """Exact log p_r(x) with r = N(loc, cov) (default N(0, I)): N(W loc + b, W cov W^T + s^2 I)."""
    linear = vae.decoder.net[0]
    w, b = linear.weight.double().detach(), linear.bias.double().detach()
    loc = torch.zeros(Z_DIM, dtype=torch.double) if loc is None else loc.double()
    cov = torch.eye(Z_DIM, dtype=torch.double) if cov is None else cov.double()
    s2 = vae.decoder.scale.double().detach().pow(2)
    marginal = torch.distributions.MultivariateNormal(
        w @ loc + b, w @ cov @ w.T + s2 * torch.eye(X_DIM, dtype=torch.double)
    )
    return marginal.log_prob(x.double())


def sample_ppca(vae: VAE, n: int) -> torch.Tensor:
    with torch.no_grad():
        return vae.decoder(torch.randn(n, Z_DIM)).sample()


def mc_stderr(log_weights: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log(mean w) per row: sd(w) / (sqrt(K) mean(w))."""
    w = (log_weights - log_weights.max(1, keepdim=True).values).exp()
    return w.std(1) / (math.sqrt(w.shape[1]) * w.mean(1))


def test_ppca_estimate_agrees_with_exact_marginal():
    # an over-dispersed, shifted guide: inexact, but with light-tailed weights
    vae = ppca(exact_guide=True, shift=0.3, widen=1.5)
    x = sample_ppca(vae, 24)
    result = estimate_log_likelihood(vae, x, num_samples=2000, keep_log_weights=True)
    exact = ppca_marginal(vae, x)
    err = (result.per_datum - exact).abs()
    assert (err < 5 * mc_stderr(result.log_weights) + 1e-3).all(), err
    assert abs(result.mean - float(exact.mean())) < 0.02
    # the ELBO is below log p(x) by KL(q || posterior) >= 0
    assert (result.elbo <= exact + 1e-3).all()
    assert result.log_weights.shape == (24, 2000)
    assert result.khat_fraction() == 0.0
    assert (result.elbo < exact - 0.01).all()  # the guide is not exact


def test_poor_guide_is_flagged_by_khat():
    vae = ppca()  # an untrained encoder: a poor proposal with heavy-tailed weights
    x = sample_ppca(vae, 24)
    assert estimate_log_likelihood(vae, x, num_samples=2000).khat_fraction() > 0.2


def test_exact_posterior_gives_exact_estimate_for_every_k():
    vae = ppca(exact_guide=True)
    x = sample_ppca(vae, 16)
    exact = ppca_marginal(vae, x)
    for k, per_pass in [(1, 2**14), (50, 2**14), (50, 7)]:
        result = estimate_log_likelihood(
            vae, x, num_samples=k, draws_per_pass=per_pass, keep_log_weights=True
        )
        torch.testing.assert_close(result.per_datum, exact, atol=1e-4, rtol=0)
        torch.testing.assert_close(result.elbo, exact, atol=1e-4, rtol=0)
        spread = result.log_weights.max(1).values - result.log_weights.min(1).values
        assert (spread < 1e-4).all()


def ppca64(num_data: int = 16) -> tuple[VAE, torch.Tensor]:
    """PPCA in float64 with its exact posterior as guide, and data x ~ p(x) (float64).

    ``ppca_vae(..., dtype=torch.float64)`` computes the posterior of the float64 decoder
    as stored (a float32 model turned ``.double()`` has a guide exact only to float32
    rounding, about 1e-7 nats per log weight): every importance weight is p(x) up to
    float64 rounding, for any K and any draw."""
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, Z_DIM, generator=gen, dtype=torch.double))
    weight = q * torch.tensor([2.0, 1.0], dtype=torch.double)
    bias = 0.1 * torch.randn(X_DIM, generator=gen, dtype=torch.double)
    vae = ppca_vae(weight, bias, NOISE, dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in [*vae.parameters(), *vae.buffers()])
    with torch.no_grad():
        z = torch.randn(num_data, Z_DIM, generator=gen, dtype=torch.double)
        noise = torch.randn(num_data, X_DIM, generator=gen, dtype=torch.double)
        x = z @ weight.T + bias + vae.decoder.scale * noise
    return vae, x


@pytest.mark.parametrize("proposal", ["guide", "adapted"])
def test_a_float64_model_is_estimated_in_float64(proposal):
    """Every weight is p(x), so the estimate and the ELBO are exact to float64 rounding
    (1e-10 nats; float32 anywhere on the way gives about 1e-7). The standard Normal as a
    source, unlike the model's prior, gets its own adapted proposal, l(z) N(0, I): for
    exact PPCA the posterior itself, so the weights of the mixture draws are p(x) too."""
    vae, x = ppca64()
    exact = ppca_log_marginal(vae, x)
    standard = GaussianSource(
        torch.zeros(Z_DIM, dtype=torch.double), scale=torch.ones(Z_DIM, dtype=torch.double)
    )
    for k in (1, 10, 1000):
        options = {"num_samples": k, "proposal": proposal, "seed": 0, "progress": False}
        results = estimate_source_log_likelihoods(
            vae, x, {"prior": None, "standard": standard}, keep_log_weights=True, **options
        )
        results["plain"] = estimate_log_likelihood(vae, x, keep_log_weights=True, **options)
        for name, result in results.items():
            assert result.log_weights.dtype == torch.float64
            torch.testing.assert_close(result.per_datum, exact, rtol=0, atol=1e-10, msg=name)
            torch.testing.assert_close(result.elbo, exact, rtol=0, atol=1e-10, msg=name)
            spread = result.log_weights.max(1).values - result.log_weights.min(1).values
            assert (spread < 1e-10).all(), (name, k, spread.max())


class _FixedFirstUniform(DatumNoise):
    """Datum noise whose first use, the mixture's choice of component, is one value."""

    def __init__(self, value: float, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.value = value

    def uniform(self, particles, dims=1, device=None, at=None):
        out = super().uniform(particles, dims, device, at)
        return out.fill_(self.value) if self._role == 2 else out  # uses: guide draws, choice


def test_mixture_components_are_chosen_with_float64_shares():
    """A uniform 1e-9 above the guide's share of 0.2 picks the adapted proposal, below it
    the guide: the choice follows the mixture density that scores the draws (with float32
    shares the guide's came out as 0.2 - 1.2e-8, so the adapted proposal took both)."""
    vae, x = ppca64(num_data=3)
    source = GaussianSource(torch.zeros(Z_DIM), scale=torch.ones(Z_DIM))
    message = likelihood_message(guide_gaussian(vae, x, None), prior_gaussian(vae, x, None))
    proposals = {"standard": adapted_proposal(message, source_view(source))}
    index = torch.arange(3)
    for value, from_guide in [(0.2 - 1e-9, True), (0.2 + 1e-9, False)]:
        noise = _FixedFirstUniform(value, 0, index, total=4)
        _, _, chose_guide = _mixture_draws(
            vae, x, None, 4, proposals, math.log(0.2), math.log(0.8), noise
        )
        assert (chose_guide == from_guide).all(), (value, chose_guide)


def test_source_estimates_agree_with_exact_gaussian_marginals():
    vae = ppca(exact_guide=True)
    x = sample_ppca(vae, 16)
    loc = torch.tensor([0.3, -0.2])
    scale_tril = torch.tensor([[0.9, 0.0], [0.3, 0.6]])
    source = GaussianSource(loc, scale_tril=scale_tril, name="shifted")
    results = estimate_source_log_likelihoods(
        vae, x, {"prior": None, "shifted": source}, num_samples=4000, keep_log_weights=True
    )
    exact = ppca_marginal(vae, x, loc, scale_tril @ scale_tril.T)
    err = (results["shifted"].per_datum - exact).abs()
    assert (err < 5 * mc_stderr(results["shifted"].log_weights) + 1e-3).all(), err
    # the prior's draws come from the defensive mixture too: exact only within MC error
    err = (results["prior"].per_datum - ppca_marginal(vae, x)).abs()
    assert (err < 5 * mc_stderr(results["prior"].log_weights) + 1e-3).all(), err
    guide_only = estimate_source_log_likelihoods(vae, x, {"prior": None}, num_samples=10)
    torch.testing.assert_close(
        guide_only["prior"].per_datum, ppca_marginal(vae, x), atol=1e-4, rtol=0
    )


def test_shared_draws_prior_source_matches_plain_estimate():
    vae = ppca()
    x = sample_ppca(vae, 10)
    plain = estimate_log_likelihood(vae, x, num_samples=64, seed=3, keep_log_weights=True)
    both = estimate_source_log_likelihoods(
        vae, x, {"trace": None, "prior": PriorSource(vae)}, num_samples=64, seed=3, khat=False
    )
    torch.testing.assert_close(both["trace"].per_datum, plain.per_datum, rtol=0, atol=0)
    torch.testing.assert_close(both["prior"].per_datum, plain.per_datum, rtol=0, atol=1e-5)
    assert both["prior"].khat is None
    # a seed does not disturb the global RNG
    state = torch.get_rng_state()
    estimate_log_likelihood(vae, x, num_samples=4, seed=1, khat=False)
    assert torch.equal(state, torch.get_rng_state())


def test_iwae_bounds_from_kept_weights():
    vae = ppca()
    x = sample_ppca(vae, 12)
    result = estimate_log_likelihood(
        vae, x, num_samples=100, keep_log_weights=True, iwae_particles=[1, 10, 100]
    )
    torch.testing.assert_close(result.iwae[1], result.elbo)
    torch.testing.assert_close(result.iwae[100], result.per_datum)
    assert result.iwae[1].mean() < result.iwae[10].mean() < result.iwae[100].mean() + 1e-6
    torch.testing.assert_close(iwae_bound(result.log_weights, 10), result.iwae[10])
    with pytest.raises(ValueError, match="num_particles=101"):
        iwae_bound(result.log_weights, 101)


def test_cvae_estimate_uses_labels_and_conditional_prior():
    vae = build_model(
        model="cvae",
        prior="vamp",
        num_components=4,
        x_dim=X_DIM,
        z_dim=Z_DIM,
        y_dim=3,
        hidden_dims=[8],
        likelihood="gaussian",
    ).eval()
    x = torch.randn(9, X_DIM)
    y = F.one_hot(torch.arange(9) % 3, 3).float()
    source = PriorSource(vae)
    assert source.conditional
    results = estimate_source_log_likelihoods(
        vae, x, {"trace": None, "prior": source}, y, num_samples=30, seed=0
    )
    torch.testing.assert_close(results["prior"].per_datum, results["trace"].per_datum)
    assert torch.isfinite(results["prior"].per_datum).all()
    with pytest.raises(ValueError, match="CVAE needs y"):
        estimate_log_likelihood(vae, x, num_samples=2)


def test_bad_inputs_name_the_argument():
    vae = ppca()
    x = sample_ppca(vae, 4)
    with pytest.raises(ValueError, match="num_samples"):
        estimate_log_likelihood(vae, x, num_samples=0)
    with pytest.raises(ValueError, match="draws_per_pass"):
        estimate_log_likelihood(vae, x, num_samples=2, draws_per_pass=0)
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(num_data, 6\)"):
        estimate_log_likelihood(vae, x[:, :3])
    with pytest.raises(ValueError, match="non-empty dict"):
        estimate_source_log_likelihoods(vae, x, {})
    wrong = GaussianSource(torch.zeros(3), scale=torch.ones(3))
    with pytest.raises(ValueError, match="z_dim=3"):
        estimate_source_log_likelihoods(vae, x, {"wrong": wrong})
    with pytest.raises(ValueError, match="iwae_particles"):
        estimate_log_likelihood(vae, x, num_samples=5, iwae_particles=[6])


def test_result_summary_is_plain():
    result = LogLikelihood(
        per_datum=torch.tensor([-1.0, -3.0]),
        elbo=torch.tensor([-2.0, -4.0]),
        khat=torch.tensor([0.2, 0.9]),
        num_samples=5,
    )
    summary = result.to_dict()
    assert summary["loglik"] == -2.0 and summary["elbo"] == -3.0
    assert summary["stderr"] == pytest.approx(math.sqrt(2) / math.sqrt(2))
    assert summary["khat_gt_0.7"] == 0.5


# ----------------------------------------------------------------------------- PSIS k-hat


def test_khat_separates_light_and_heavy_tails():
    gen = np.random.default_rng(0)
    light = gen.normal(0.0, 0.3, size=(20, 2000))  # log-normal weights, small variance
    heavy = gen.standard_cauchy(size=(20, 2000)).clip(-1e3, None)  # pareto-like upper tail
    heavy = np.log(np.abs(heavy) + 1e-12) * 2.0
    k_light, k_heavy = psis_khat(light), psis_khat(heavy)
    assert k_light.dtype == torch.float64 and k_light.shape == (20,)
    assert (k_light < 0.5).all()
    assert (k_heavy > 0.7).all()
    assert khat_fraction(k_light) == 0.0 and khat_fraction(k_heavy) == 1.0


def test_khat_special_cases():
    assert torch.isnan(psis_khat(torch.randn(3, 20))).all()  # too few draws
    constant = psis_khat(torch.zeros(2, 50))
    assert torch.isneginf(constant).all()
    assert math.isnan(khat_fraction(torch.full((3,), math.nan)))
    with pytest.raises(ValueError, match="NaN"):
        psis_khat(torch.tensor([[0.0, math.nan] * 20]))
    with pytest.raises(ValueError, match="shape"):
        psis_khat(torch.zeros(50))


def test_source_densities_in_chunks_equal_the_whole(monkeypatch):
    """A budget too small for all draws at once: log r(z) in chunks of rows, reshaped back
    to (K, B), equals the density of every draw at once."""
    from pyrovae.analysis.likelihood import loglik

    source = GaussianSource(torch.tensor([0.5, -1.0]), scale=torch.tensor([2.0, 0.5]))
    z = torch.randn(7, 5, 2)
    whole = source.log_prob(z)
    monkeypatch.setattr(loglik, "SOURCE_BUDGET_BYTES", 4 * 3 * 8)  # 8 rows of cost 3
    torch.testing.assert_close(loglik._source_log_prob(source, z, None, cost=3), whole)
