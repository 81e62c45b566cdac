"""The pruned sum falls back to the dense one when its pilot says pruning would not pay."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.analysis.sources import mixture_pruning
from pyrovae.analysis.sources.mixture_pruning import DENSE_ABOVE, PrunedDiagonalMixture


def mixture(n: int, d: int, scale: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    loc = 3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return loc, torch.full((n, d), scale, dtype=torch.float64)


def full_sum(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log sum_n N(z; mu_n, sigma_n), summed directly in float64."""
    normal = torch.distributions.Normal(loc, scale)
    return torch.cat([normal.log_prob(c[:, None, :]).sum(-1).logsumexp(-1) for c in z.split(64)])


def test_wide_components_are_summed_densely_and_exactly():
    """Components as wide as their spread: pruning would keep most pairs, so the call is
    dense (every pair counted) and equals the full sum to float64 rounding."""
    loc, scale = mixture(600, 4, 3.0, seed=0)
    z = torch.randn(2000, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pruned = PrunedDiagonalMixture(loc, scale)
    got = pruned(z)
    assert pruned.dense_calls == 1
    assert pruned.kept_pairs == z.shape[0] * loc.shape[0]
    torch.testing.assert_close(got, full_sum(loc, scale, z), rtol=1e-12, atol=1e-10)


def test_narrow_components_are_pruned_within_tolerance():
    """Many narrow, well separated components and points in tight groups (as the draws of
    a few images are): the first leaves keep few pairs (the probe of 1,024 components a
    leaf, and little else), the tree runs, and the value stays within
    [log q + log(1 - tol) - eps, log q + eps]."""
    n = 40_000
    loc, scale = mixture(n, 4, 0.02, seed=2)
    g = torch.Generator().manual_seed(3)
    pick = torch.randint(n, (10,), generator=g).repeat_interleave(100)  # 100 draws near each
    z = loc[pick] + 0.02 * torch.randn(1000, 4, generator=g, dtype=torch.float64)
    pruned = PrunedDiagonalMixture(loc, scale, tolerance=1e-6)
    got = pruned(z)
    assert pruned.dense_calls == 0
    assert pruned.kept_pairs < DENSE_ABOVE * z.shape[0] * n
    exact = full_sum(loc, scale, z)
    eps = 1e-9 + 1e-12 * exact.abs()
    assert bool(((got - exact) <= eps).all())
    assert bool(((got - exact) >= math.log1p(-1e-6) - eps).all())


def test_the_choice_depends_on_the_points_only():
    """The same points give the same values, whatever was evaluated before."""
    loc, scale = mixture(600, 4, 1.0, seed=4)
    z = torch.randn(1500, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    fresh = PrunedDiagonalMixture(loc, scale)(z)
    used = PrunedDiagonalMixture(loc, scale)
    used(3 * z[:700])
    torch.testing.assert_close(used(z), fresh, rtol=0, atol=0)


def test_dense_gradient_matches_the_full_sum():
    loc, scale = mixture(300, 3, 3.0, seed=6)
    z = torch.randn(1200, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    pruned = PrunedDiagonalMixture(loc, scale)
    z1 = z.clone().requires_grad_(True)
    (g1,) = torch.autograd.grad(pruned(z1).sum(), z1)
    assert pruned.dense_calls == 1
    z2 = z.clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(full_sum(loc, scale, z2).sum(), z2)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-10)


def test_small_calls_and_a_threshold_of_one_always_prune(monkeypatch):
    loc, scale = mixture(600, 4, 3.0, seed=8)
    z = torch.randn(2000, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    small = PrunedDiagonalMixture(loc, scale)
    small(z[: mixture_pruning.PILOT_POINTS])  # done before the pilot could decide
    assert small.dense_calls == 0
    never = PrunedDiagonalMixture(loc, scale, dense_above=1.0)
    never(z)
    assert never.dense_calls == 0
    monkeypatch.setattr(mixture_pruning, "DENSE_ABOVE", 1.0)
    default = PrunedDiagonalMixture(loc, scale)
    default(z)
    assert default.dense_calls == 0


def test_scales_whose_precision_overflows_are_refused():
    """1/scale^2 overflows float64 below about 1.5e-154: refused, not a nan."""
    loc = torch.zeros(3, 1, dtype=torch.float64)
    scale = torch.tensor([[1e-160], [1.0], [2.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="scale holds 1e-160, below 1e-150"):
        PrunedDiagonalMixture(loc, scale)
    scale[0] = 1e-150  # the smallest accepted: finite terms
    got = PrunedDiagonalMixture(loc, scale)(torch.tensor([[0.0], [0.5]], dtype=torch.float64))
    assert bool(torch.isfinite(got).all())
