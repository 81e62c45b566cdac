"""Exact log q(z_b | x_n) of the IAF flow guide for all (point, datum) pairs, one pass each.

The flow guide (:class:`~pyrovae.guides.FlowEncoder`) is q(z | x) = f_K o ... o f_1 applied to
N(loc(x), diag(scale(x)^2)), each f_k an affine autoregressive step
y_i = x_i exp(s_i(x_<i, h)) + m_i(x_<i, h) whose m and s come from a MADE network of x and the
encoder's hidden layer h (Improving Variational Inference with Inverse Autoregressive Flow,
Kingma et al., 2016, https://arxiv.org/abs/1606.04934; MADE: Masked Autoencoder for
Distribution Estimation, Germain et al., 2015, https://arxiv.org/abs/1502.03509). Its density
at an arbitrary z inverts each step, one coordinate at a time in the network's order. Pyro's
inverse runs the whole network once per coordinate (z_dim passes, each with h concatenated
to the input); the aggregate q(z) = 1/N sum_n q(z | x_n) needs it for every pair.

Here each hidden unit is computed once, at the first step at which every input it depends
on (its MADE degree, read from the masks) is solved, so an inverse costs one pass of the
network; the context's part of the first layer, W_h h_n + b, and loc_n, scale_n are
computed once per datum (the encoder runs once per datum, cached while its parameters are
unchanged) and shared by every point paired with it. The values are those of
``encoder(x_n).log_prob(z)`` up to float rounding (the same sums in another order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import AffineAutoregressive, Permute
from pyro.distributions.transforms.affine_autoregressive import ConditionalAffineAutoregressive
from pyro.nn.auto_reg_nn import ConditionalAutoRegressiveNN
from torch import nn

from pyrovae.analysis.sources.helpers import one_cpu_thread

__all__ = ["FlowPairs", "supports"]

LOG_2PI = math.log(2 * math.pi)


def supports(encoder: nn.Module) -> bool:
    """True for pyrovae's flow guide with affine (non-'stable') MADE steps: the encoders
    :class:`FlowPairs` scores. Any other guide is scored through its own ``log_prob``."""
    from pyrovae.guides import FlowEncoder

    if type(encoder) is not FlowEncoder:
        return False
    for flow in encoder.flows:
        arn = getattr(flow, "nn", None)
        if type(flow) is not ConditionalAffineAutoregressive:
            return False
        if type(arn) is not ConditionalAutoRegressiveNN or arn.skip_layer is not None:
            return False
        if list(arn.param_dims) != [1, 1] or flow.kwargs.get("stable", False):
            return False
        if type(arn.f) not in (nn.ReLU, nn.Tanh, nn.ELU, nn.Softplus, nn.GELU):
            return False
        if not _is_autoregressive(arn):
            return False
    return True


def _degrees(arn: ConditionalAutoRegressiveNN) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per hidden layer, the number of solved coordinates each unit needs (its degree,
    counted in the network's order), and per coordinate the most that its mean and log
    scale need."""
    c, d = arn.context_dim, arn.input_dim
    pos = torch.argsort(arn.permutation.cpu())  # the step at which coordinate i is solved
    degrees = []
    for i, layer in enumerate(arn.layers[:-1]):
        mask = layer.mask.cpu().bool()
        if i == 0:
            deg = torch.where(mask[:, c:], (pos + 1)[None, :], 0).amax(1)
        else:
            deg = torch.where(mask, degrees[-1][None, :], 0).amax(1)
        degrees.append(deg)
    mask = arn.layers[-1].mask.cpu().bool()
    need = torch.where(mask, degrees[-1][None, :], 0).amax(1)
    return degrees, torch.maximum(need[:d], need[d:])


def _is_autoregressive(arn: ConditionalAutoRegressiveNN) -> bool:
    _, need = _degrees(arn)
    pos = torch.argsort(arn.permutation.cpu())
    return bool((need <= pos).all())


class _Step:
    """One affine MADE step prepared for a one-pass inverse: hidden units sorted by degree,
    inputs in solve order, the output rows of each coordinate stacked (mean, log scale)."""

    def __init__(self, flow: ConditionalAffineAutoregressive) -> None:
        arn = flow.nn
        c, d = arn.context_dim, arn.input_dim
        perm = arn.permutation
        self.d = d
        self.perm = perm
        self.f = arn.f
        kwargs = flow.kwargs
        self.clip = (kwargs.get("log_scale_min_clip", -5.0), kwargs.get("log_scale_max_clip", 3.0))
        degrees, _ = _degrees(arn)
        steps = torch.arange(d)
        self.weights: list[torch.Tensor] = []
        self.biases: list[torch.Tensor] = []
        self.ends: list[list[int]] = []  # units of degree <= t are [0, ends[t])
        previous = None
        for i, (layer, deg) in enumerate(zip(arn.layers[:-1], degrees, strict=True)):
            order = torch.argsort(deg, stable=True).to(perm.device)
            w = (layer.weight * layer.mask)[order]
            if i == 0:
                self.context_weight = w[:, :c]
                w = w[:, c:][:, perm]
            else:
                w = w[:, previous]
            self.weights.append(w.contiguous())
            self.biases.append(layer.bias[order])
            self.ends.append(torch.searchsorted(deg[order.cpu()], steps, right=True).tolist())
            previous = order
        last = arn.layers[-1]
        w = (last.weight * last.mask)[:, previous]
        self.out_weight = torch.stack([w[:d][perm], w[d:][perm]], 1).contiguous()  # (d, 2, H)
        self.out_bias = torch.stack([last.bias[:d][perm], last.bias[d:][perm]], 1)[..., None]

    def context(self, h: torch.Tensor) -> torch.Tensor:
        """W_h h_n + b of the first layer for each datum, transposed: (H_0, N)."""
        return (h @ self.context_weight.T + self.biases[0]).T

    def plan(self, num_pairs: int, like: torch.Tensor, block: int = 8) -> _Plan:
        """Buffers for ``num_pairs`` pairs and the views each operation reads and writes
        (built once per chunk size: slicing costs as much as the arithmetic).

        The steps are solved in blocks of ``block`` coordinates, as in a blocked triangular
        solve: at the start of a block, every unit (and output) the block will compute gets
        the contribution of all inputs already known in one matrix product; each step then
        adds only that of the inputs solved within the block. The large inputs are thus read
        once per block rather than once per coordinate.
        """
        d = self.d
        xs = like.new_zeros(d, num_pairs)
        hidden = [like.new_empty(w.shape[0], num_pairs) for w in self.weights]
        context = like.new_empty(self.weights[0].shape[0], num_pairs)
        partial = like.new_empty(block, 2, num_pairs)
        inputs = [xs, *hidden[:-1]]

        def ends(i: int, t: int) -> int:  # units of layer i (-1: coordinates) of degree <= t
            if t < 0:
                return 0
            return t + 1 if i < 0 else self.ends[i][t]

        blocks = []
        for t0 in range(0, d, block):
            t1 = min(d, t0 + block)
            start = []  # (add, weight, input, out): out = add + weight @ input
            for i, w in enumerate(self.weights):
                s, e = ends(i, t0 - 1), ends(i, t1 - 1)
                if e == s:
                    continue
                k = ends(i - 1, t0 - 1)  # inputs known at the block's start
                add = context[s:e] if i == 0 else self.biases[i][s:e, None]
                start.append((add, w[s:e, :k], inputs[i][:k], hidden[i][s:e]))
            k = ends(len(self.weights) - 1, t0 - 1)
            out_w = self.out_weight[t0:t1, :, :k].reshape((t1 - t0) * 2, k)
            out_b = self.out_bias[t0:t1].reshape((t1 - t0) * 2, 1)
            out = partial[: t1 - t0].view((t1 - t0) * 2, num_pairs)
            start.append((out_b, out_w, hidden[-1][:k], out))
            steps = []
            for t in range(t0, t1):
                ops = []  # (weight, input, out): out += weight @ input; then f
                for i, w in enumerate(self.weights):
                    s, e = ends(i, t - 1), ends(i, t)
                    if e == s:
                        continue
                    a, b = ends(i - 1, t0 - 1), ends(i - 1, t - 1 if i == 0 else t)
                    ops.append((w[s:e, a:b], inputs[i][a:b], hidden[i][s:e]))
                last = len(self.weights) - 1
                a, b = ends(last, t0 - 1), ends(last, t)
                tail = (self.out_weight[t, :, a:b], hidden[-1][a:b], partial[t - t0], xs[t])
                steps.append((ops, tail))
            blocks.append((start, steps))
        return _Plan(xs, context, like.new_empty(num_pairs), blocks)

    def inverse(self, plan: _Plan, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x and sum_i log scale_i for y, laid out (d, P) in this step's solve order;
        ``plan.context`` must hold the first layer's context terms of each pair."""
        lo, hi = self.clip
        relu = type(self.f) is nn.ReLU
        log_det = plan.log_det.zero_()
        t = 0
        for start, steps in plan.blocks:
            for add, w, inp, out in start:
                if w.shape[1]:
                    torch.addmm(add, w, inp, out=out)
                else:
                    out.copy_(add.expand_as(out))
            for ops, (w, h, part, x) in steps:
                for w_in, inp, dst in ops:
                    if w_in.shape[1]:
                        dst.addmm_(w_in, inp)
                    if relu:
                        dst.relu_()
                    else:
                        dst.copy_(self.f(dst))
                if w.shape[1]:
                    part.addmm_(w, h)
                log_scale = part[1].clamp_(lo, hi)
                log_det.add_(log_scale)
                torch.sub(ys[t], part[0], out=x)
                x.mul_(log_scale.neg_().exp_())
                t += 1
        return plan.xs, log_det


@dataclass
class _Plan:
    """Buffers of one step's inverse for a chunk of pairs, and the views of each operation."""

    xs: torch.Tensor  # (d, P): x in solve order
    context: torch.Tensor  # (H_0, P): first-layer context terms of each pair
    log_det: torch.Tensor  # (P,)
    blocks: list[tuple[list[tuple[torch.Tensor, ...]], list[tuple[Any, ...]]]]


@dataclass
class _Tables:
    """What the encoder gives per datum, transposed to (features, N)."""

    loc: torch.Tensor  # (d, N)
    inv_scale: torch.Tensor  # (d, N)
    log_norm: torch.Tensor  # (N,): sum_i log scale_i + d/2 log 2 pi
    contexts: list[torch.Tensor]  # per flow step, (H_0, N)


class FlowPairs:
    """log q(z_b | x_n) of the flow guide for all pairs, for the exact aggregate q(z).

    Args:
        encoder: a :class:`~pyrovae.guides.FlowEncoder` (see :func:`supports`).
        x, y: the data (N, x_dim) and, for a CVAE, one-hot labels (N, y_dim).
        batch_size: data per encoder pass when the tables are built.
        pair_chunk: (point, datum) pairs per step; about 4096 keeps a step's buffers in a
            CPU core's L2 cache.
        block: coordinates solved per block (see :meth:`_Step.plan`); the values do not
            depend on it beyond float rounding.
    """

    def __init__(
        self,
        encoder: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None,
        batch_size: int,
        pair_chunk: int = 4096,
        block: int = 8,
    ) -> None:
        if not supports(encoder):
            raise ValueError(
                f"FlowPairs scores pyrovae's FlowEncoder with affine MADE steps, got "
                f"{type(encoder).__name__}; score other guides with their log_prob"
            )
        self.encoder = encoder
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.pair_chunk = pair_chunk
        self.block = block
        self._steps: list[_Step] | None = None
        self._gathers: list[torch.Tensor] = []
        self._tables: _Tables | None = None
        self._key: tuple | None = None
        self._plans: dict[tuple[int, int], _Plan] = {}

    def _cache_key(self) -> tuple:
        params = tuple((p.data_ptr(), p._version) for p in self.encoder.parameters())
        return (self.x.device, self.x.data_ptr(), self.x._version, params)

    def _prepare(self) -> tuple[list[_Step], _Tables]:
        """The sorted steps and per-datum tables, rebuilt when the encoder's parameters
        change (their version counters move with every in-place update)."""
        key = self._cache_key()
        if self._key == key and self._steps is not None and self._tables is not None:
            return self._steps, self._tables
        enc = self.encoder
        steps = [_Step(flow) for flow in enc.flows]
        locs, inv_scales, log_norms, hs = [], [], [], []
        for start in range(0, self.x.shape[0], self.batch_size):
            xb = self.x[start : start + self.batch_size]
            yb = None if self.y is None else self.y[start : start + self.batch_size]
            loc, scale, h = enc.encode(xb, yb)
            locs.append(loc)
            inv_scales.append(scale.reciprocal())
            log_norms.append(scale.log().sum(-1) + 0.5 * enc.z_dim * LOG_2PI)
            hs.append(h)
        h = torch.cat(hs)
        tables = _Tables(
            loc=torch.cat(locs).T.contiguous(),
            inv_scale=torch.cat(inv_scales).T.contiguous(),
            log_norm=torch.cat(log_norms),
            contexts=[step.context(h).contiguous() for step in steps],
        )
        self._gathers = self._row_gathers(steps)
        self._steps, self._tables, self._key = steps, tables, key
        self._plans = {}
        return steps, tables

    def _row_gathers(self, steps: list[_Step]) -> list[torch.Tensor]:
        """Row indices taking the solve-order output of step k to the solve order of step
        k - 1 (through the permutation between them), and the last to coordinate order."""
        enc = self.encoder
        q = enc(self.x[:1], None if self.y is None else self.y[:1])
        transforms = list(q.transforms)
        flows = [t for t in transforms if isinstance(t, AffineAutoregressive)]
        if len(flows) != len(steps) or not isinstance(q.base_dist, dist.Independent):
            raise ValueError("the flow guide's transforms do not match its flows")
        gathers = []
        # walk the transforms backwards: index[j] = row of the current buffer holding
        # coordinate j of the current vector
        index: torch.Tensor | None = None
        k = len(steps)
        for t in reversed(transforms):
            if isinstance(t, AffineAutoregressive):
                k -= 1
                perm = steps[k].perm
                if index is not None:
                    gathers.append(index[perm])  # rows in this step's solve order
                index = torch.argsort(perm)  # coordinate j sits in row pos[j]
            elif isinstance(t, Permute):
                if index is None:
                    raise ValueError("the flow guide ends in a permutation")
                index = index[torch.argsort(t.permutation)]  # x = y[..., inverse perm]
            else:
                raise ValueError(f"unexpected transform {type(t).__name__} in the flow guide")
        gathers.append(index)
        return gathers

    def log_prob(self, z: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """log q(z_b | x_n) for points z (B, d) and data n in [start, stop): (B, stop - start).

        Not differentiable (in-place buffers): call it under ``torch.no_grad()``."""
        steps, tables = self._prepare()
        b, d = z.shape
        m = stop - start
        num_pairs = b * m
        y = z.to(tables.loc.dtype).T  # (d, B)
        ys = y[steps[-1].perm][:, :, None].expand(d, b, m).reshape(d, num_pairs)
        log_q = -tables.log_norm[start:stop].expand(b, m).reshape(-1)
        for k in range(len(steps) - 1, -1, -1):
            plan = self._plan(k, num_pairs, ys)
            plan.context.view(-1, b, m).copy_(tables.contexts[k][:, None, start:stop])
            xs, log_det = steps[k].inverse(plan, ys)
            log_q = log_q - log_det
            ys = xs[self._gathers[len(steps) - 1 - k]]
        u = (ys.view(d, b, m) - tables.loc[:, None, start:stop]) * tables.inv_scale[
            :, None, start:stop
        ]
        log_q = log_q - 0.5 * u.pow(2).sum(0).reshape(-1)
        return log_q.view(b, m)

    def _plan(self, k: int, num_pairs: int, like: torch.Tensor) -> _Plan:
        key = (k, num_pairs)
        plan = self._plans.get(key)
        if plan is None or plan.xs.device != like.device or plan.xs.dtype != like.dtype:
            if len(self._plans) > 4 * len(self.encoder.flows):
                self._plans.clear()
            plan = self._plans[key] = self._steps[k].plan(num_pairs, like, self.block)
        return plan

    def logsumexp(self, z: torch.Tensor) -> torch.Tensor:
        """log sum_n q(z_b | x_n) for points z (B, d), in float64: (B,)."""
        n = self.x.shape[0]
        m = min(n, self.pair_chunk)
        rows = max(1, self.pair_chunk // m)
        out = []
        with one_cpu_thread(z.device):  # thousands of small steps: threads only wait
            for p in range(0, z.shape[0], rows):
                chunk = z[p : p + rows]
                total = None
                for start in range(0, n, m):
                    log_q = self.log_prob(chunk, start, min(n, start + m))
                    part = torch.logsumexp(log_q.double(), -1)
                    total = part if total is None else torch.logaddexp(total, part)
                out.append(total)
        return torch.cat(out)
