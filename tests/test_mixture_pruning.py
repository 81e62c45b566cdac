"""The pruned sum over a large diagonal Gaussian mixture against the full float64 sum."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
import torch.distributions as td

from pyrovae.analysis.sources import AggregatePosterior, mixture_pruning
from pyrovae.analysis.sources.mixture_pruning import (
    REFINE_ABOVE,
    DiagonalLogDensities,
    PrunedDiagonalMixture,
    Terms,
    _features,
    _rows_at,
)
from pyrovae.analysis.sources.store import source_from_state, source_state


@pytest.fixture(autouse=True)
def always_prune(monkeypatch):
    """The kd-tree itself is tested here, on data where a call's pilot might choose the
    dense sum instead (that choice: tests/test_dense_fallback.py)."""
    monkeypatch.setattr(mixture_pruning, "DENSE_ABOVE", 1.0)


def encodings_like(n: int, d: int, seed: int, narrowest: float = 1e-3) -> tuple:
    """Posteriors as an encoder makes them: means in ten clusters, scales log-uniform down
    to ``narrowest`` in half the dims, near 1 (unused dims) in the rest."""
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(10, d, generator=g)
    loc = centres[torch.randint(10, (n,), generator=g)] + 0.5 * torch.randn(n, d, generator=g)
    log_scale = torch.empty(n, d).uniform_(math.log(narrowest), 0.0, generator=g)
    unused = torch.arange(d) >= max(1, d // 2)
    log_scale[:, unused] = 0.02 * torch.randn(n, int(unused.sum()), generator=g)
    loc[:, unused] *= 0.05
    return loc.double(), log_scale.exp().double()


def reference(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log sum_n N(z; loc_n, scale_n) from torch.distributions, in float64."""
    n = loc.shape[0]
    mixture = td.MixtureSameFamily(
        td.Categorical(logits=torch.zeros(n, dtype=torch.float64)),
        td.Independent(td.Normal(loc, scale), 1),
    )
    return torch.cat([mixture.log_prob(part) for part in z.split(256)]) + math.log(n)


U = torch.finfo(torch.float64).eps / 2


def rounding(exact: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The rounding the module docstring allows beyond pruning, per point: REFINE_ABOVE
    (1e-9) nats plus that of the directly computed terms, (D + 8) u (|log q| + log N +
    3 max_n S_n), S_n = sum_d |log sigma_nd| + D, and of the final log-sum-exp, 4 u |log q|."""
    n, d = scale.shape
    size = float((scale.log().abs().sum(-1) + d).max())
    return REFINE_ABOVE + (d + 8) * U * (exact.abs() + math.log(n) + 3 * size) + 4 * U * exact.abs()


def within_claim(exact, got, scale, tolerance: float) -> bool:
    """log(1 - tolerance) - eps <= got - exact <= eps, eps = :func:`rounding`."""
    eps = rounding(exact, scale)
    err = exact - got
    return bool(((err >= -eps) & (err <= -math.log1p(-tolerance) + eps)).all())


def points(loc: torch.Tensor, scale: torch.Tensor, seed: int) -> torch.Tensor:
    """Draws from the mixture, tight clouds around a few components (as importance
    sampling makes them), broad draws and far-away points."""
    g = torch.Generator().manual_seed(seed)
    n, d = loc.shape
    pick = torch.randint(n, (600,), generator=g)
    own = loc[pick] + scale[pick] * torch.randn(600, d, generator=g, dtype=torch.float64)
    centres = loc[torch.randint(n, (4,), generator=g)]
    clouds = (centres[:, None] + 0.1 * torch.randn(4, 300, d, generator=g)).reshape(-1, d)
    broad = 3 * torch.randn(300, d, generator=g, dtype=torch.float64)
    far = 25 * torch.randn(20, d, generator=g, dtype=torch.float64)
    return torch.cat([own, clouds.double(), broad, far])


@pytest.mark.parametrize("d", [2, 10, 50])
def test_pruned_sum_is_within_its_tolerance_of_the_full_sum(d):
    loc, scale = encodings_like(4000, d, seed=d)
    z = points(loc, scale, seed=d + 1)
    pruned = PrunedDiagonalMixture(loc, scale, tolerance=1e-6, leaf_size=32, first_block=256)
    exact = reference(loc, scale, z)
    got = pruned(z)
    # pruning only drops mass: below the full sum by at most -log(1 - tol), up to rounding
    assert within_claim(exact, got, scale, 1e-6)
    assert pruned.kept_pairs < 0.5 * z.shape[0] * loc.shape[0]  # it did skip work


@pytest.mark.parametrize("mu,sigma", [(10.0, 1e-4), (100.0, 1e-3), (10.0, 1e-6), (100.0, 1e-6)])
def test_a_narrow_component_far_from_zero_is_summed_exactly(mu, sigma):
    """The leaves sum in coordinates centred on their box: the expanded quadratic form in
    z itself would cancel terms of (mu / sigma)^2 (1e16 at mu = 100, sigma = 1e-6) and
    miss by up to several nats."""
    g = torch.Generator().manual_seed(0)
    loc = torch.full((3, 4), mu) + sigma * torch.randn(3, 4, generator=g)  # float32, as
    loc, scale = loc.double(), torch.full((3, 4), sigma).double()  # an encoder makes them
    z = loc[0] + sigma * torch.randn(200, 4, generator=g, dtype=torch.float64)
    exact = reference(loc, scale, z)
    got = PrunedDiagonalMixture(loc, scale, leaf_size=16, first_block=64)(z)
    assert within_claim(exact, got, scale, 1e-6)
    dense = aggregate(loc, scale, tolerance=0).log_prob(z) + math.log(3)
    assert within_claim(exact, dense, scale, 0.0)


@pytest.mark.parametrize("offset,narrowest", [(30.0, 1e-4), (100.0, 1e-6)])
def test_encodings_far_from_zero_lose_no_accuracy(offset, narrowest):
    """Encodings with means shifted far from 0 and narrow scales: within the tolerance of
    the full sum up to 1e-10 (the expanded form in z itself missed by 4e-5 at a shift of
    30 and scales down to 1e-4)."""
    loc, scale = encodings_like(2000, 6, seed=9, narrowest=narrowest)
    loc = loc + offset
    z = points(loc, scale, seed=10)[:900]
    exact = reference(loc, scale, z)
    got = PrunedDiagonalMixture(loc, scale, leaf_size=32, first_block=128)(z)
    assert within_claim(exact, got, scale, 1e-6)


def test_a_loose_tolerance_drops_mass_but_never_more_than_it():
    loc, scale = encodings_like(3000, 5, seed=3)
    z = points(loc, scale, seed=4)
    exact = reference(loc, scale, z)
    for tol in (1e-3, 0.2):
        got = PrunedDiagonalMixture(loc, scale, tolerance=tol, leaf_size=32)(z)
        assert within_claim(exact, got, scale, tol)
        assert (exact - got).max().item() > 1e-6  # something was dropped and accounted for


def test_nothing_is_dropped_when_every_component_matters():
    loc = torch.zeros(500, 3, dtype=torch.float64)
    scale = torch.ones(500, 3, dtype=torch.float64)
    z = torch.randn(700, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = PrunedDiagonalMixture(loc, scale, leaf_size=16)(z)
    single = td.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(got, single + math.log(500), rtol=0, atol=1e-10)


def test_gradient_matches_the_full_sum():
    loc, scale = encodings_like(2000, 10, seed=5, narrowest=1e-2)
    z = points(loc, scale, seed=6)[:800].requires_grad_()
    pruned = PrunedDiagonalMixture(loc, scale, leaf_size=32, first_block=128)
    (g_pruned,) = torch.autograd.grad(pruned(z).sum(), z)
    (g_exact,) = torch.autograd.grad(reference(loc, scale, z).sum(), z)
    torch.testing.assert_close(g_pruned, g_exact, rtol=1e-5, atol=1e-5)


def test_gradient_passes_gradcheck_and_keeps_the_input_dtype():
    loc, scale = encodings_like(300, 3, seed=11, narrowest=0.05)
    pruned = PrunedDiagonalMixture(loc, scale, leaf_size=8, first_block=16)
    z = points(loc, scale, seed=12)[:40].clone().requires_grad_()
    assert torch.autograd.gradcheck(pruned, (z,), eps=1e-6, atol=1e-5)
    z32 = z.detach().float().requires_grad_()
    (g,) = torch.autograd.grad(pruned(z32).sum(), z32)
    assert g.dtype == torch.float32 and g.shape == z32.shape


def test_bounds_whose_squares_would_overflow_float32_are_made_in_float64():
    """A gap of 1e4 at scale 1e-16 squares to 1e40, past float32's range: the bound would
    be -inf for every candidate and a node of more than a leaf's points would drop them
    all; the bound is made in float64 then, so any batch gives the full sum."""
    g = torch.Generator().manual_seed(1)
    loc = torch.randn(40, 2, generator=g, dtype=torch.float64)
    scale = torch.full((40, 2), 1e-16, dtype=torch.float64)
    z = 1e4 + torch.randn(300, 2, generator=g, dtype=torch.float64)
    mixture = PrunedDiagonalMixture(loc, scale, leaf_size=16, first_block=64)
    exact = reference(loc, scale, z)
    assert bool(torch.isfinite(exact).all())
    torch.testing.assert_close(mixture(z), exact, rtol=1e-12, atol=0)
    torch.testing.assert_close(mixture(z[:10]), exact[:10], rtol=1e-12, atol=0)


def test_an_infinite_point_has_density_zero():
    loc, scale = encodings_like(200, 3, seed=2)
    z = points(loc, scale, seed=3)[:50].clone()
    z[4, 1], z[5, 0] = math.inf, math.nan
    got = PrunedDiagonalMixture(loc, scale, leaf_size=8)(z)
    assert got[4].item() == -math.inf and math.isnan(got[5].item())
    assert bool(torch.isfinite(got[6:]).all())


def test_a_second_derivative_is_refused_not_zero():
    loc, scale = encodings_like(100, 2, seed=4)
    z = points(loc, scale, seed=5)[:10].clone().requires_grad_()
    # with another term the gradient has a graph, in which the pruned part would count as 0
    total = PrunedDiagonalMixture(loc, scale)(z).sum() + z.pow(3).sum()
    with pytest.raises(RuntimeError, match="first derivatives only.*tolerance=0"):
        torch.autograd.grad(total, z, create_graph=True)


def test_a_nan_point_leaves_its_neighbours_exact():
    loc, scale = encodings_like(1000, 4, seed=7)
    z = points(loc, scale, seed=8)[:400].clone()
    z[3] = float("nan")
    got = PrunedDiagonalMixture(loc, scale, leaf_size=16)(z)
    assert torch.isnan(got[3])
    keep = torch.arange(400) != 3
    exact = reference(loc, scale, z[keep])
    assert within_claim(exact, got[keep], scale, 1e-6)
    assert PrunedDiagonalMixture(loc, scale)(z[:0]).shape == (0,)


def aggregate(loc, scale, **kwargs) -> AggregatePosterior:
    n, d = loc.shape
    fake = SimpleNamespace(diagonal=True, loc=loc.float(), scale=scale.float(), z_dim=d, num_data=n)
    return AggregatePosterior(fake, **kwargs)


def test_aggregate_prunes_on_the_cpu_and_sums_all_with_tolerance_zero():
    loc, scale = encodings_like(3000, 6, seed=9)
    z = points(loc, scale, seed=10)
    full = aggregate(loc, scale, tolerance=0).log_prob(z)
    pruned = aggregate(loc, scale).log_prob(z)
    exact = reference(loc.float().double(), scale.float().double(), z) - math.log(3000)
    assert within_claim(exact, full, scale, 0.0)
    assert within_claim(exact, pruned, scale, 1e-6)
    assert aggregate(loc, scale).log_prob(z.float()).dtype == torch.float32


@pytest.mark.parametrize("bad", [-1e-3, 1.0, True, "1e-6"])
def test_aggregate_refuses_a_bad_tolerance(bad):
    loc, scale = encodings_like(10, 2, seed=0)
    with pytest.raises(ValueError, match="tolerance"):
        aggregate(loc, scale, tolerance=bad)


def test_saved_aggregate_keeps_its_tolerance():
    loc, scale = encodings_like(50, 3, seed=1)
    restored = source_from_state(source_state(aggregate(loc, scale, tolerance=1e-3)))
    assert restored.tolerance == 1e-3


@pytest.mark.parametrize("offset,narrowest", [(0.0, 1e-3), (1e3, 1e-6), (-3e2, 1e-5)])
def test_float32_box_bounds_never_fall_below_the_exact_maximum(offset, narrowest):
    """The bounds are computed in float32 with margins: each is at least the float64 maximum
    of the component's log density over the box, also far from the origin with scales so
    narrow that rounding a mean to float32 moves it by many standard deviations."""
    g = torch.Generator().manual_seed(7)
    n, d = 3000, 20
    loc = offset + 1e-3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    scale = (
        torch.empty(n, d, dtype=torch.float64).uniform_(math.log(narrowest), 0.0, generator=g).exp()
    )
    mixture = PrunedDiagonalMixture(loc, scale)
    assert mixture.bounds32 is not None and mixture.bounds32[0].dtype == torch.float32
    log_norm = -scale.log().sum(-1) - 0.5 * d * math.log(2 * math.pi)
    for width in (0.0, 1e-6, 1e-3):
        for centre in (loc[0], loc[1] + 2e-4, torch.full((d,), offset, dtype=torch.float64)):
            lo, hi = centre - width, centre + width
            gap = ((loc - centre).abs() - width).clamp(min=0) / scale
            exact = log_norm - 0.5 * gap.pow(2).sum(-1)
            bound = mixture._upper(mixture.bounds32, lo, hi)
            assert bool((bound >= exact).all()), (bound - exact).min().item()


def spread_clusters(length: float, sigma: float, d: int, n: int = 500, seed: int = 0) -> tuple:
    """Two clusters of n components each at +-length in every coordinate, means within a
    few sigma of their cluster's centre (so that many components carry a point's mass),
    scales sigma to 4 sigma; all float32 values (as an encoder makes them). Points: draws
    from the mixture, points among a cluster's components and near misses (20 sigma)."""
    g = torch.Generator().manual_seed(seed)
    side = torch.cat([torch.ones(n, 1), -torch.ones(n, 1)]).double()
    loc = side * length + 2 * sigma * torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    log_scale = torch.empty(2 * n, d, dtype=torch.float64).uniform_(0, math.log(4), generator=g)
    loc, scale = loc.float().double(), (sigma * log_scale.exp()).float().double()
    pick = torch.randint(2 * n, (300,), generator=g)
    own = loc[pick] + scale[pick] * torch.randn(300, d, generator=g, dtype=torch.float64)
    among = side[pick[:200]] * length + 3 * sigma * torch.randn(200, d, generator=g).double()
    miss = side[pick[:60]] * length + 20 * sigma * torch.randn(60, d, generator=g).double()
    return loc, scale, torch.cat([own, among, miss])


SPREAD = [(30.0, 1e-5), (100.0, 1e-6), (1000.0, 1e-6)]


@pytest.mark.parametrize("d", [4, 10])
@pytest.mark.parametrize("length,sigma", SPREAD)
def test_clusters_far_apart_with_narrow_scales_keep_the_claimed_accuracy(length, sigma, d):
    """Centring on the mean of the means removes a shared shift, not the spread: at +-30
    with scales of 1e-5 the expanded form alone missed by 4e-3 nats, at +-100 and 1e-6 by
    several nats, at +-1000 a leaf was left without candidates (an error was raised)."""
    loc, scale, z = spread_clusters(length, sigma, d)
    exact = reference(loc, scale, z)
    pruned = PrunedDiagonalMixture(loc, scale, leaf_size=32, first_block=128)
    assert within_claim(exact, pruned(z), scale, 1e-6)
    n = loc.shape[0]
    full = aggregate(loc, scale, tolerance=0).log_prob(z) + math.log(n)
    assert within_claim(exact, full, scale, 0.0)
    default = aggregate(loc, scale).log_prob(z) + math.log(n)
    assert within_claim(exact, default, scale, 1e-6)


def test_the_aggregate_keeps_its_claim_for_means_within_five_and_scales_of_1e4():
    """Means at +-5 with scales of 1e-4 in 10 dims (the full sum was off by 8e-7 nats, the
    pruned one by 1.5e-6 where 1e-6 was claimed)."""
    loc, scale, z = spread_clusters(5.0, 1e-4, 10, seed=3)
    exact = reference(loc, scale, z) - math.log(loc.shape[0])
    for tolerance in (0.0, 1e-6):
        got = aggregate(loc, scale, tolerance=tolerance).log_prob(z)
        assert within_claim(exact, got, scale, tolerance)


def test_no_leaf_is_left_without_candidates():
    """Clusters at +-1000 with scales of 1e-6 and means 1e-7 apart: the probe's sum came out
    too high, a node dropped every component, and a leaf raised on an empty set."""
    g = torch.Generator().manual_seed(0)
    base = torch.cat([torch.full((500, 4), 1000.0), torch.full((500, 4), -1000.0)]).double()
    loc = base + 1e-7 * torch.randn(1000, 4, generator=g, dtype=torch.float64)
    scale = torch.full_like(loc, 1e-6)
    z = loc[torch.randint(1000, (600,), generator=g)]
    z = z + 1e-6 * torch.randn(600, 4, generator=g, dtype=torch.float64)
    got = PrunedDiagonalMixture(loc, scale, leaf_size=32, first_block=128)(z)
    assert within_claim(reference(loc, scale, z), got, scale, 1e-6)


@pytest.mark.parametrize("length,sigma", SPREAD[:2])
def test_gradients_of_spread_clusters_match_the_float64_reference(length, sigma):
    loc, scale, z = spread_clusters(length, sigma, 4, n=300, seed=5)
    z = z[:300].clone().requires_grad_()
    (want,) = torch.autograd.grad(reference(loc, scale, z).sum(), z)
    pruned = PrunedDiagonalMixture(loc, scale, leaf_size=32, first_block=128)
    (got,) = torch.autograd.grad(pruned(z).sum(), z)
    (full,) = torch.autograd.grad(aggregate(loc, scale, tolerance=0).log_prob(z).sum(), z)
    # the pruned weights are off by at most tolerance (1e-6) of the mass
    atol = 1e-6 * want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=atol)
    torch.testing.assert_close(full, want, rtol=1e-9, atol=1e-9 * want.abs().max().item())


def exact_quadratic(z: float, mu: float, sigma: float) -> Fraction:
    """-1/2 ((z - mu) / sigma)^2 in exact rational arithmetic."""
    return -((Fraction(z) - Fraction(mu)) ** 2) / (2 * Fraction(sigma) ** 2)


@pytest.mark.parametrize("box", [False, True])
def test_the_rounding_bound_bounds_the_expanded_forms_error(box):
    """Against exact rational arithmetic, on clusters far apart with narrow scales (where the
    error reaches 1e-2 nats), centred on the mean of the means or on the points' box."""
    loc, scale, z = spread_clusters(30.0, 1e-5, 3, n=20, seed=7)
    terms = DiagonalLogDensities(loc, scale)
    z = z[::25]
    if box:
        centre = 0.5 * (z.amin(0) + z.amax(0))
        rows, spread = _rows_at(terms.table, centre)
        const = terms._rounding_const(spread, terms.log_scale_size)
    else:
        centre, rows, const = terms.centre, terms.rows, terms.rounding_const
    w = z - centre
    bound = terms.rounding_bound(w, rows, const)
    got = _features(w) @ rows.T
    d, table = 3, terms.table
    worst = 0.0
    for m in range(z.shape[0]):
        for n in range(loc.shape[0]):
            exact = Fraction(float(table[n, 2 * d])) + sum(
                exact_quadratic(float(z[m, j]), float(loc[n, j]), float(scale[n, j]))
                for j in range(d)
            )
            error = abs(float(Fraction(float(got[m, n])) - exact))
            assert error <= bound[n].item(), (m, n, error, bound[n].item())
            worst = max(worst, error)
    assert worst > REFINE_ABOVE  # the bound was put to the test


def exact_log_sum(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor) -> list:
    """log sum_n N(z_m; loc_n, scale_n) of the float64 values, to 100 bits (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workprec(100):
        half_log_2pi = mpmath.log(2 * mpmath.pi) / 2
        locs = [[mpmath.mpf(v) for v in row] for row in loc.tolist()]
        scales = [[mpmath.mpf(v) for v in row] for row in scale.tolist()]
        logs = [sum(-mpmath.log(s) - half_log_2pi for s in row) for row in scales]
        out = []
        for point in z.tolist():
            zs = [mpmath.mpf(v) for v in point]
            terms = [
                log_n - sum(((zj - mj) / sj) ** 2 for zj, mj, sj in zip(zs, m, s, strict=True)) / 2
                for log_n, m, s in zip(logs, locs, scales, strict=True)
            ]
            out.append(mpmath.log(mpmath.fsum(mpmath.exp(t) for t in terms)))
        return out


def exceeds(value: torch.Tensor, exact: list) -> list:
    """The entries of ``value`` not at or below the exact values, nan included (empty: a
    true lower bound)."""
    pairs = enumerate(zip(value.tolist(), exact, strict=True))
    return [(i, float(v), float(e)) for i, (v, e) in pairs if not v <= e]


@pytest.mark.parametrize("d", [1, 4])
@pytest.mark.parametrize("part", ["spread", "size"])
def test_the_rounding_bound_covers_the_constants_rounding(part, d):
    """At the centre (w = 0) the expanded form is its constant l_n - B_n alone, so its
    rounding must be covered by u ((5 D + 15) B_n + (3 D + 8) S_n) alone: against the
    exact log density (100 bits), with B_n dominant (clusters at +-30, scales of 1e-5:
    the error is about 3 u B_n) or S_n dominant (one shared mean, scales down to 1e-150:
    B_n = 0 and the error is the log normalizer's, about u S_n). A coefficient dropped,
    negated or divided by would leave an error uncovered."""
    g = torch.Generator().manual_seed(d)
    n = 64
    if part == "spread":
        side = torch.cat([torch.ones(n // 2, 1), -torch.ones(n // 2, 1)]).double()
        loc = 30 * side + 1e-5 * torch.randn(n, d, generator=g, dtype=torch.float64)
        scale = 1e-5 * torch.empty(n, d, dtype=torch.float64).uniform_(1, 4, generator=g)
    else:  # 64 equal means: their mean is exact, so every delta_n is 0
        loc = torch.full((n, d), 0.3, dtype=torch.float64)
        log_scale = torch.empty(n, d, dtype=torch.float64).uniform_(-345, -230, generator=g)
        scale = log_scale.exp()
    terms = DiagonalLogDensities(loc, scale)
    z = terms.centre[None]
    w = z - terms.centre
    assert not bool(w.any())
    got = (_features(w) @ terms.rows.T)[0]
    bound = terms.rounding_bound(w, terms.rows, terms.rounding_const)
    exact = [exact_log_sum(loc[k : k + 1], scale[k : k + 1], z)[0] for k in range(n)]
    errors = [abs(float(v - e)) for v, e in zip(got.tolist(), exact, strict=True)]
    over = [(k, errors[k], bound[k].item()) for k in range(n) if errors[k] > bound[k].item()]
    assert not over
    _, spread = _rows_at(terms.table, terms.centre)
    scale_of = spread if part == "spread" else terms.log_scale_size
    relative = [e / (U * float(s)) for e, s in zip(errors, scale_of, strict=True)]
    assert max(relative) > 0.1  # the bound was put to the test


@pytest.mark.parametrize("n,sigma", [(1024, 1.0), (2, 1e-3)])
def test_the_lower_bound_of_directly_computed_terms_lies_below_the_exact_sum(n, sigma):
    """Clusters at +-1e8 are computed directly (the expanded form's bound is 10 nats or more).
    With n = 1024 unit scales a term's own rounding bound, (D + 8) u (|t_n| + 3 S_n), is
    some 50 u, so the log-sum-exp's rounding of 2048 terms, about (k + 4) u, must be
    subtracted too; with n = 2 scales of 1e-3 it is the terms' bounds that count: at a
    mean, |t_n| < 3 S_n, and 100 scales out, (D + 8) u |t_n| > 4 u |t_n|. The lower bound
    that prunes must lie below the exact log-sum (100 bits), for points among a cluster's
    components (log q > 0) and far from them (log q < 0)."""
    g = torch.Generator().manual_seed(3)
    side = torch.cat([torch.ones(n, 1), -torch.ones(n, 1)]).double()
    loc = 1e8 * side + sigma * torch.randn(2 * n, 1, generator=g, dtype=torch.float64)
    scale = sigma * torch.empty(2 * n, 1, dtype=torch.float64).uniform_(0.5, 2.0, generator=g)
    steps = torch.tensor([0.0, 0.7, -1.3, 25.0, -30.0, 100.0], dtype=torch.float64)
    z = torch.cat([loc[:2], loc[0] + sigma * steps[:, None]])
    terms = DiagonalLogDensities(loc, scale)
    parts = terms.terms(z)
    assert all(t.size is not None for t in parts)  # every term computed directly
    exact = exact_log_sum(loc, scale, z)
    assert min(exact) < 0 < max(exact)
    assert not exceeds(terms.lower_sum(parts), exact)


def test_the_lower_bound_of_expanded_terms_is_lowered_by_their_rounding_bound():
    """Terms of the expanded form whose rounding bound exceeds 1e-9 (clusters at +-30 with
    scales of 1e-5: up to 1e-2 nats) given to the lower bound with that bound: each must be
    lowered by it (raised, multiplied or divided by it, the sum would exceed the exact one
    for points among the components, log q > 0, or near misses, log q < 0)."""
    loc, scale, z = spread_clusters(30.0, 1e-5, 3, n=20, seed=7)
    z = z[::25]
    terms = DiagonalLogDensities(loc, scale)
    w = z - terms.centre
    err = terms.rounding_bound(w, terms.rows, terms.rounding_const)
    assert err.max().item() > 1e-6
    part = Terms(_features(w) @ terms.rows.T, terms.rows, w, err, None)
    exact = exact_log_sum(loc, scale, z)
    assert min(exact) < 0 < max(exact)
    assert not exceeds(terms.lower_sum([part]), exact)


def exact_box_maximum(loc, scale, log_norm, lo, hi) -> torch.Tensor:
    """max over the box [lo, hi] of each component's log density, its gap to the box in
    exact rational arithmetic (the float64 log normalizer ``log_norm``)."""
    out = []
    for mu, sigma, norm in zip(loc.tolist(), scale.tolist(), log_norm.tolist(), strict=True):
        squares = Fraction(0)
        for m, s, a, b in zip(mu, sigma, lo.tolist(), hi.tolist(), strict=True):
            c, r = (Fraction(a) + Fraction(b)) / 2, (Fraction(b) - Fraction(a)) / 2
            gap = max(Fraction(0), abs(Fraction(m) - c) - r)
            squares += (gap / Fraction(s)) ** 2
        out.append(norm - float(squares / 2))
    return torch.tensor(out, dtype=torch.float64)


def box_cases() -> list:
    """(loc, scale, lo, hi): means that float32 rounds towards the box by up to an ulp, on
    boxes where the radius (a box [-1, 1], means just past +-1), the centre (a box [0, 2000],
    means just below 0) or the relative rounding of the squares (50 dims, a box of one
    point at 0, means 1 to 2 away) makes the float32 gap too small without its margins."""
    g = torch.Generator().manual_seed(11)
    ulp = 2.0**-23
    cases = []
    sign = torch.where(torch.rand(400, 1, generator=g) < 0.5, -1.0, 1.0).double()
    past = torch.rand(400, 1, generator=g, dtype=torch.float64) * 3 * ulp
    cases.append((sign * (1 + past), torch.full((400, 1), 1e-9).double(), -1.0, 1.0))
    below = -torch.rand(400, 1, generator=g, dtype=torch.float64) * 3 * ulp * 1024
    cases.append((below, torch.full((400, 1), 1e-5).double(), 0.0, 2000.0))
    far = torch.empty(200, 50, dtype=torch.float64).uniform_(1, 2, generator=g)
    far = far * torch.where(torch.rand(200, 50, generator=g) < 0.5, -1.0, 1.0).double()
    scale = torch.empty(200, 50, dtype=torch.float64).uniform_(0.5, 2, generator=g)
    cases.append((far, scale, 0.0, 0.0))
    return cases


@pytest.mark.parametrize("case", range(3))
def test_float32_box_bounds_keep_their_margins(case):
    """The bound's margins (8 u (max |mu| + max |c| + max r) on each gap, (D + 8) u on the
    sum of squares) must cover float32 rounding where each of their parts is the one that
    matters: the bound is at least the exact maximum (gaps in rational arithmetic)."""
    loc, scale, a, b = box_cases()[case]
    d = loc.shape[1]
    mixture = PrunedDiagonalMixture(loc, scale)
    assert mixture.bounds32 is not None
    lo, hi = torch.full((d,), a, dtype=torch.float64), torch.full((d,), b, dtype=torch.float64)
    exact = exact_box_maximum(loc, scale, mixture.table[:, -1], lo, hi)
    bound = mixture._upper(mixture.bounds32, lo, hi)
    assert bool((bound >= exact).all()), (bound - exact).min().item()
    assert (exact - mixture.table[:, -1]).min().item() < -1e-3  # gaps that count


def test_float64_bounds_use_the_log_normalizer_in_more_than_two_dims():
    """One component of scale 1e-18 makes squares of gaps overflow float32, so every box is
    bounded in float64, from the table's columns; in 3 dims (where 2 + D, 2 ** D and 2 D
    differ) the components of scale 1e-5 (log normalizer 32 nats) that carry the points'
    mass must keep their bound, and the pruned sum its claim."""
    g = torch.Generator().manual_seed(5)
    n, d = 300, 3
    loc = 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    scale = 1e-5 * torch.empty(n, d, dtype=torch.float64).uniform_(1, 30, generator=g)
    loc[0], scale[0] = 50.0, 1e-18
    pick = torch.randint(1, n, (400,), generator=g)
    z = loc[pick] + scale[pick] * torch.randn(400, d, generator=g, dtype=torch.float64)
    mixture = PrunedDiagonalMixture(loc, scale, leaf_size=16, first_block=64)
    got = mixture(z)
    assert mixture._bounds64 is not None  # the float64 bounds were used
    assert within_claim(reference(loc, scale, z), got, scale, 1e-6)


def test_second_derivatives_through_directly_computed_terms():
    """The full sum (tolerance=0) is differentiable to any order, also where its terms are
    computed directly (clusters at +-100 with scales of 1e-6): first and second derivatives
    (create_graph=True) against the float64 density of torch.distributions."""
    loc, scale, z = spread_clusters(100.0, 1e-6, 2, n=40, seed=2)
    z = z[::4].clone().requires_grad_()
    terms = DiagonalLogDensities(loc, scale)
    assert any(t.size is not None for t in terms.terms(z.detach()))
    derivatives = []
    for value in (terms.log_sum(z), reference(loc, scale, z)):
        (grad,) = torch.autograd.grad(value.sum(), z, create_graph=True)
        (second,) = torch.autograd.grad(grad.sum(), z)
        derivatives.append((grad.detach(), second))
    for got, want in zip(*derivatives, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9 * want.abs().max().item())


def test_kept_pairs_counts_every_pair_summed():
    """kept_pairs counts the (point, component) pairs summed exactly: where no component can
    be dropped (all equal) that is every pair of every call, and nothing before the first."""
    loc = torch.zeros(300, 2, dtype=torch.float64)
    scale = torch.ones(300, 2, dtype=torch.float64)
    pruned = PrunedDiagonalMixture(loc, scale, leaf_size=16)
    assert pruned.kept_pairs == 0
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pruned(z)
    pruned(z[:50])
    assert pruned.kept_pairs == 250 * 300


def test_each_directly_computed_term_is_lowered_by_its_own_bound():
    """In 7 dims a directly computed term (clusters at +-1e8) can come out over 4 u |t_n|
    above the exact one, more than the log-sum-exp's allowance for one term, u (4 |t_n| +
    5): each one-component sum's lower bound must still lie below the exact term (100
    bits), which takes the term's own bound, (D + 8) u (|t_n| + 3 S_n)."""
    g = torch.Generator().manual_seed(10)
    n, m, d = 32, 160, 7
    loc = 1e8 + torch.randn(n, d, generator=g, dtype=torch.float64)
    loc = torch.cat([loc, -loc])
    scale = torch.empty(2 * n, d, dtype=torch.float64).uniform_(0.3, 3, generator=g)
    z = 1e8 + 30 * torch.randn(m, d, generator=g, dtype=torch.float64)
    terms = DiagonalLogDensities(loc, scale)
    (part,) = terms.terms(z)
    assert part.size is not None  # computed directly
    beyond = 0  # terms above the exact ones by more than the log-sum-exp's allowance
    for k in range(n):
        logits, size = part.logits[:, k : k + 1], part.size[k : k + 1]
        one = Terms(logits, part.rows[k : k + 1], None, None, size)
        exact = exact_log_sum(loc[k : k + 1], scale[k : k + 1], z)
        assert not exceeds(terms.lower_sum([one]), exact)
        pairs = zip(logits[:, 0].tolist(), exact, strict=True)
        beyond += sum(v - e > U * (4 * abs(v) + 5) for v, e in pairs)  # exact differences
    assert beyond > 0  # the bound was put to the test


def test_float64_bounds_keep_the_claim_for_overlapping_components():
    """Bounded in float64 (one component of scale 1e-18), components of scales 0.1 to 0.3
    around unit-spread means overlap, so on the small boxes of tight clouds of points a
    bound from a wrong 1/scale (too large by 20%) drops mass that counts: the pruned sum
    keeps its claim at tolerances 1e-6 and 0.2."""
    g = torch.Generator().manual_seed(8)
    n, d = 2000, 3
    loc = torch.randn(n, d, generator=g, dtype=torch.float64)
    scale = torch.empty(n, d, dtype=torch.float64).uniform_(0.1, 0.3, generator=g)
    loc[0], scale[0] = 50.0, 1e-18
    centres = torch.randn(8, 1, d, generator=g, dtype=torch.float64)  # tight clouds
    z = (centres + 0.02 * torch.randn(8, 64, d, generator=g, dtype=torch.float64)).reshape(-1, d)
    exact = reference(loc, scale, z)
    for tolerance in (1e-6, 0.2):
        mixture = PrunedDiagonalMixture(loc, scale, tolerance, leaf_size=16, first_block=64)
        got = mixture(z)
        assert mixture._bounds64 is not None  # the float64 bounds were used
        assert within_claim(exact, got, scale, tolerance)
