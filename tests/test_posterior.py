"""NUTS reference posteriors checked against the exact PPCA posterior, and guide summaries."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn
from torch.distributions import constraints

from pyrovae import build_model
from pyrovae.analysis.likelihood.exact import ppca_posterior, ppca_vae
from pyrovae.analysis.posterior.nuts import (
    FLAG_REASONS,
    default_data,
    flag_reasons,
    guide_vs_posterior,
    reference_posterior,
    reference_posteriors,
)

X_DIM, NOISE = 8, 0.5
TOLERANCE = 5.0  # standard errors
# 4 chains of 500 draws after 150 warm-up steps (2,600 NUTS steps of ~4 ms). With 300
# draws a chain, R-hat exceeded 1.01 for 2 of 10 data; with 500, for none of 12.
BUDGET = {"num_chains": 4, "warmup": 150, "num_samples": 500}


def ppca_weight(scales: tuple[float, float], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """W (X_DIM, 2) with orthogonal columns of the given norms (0: an inactive dim), and b."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, 2, generator=gen))
    return q * torch.tensor(scales), 0.1 * torch.randn(X_DIM, generator=gen)


@pytest.fixture(scope="module")
def ppca():
    """PPCA with a 2-D latent, one active dim and one inactive (its posterior is the prior),
    one datum, its exact posterior and a NUTS reference."""
    weight, bias = ppca_weight((2.0, 0.0))
    vae = ppca_vae(weight, bias, NOISE)
    gen = torch.Generator().manual_seed(1)  # x ~ p(x) = N(b, W W^T + s^2 I)
    x = weight @ torch.randn(2, generator=gen) + bias + NOISE * torch.randn(X_DIM, generator=gen)
    gain, offset, cov = ppca_posterior(weight, bias, NOISE)
    ref = reference_posterior(vae, x, seed=0, **BUDGET)
    return SimpleNamespace(
        weight=weight, bias=bias, vae=vae, x=x, mean=gain @ x.double() + offset, cov=cov, ref=ref
    )


def test_nuts_matches_the_exact_posterior(ppca):
    ref = ppca.ref
    assert ref.draws.shape == (4, 500, 2)
    assert not ref.flagged and ref.r_hat_max <= 1.01
    assert ref.ess_bulk_min > 400 and ref.ess_tail_min > 400
    # Mean: Monte Carlo standard error from ArviZ (its ESS accounts for autocorrelation).
    mcse = torch.from_numpy(az.mcse(ref.inference_data, method="mean")["z"].values)
    assert ((ref.mean - ppca.mean).abs() <= TOLERANCE * mcse).all(), (ref.mean, ppca.mean, mcse)
    # Covariance: each entry is the mean of f = (z_i - m_i)(z_j - m_j), whose standard
    # error needs the ESS of f itself (NUTS is far less efficient for f than for z).
    z = ref.draws.double() - ppca.mean
    for i in range(2):
        for j in range(2):
            f = (z[..., i] * z[..., j]).numpy()
            err = abs(f.mean() - float(ppca.cov[i, j]))
            assert err <= TOLERANCE * az.mcse(f, method="mean"), (i, j, f.mean(), ppca.cov)


def test_inference_data_layout(ppca):
    post = ppca.ref.inference_data.posterior
    assert post["z"].dims == ("chain", "draw", "z_dim")
    assert dict(post.sizes) == {"chain": 4, "draw": 500, "z_dim": 2}
    np.testing.assert_array_equal(post["z"].values, ppca.ref.draws.numpy())
    summary = ppca.ref.to_dict()
    json.dumps(summary)
    assert summary["r_hat_max"] == ppca.ref.r_hat_max and len(summary["mean"]) == 2


def test_exact_guide_covers_90_percent_and_a_narrow_one_less(ppca):
    exact = guide_vs_posterior(ppca.vae, ppca.x, None, ppca.ref)
    json.dumps(exact)
    assert exact["guide_family"] == "diagonal" and not exact["reference_flagged"]
    np.testing.assert_allclose(exact["guide_mean"], ppca.mean.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(exact["guide_std"], ppca.cov.diagonal().sqrt(), rtol=1e-5)
    cover, se = np.array(exact["coverage_90"]), np.array(exact["coverage_90_stderr"])
    assert (se > 0).all() and (np.abs(cover - 0.9) <= TOLERANCE * se).all(), (cover, se)

    narrow_vae = ppca_vae(ppca.weight, ppca.bias, NOISE, widen=1 / 3)
    narrow = guide_vs_posterior(narrow_vae, ppca.x, None, ppca.ref)
    cover3, se3 = np.array(narrow["coverage_90"]), np.array(narrow["coverage_90_stderr"])
    expected = math.erf(1.6448536269514722 / 3 / math.sqrt(2))  # P(|N(0,1)| < z_95 / 3) = 0.42
    assert (np.abs(cover3 - expected) <= TOLERANCE * se3).all(), (cover3, expected, se3)
    assert (cover3 < cover - 0.3).all()
    np.testing.assert_allclose(narrow["std_ratio"], np.array(exact["std_ratio"]) / 3, rtol=1e-5)


def test_seeded_runs_repeat():
    vae = ppca_vae(*ppca_weight((2.0, 0.0)), NOISE)
    x = torch.linspace(-1, 1, X_DIM)
    kw = {"num_chains": 2, "warmup": 20, "num_samples": 20}
    first = reference_posterior(vae, x, seed=3, **kw)
    again = reference_posterior(vae, x, seed=3, **kw)
    other = reference_posterior(vae, x, seed=4, **kw)
    assert torch.equal(first.draws, again.draws)
    assert not torch.equal(first.draws, other.draws)


def test_unmixed_run_is_flagged():
    """Chains started 100 guide-stds from the mean, no warm-up, 6 draws: far from mixed."""
    vae = ppca_vae(*ppca_weight((2.0, 0.0)), NOISE)
    x = torch.linspace(-1, 1, X_DIM)
    ref = reference_posterior(
        vae, x, num_chains=2, warmup=0, num_samples=6, init_spread=100.0, seed=0
    )
    assert ref.flagged and ref.r_hat_max > 1.01 and "r_hat" in ref.flag_reasons


def test_flag_rules_and_their_thresholds():
    """R-hat above 1.01, bulk or tail ESS below 100 per chain, any divergence, a NaN."""
    good = {"r_hat_max": 1.01, "ess_bulk_min": 400.0, "ess_tail_min": 400.0, "num_divergent": 0}
    assert flag_reasons(**good, num_chains=4) == []
    for change, reason in [
        ({"r_hat_max": 1.0101}, "r_hat"),
        ({"ess_bulk_min": 399.9}, "ess_bulk"),
        ({"ess_tail_min": 399.9}, "ess_tail"),
        ({"num_divergent": 1}, "divergent"),
        ({"ess_tail_min": math.nan}, "not_finite"),
    ]:
        assert flag_reasons(**{**good, **change}, num_chains=4) == [reason], change
    assert flag_reasons(**{**good, "ess_bulk_min": 150.0}, num_chains=1) == []  # 100 per chain
    assert flag_reasons(**good, num_chains=4, finite=False) == ["not_finite"]
    assert set(FLAG_REASONS) == {"r_hat", "ess_bulk", "ess_tail", "divergent", "not_finite"}


def test_a_mixed_run_with_too_few_draws_is_flagged_for_its_ess():
    """2 chains of 40 draws: R-hat within 1.01, but too few effective draws (below 200)."""
    vae = ppca_vae(*ppca_weight((2.0, 0.0)), NOISE)
    x = torch.linspace(-1, 1, X_DIM)
    ref = reference_posterior(vae, x, num_chains=2, warmup=50, num_samples=40, seed=1)
    assert ref.r_hat_max <= 1.01 and ref.num_divergent == 0  # R-hat alone would trust it
    assert max(ref.ess_bulk_min, ref.ess_tail_min) < 200
    assert ref.flagged and ref.flag_reasons == ["ess_bulk", "ess_tail"]
    summary = ref.to_dict()
    assert summary["flagged"] and summary["flag_reasons"] == ref.flag_reasons
    assert guide_vs_posterior(vae, x, None, ref)["reference_flag_reasons"] == ref.flag_reasons


class _Walled(dist.TorchDistribution):
    """N(0, I_2) with a stiff wall at z_0 = 2.5 (log density - 1e8 (z_0 - 2.5)_+^2): a
    leapfrog step into the wall diverges, while the draws mix as for a Normal."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    WALL, STIFFNESS = 2.5, 1e8

    def __init__(self, batch: int) -> None:
        super().__init__(torch.Size([batch]), torch.Size([2]), validate_args=False)

    def sample(self, sample_shape=()):
        return torch.randn(*sample_shape, *self.batch_shape, 2).clamp(max=self.WALL)

    def log_prob(self, z):
        wall = torch.relu(z[..., 0] - self.WALL).pow(2)
        return -0.5 * z.pow(2).sum(-1) - math.log(2 * math.pi) - self.STIFFNESS * wall


class _WalledModel(nn.Module):
    """A model with the VAE's interface whose posterior p(z | x) is the walled Normal."""

    x_dim, z_dim, y_dim, conditional = 1, 2, 0, False

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def encoder(self, x, y=None):
        return dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1)

    def model(self, x, y=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _Walled(x.shape[0]))
            pyro.sample("x", dist.Normal(torch.zeros_like(x), 1.0).to_event(1), obs=x)


def test_a_mixed_run_with_divergences_is_flagged_for_them():
    """Trajectories that hit the wall diverge; R-hat and ESS alone would pass the run."""
    ref = reference_posterior(
        _WalledModel(),
        torch.zeros(1),
        num_chains=2,
        warmup=100,
        num_samples=300,
        init_spread=0.5,  # every chain starts well inside the wall
        seed=2,
    )
    assert ref.r_hat_max <= 1.01 and min(ref.ess_bulk_min, ref.ess_tail_min) >= 200
    assert ref.num_divergent > 0
    assert ref.flagged and ref.flag_reasons == ["divergent"]


def test_cvae_with_flow_guide_runs():
    torch.manual_seed(0)
    vae = build_model(model="cvae", guide="flow", x_dim=X_DIM, z_dim=2, y_dim=3, hidden_dims=[16])
    x = (torch.rand(2, X_DIM) > 0.5).float()
    y = torch.eye(3)[[0, 2]]
    refs = reference_posteriors(vae, x, y, num_chains=2, warmup=30, num_samples=30, seed=0)
    assert len(refs) == 2
    for n, ref in enumerate(refs):
        assert ref.draws.shape == (2, 30, 2) and torch.isfinite(ref.draws).all()
        assert ref.inference_data.posterior["z"].dims == ("chain", "draw", "z_dim")
        summary = guide_vs_posterior(vae, x[n], y[n], ref, num_draws=500)
        json.dumps(summary)
        assert summary["guide_family"] == "flow"
        assert all(0 <= c <= 1 for c in summary["coverage_90"])
    with pytest.raises(ValueError, match="CVAE needs y"):
        reference_posterior(vae, x[0])


def test_default_data_picks_each_class():
    labels = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    split = SimpleNamespace(x=torch.zeros(len(labels), 4), y=labels)
    idx = default_data(split, per_class=2, seed=0)
    assert idx.tolist() == sorted(idx.tolist(), key=lambda i: labels[i].item())
    assert labels[idx].tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(idx, default_data(split, per_class=2, seed=0))
    assert len(set(default_data(split, per_class=9, seed=1).tolist())) == len(labels)
