"""Classifier-based sample quality: entropy, ambiguity, coverage and the Frechet distance."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.analysis.quality.classifier import ClassifierConfig, MNISTClassifier, load_classifier
from pyrovae.analysis.quality.scores import (
    MAX_ENTROPY,
    FeatureStats,
    SampleQuality,
    class_histogram,
    coverage_kl,
    feature_stats,
    frechet_distance,
    gaussian_frechet_distance,
    predictive_entropy,
    sample_quality,
)
from pyrovae.data import Splits


@pytest.fixture(scope="module")
def classifier(mnist, tmp_path_factory) -> MNISTClassifier:
    """A quick classifier (8k images, 2 epochs: ~95% accuracy, a few seconds), trained once
    per session: test_classifier.py caches the same recipe in the same directory."""
    splits = Splits(
        mnist.train.subset(8000), mnist.val.subset(1000), mnist.test.subset(2000), mnist.name
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYROVAE_CACHE", str(tmp_path_factory.getbasetemp() / "quick-classifier"))
        return load_classifier(
            data=splits, config=ClassifierConfig(epochs=2, lr=3e-3, batch_size=64)
        )


def random_spd(d: int, generator: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(d, dtype=torch.float64)


def test_entropy_of_uniform_and_certain_predictions():
    uniform = torch.full((5, 10), 0.1)
    assert torch.allclose(predictive_entropy(uniform), torch.full((5,), math.log(10)).double())
    assert MAX_ENTROPY == pytest.approx(math.log(10))
    certain = torch.eye(10)
    assert torch.equal(predictive_entropy(certain), torch.zeros(10, dtype=torch.float64))


def test_coverage_kl_uses_hard_labels():
    balanced = torch.eye(10).repeat(3, 1)
    assert coverage_kl(balanced) == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(class_histogram(balanced), torch.full((10,), 0.1).double())
    collapsed = torch.zeros(20, 10)
    collapsed[:, 4] = 1.0
    assert coverage_kl(collapsed) == pytest.approx(math.log(10))
    # Soft but decisive predictions count as their argmax.
    soft = torch.full((10, 10), 0.05)
    soft[torch.arange(10), torch.arange(10)] = 0.55
    assert coverage_kl(soft) == pytest.approx(0.0, abs=1e-12)


def test_probability_checks():
    with pytest.raises(ValueError, match="probabilities"):
        predictive_entropy(torch.randn(4, 10))
    with pytest.raises(ValueError, match=r"shape \(N, num_classes\)"):
        predictive_entropy(torch.full((10,), 0.1))


def test_frechet_of_a_set_with_itself_is_zero():
    f = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(f, f) == pytest.approx(0.0, abs=1e-8)


def test_frechet_of_shifted_features_is_the_squared_shift():
    f = torch.randn(400, 8, generator=torch.Generator().manual_seed(2))
    shift = torch.linspace(-1, 1, 8)
    # Same covariance, so only ||shift||^2 remains.
    assert frechet_distance(f, f + shift) == pytest.approx(shift.square().sum().item(), rel=1e-6)
    assert frechet_distance(f, 2 * f) > 0


def test_gaussian_frechet_matches_closed_forms():
    gen = torch.Generator().manual_seed(3)
    # Diagonal: ||m1 - m2||^2 + sum (sqrt(a) - sqrt(b))^2.
    a, b = torch.rand(6, generator=gen).double() + 0.1, torch.rand(6, generator=gen).double() + 0.1
    m1, m2 = torch.randn(6, generator=gen).double(), torch.randn(6, generator=gen).double()
    expected = (m1 - m2).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    got = gaussian_frechet_distance(m1, torch.diag(a), m2, torch.diag(b))
    assert got == pytest.approx(expected.item(), rel=1e-9)
    # Non-commuting 2x2 covariances: Tr (S1 S2)^{1/2} = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)).
    s1, s2 = random_spd(2, gen), random_spd(2, gen)
    m1, m2 = torch.randn(2, generator=gen).double(), torch.randn(2, generator=gen).double()
    tr_sqrt = math.sqrt((s1 @ s2).trace() + 2 * math.sqrt(s1.det() * s2.det()))
    expected = (m1 - m2).square().sum() + s1.trace() + s2.trace() - 2 * tr_sqrt
    got = gaussian_frechet_distance(m1, s1, m2, s2)
    assert got == pytest.approx(expected.item(), rel=1e-9)


def test_frechet_of_samples_approaches_the_gaussian_value():
    gen = torch.Generator().manual_seed(4)
    d, n = 3, 40_000
    s1, s2 = random_spd(d, gen), random_spd(d, gen)
    m1, m2 = torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)
    x1 = m1 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    x2 = m2 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(s2).T
    exact = gaussian_frechet_distance(m1, s1, m2, s2)
    assert frechet_distance(x1, x2) == pytest.approx(exact, rel=0.05)


def test_frechet_input_checks():
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"cov2 must have shape \(2, 2\)"):
        gaussian_frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), torch.eye(3))


def test_real_images_score_as_legible(classifier, mnist):
    samples = mnist.test.x[:1000]
    reference = mnist.test.x[1000:3000]
    q = sample_quality(classifier, samples, reference)
    assert isinstance(q, SampleQuality)
    assert q.entropy < 0.4  # log 10 = 2.30 for a uniform guess
    assert q.ambiguous < 0.08
    assert q.coverage_kl < 0.05
    assert len(q.class_fractions) == 10 and sum(q.class_fractions) == pytest.approx(1.0)
    assert (q.num_samples, q.num_reference) == (1000, 2000)
    noise = sample_quality(classifier, torch.rand(1000, 784), reference)
    assert noise.frechet > 10 * q.frechet
    d = q.to_dict()
    assert set(d) == {
        "entropy",
        "ambiguous",
        "coverage_kl",
        "frechet",
        "ambiguous_low",
        "ambiguous_high",
        "num_quality_samples",
    }
    assert d["ambiguous_low"] <= d["ambiguous"] <= d["ambiguous_high"]
    assert all(isinstance(v, float) for k, v in d.items() if k != "num_quality_samples")
    assert d["num_quality_samples"] == q.num_samples


def test_precomputed_reference_gives_the_same_scores(classifier, mnist):
    reference = mnist.test.x[1000:2000]
    stats = feature_stats(classifier, reference)
    assert isinstance(stats, FeatureStats) and stats.num_samples == 1000
    samples = mnist.test.x[:300]
    assert sample_quality(classifier, samples, stats) == sample_quality(
        classifier, samples, reference
    )


def test_sample_checks(classifier):
    reference = torch.rand(10, 784)
    with pytest.raises(ValueError, match=r"pixel values in \[0, 1\]"):
        sample_quality(classifier, torch.rand(10, 784) * 2, reference)
    with pytest.raises(ValueError, match=r"shape \(N, 784\) with N >= 2"):
        sample_quality(classifier, torch.rand(10, 28, 28), reference)


def test_wilson_interval():
    from pyrovae.analysis.quality.scores import wilson_interval

    low, high = wilson_interval(0.1, 1000)
    # 100 of 1000: centre (0.1 + z^2/2n) / (1 + z^2/n) = 0.10153, half-width 0.01862
    assert low == pytest.approx(0.08291, abs=1e-5) and high == pytest.approx(0.12015, abs=1e-5)
    low, high = wilson_interval(0.0, 50)
    assert low == 0.0 and 0.05 < high < 0.09  # never the empty interval of a zero count
    with pytest.raises(ValueError, match="fraction"):
        wilson_interval(1.5, 10)
