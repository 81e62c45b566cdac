"""Held-out log p(x) of the semi-supervised M2 with the label summed out, against the closed
form of a linear-Gaussian M2 (probabilistic PCA per class)."""

from __future__ import annotations

import math

import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrovae.analysis as pa
from pyrovae.analysis.likelihood.labels import label_summed_stderr
from pyrovae.guides import LabelClassifier
from pyrovae.models import M2, GaussianDecoder, StandardNormalPrior

D, Z, C, NOISE = 5, 2, 3, 0.5


class LinearLabelledEncoder(nn.Module):
    """q(z | x, y) = N(G (x - V y - b), diag(scale^2)): the exact posterior's mean of PPCA
    given the label (G = (W^T W / s^2 + I)^-1 W^T / s^2), its scale widened."""

    def __init__(self, gain, label_weight, bias, scale) -> None:
        super().__init__()
        self.z_dim, self.x_dim = gain.shape
        self.y_dim = label_weight.shape[1]
        for name, value in (("gain", gain), ("v", label_weight), ("b", bias), ("s", scale)):
            self.register_buffer(name, value.clone())

    def encode(self, x, y=None):
        loc = (x - y @ self.v.T - self.b) @ self.gain.T
        return loc, self.s.expand(loc.shape), loc

    def forward(self, x, y=None):
        loc, scale, _ = self.encode(x, y)
        return dist.Normal(loc, scale).to_event(1)


def linear_m2(widen: float = 1.3):
    """M2 with p(x | y, z) = N(W z + V y + b, s^2 I), so that
    p(x) = 1/C sum_c N(x; V e_c + b, W W^T + s^2 I)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(D, Z, generator=gen)
    v = 3.0 * torch.randn(D, C, generator=gen)
    b = torch.randn(D, generator=gen)
    decoder = GaussianDecoder(
        Z, D, hidden_dims=(), y_dim=C, scale="isotropic", min_scale=0.0, init_scale=NOISE
    )
    with torch.no_grad():
        decoder.net[0].weight.copy_(torch.cat([w, v], 1))
        decoder.net[0].bias.copy_(b)
    cov = torch.linalg.inv(w.T @ w / NOISE**2 + torch.eye(Z))
    encoder = LinearLabelledEncoder(cov @ w.T / NOISE**2, v, b, widen * cov.diagonal().sqrt())
    m2 = M2(encoder, decoder, StandardNormalPrior(Z), LabelClassifier(D, C, [8])).eval()
    marginal = dist.MixtureSameFamily(
        dist.Categorical(logits=torch.zeros(C)),
        dist.MultivariateNormal((v + b[:, None]).T, w @ w.T + NOISE**2 * torch.eye(D)),
    )
    return m2, marginal


def test_importance_sampling_and_ais_sum_the_label_out_exactly():
    m2, marginal = linear_m2()
    torch.manual_seed(1)
    x = marginal.sample((12,))
    exact = marginal.log_prob(x).double()
    result = pa.estimate_log_likelihood(
        m2, x, num_samples=2000, seed=0, keep_log_weights=True, progress=False
    )
    assert result.log_weights.shape == (12, C * 2000)
    stderr = label_summed_stderr(result.log_weights.reshape(12, C, 2000))
    err = (result.per_datum - exact).abs()
    assert (err < 5 * stderr + 1e-3).all(), (err, stderr)
    ais = pa.ais_log_likelihood(m2, x, num_steps=100, num_chains=16, seed=0, progress=False)
    assert ais.log_weights.shape == (12, C * 16)
    err = (ais.per_datum - exact).abs()
    assert (err < 5 * ais.per_datum_stderr + 1e-3).all(), (err, ais.per_datum_stderr)
    # plausible wrong answers are many standard errors away: the joint log p(x, y) of the
    # most probable label, and the sum without p(y) = 1/C
    y = torch.nn.functional.one_hot(torch.arange(12) % C, C).float()
    joint = pa.estimate_log_likelihood(m2, x, y, num_samples=2000, seed=0, progress=False)
    assert ((exact - joint.per_datum) > 5 * stderr).float().mean() > 0.5
    without_prior = result.per_datum + math.log(C)
    assert ((without_prior - exact).abs() > 5 * stderr).all()


def test_the_unlabelled_bound_is_below_the_label_summed_estimate():
    """``elbo`` of the label-summed estimate is M2's U(x) = sum_y q(y | x) (L(x, y) -
    log q(y | x)), a lower bound of log p(x) for any q(y | x)."""
    m2, marginal = linear_m2()
    torch.manual_seed(2)
    x = marginal.sample((8,))
    result = pa.estimate_log_likelihood(m2, x, num_samples=500, seed=0, progress=False)
    assert (result.elbo < marginal.log_prob(x).double()).all()
    assert result.elbo.shape == (8,)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_estimate_of_a_datum_does_not_depend_on_the_other_data(seed):
    m2, marginal = linear_m2()
    torch.manual_seed(seed)
    x = marginal.sample((6,))
    whole = pa.estimate_log_likelihood(m2, x, num_samples=50, seed=3, progress=False)
    part = pa.estimate_log_likelihood(
        m2, x[2:4], num_samples=50, seed=3, progress=False, datum_index=torch.arange(2, 4)
    )
    torch.testing.assert_close(whole.per_datum[2:4], part.per_datum)


def test_the_label_error_counts_the_mislabelled_images_with_an_exact_interval():
    from scipy.stats import binomtest

    from pyrovae.analysis.quality import label_error
    from pyrovae.data import Split

    m2, marginal = linear_m2()
    with torch.no_grad():  # q(y | x) that always answers class 1
        m2.classifier.head.weight.zero_()
        m2.classifier.head.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    torch.manual_seed(3)
    x = marginal.sample((40,))
    labels = torch.arange(40) % C  # 13 or 14 of each class: 26 wrong
    entry = label_error(m2, Split(x, labels))
    assert entry["errors"] == int((labels != 1).sum()) and entry["num_test"] == 40
    expected = binomtest(entry["errors"], 40).proportion_ci(0.95, method="exact")
    assert entry["interval"] == pytest.approx([expected.low, expected.high], abs=1e-6)


def test_the_label_error_binarizes_only_when_told_or_when_the_decoder_does():
    """``binarize`` overrides the decoder's flag: a classifier that answers 1 exactly for
    pixels equal to 0 or 1 is right on binarized images and wrong on grey ones."""
    from pyrovae.analysis.quality import label_error
    from pyrovae.data import Split

    class BinaryDetector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(()))  # label_hits reads its device

        def classify(self, x: torch.Tensor) -> torch.Tensor:
            return ((x == 0) | (x == 1)).all(-1).long()

    x = torch.full((20, 6), 0.5)
    split = Split(x, torch.ones(20, dtype=torch.long))
    assert label_error(BinaryDetector(), split, binarize=True)["errors"] == 0
    assert label_error(BinaryDetector(), split, binarize=False)["errors"] == 20
