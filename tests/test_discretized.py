"""The discretized logistic likelihood against exact answers: its probabilities sum to one for
any location and scale, each equals the logistic mass of its bin (100-digit arithmetic), draws
land in each bin with its probability, and bits per dimension are nats rescaled."""

from __future__ import annotations

import math

import mpmath
import pyro
import pytest
import torch

from pyrovae.models.discretized import DiscretizedLogistic, bits_per_dim

# adversarial parameters: far outside the bins on either side, on a bin edge, on the last
# bin, scales from far narrower than a bin to far wider than all of them
LOCS = [-1e4, -300.0, -0.5, 0.0, 0.3, 127.5, 254.7, 255.0, 300.0, 1e4]
SCALES = [1e-4, 0.01, 0.3, 1.0, 30.0, 1e4]


def _grid(num_bins: int) -> tuple[DiscretizedLogistic, torch.Tensor]:
    loc, scale = torch.meshgrid(
        torch.tensor(LOCS, dtype=torch.float64),
        torch.tensor(SCALES, dtype=torch.float64),
        indexing="ij",
    )
    values = torch.arange(num_bins, dtype=torch.float64).reshape(-1, 1, 1)
    return DiscretizedLogistic(loc, scale, num_bins=num_bins), values


@pytest.mark.parametrize("num_bins", [2, 3, 256])
def test_probabilities_sum_to_one_for_any_location_and_scale(num_bins):
    dist, values = _grid(num_bins)
    log_p = dist.log_prob(values)  # (K, locs, scales)
    assert torch.isfinite(log_p).all()
    total = torch.logsumexp(log_p, dim=0)
    assert total.abs().max().item() < 1e-12, total


def _exact_log_mass(k: int, loc: float, scale: float, num_bins: int) -> float:
    """log P(k) in 100-digit arithmetic, from the logistic CDF at the bin edges."""
    with mpmath.workdps(100):
        cdf = lambda t: 1 / (1 + mpmath.exp(-(mpmath.mpf(t) - loc) / scale))  # noqa: E731
        upper = mpmath.mpf(1) if k == num_bins - 1 else cdf(k + 0.5)
        lower = mpmath.mpf(0) if k == 0 else cdf(k - 0.5)
        return float(mpmath.log(upper - lower))


@pytest.mark.parametrize(
    ("k", "loc", "scale"),
    [
        (0, 0.0, 1.0),
        (255, 255.0, 1.0),
        (128, 127.5, 0.3),
        (200, 0.0, 1.0),  # far tail: sigma(200.5) - sigma(199.5) is 0 in float64
        (3, 250.0, 2.0),  # far lower tail
        (0, 40.0, 1.0),  # the first bin's tail, far below the location
        (255, 10.0, 3.0),  # the last bin's tail
        (17, 17.0, 1e-3),  # a bin far wider than the scale
        (100, 90.0, 1e3),  # a bin far narrower than the scale
    ],
)
def test_each_bin_has_its_exact_logistic_mass(k, loc, scale):
    dist = DiscretizedLogistic(
        torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
    )
    got = dist.log_prob(torch.tensor(float(k), dtype=torch.float64)).item()
    exact = _exact_log_mass(k, loc, scale, 256)
    assert math.isclose(got, exact, rel_tol=1e-10, abs_tol=1e-12), (got, exact)


def test_draws_land_in_each_bin_with_its_probability():
    """Bin counts of 200,000 draws against their expectations: every bin, the end bins with
    their tails, within 5 binomial standard errors (seeded)."""
    torch.manual_seed(0)
    num_bins, n = 12, 200_000
    dist = DiscretizedLogistic(torch.tensor(2.3), torch.tensor(1.7), num_bins=num_bins)
    draws = dist.sample((n,))
    assert torch.equal(draws, draws.round()) and draws.min() >= 0 and draws.max() < num_bins
    counts = torch.bincount(draws.long(), minlength=num_bins).double()
    p = dist.log_prob(torch.arange(num_bins, dtype=torch.float32)).double().exp()
    se = (n * p * (1 - p)).sqrt()
    assert ((counts - n * p).abs() <= 5 * se + 1).all(), (counts, n * p)
    assert p[-1] > 1e-4 and p[0] > 0.05  # the tails are really exercised


def test_mean_variance_and_cdf_are_the_sums_over_bins():
    loc = torch.tensor([-3.0, 0.2, 100.0, 254.9, 400.0], dtype=torch.float64)
    scale = torch.tensor([2.0, 0.5, 10.0, 3.0, 1.0], dtype=torch.float64)
    dist = DiscretizedLogistic(loc, scale)
    k = torch.arange(256, dtype=torch.float64).reshape(-1, 1)
    p = dist.log_prob(k).exp()
    assert torch.allclose(dist.mean, (k * p).sum(0), rtol=1e-10, atol=1e-10)
    var = (k**2 * p).sum(0) - (k * p).sum(0) ** 2
    assert torch.allclose(dist.variance, var, rtol=1e-8, atol=1e-8)
    assert torch.allclose(dist.cdf(k), p.cumsum(0), rtol=1e-10, atol=1e-12)


def test_it_scores_an_observed_vector_inside_a_pyro_model():
    loc = torch.tensor([[10.0, 200.0, 0.0]])
    scale = torch.tensor([[2.0, 5.0, 0.1]])
    x = torch.tensor([[12.0, 255.0, 0.0]])

    def model():
        with pyro.plate("data", 1):
            pyro.sample("x", DiscretizedLogistic(loc, scale).to_event(1), obs=x)

    trace = pyro.poutine.trace(model).get_trace()
    expected = sum(
        _exact_log_mass(int(x[0, i]), loc[0, i].item(), scale[0, i].item(), 256) for i in range(3)
    )
    assert math.isclose(trace.log_prob_sum().item(), expected, rel_tol=1e-5)


def test_bad_parameters_are_refused_in_one_line():
    with pytest.raises(ValueError, match="num_bins must be an integer >= 2, got 1"):
        DiscretizedLogistic(torch.zeros(2), torch.ones(2), num_bins=1)
    with pytest.raises(ValueError, match="num_dims must be a positive integer, got 0"):
        bits_per_dim(-1.0, 0)


def test_bits_per_dimension_rescale_nats():
    """A uniform distribution over 256 values costs exactly 8 bits a dimension."""
    d = 3 * 32 * 32
    assert math.isclose(bits_per_dim(-d * math.log(256), d), 8.0, rel_tol=1e-15)
    log_px = torch.tensor([-2000.0, -3000.0])
    assert torch.allclose(bits_per_dim(log_px, d), 1 / (d * math.log(2)) * -log_px)
