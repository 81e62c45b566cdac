"""The continuous Bernoulli likelihood: exact normalizer, moments and gradients at any logit."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from pyrovae.models import ContinuousBernoulliDecoder
from pyrovae.models.decoders import StableContinuousBernoulli

ETAS = [-100.0, -50.0, -16.0, -1.0, -1e-4, 1e-4, 1.0, 16.0, 50.0, 100.0]
NEAR_BAND = [-0.2, -0.1, -0.05, 0.0, 0.05, 0.0999, 0.1, 0.2]


def log_c(eta: float) -> float:
    """Float64 closed form log C(eta) = log(eta / tanh(eta / 2)) (log 2 at eta = 0)."""
    return math.log(2.0) if eta == 0 else math.log(eta / math.tanh(eta / 2))


def decoder_with_logits(eta: torch.Tensor) -> ContinuousBernoulliDecoder:
    """A linear decoder whose logits are ``eta`` for every z."""
    decoder = ContinuousBernoulliDecoder(2, eta.numel(), hidden_dims=()).to(eta.dtype)
    with torch.no_grad():
        decoder.net[0].weight.zero_()
        decoder.net[0].bias.copy_(eta)
    return decoder


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_log_normalizer_matches_closed_form(dtype, tol):
    """log C = log p(x) - (x eta - softplus(eta)) at x = 0 and x = 1, through the decoder."""
    eta = torch.tensor(ETAS + NEAR_BAND, dtype=dtype)
    reference = torch.tensor([log_c(e) for e in eta.double().tolist()], dtype=torch.float64)
    decoder = decoder_with_logits(eta)
    z = torch.zeros(1, 2, dtype=dtype)
    pixels = decoder(z).base_dist
    zeros, ones = torch.zeros_like(eta)[None], torch.ones_like(eta)[None]
    softplus = F.softplus(eta.double())
    at_zero = pixels.log_prob(zeros)[0].double() + softplus
    at_one = pixels.log_prob(ones)[0].double() - eta.double() + softplus
    # float32: the log density itself (up to |eta| = 100) is rounded to ~1e-7 relative
    scale = 1 + eta.double().abs()
    assert ((at_zero - reference).abs() / scale).max() < tol
    assert ((at_one - reference).abs() / scale).max() < tol
    torch.testing.assert_close(pixels.log_normalizer[0].double(), reference, atol=tol, rtol=tol)
    # the event sum seen by the model and the estimators
    torch.testing.assert_close(
        decoder(z).log_prob(zeros).double(), (reference - softplus).sum()[None], rtol=tol, atol=tol
    )


def simpson(values: torch.Tensor, h: float) -> torch.Tensor:
    """Composite Simpson rule over the last dim (an odd number of equally spaced points)."""
    return h / 3 * (values[..., 0] + values[..., -1] + 4 * values[..., 1:-1:2].sum(-1)
                    + 2 * values[..., 2:-1:2].sum(-1))  # fmt: skip


@pytest.mark.parametrize("eta", [-100.0, -16.0, -1.0, -0.05, 0.0, 1e-4, 0.1, 0.3, 5.0, 50.0])
def test_density_integrates_to_one_with_the_stated_moments(eta):
    n = 2**18
    x = torch.linspace(0, 1, n + 1, dtype=torch.float64)
    d = StableContinuousBernoulli(torch.tensor(eta, dtype=torch.float64))
    density = d.log_prob(x).exp()
    total = simpson(density, 1 / n)
    mean = simpson(x * density, 1 / n)
    variance = simpson((x - mean) ** 2 * density, 1 / n)
    assert abs(total - 1) < 1e-9
    assert abs(d.mean - mean) < 1e-9
    assert abs(d.variance - variance) < 1e-9
    entropy = -simpson(density * d.log_prob(x), 1 / n)
    assert abs(d.entropy() - entropy) < 1e-8
    # float32 moments agree with float64 ones
    d32 = StableContinuousBernoulli(torch.tensor(eta))
    assert abs(d32.mean.double() - d.mean) < 1e-7
    assert abs(d32.variance.double() - d.variance) < 1e-8


def test_agrees_with_torch_where_torch_is_exact():
    """torch's float64 continuous Bernoulli is accurate for moderate |eta| (it works with
    lambda = sigmoid(eta), which loses digits as |eta| grows)."""
    eta = torch.linspace(-10, 10, 201, dtype=torch.float64)
    eta = eta[eta.abs() > 0.05]  # torch switches to a short series near 0
    x = torch.rand(eta.numel(), dtype=torch.float64)
    theirs = torch.distributions.ContinuousBernoulli(logits=eta)
    for dtype, tol in [(torch.float64, 1e-9), (torch.float32, 1e-5)]:
        ours = StableContinuousBernoulli(eta.to(dtype))
        for a, b in [
            (ours.log_prob(x.to(dtype)), theirs.log_prob(x)),
            (ours.mean, theirs.mean),
            (ours.cdf(x.to(dtype)), theirs.cdf(x)),
            (ours.icdf(x.to(dtype)), theirs.icdf(x)),
        ]:
            torch.testing.assert_close(a.double(), b, atol=tol, rtol=tol)


GRAD_ETAS = [0.0, 1e-8, -1e-8, 0.1, -0.1, 1.0, 50.0, -50.0, 100.0, -100.0, 1e4, -1e4]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_and_right(dtype):
    """d/deta log p(x | eta) = x - E[x] (an exponential family), finite at 0 and far out."""
    eta = torch.tensor(GRAD_ETAS, dtype=dtype, requires_grad=True)
    for value in (0.0, 0.3, 1.0):
        x = torch.full_like(eta, value)
        (grad,) = torch.autograd.grad(StableContinuousBernoulli(eta).log_prob(x).sum(), eta)
        assert torch.isfinite(grad).all()
        expected = value - StableContinuousBernoulli(eta.detach().double()).mean
        torch.testing.assert_close(grad.double(), expected, atol=1e-6, rtol=1e-5)
    d = StableContinuousBernoulli(eta)
    for name, out in [
        ("mean", d.mean),
        ("variance", d.variance),
        ("entropy", d.entropy()),
        ("log C", d.log_normalizer),
        ("rsample", d.rsample((5,))),
        ("cdf", d.cdf(torch.full_like(eta, 0.4))),
    ]:
        (grad,) = torch.autograd.grad(out.sum(), eta)
        assert torch.isfinite(grad).all(), name
        assert torch.isfinite(out).all(), name


def test_samples_follow_the_distribution():
    torch.manual_seed(0)
    eta = torch.tensor([-100.0, -20.0, -3.0, -1e-7, 0.0, 0.5, 20.0, 100.0])
    d = StableContinuousBernoulli(eta)
    draws = d.sample((200_000,))
    assert draws.shape == (200_000, 8)
    assert draws.min() >= 0 and draws.max() <= 1
    stderr = (d.variance / draws.shape[0]).sqrt()
    assert ((draws.mean(0) - d.mean).abs() < 5 * stderr + 1e-6).all()
    u = torch.rand(1000, 8, dtype=torch.float64)
    d64 = StableContinuousBernoulli(eta.double())
    torch.testing.assert_close(d64.cdf(d64.icdf(u)), u, atol=1e-10, rtol=0)


def test_decoder_mean_and_sample_use_the_stable_form():
    eta = torch.tensor([-50.0, 0.0, 50.0])
    decoder = decoder_with_logits(eta)
    mean = decoder.mean(torch.zeros(4, 2))
    assert mean.shape == (4, 3)
    torch.testing.assert_close(mean[0], torch.tensor([1 / 50, 0.5, 1 - 1 / 50]))
    assert isinstance(decoder(torch.zeros(4, 2)).base_dist, StableContinuousBernoulli)
