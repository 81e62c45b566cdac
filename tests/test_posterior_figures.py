"""Posterior-against-guide pictures: the grid density is the exact PPCA posterior, the
highest-density levels hold their mass, and every family of guide and latent size draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from pyrovae import build_model
from pyrovae.analysis.figures.posterior import (
    differing_dims,
    hdr_levels,
    log_posterior_grid,
    plot_gaps,
    plot_posterior,
    plot_posteriors,
)
from pyrovae.analysis.likelihood.exact import ppca_posterior, ppca_vae
from pyrovae.analysis.posterior.nuts import ReferencePosterior, guide_vs_posterior

X_DIM, NOISE = 8, 0.5


def ppca(z_dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, z_dim, generator=gen))
    weight = q * torch.linspace(2.0, 0.5, z_dim)
    bias = 0.1 * torch.randn(X_DIM, generator=gen)
    x = (
        weight @ torch.randn(z_dim, generator=gen)
        + bias
        + NOISE * torch.randn(X_DIM, generator=gen)
    )
    return weight, bias, x


def exact_reference(weight, bias, x, num_chains=2, num_samples=300, seed=0) -> ReferencePosterior:
    """Independent draws from the exact PPCA posterior, dressed as a NUTS reference."""
    gain, offset, cov = ppca_posterior(weight, bias, NOISE)
    mean = gain @ x.double() + offset
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(num_chains, num_samples, len(mean), generator=gen, dtype=torch.double)
    draws = (mean + noise @ torch.linalg.cholesky(cov).T).float()
    flat = draws.double().reshape(-1, len(mean))
    return ReferencePosterior(
        draws=draws,
        inference_data=None,
        r_hat_max=1.0,
        ess_bulk_min=float(num_chains * num_samples),
        ess_tail_min=float(num_chains * num_samples),
        num_divergent=0,
        flagged=False,
        mean=flat.mean(0),
        std=flat.std(0),
    )


def test_hdr_levels_of_a_standard_normal_are_exact():
    """For N(0, I_2) the region {p >= t} holding mass m is a disc with t = (1 - m) / (2 pi)."""
    u = np.linspace(-7, 7, 701)
    uu, vv = np.meshgrid(u, u)
    density = np.exp(-0.5 * (uu**2 + vv**2)) / (2 * math.pi)
    levels = hdr_levels(density, (0.5, 0.9))
    expected = sorted((1 - m) / (2 * math.pi) for m in (0.5, 0.9))
    np.testing.assert_allclose(levels, expected, rtol=2e-3)
    with pytest.raises(ValueError, match="not all zero"):
        hdr_levels(np.zeros((3, 3)))


def test_grid_posterior_is_the_exact_posterior():
    """log p(x | z) + log p(z) normalized over the grid differs from the exact log p(z | x)
    by one constant, the log cell area (the grid holds all the mass)."""
    weight, bias, x = ppca(2)
    vae = ppca_vae(weight, bias, NOISE)
    gain, offset, cov = ppca_posterior(weight, bias, NOISE)
    mean = gain @ x.double() + offset
    sd = cov.diagonal().sqrt()
    u = torch.linspace(-8, 8, 161, dtype=torch.double)
    grid = torch.cartesian_prod(mean[0] + sd[0] * u, mean[1] + sd[1] * u)
    log_grid = log_posterior_grid(vae, x, None, grid.float())
    exact = torch.distributions.MultivariateNormal(mean, cov).log_prob(grid)
    diff = log_grid - exact
    assert float(diff.max() - diff.min()) < 2e-3
    cell = float((sd[0] * (u[1] - u[0])) * (sd[1] * (u[1] - u[0])))
    assert float(diff.mean()) == pytest.approx(math.log(cell), abs=1e-3)


def test_differing_dims_picks_the_largest_discrepancies():
    summary = {"mean_shift": [0.1, -2.0, 0.0, 0.3], "std_ratio": [1.0, 1.0, 0.2, 1.1]}
    assert differing_dims(summary) == (1, 2)  # |log 0.2| = 1.61 beats 0.3 + log 1.1
    with pytest.raises(ValueError, match="two latent dims"):
        differing_dims({"mean_shift": [0.0], "std_ratio": [1.0]})


@pytest.mark.parametrize("z_dim", [2, 4])
def test_posterior_figures_for_the_exact_guide(z_dim):
    weight, bias, x = ppca(z_dim)
    vae = ppca_vae(weight, bias, NOISE)
    ref = exact_reference(weight, bias, x)
    summary = guide_vs_posterior(vae, x, None, ref)
    fig = plot_posterior(vae, x, None, ref, summary, grid_size=30)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    expected = "z[0]" if z_dim == 2 else f"z[{differing_dims(summary)[0]}]"
    assert fig.axes[0].get_xlabel() == expected
    panels = plot_posteriors(
        vae,
        torch.stack([x, x]),
        None,
        [ref, ref],
        [summary, summary],
        indices=[3, 7],
        labels=[1, 2],
        grid_size=20,
    )
    assert len(panels.axes) == 2 and "test #7 (class 2)" in panels.axes[1].get_title()
    with pytest.raises(ValueError, match="one reference and one summary per datum"):
        plot_posteriors(vae, x[None], None, [ref, ref], [summary])


@pytest.mark.parametrize("z_dim", [2, 3])
def test_flow_guide_of_a_cvae_draws(z_dim):
    torch.manual_seed(0)
    vae = build_model(
        model="cvae", guide="flow", x_dim=X_DIM, z_dim=z_dim, y_dim=3, hidden_dims=[16]
    )
    x = (torch.rand(X_DIM) > 0.5).float()
    y = torch.eye(3)[1]
    draws = torch.randn(2, 100, z_dim)
    flat = draws.double().reshape(-1, z_dim)
    ref = ReferencePosterior(draws, None, 1.0, 200.0, 200.0, 0, False, flat.mean(0), flat.std(0))
    summary = guide_vs_posterior(vae, x, y, ref, num_draws=300)
    fig = plot_posterior(vae, x, y, ref, summary, grid_size=20)
    assert isinstance(fig, Figure)


def test_gap_figure():
    data = [
        {
            "gaps": {"approximation_gap": 0.5 + 0.1 * i, "amortization_gap": 2.0 - 0.1 * i},
            "reference": i < 3,
            **({"guide": {"coverage_90_mean": 0.7}, "flagged": i == 1} if i < 3 else {}),
        }
        for i in range(6)
    ]
    fig = plot_gaps({"data": data})
    assert len(fig.axes) == 2  # gaps, and coverage where NUTS ran
    assert len(plot_gaps({"data": [{"gaps": d["gaps"]} for d in data]}).axes) == 1
    with pytest.raises(ValueError, match="no per-datum gaps"):
        plot_gaps({"data": [{"index": 1}]})
