"""The classifier two-sample test (Lopez-Paz & Oquab, 2017) and its exact binomial parts."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from pyrovae.analysis.quality.two_sample import (
    binomial_tail,
    classifier_two_sample_test,
    clopper_pearson_interval,
)

COUNTS = [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (57, 100), (520, 1000), (999, 1000)]


@pytest.mark.parametrize(("k", "n"), COUNTS)
@pytest.mark.parametrize("level", [0.95, 0.8])
def test_clopper_pearson_interval_matches_scipy(k, n, level):
    exact = stats.binomtest(k, n).proportion_ci(level, method="exact")
    low, high = clopper_pearson_interval(k, n, level)
    assert low == pytest.approx(exact.low, abs=1e-10)
    assert high == pytest.approx(exact.high, abs=1e-10)


def test_clopper_pearson_interval_covers_at_least_its_level():
    # coverage summed exactly over every count: P_p(low(X) <= p <= high(X)) >= level
    n = 30
    intervals = [clopper_pearson_interval(k, n, 0.9) for k in range(n + 1)]
    for p in (0.05, 0.3, 0.5, 0.77):
        pmf = stats.binom.pmf(range(n + 1), n, p)
        coverage = sum(w for (low, high), w in zip(intervals, pmf, strict=True) if low <= p <= high)
        assert coverage >= 0.9 - 1e-12


@pytest.mark.parametrize(("k", "n"), COUNTS)
def test_binomial_tails_match_scipy(k, n):
    greater = stats.binomtest(k, n, 0.5, alternative="greater").pvalue
    assert binomial_tail(k, n) == pytest.approx(greater, rel=1e-9, abs=1e-300)
    assert binomial_tail(k, n, 0.3, upper=False) == pytest.approx(
        stats.binom.cdf(k, n, 0.3), rel=1e-9, abs=1e-300
    )


def test_binomial_checks():
    with pytest.raises(ValueError, match=r"k must be an integer in 0..n=5, got 6"):
        binomial_tail(6, 5)
    with pytest.raises(ValueError, match=r"level must lie in \(0, 1\)"):
        clopper_pearson_interval(1, 5, 1.0)


def _gaussians(n: int, dim: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, dim, generator=gen)
    b = torch.randn(n, dim, generator=gen)
    b[:, 0] += shift
    return a, b


def test_one_distribution_is_indistinguishable():
    real, fake = _gaussians(1000, 20, 0.0, seed=1)
    result = classifier_two_sample_test(real, fake, seed=0)
    assert result.num_test == 1000 and result.num_train == 1000
    assert result.accuracy == result.num_correct / result.num_test
    assert result.low <= 0.5 <= result.high
    assert result.p_value > 0.05
    assert (result.low, result.high) == clopper_pearson_interval(result.num_correct, 1000)
    assert result.p_value == binomial_tail(result.num_correct, 1000)


@pytest.mark.slow
def test_accuracy_under_the_null_averages_one_half():
    # 20 independent repeats of 200 held-out rows: mean accuracy 1/2 within 3 binomial
    # standard errors (a classifier scored on its own training rows would be far above)
    accs = []
    for seed in range(20):
        real, fake = _gaussians(200, 20, 0.0, seed=100 + seed)
        accs.append(classifier_two_sample_test(real, fake, seed=seed).accuracy)
    assert abs(sum(accs) / len(accs) - 0.5) < 3 * 0.5 / math.sqrt(20 * 200)


def test_clearly_different_distributions_are_told_apart():
    real, fake = _gaussians(500, 10, 8.0, seed=2)
    result = classifier_two_sample_test(real, fake, seed=0)
    assert result.accuracy >= 0.99 and result.low > 0.95
    assert result.p_value < 1e-100


def test_accuracy_approaches_the_bayes_accuracy_of_a_shifted_gaussian():
    # N(0, I) against N(delta e_1, I): the best classifier is right with probability
    # Phi(delta / 2); the held-out accuracy estimates that of the trained one, below it
    delta = 2.0
    bayes = stats.norm.cdf(delta / 2)  # 0.841
    real, fake = _gaussians(2000, 2, delta, seed=3)
    result = classifier_two_sample_test(real, fake, seed=0)
    assert result.low <= bayes + 0.005
    assert result.accuracy > bayes - 0.03
    assert result.p_value < 1e-50


def test_sizes_and_seeds():
    real, fake = _gaussians(300, 4, 1.0, seed=4)
    one = classifier_two_sample_test(real, fake[:101], test_fraction=0.3, seed=5)
    assert one.num_test == 2 * 30 and one.num_train == 2 * 71  # min(300, 101) rows a set
    assert one == classifier_two_sample_test(real, fake[:101], test_fraction=0.3, seed=5)
    state = torch.get_rng_state()
    classifier_two_sample_test(real, fake, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_input_checks():
    real, fake = _gaussians(20, 3, 0.0, seed=0)
    with pytest.raises(ValueError, match=r"real rows have 3 values but generated rows 2"):
        classifier_two_sample_test(real, fake[:, :2])
    with pytest.raises(ValueError, match=r"shape \(N, D\) with N >= 2, got \(20, 3, 1\)"):
        classifier_two_sample_test(real, fake[..., None])
    fake[3, 1] = math.nan
    with pytest.raises(ValueError, match=r"generated holds NaN or infinite values"):
        classifier_two_sample_test(real, fake)
    with pytest.raises(ValueError, match=r"test_fraction must lie in \(0, 1\)"):
        classifier_two_sample_test(real, real, test_fraction=1.0)
