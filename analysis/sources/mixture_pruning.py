"""log sum_n N(z; mu_n, diag sigma_n^2) over many components, pruned by exact bounds, each
term right to 1e-9 nats or to float64 rounding for any means and scales.

The exact aggregated posterior q(z) = 1/N sum_n q(z | x_n) has one component per training
image, and only a few of them matter at any z: at z = 10 about 0.1% of the 50,000 lie
within 25 nats of a point's largest. The dense sum spends the same work on all of them.

Terms. The log densities t_n(z) = l_n - 1/2 sum_d ((z_d - mu_nd) / sigma_nd)^2, with
l_n = -sum_d log sigma_nd - D/2 log 2 pi, are matrix products of the expanded quadratic
form [w^2, w, 1] . [a_n, b_n, c_n] in coordinates w = z - c centred on the mean c of the
means (:func:`centred_rows`). Its rounding grows like u (w^2 + delta_n^2) / sigma_n^2
(delta_n = mu_n - c, u = 2^-53): centring removes the shift shared by all means, not their
spread, so means far apart relative to their scales (clusters at +-100 with scales of
1e-6) would cost nats. :meth:`DiagonalLogDensities.rounding_bound` bounds that rounding
for each component over a block of points::

    e_n = u ((4 D + 14) sum_d |a_nd| max_m w_md^2 + (5 D + 15) B_n + (3 D + 8) S_n),

B_n = 1/2 sum_d delta_nd^2 / sigma_nd^2, S_n = sum_d ``|log sigma_nd|`` + D (``|l_n| <= S_n``): the
magnitudes of the 2 D + 1 products and of the constant's parts, times the relative rounding
of the rows (5 u), of the features (3 u), of a dot product ((2 D + 1) u) and of the
constant ((D + 7) u), rounded up. Where e_n > ``REFINE_ABOVE`` (1e-9 nats) the component's
terms for the block come from the expanded form centred on the block's box instead (the
spread about the box, not about all means), and where that bound too exceeds 1e-9, they
are computed directly as l_n + sum_d a_nd (z_d - mu_nd)^2, with the rounding of any float64
evaluation (a torch.distributions density): at most ``(D + 8) u (|t_n| + 3 S_n)``. A block
whose points lie so far out that this is no smaller than e_n (``|t_n| >= -(upper bound)``) keeps
the expanded form. So every term of every sum here, full or pruned, is off by at most
``max(1e-9, (D + 8) u (|t_n| + 3 S_n))``. One bound over all components at once (the largest
``|a_nd|`` per dim, the largest constant) skips the per-component one where it is below 1e-9:
for trained encoders (VAEs on MNIST at z = 2 and 10, means within +-5, scales above 0.008)
the bound over all components and draws is 6e-11 to 2e-10 and nothing is recomputed. With
scales log-uniform down to 1e-3 in half the dims most components are (the bound is a worst
case: the expanded form alone was off by 7e-10 at D = 10, 5e-14 at D = 50), and the pruned
sum takes 1.1 to 1.4 times as long at D = 10 (its gradient 1.3), 2.2 times at D = 50.

Pruning. The points are split by a kd-tree (halved at the median of the dimension that is
widest in units of the components' median scale) and each node ``P`` of at most
``first_block`` points bounds every candidate component over the node's bounding box
``[lo, hi]``::

    max_{z in box} t_n(z) = l_n - 1/2 sum_d (gap_nd / sigma_nd)^2,
    gap_nd = max(0, |mu_nd - c_d| - r_d),   c = (lo + hi) / 2,   r = (hi - lo) / 2,

computed with margins that keep it above the exact maximum (:meth:`_upper`). A lower bound
L_m of each point's total is the log-sum over the node's ``probe`` components of largest
bound, each term lowered by its rounding bound, so it holds however the means are spread.
A component whose upper bound lies below min_m L_m + log(tolerance / N) cannot carry more
than tolerance / N of any point's mass and is dropped for the node and all its children; at
a leaf the survivors are summed. Along a point's path at most N components are dropped, so
the dropped mass is at most ``tolerance`` times the point's total. The bound is the closed
form maximum of a separable quadratic, not a heuristic: a component is never dropped
because it looks small, and the component of largest bound is always kept (L_m is at most
log N above it), so no leaf is left without candidates. Pruning pays only where it drops
nearly every pair (a kept pair costs 5 to 20 times a dense one), so a call whose first
leaves (``PILOT_POINTS`` points) keep more than ``DENSE_ABOVE`` of their pairs (wide
posteriors of a barely trained encoder, or fewer components than a leaf probes) sums every
pair densely instead; the choice depends on the points alone.

Guarantee. For finite float64 points, any finite means and scales of at least 1e-150
(smaller ones are refused: their precision overflows float64), the value v
returned for log q = log sum_n N(z; mu_n, sigma_n) satisfies::

    log(1 - tolerance) - eps  <=  v - log q  <=  eps,
    eps = 1e-9 + (D + 8) u (|v| + log N + 3 max_n S_n) + 4 u |v|

(the terms' errors weighted by their shares s_n, ``sum_n s_n |t_n| <= |log q| + log N``, and the
log-sum-exp's own rounding; to first order in eps): 1e-9 nats plus 1e-13 for ``|v| ~ 100``.
The full sum (:meth:`DiagonalLogDensities.log_sum`, what ``AggregatePosterior(...,
tolerance=0)`` computes) drops nothing: ``|v - log q| <= eps``.

Gradient. The pruned sum is differentiable in z like the dense one (the kept set is
piecewise constant in z); its gradient is that of the kept components, whose weights sum to
at least 1 - tolerance, computed in closed form with the sum: sum_n s_n (2 w a_n + b_n)
over the terms of the expanded form (about one more matrix product per leaf) and
sum_n s_n 2 a_n (z - mu_n) over the directly computed ones, s the kept components' softmax.

This is the bounding idea of dual-tree kernel sums (Gray & Moore, 2003, "Nonparametric
density estimation: toward computational tractability", SDM), with exact per-component
bounds instead of bounds over groups of components.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

__all__ = [
    "DEFAULT_TOLERANCE",
    "REFINE_ABOVE",
    "DiagonalLogDensities",
    "Terms",
    "PrunedDiagonalMixture",
    "centred_rows",
]

DEFAULT_TOLERANCE = 1e-6
"""Largest share of a point's mixture mass that pruning may drop (log error about this)."""

LEAF_SIZE = 128
"""Points per leaf of the kd-tree (summed exactly against the leaf's survivors)."""

GRAD_LEAF_SIZE = 32
"""Points per leaf when the gradient is wanted too. Gradients come from AIS and HMC, which
score a few chains of many data at once: small leaves keep each box to one datum's
chains (at z = 10, 2.6 times faster than leaves of 128 on such points)."""

FIRST_BLOCK = 1024
"""Nodes with more points than this are only split, not bounded (their boxes are too
wide to prune; about the draws of one datum in an importance-sampling pass)."""

NODE_PROBE, LEAF_PROBE = 32, 1024
"""Components of largest bound summed exactly for the lower bound of a node, a leaf."""

REFINE_ABOVE = 1e-9
"""Nats: a component whose expanded-form rounding bound over a block of points
(:meth:`DiagonalLogDensities.rounding_bound`) exceeds this has its terms for the block
computed otherwise (centred on the block's box, or directly). Not for trained encoders
(at z = 2 and 10 the bound over all components and draws is 6e-11 to 2e-10; the study's
z = 50 run, 6e-10 by an earlier, looser bound); always for means far apart with narrow
scales."""

SKIP_AFTER = 0.95
"""A node whose bound kept more than this share of its candidates has children that are
only split, not bounded (their boxes are barely smaller; at z = 50 the first three levels
drop nothing); the grandchildren are bounded again."""

_U = torch.finfo(torch.float64).eps / 2
#: Scales below this are refused: 1/scale^2 would overflow float64 (1e-154 and less).
SMALLEST_SCALE = 1e-150
#: A call whose first leaves (at least ``PILOT_POINTS`` of its points) kept more than
#: this share of their (point, component) pairs sums every pair densely instead: bounding
#: and gathering a kept pair costs 5 to 20 times a pair of the dense matrix product
#: (measured at D = 2 to 50; a 3-epoch MNIST VAE at D = 50 with 5,000 components kept 23%
#: and pruning was 5 times slower than the dense sum), so pruning pays only when it drops
#: nearly all pairs (trained encoders keep well under 1%).
DENSE_ABOVE = 0.05
PILOT_POINTS = 256
"""Unit roundoff of float64."""


class Terms(NamedTuple):
    """Log densities of some components at m points, computed one way (see
    :meth:`DiagonalLogDensities.terms`)."""

    logits: torch.Tensor
    """(m, k) log densities."""
    rows: torch.Tensor
    """The expanded form's rows [a_n, b_n, c_n] centred like ``w``, shape (k, 2 D + 1), or,
    for directly computed terms, the components' rows [a_n, mu_n, l_n] of the table."""
    w: torch.Tensor | None
    """(m, D) points centred like ``rows``; None for directly computed terms."""
    err: torch.Tensor | None
    """Bounds on the expanded form's rounding, shape (k,), or None when all are within
    REFINE_ABOVE."""
    size: torch.Tensor | None
    """S_n of directly computed terms, shape (k,) (for their rounding bound); None otherwise."""


class DiagonalLogDensities:
    """log N(z; loc_n, diag scale_n^2) of (N, D) components at many points: each term
    from the expanded form where its rounding bound is at most :data:`REFINE_ABOVE` nats,
    computed directly elsewhere (see the module docstring). All in float64, on the device
    of ``loc``; :meth:`log_sum` is differentiable in the points by autograd."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        loc, scale = loc.double(), scale.double()
        n, d = loc.shape
        smallest = float(scale.min()) if scale.numel() else 1.0
        if not smallest >= SMALLEST_SCALE:  # also catches nan
            raise ValueError(
                f"scale holds {smallest:.3g}, below {SMALLEST_SCALE:g}: 1/scale^2 overflows "
                "float64 there; floor the encoder's scales (a float32 encoder cannot go below "
                "1e-45) or drop those components"
            )
        log_scale = scale.log()
        log_norm = -log_scale.sum(-1) - 0.5 * d * math.log(2 * math.pi)
        # [a_n, mu_n, l_n]: the direct evaluation's terms, from which rows are centred
        self.table = torch.cat([-0.5 * scale.pow(-2), loc, log_norm[:, None]], 1)
        self.num_components, self.z_dim = n, d
        self.centre = loc.mean(0)
        self.rows, spread = _rows_at(self.table, self.centre)
        # S_n, and the part of the rounding bound e_n that does not depend on the points
        self.log_scale_size = log_scale.abs().sum(-1) + d
        self.rounding_const = self._rounding_const(spread, self.log_scale_size)
        # for a bound on e_n over all components at once (most blocks need no more)
        self._widest_a = (0.5 * scale.pow(-2)).amax(0)
        self._widest_const = float(self.rounding_const.max())

    def _rounding_const(self, spread: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """(5 D + 15) B_n + (3 D + 8) S_n, from B_n (``spread``) and S_n (``size``)."""
        d = self.z_dim
        return (5 * d + 15) * spread + (3 * d + 8) * size

    def rounding_bound(
        self, w: torch.Tensor, rows: torch.Tensor, const: torch.Tensor
    ) -> torch.Tensor:
        """(k,) bounds e_n on the expanded form's rounding for the components of centred
        ``rows`` at any of the (m, D) points ``w`` centred like them, ``const`` their
        :meth:`_rounding_const`: ``u ((4 D + 14) sum_d |a_nd| max_m w_md^2 + const)``."""
        d = self.z_dim
        widest = w.detach().square().amax(0)
        # a_nd = -1 / (2 sigma_nd^2) < 0, so -a . w^2 = sum_d |a_nd| w_d^2
        return _U * torch.addmv(const, rows[:, :d], widest, alpha=-(4 * d + 14))

    def direct_rounding(self, magnitude: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """A bound on the rounding of a directly computed term of magnitude ``|t_n|`` (or a
        lower bound of it), S_n = ``size``: ``(D + 8) u (|t_n| + 3 S_n)``."""
        return (self.z_dim + 8) * _U * (magnitude + 3 * size)

    def direct(self, points: torch.Tensor, table_rows: torch.Tensor) -> torch.Tensor:
        """(m, k) terms l_n + sum_d a_nd (z_d - mu_nd)^2 of the components whose
        :attr:`table` rows are ``table_rows``, at the (uncentred) ``points``: one (m, k)
        pass per dim (4 times faster than an (m, k, D) tensor, and no more memory)."""
        d = self.z_dim
        out = table_rows[:, 2 * d].expand(points.shape[0], -1)
        if torch.is_grad_enabled() and points.requires_grad:  # autograd (the full sum)
            for j in range(d):
                out = out + (points[:, j, None] - table_rows[:, d + j]).square() * table_rows[:, j]
            return out
        out = out.clone()
        for j in range(d):
            diff = points[:, j, None] - table_rows[:, d + j]
            out.addcmul_(diff.square_(), table_rows[:, j])
        return out

    def terms(
        self,
        points: torch.Tensor,
        ids: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        box_centre: torch.Tensor | None = None,
        upper: torch.Tensor | None = None,
    ) -> list[Terms]:
        """The log densities of the components ``ids`` (all when None) at the (m, D)
        ``points``, in up to three groups: the expanded form centred on :attr:`centre`
        where its rounding bound is at most :data:`REFINE_ABOVE`; else, given a
        ``box_centre`` (of the points' box), the expanded form centred on it where that
        bound is; directly for the rest. Given ``upper``, (k,) upper bounds of the terms
        over the points, the expanded form is also kept where its bound is no larger than
        the direct evaluation's, ``(D + 8) u (|t_n| + 3 S_n)`` with ``|t_n| >= -upper_n`` (points
        far out in units of the scales). ``w``, ``features`` (the points centred on
        :attr:`centre` and :func:`_features` of them) and ``rows`` (the components'
        :attr:`rows`) are derived when not given."""
        if w is None:
            w = points - self.centre
        if rows is None:
            rows = self.rows if ids is None else self.rows.index_select(0, ids)
        if features is None:
            features = _features(w)
        d = self.z_dim
        widest = (4 * d + 14) * float(self._widest_a @ w.detach().square().amax(0))
        if _U * (widest + self._widest_const) <= REFINE_ABOVE:  # e_n for every component
            return [Terms(features @ rows.T, rows, w, None, None)]
        const = self.rounding_const if ids is None else self.rounding_const.index_select(0, ids)
        err = self.rounding_bound(w, rows, const)
        over = err > REFINE_ABOVE
        if not bool(over.any()):
            return [Terms(features @ rows.T, rows, w, None, None)]
        size = self.log_scale_size if ids is None else self.log_scale_size.index_select(0, ids)
        allowed = None
        if upper is not None:  # what a direct evaluation could not beat
            allowed = self.direct_rounding((-upper).clamp(min=0), size)
            allowed = allowed.clamp(max=torch.finfo(allowed.dtype).max)  # inf only for err
            over &= err > allowed
        out = []
        smooth = (~over).nonzero().squeeze(1)
        if smooth.numel():
            part = rows.index_select(0, smooth)
            out.append(Terms(features @ part.T, part, w, err.index_select(0, smooth), None))
        pos = over.nonzero().squeeze(1)
        components = pos if ids is None else ids.index_select(0, pos)
        table_rows = self.table.index_select(0, components)
        size = size.index_select(0, pos)
        if box_centre is not None:  # centred on the box: the spread about it, not about all
            local, spread = _rows_at(table_rows, box_centre)
            w_local = points - box_centre
            err = self.rounding_bound(w_local, local, self._rounding_const(spread, size))
            fine = err <= REFINE_ABOVE
            if allowed is not None:
                fine |= err <= allowed.index_select(0, pos)
            if bool(fine.any()):
                near = fine.nonzero().squeeze(1)
                part = local.index_select(0, near)
                err = err.index_select(0, near)
                out.append(Terms(_features(w_local) @ part.T, part, w_local, err, None))
                far = (~fine).nonzero().squeeze(1)
                table_rows, size = table_rows.index_select(0, far), size.index_select(0, far)
        if table_rows.shape[0]:
            out.append(Terms(self.direct(points, table_rows), table_rows, None, None, size))
        return out

    def log_sum(self, points: torch.Tensor) -> torch.Tensor:
        """log sum_n N(z_m; mu_n, sigma_n) over every component, for (m, D) float64 points
        (differentiable by autograd, to any order)."""
        sums = [_logsumexp(t.logits) for t in self.terms(points)]
        return _log_add(sums)

    def lower_sum(self, terms: list[Terms]) -> torch.Tensor:
        """A lower bound of the exact log-sum of the densities that ``terms`` approximate:
        each term lowered by its rounding bound, the log-sum-exp's own rounding subtracted."""
        sums = []
        for t in terms:
            if t.size is not None:  # computed directly
                err = self.direct_rounding(t.logits.abs(), t.size)
                sums.append(torch.logsumexp(t.logits - err, -1))
            elif t.err is None or t.err.numel() == 0 or float(t.err.max()) <= REFINE_ABOVE:
                sums.append(torch.logsumexp(t.logits, -1) - REFINE_ABOVE)
            else:
                sums.append(torch.logsumexp(t.logits - t.err.clamp(min=REFINE_ABOVE), -1))
        low = _log_add(sums)
        k = sum(t.logits.shape[1] for t in terms)
        return low - _U * (4 * low.abs() + k + 4)

    def combine(
        self, points: torch.Tensor, terms: list[Terms], with_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log sum_n exp(t_n) over ``terms`` and, ``with_grad``, its gradient
        sum_n s_n d t_n / dz (s the softmax): 2 w a_n + b_n from the expanded form's rows,
        2 a_n (z - mu_n) for the directly computed terms."""
        sums = [torch.logsumexp(t.logits, -1) for t in terms]
        total = _log_add(sums)
        if not with_grad:
            return total, None
        d = self.z_dim
        grad = points.new_zeros(points.shape[0], d)
        for t in terms:
            share = (t.logits - total[:, None]).exp_()
            if t.w is None:
                grad += self._direct_grad(points, share, t.rows)
            else:
                ab = share @ t.rows[:, : 2 * d]
                grad += 2 * t.w * ab[:, :d] + ab[:, d:]
        return total, grad

    def _direct_grad(
        self, points: torch.Tensor, share: torch.Tensor, table_rows: torch.Tensor
    ) -> torch.Tensor:
        """sum_k share_mk 2 a_kd (z_md - mu_kd), one (m, k) pass per dim."""
        d = self.z_dim
        grad = points.new_empty(points.shape[0], d)
        for j in range(d):
            diff = points[:, j, None] - table_rows[:, d + j]
            grad[:, j] = diff.mul_(share) @ table_rows[:, j]
        return grad.mul_(2)


class PrunedDiagonalMixture(DiagonalLogDensities):
    """``log sum_n N(z; loc_n, diag scale_n^2)`` (no 1/N) for (M, D) points, pruned.

    Args:
        loc, scale: (N, D) components; kept in float64.
        tolerance: see the module docstring; 0 would prune nothing (use the dense sum).
        leaf_size, first_block, grad_leaf_size: kd-tree shape (see the module constants).
        dense_above: a call whose pilot keeps more than this share of its (point,
            component) pairs sums them all densely instead (:meth:`_tree_or_dense`; None:
            ``DENSE_ABOVE`` as it is when the mixture is built).
    """

    def __init__(
        self,
        loc: torch.Tensor,
        scale: torch.Tensor,
        tolerance: float = DEFAULT_TOLERANCE,
        leaf_size: int = LEAF_SIZE,
        first_block: int = FIRST_BLOCK,
        grad_leaf_size: int = GRAD_LEAF_SIZE,
        dense_above: float | None = None,
    ) -> None:
        if not 0 < tolerance < 1:
            raise ValueError(f"tolerance must lie in (0, 1), got {tolerance!r}")
        super().__init__(loc, scale)
        loc, scale = loc.double(), scale.double()
        n = loc.shape[0]
        # bounds: loc and 1/scale in float32 where they fit (half the memory traffic of the
        # bound, made rigorous by _upper's margins), the log normalizer in float64; each
        # contiguous, so a node gathers its rows of each and the bound streams over them.
        inv_scale = scale.reciprocal()
        log_norm = self.table[:, -1].contiguous()
        self.max_abs_loc = float(loc.abs().max())
        self.max_inv_scale = float(inv_scale.max())
        self.bounds32 = (
            (loc.float(), inv_scale.float(), log_norm)
            if self.max_inv_scale < 1e30 and self.max_abs_loc < 1e30
            else None
        )
        self._bounds64 = None if self.bounds32 is not None else (loc, inv_scale, log_norm)
        self.split_weight = scale.median(0).values.reciprocal()
        self.cut = math.log(tolerance) - math.log(n)
        self.leaf_size = leaf_size
        self.grad_leaf_size = min(grad_leaf_size, leaf_size)
        self.first_block = max(first_block, leaf_size)
        self.dense_above = DENSE_ABOVE if dense_above is None else float(dense_above)
        self.dense_calls = 0
        """Calls summed densely because pruning would not have paid."""
        self.kept_pairs = 0
        """(point, component) pairs summed exactly by the calls so far."""

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_n N(z_m; mu_n, sigma_n) for z of shape (M, D), float64; differentiable in
        z (first order) when z requires grad."""
        if z.requires_grad and torch.is_grad_enabled():
            return _PrunedLogSumExp.apply(z, self)
        return self.evaluate(z.detach().double(), with_grad=False)[0]

    def evaluate(
        self, points: torch.Tensor, with_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The sums for (M, D) float64 points and, ``with_grad``, their gradients (M, D)
        (see :meth:`DiagonalLogDensities.combine`)."""
        m = points.shape[0]
        grads = points.new_empty(m, self.z_dim) if with_grad else None
        if m == 0:
            return points.new_empty(0), grads
        finite = torch.isfinite(points).all(-1)
        if bool(finite.all()):
            return self._tree_or_dense(points, with_grad)
        # a nan or inf is summed densely: in a box it would spoil its neighbours' bounds
        bad, good = (~finite).nonzero().squeeze(1), finite.nonzero().squeeze(1)
        out = points.new_empty(m)
        out[bad], bad_grads = self._exact(points[bad], with_grad)
        # an infinite coordinate (and no nan) has density 0, where inf * 0 made a nan
        out[bad[~torch.isnan(points[bad]).any(-1)]] = -math.inf
        if grads is not None:
            grads[bad] = bad_grads
        if good.numel():
            values, good_grads = self._tree_or_dense(points[good], with_grad)
            out[good] = values
            if grads is not None:
                grads[good] = good_grads
        return out, grads

    def _tree_or_dense(
        self, points: torch.Tensor, with_grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The kd-tree's sums, unless its first leaves (``PILOT_POINTS`` points or more)
        kept more than ``dense_above`` of their pairs: then every pair, densely. The choice
        depends on the points alone (never on timings or earlier calls), and both ways
        give a value within the guarantee, the dense one within eps of log q."""
        kept = self.kept_pairs
        out = self._tree(points, with_grad, give_up=True)
        if out is not None:
            return out
        self.kept_pairs = kept
        self.dense_calls += 1
        return self._dense(points, with_grad)

    def _dense(self, points: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, Any]:
        """Every component summed, over chunks of about 2^22 (point, component) pairs."""
        rows = max(1, 2**22 // self.num_components)
        self.kept_pairs += points.shape[0] * self.num_components
        parts = [self._exact(points[s : s + rows], with_grad) for s in range(0, len(points), rows)]
        values = torch.cat([v for v, _ in parts])
        return values, torch.cat([g for _, g in parts]) if with_grad else None

    def bounds64(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """loc, 1/scale and the log normalizer in float64, for points so far out that
        float32 squares could overflow (built on first use, from the exact terms: 1/scale
        as sqrt(-2 a), within 2 u of it, inside the bound's margins)."""
        if self._bounds64 is None:
            d = self.z_dim
            a = self.table[:, :d]
            loc, log_norm = self.table[:, d : 2 * d].contiguous(), self.table[:, 2 * d]
            self._bounds64 = (loc, (-2 * a).sqrt(), log_norm.contiguous())
        return self._bounds64

    def _exact(self, p: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The log-sum over every component for points ``p``, and its gradient."""
        return self.combine(p, self.terms(p), with_grad)

    def _tree(
        self, points: torch.Tensor, with_grad: bool, give_up: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The pruned sums; ``give_up``: None if the first leaves to hold ``PILOT_POINTS``
        points in all (the call not yet done) kept more than ``dense_above`` of their
        pairs."""
        device = points.device
        done_points, done_pairs = 0, 0
        values, grads, order = [], [], []
        centred = points - self.centre
        feats = _features(centred)
        # float32 bounds unless a gap in units of a scale could overflow its square there
        reach = (self.max_abs_loc + float(points.abs().max())) * self.max_inv_scale
        bounds = self.bounds32 if self.bounds32 is not None and reach < 1e18 else self.bounds64()
        stack = [
            (
                torch.arange(points.shape[0], device=device),
                torch.arange(self.num_components, device=device),
                bounds,
                True,
            )
        ]
        while stack:
            idx, cand, bounds, bound_here = stack.pop()
            p = points[idx]
            lo, hi = p.amin(0), p.amax(0)
            leaf = idx.numel() <= (self.grad_leaf_size if with_grad else self.leaf_size)
            bound_next = True
            if idx.numel() <= self.first_block and (bound_here or leaf):
                w, f, mid = centred[idx], feats[idx], 0.5 * (lo + hi)
                upper = self._upper(bounds, lo, hi)
                k = min(LEAF_PROBE if leaf else NODE_PROBE, cand.numel())
                probe = torch.zeros_like(upper, dtype=torch.bool)
                probe[upper.topk(k).indices] = True
                probe_ids = cand[probe]
                probe_rows = self.rows.index_select(0, probe_ids)
                probe_terms = self.terms(p, probe_ids, w, f, probe_rows, mid, upper[probe])
                # a true lower bound of every point's total, whatever the terms' rounding
                lower = self.lower_sum(probe_terms)
                keep = upper >= lower.min() + self.cut
                if leaf:  # the probe's terms reused, the other survivors added
                    others = keep & ~probe
                    rest = cand[others]
                    self.kept_pairs += (k + rest.numel()) * idx.numel()
                    done_points += idx.numel()
                    done_pairs += (k + rest.numel()) * idx.numel()
                    if give_up and done_points >= PILOT_POINTS:  # decided once
                        give_up = False
                        share = done_pairs / (done_points * self.num_components)
                        if done_points < points.shape[0] and share > self.dense_above:
                            return None
                    terms = probe_terms
                    if rest.numel():
                        terms = terms + self.terms(p, rest, w, f, None, mid, upper[others])
                    total, grad = self.combine(p, terms, with_grad)
                    values.append(total)
                    grads.append(grad)
                    order.append(idx)
                    continue
                where = keep.nonzero().squeeze(1)
                # a bound that dropped little is skipped at the next level (not the leaves)
                bound_next = where.numel() < SKIP_AFTER * cand.numel()
                cand = cand[where]
                bounds = tuple(b.index_select(0, where) for b in bounds)
            dim = ((hi - lo) * self.split_weight).argmax()
            half = idx[p[:, dim].argsort()]
            h = idx.numel() // 2
            stack += [(half[:h], cand, bounds, bound_next), (half[h:], cand, bounds, bound_next)]
        back = torch.cat(order).argsort()
        return torch.cat(values)[back], torch.cat(grads)[back] if with_grad else None

    def _upper(
        self,
        bounds: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        lo: torch.Tensor,
        hi: torch.Tensor,
    ) -> torch.Tensor:
        """An upper bound (float64) of each component's log density over the box [lo, hi].

        The gaps are computed in the bounds' dtype (float32 where it fits) and made no
        larger than the exact ones: each |mu - c| - r is lowered by 8 u (max |mu| + max |c|
        + max r), more than the absolute rounding error of the two subtractions and of
        rounding mu, c and r (u the unit roundoff), and the sum of squares is lowered by
        (D + 8) u relative to itself, more than the relative error of the product by
        1/sigma, the squares and a sum of D non-negative terms. So the bound is at least
        the exact one: pruning stays exact, only slightly less tight (relative 1e-5 at
        D = 50 in float32).
        """
        loc, inv_scale, log_norm = bounds
        u = torch.finfo(loc.dtype).eps / 2
        centre, radius = 0.5 * (lo + hi), 0.5 * (hi - lo)
        slack = 8 * u * (self.max_abs_loc + float(centre.abs().max()) + float(radius.max()))
        gap = (loc - centre.to(loc.dtype)).abs_().sub_((radius + slack).to(loc.dtype))
        squares = gap.clamp_(min=0).mul_(inv_scale).square_().sum(-1)
        return log_norm - 0.5 * (1 - (self.z_dim + 8) * u) * squares.double()


def centred_rows(loc: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean c of the (N, D) float64 ``loc`` and rows (N, 2 D + 1) of the expanded
    quadratic form in coordinates centred on it: log N(c + w; mu_n, sigma_n) =
    [w^2, w, 1] . [-1 / (2 sigma_n^2), delta_n / sigma_n^2, l_n - 1/2 sum_d delta_nd^2 /
    sigma_nd^2], delta_n = mu_n - c and l_n the log normalizer. Centring keeps the terms
    that cancel of the size of (delta / sigma)^2, not (mu / sigma)^2; where even that is
    too large, :class:`DiagonalLogDensities` computes the terms otherwise."""
    terms = DiagonalLogDensities(loc, scale)
    return terms.centre, terms.rows


def _rows_at(table: torch.Tensor, centre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [a_n, delta_n / sigma_n^2, l_n - B_n] of the expanded form centred on
    ``centre`` (delta_n = mu_n - centre) from :attr:`DiagonalLogDensities.table` rows
    [a_n, mu_n, l_n], and B_n = 1/2 sum_d delta_nd^2 / sigma_nd^2."""
    d = centre.shape[0]
    a, log_norm = table[:, :d], table[:, 2 * d]
    delta, precision = table[:, d : 2 * d] - centre, -2 * a
    spread = 0.5 * (delta.square() * precision).sum(-1)
    return torch.cat([a, delta * precision, (log_norm - spread)[:, None]], 1), spread


def _log_add(sums: list[torch.Tensor]) -> torch.Tensor:
    """log sum_i exp(sums_i) of per-group log-sums of one set of points."""
    return sums[0] if len(sums) == 1 else torch.stack(sums).logsumexp(0)


def _logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim; in place (over ``logits``) unless autograd records."""
    if torch.is_grad_enabled() and logits.requires_grad:
        return torch.logsumexp(logits, -1)
    top = logits.amax(-1, keepdim=True).nan_to_num_(0.0, 0.0, 0.0)  # -inf rows stay -inf
    return logits.sub_(top).exp_().sum(-1).log_().add_(top.squeeze(-1))


def _features(w: torch.Tensor) -> torch.Tensor:
    """[w^2, w, 1]: log N(c + w; mu_n, sigma_n) = features . rows_n, c the centre."""
    return torch.cat([w.pow(2), w, w.new_ones(w.shape[0], 1)], 1)


class _PrunedLogSumExp(torch.autograd.Function):
    """The pruned sum with its analytic gradient (first order only: a second derivative
    raises instead of coming out as zero)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, mixture: PrunedDiagonalMixture) -> torch.Tensor:
        values, grads = mixture.evaluate(z.detach().double(), with_grad=True)
        ctx.save_for_backward(grads)
        ctx.dtype = z.dtype
        return values

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        if torch.is_grad_enabled():  # create_graph=True: the gradient would have no graph
            raise RuntimeError(
                "the pruned aggregate's log_prob has first derivatives only; for second "
                "derivatives (create_graph=True) sum every component: tolerance=0"
            )
        (grads,) = ctx.saved_tensors
        return (grad_out.unsqueeze(-1) * grads).to(ctx.dtype), None
