"""Source comparison on the real small MNIST VAE and CVAE (shared session fixtures)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pyrovae.analysis.evaluation.compare import SourceComparison, compare_sources
from pyrovae.analysis.likelihood.loglik import estimate_log_likelihood
from pyrovae.analysis.sources import fit_source
from pyrovae.data import fixed_binarization
from pyrovae.train import one_hot

FAST = {"flow": {"num_steps": 50, "num_flows": 4}}  # finite values, not a good fit


def test_compare_sources_on_the_small_vae(small_vae, mnist):
    comparison = compare_sources(
        small_vae,
        mnist.train,
        mnist.test,
        num_samples=50,
        num_train=5000,
        num_test=500,
        options=FAST,
    )
    assert isinstance(comparison, SourceComparison)
    summary = comparison.to_dict()
    assert set(summary) == {
        "prior",
        "aggregate",
        "gaussian-loc",
        "gaussian-z",
        "gaussian-full",
        "gmm",
        "flow",
    }
    for name, row in summary.items():
        assert math.isfinite(row["loglik"]) and row["loglik"] < 0, name
        assert row["stderr"] > 0, name
        assert 0.0 <= row["khat_gt_0.7"] <= 1.0, name
        assert row["khat_flag"] == (row["khat_gt_0.7"] > 0.1)
        assert row["elbo"] <= row["loglik"] + 1e-6, name
    json.dumps(summary)  # plain values only
    assert comparison.num_test == 500 and comparison.num_train == 5000
    # the exact aggregate posterior beats the N(0, I) prior on paired differences
    gain, stderr = comparison.difference("aggregate")
    assert gain - 3 * stderr > 0
    assert (summary["aggregate"]["vs_prior"], summary["aggregate"]["vs_prior_stderr"]) == (
        gain,
        stderr,
    )
    assert "vs_prior" not in summary["prior"]
    assert "aggregate" in comparison.table()

    # the adapted mixture changes the prior's draws, not what they estimate
    x = fixed_binarization(mnist.test.x)[mnist.test.sample_indices(500)]
    plain = estimate_log_likelihood(small_vae, x, num_samples=50, seed=0)
    diff = comparison.results["prior"].per_datum - plain.per_datum
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(500)
    # with the guide as the only proposal, the 'prior' source is the plain estimate
    guide = compare_sources(
        small_vae,
        mnist.train,
        mnist.test,
        ["prior", "gaussian-z"],
        num_samples=50,
        num_train=5000,
        num_test=500,
        proposal="guide",
    )
    prior = guide.results["prior"]
    torch.testing.assert_close(prior.per_datum, plain.per_datum, atol=1e-4, rtol=0)
    torch.testing.assert_close(prior.khat, plain.khat, atol=1e-6, rtol=0, equal_nan=True)


def test_compare_cvae_uses_labels_and_prefitted_sources(small_cvae, mnist):
    train = mnist.train.subset(2000)
    gmm = fit_source(
        "gmm",
        small_cvae,
        fixed_binarization(train.x),
        one_hot(train.y, 10),
        num_components=5,
    )
    comparison = compare_sources(
        small_cvae,
        train,
        mnist.test,
        names=["prior", "aggregate"],
        sources={"gmm5": gmm},
        num_samples=30,
        num_test=200,
    )
    assert set(comparison.results) == {"prior", "aggregate", "gmm5"}
    for result in comparison.results.values():
        assert torch.isfinite(result.per_datum).all()
    assert comparison.best() in comparison.results


def test_compare_rejects_unknown_sources(small_vae, mnist):
    with pytest.raises(ValueError, match=r"unknown latent sources \['nope'\]"):
        compare_sources(small_vae, mnist.train, mnist.test, names=["prior", "nope"])
    with pytest.raises(ValueError, match=r"options given for \['gmm'\]"):
        compare_sources(small_vae, mnist.train, mnist.test, ["prior"], options={"gmm": {}})
    with pytest.raises(ValueError, match="Split"):
        compare_sources(small_vae, mnist.train.x, mnist.test, names=["prior"])


def test_ksweep_convergence_and_extrapolation():
    from pyrovae.analysis.evaluation.compare import ksweep_converged, ksweep_remaining

    # a bias of 2 / sqrt(k): rises shrink by 10^-0.5 per decade
    sweep = {k: -90.0 - 2.0 / math.sqrt(k) for k in (1, 10, 100, 1000)}
    assert not ksweep_converged(sweep)  # rose 0.13 over the last decade
    assert ksweep_remaining(sweep) == pytest.approx(2.0 / math.sqrt(1000), rel=1e-9)
    flat = {1: -95.0, 10: -94.0, 100: -93.95, 1000: -93.94}
    assert ksweep_converged(flat) and ksweep_remaining(flat) == pytest.approx(0.01 * 0.2 / 0.8)
    assert not ksweep_converged({1: -95.0, 4: -94.0})  # no point 5x below K
    assert ksweep_remaining({1: -95.0, 10: -94.0}) is None
    assert ksweep_remaining({1: -95.0, 10: -94.0, 5000: -93.0}) is None  # unequal factors


def test_held_out_inputs_share_one_random_order():
    """Any number of held-out images is a prefix of one fixed random order: the AIS images
    are the first of the importance-sampling ones, also when IS takes the whole split."""
    from pyrovae import build_model
    from pyrovae.analysis.evaluation.compare import model_inputs
    from pyrovae.data import Split

    vae = build_model(z_dim=2, hidden_dims=[8])
    split = Split(torch.rand(300, 784), torch.randint(10, (300,)))
    everything, _ = model_inputs(vae, split, None, random_subset=True)
    some, _ = model_inputs(vae, split, 40, random_subset=True)
    torch.testing.assert_close(everything[:40], some)
    binarized = fixed_binarization(split.x)
    torch.testing.assert_close(everything, binarized[split.sample_indices(300)])
    first, _ = model_inputs(vae, split, 40, random_subset=False)
    torch.testing.assert_close(first, binarized[:40])
