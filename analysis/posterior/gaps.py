"""The inference gap of a VAE split into its approximation and amortization parts.

For a datum x, the guide q(z | x) of family Q and the best member q* of that family,

    log p(x) - ELBO(q) = [log p(x) - ELBO(q*)] + [ELBO(q*) - ELBO(q)],
      total gap          approximation gap       amortization gap

with ELBO(r) = E_r[log p(x | z) + log p(z) - log r(z)] = log p(x) - KL(r || p(z | x)) and
q* = argmax_{r in Q} ELBO(r): the approximation gap is what the family cannot express,
the amortization gap what the encoder loses by predicting q from x instead of fitting it
to x. q* is fitted per datum by stochastic variational inference on the model itself,
conditioned on x, with decoder and prior frozen (only q*'s parameters are optimized),
started at the amortized q (so ELBO(q*) starts at ELBO(q) and rises). log p(x) comes from
AIS unless given. Inference Suboptimality in Variational Autoencoders (Cremer, Li &
Duvenaud, 2018), https://arxiv.org/abs/1801.03558

Families: ``"diagonal"`` is Pyro's ``AutoDiagonalNormal``, one guide over the whole
batch's z (B, z_dim), exact per datum since both the posterior given the frozen decoder
and the guide factorize over data. ``"flow"`` is an ``AutoNormalizingFlow`` per datum:
a learnable diagonal affine map followed by inverse autoregressive flows, copies of the
encoder's own flows with their context fixed at the datum's hidden state for a flow
encoder (so q* starts exactly at q), or new zero-initialized (identity) IAF steps
otherwise. Every estimate can fall short of its target: q* is only as good as ``steps``
allow (so the approximation gap is overstated and the amortization gap understated) and
AIS gives a stochastic lower bound of log p(x) (understating the approximation gap).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyro
import torch
from pyro.infer.autoguide import AutoContinuous
from torch import nn

from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.posterior.local_guides import (
    OptimalGuide,
    _guide_pairs,
    _loss_fn,
    guide_elbo,
)
from pyrovae.analysis.posterior.nuts import frozen
from pyrovae.analysis.progress import progress_bar
from pyrovae.analysis.sources.encodings import check_data
from pyrovae.analysis.sources.helpers import is_diagonal_normal, seeded
from pyrovae.nets import check_positive_int

__all__ = [
    "FAMILIES",
    "OptimalGuide",
    "GapResult",
    "optimal_local_guide",
    "guide_elbo",
    "inference_gaps",
    "svi_step_timer",
    "elbo_draw_timer",
]

FAMILIES = ("diagonal", "flow")
LR_DECAY = 0.01
"""The learning rate decays geometrically to this fraction of ``lr`` over the SVI steps,
which damps the optimizer's jitter around q* at the end."""
SELECT_DRAWS = 256
"""Draws per datum that decide, after the fit, whether the fitted q* or its starting point
(the amortized guide, when it is in the family) has the higher ELBO."""
GAP_NAMES = (
    "log_px",
    "elbo_amortized",
    "elbo_optimal",
    "approximation_gap",
    "amortization_gap",
    "total_gap",
)


# --------------------------------------------------------------------------- flow parts


# --------------------------------------------------------------------------- q*


def svi_step_timer(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    family: str = "diagonal",
    num_particles: int = 8,
) -> Callable[[], float]:
    """A call that computes one gradient of the ELBO of q* over ``x`` (a group of data, as
    :func:`optimal_local_guide` fits it) and returns 1, for
    :func:`~pyrovae.analysis.cost.measure_rate`: SVI steps per second. Nothing is updated
    and the global RNG is left as it was."""
    x, y = x.detach(), None if y is None else y.detach()
    with seeded(0, x.device), pyro.settings.context(module_local_params=True):
        pairs = _guide_pairs(vae, x, y, family)
    loss_fn = _loss_fn(num_particles)
    params = [p for _, guide in pairs for p in guide.parameters()]

    def run() -> float:
        with seeded(0, x.device), pyro.settings.context(module_local_params=True):
            loss = sum(loss_fn.differentiable_loss(model, guide) for model, guide in pairs)
            torch.autograd.grad(loss, params, allow_unused=True)
        return 1.0

    return run


def elbo_draw_timer(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, num_draws: int = 64
) -> Callable[[], float]:
    """A call that draws ``num_draws`` ELBO terms of the amortized guide per datum of ``x``
    (as :func:`guide_elbo`) and returns their number, for
    :func:`~pyrovae.analysis.cost.measure_rate`; the global RNG is left as it was."""
    guide = frozen(vae, vae.guide)

    def run() -> float:
        with seeded(0, x.device):
            guide_elbo(vae, guide, x, y, num_draws)
        return float(num_draws * x.shape[0])

    return run


def _fit(
    pairs: list[tuple[Callable[[], None], AutoContinuous]],
    steps: int,
    lr: float,
    num_particles: int,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Maximize the ELBO of every (model, autoguide) pair over the autoguides' parameters
    only: Adam with the rate decaying to LR_DECAY * lr, and the parameters set at the end
    to their average over the second half of the steps (Polyak-Ruppert averaging, which
    removes most of the optimizer's jitter around q*). Returns the summed loss per step;
    ``on_step`` is called after each."""
    loss_fn = _loss_fn(num_particles)
    params = [p for _, guide in pairs for p in guide.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, LR_DECAY ** (1 / max(steps, 1)))
    losses = torch.empty(steps, dtype=torch.double)
    average = [p.detach().clone() for p in params]
    start = steps // 2
    for step in range(steps):
        loss = sum(loss_fn.differentiable_loss(model, guide) for model, guide in pairs)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.zeros_like(p) if g is None else g
        optimizer.step()
        schedule.step()
        losses[step] = float(loss.detach())
        if step >= start:
            with torch.no_grad():
                for mean, p in zip(average, params, strict=True):
                    mean += (p - mean) / (step - start + 1)
        if on_step is not None:
            on_step()
    with torch.no_grad():
        for mean, p in zip(average, params, strict=True):
            p.copy_(mean)
    return losses


def optimal_local_guide(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    family: str = "diagonal",
    *,
    steps: int = 500,
    lr: float = 0.05,
    num_particles: int = 8,
    seed: int | None = 0,
    progress: bool = False,
    on_step: Callable[[], None] | None = None,
) -> OptimalGuide:
    """Fit q*(z | x_n) = argmax_{r in family} ELBO(r) for every datum, decoder and prior frozen.

    SVI (Adam over the autoguides' parameters only, ``num_particles`` vectorized draws per
    step, the rate decaying to ``LR_DECAY * lr``, the last half of the iterates averaged)
    on ``vae.model`` conditioned on ``x``, whose only latent is z. The diagonal family is
    ``AutoDiagonalNormal`` over the whole batch, its mean and scale started at the
    amortized guide's (moment-matched for a flow guide); the flow family an
    ``AutoNormalizingFlow`` per datum (see the module docstring). A datum whose fitted q*
    has a lower ELBO than its starting point goes back to the start.

    Args:
        vae: the model; its parameters are not changed and accumulate no gradient.
        x: data as the model sees them, (B, x_dim).
        y: one-hot labels (B, y_dim) for a CVAE.
        family: ``"diagonal"`` or ``"flow"``.
        steps: SVI steps.
        lr: Adam's initial learning rate.
        num_particles: draws per datum per step for the ELBO's gradient.
        seed: seeds the fit (the global RNG is restored after); None uses it.
        progress: show progress over the SVI steps on stderr.
        on_step: called after every SVI step (e.g. a caller's progress bar over many fits).
            Neither changes the fit.
    """
    check_data(vae, x, y)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid families are {list(FAMILIES)}")
    check_positive_int("steps", steps)
    check_positive_int("num_particles", num_particles)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    x, y = x.detach(), None if y is None else y.detach()
    bar = progress_bar(steps, f"q* fit of {x.shape[0]} data", "SVI step", progress)

    def step_done() -> None:
        bar.update()
        if on_step is not None:
            on_step()

    with bar, seeded(seed, x.device), pyro.settings.context(module_local_params=True):
        pairs = _guide_pairs(vae, x, y, family)
        start = [[p.detach().clone() for p in guide.parameters()] for _, guide in pairs]
        losses = _fit(pairs, steps, lr, num_particles, on_step=step_done)
        optimal = OptimalGuide(vae, family, [g for _, g in pairs], losses, x, y)
        optimal.kept_start = _keep_better_start(optimal, start)
    return optimal


def _keep_better_start(optimal: OptimalGuide, start: list[list[torch.Tensor]]) -> torch.Tensor:
    """Set each datum's q* back to its starting point where that has the higher ELBO
    (both estimated from SELECT_DRAWS fresh draws): the amortized guide is a member of
    its own family, so q* should never be worse. Returns which data went back, (B,)."""
    fitted = [[p.detach().clone() for p in g.parameters()] for g in optimal.autoguides]
    fitted_elbo, _ = optimal.elbo(SELECT_DRAWS)
    with torch.no_grad():
        for guide, values in zip(optimal.autoguides, start, strict=True):
            for p, value in zip(guide.parameters(), values, strict=True):
                p.copy_(value)
    start_elbo, _ = optimal.elbo(SELECT_DRAWS)
    back = start_elbo > fitted_elbo
    rows = back.to(optimal.x.device)[:, None]
    with torch.no_grad():
        for n, (guide, values, ends) in enumerate(
            zip(optimal.autoguides, start, fitted, strict=True)
        ):
            for p, value, end in zip(guide.parameters(), values, ends, strict=True):
                if optimal.family == "diagonal":  # one guide, parameters (B * z_dim,)
                    shape = (optimal.num_data, -1)
                    p.copy_(torch.where(rows, value.view(shape), end.view(shape)).view_as(p))
                else:  # one guide per datum
                    p.copy_(value if back[n] else end)
    return back


# --------------------------------------------------------------------------- gaps


@dataclass
class GapResult:
    """Per-datum log p(x), ELBOs and gaps (float64 (N,), nats), with summaries.

    Attributes:
        log_px: log p(x_n) (for a CVAE, log p(x_n | y_n)), from AIS or as given.
        elbo_amortized: ELBO of the amortized guide q(z | x_n).
        elbo_optimal: ELBO of q*(z | x_n), the best of the family found by SVI.
        elbo_amortized_stderr: Monte Carlo standard error of each ``elbo_amortized``.
        elbo_optimal_stderr: Monte Carlo standard error of each ``elbo_optimal``.
        family: the family of q*.
        log_px_method: ``"ais"`` or ``"given"``.
        optimal_guide: the fitted q* (its ``losses`` show the SVI's progress).
    """

    log_px: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_optimal: torch.Tensor
    elbo_amortized_stderr: torch.Tensor
    elbo_optimal_stderr: torch.Tensor
    family: str
    log_px_method: str
    optimal_guide: OptimalGuide | None = field(default=None, repr=False)

    @property
    def approximation_gap(self) -> torch.Tensor:
        """log p(x) - ELBO(q*): what the family cannot express."""
        return self.log_px - self.elbo_optimal

    @property
    def amortization_gap(self) -> torch.Tensor:
        """ELBO(q*) - ELBO(q): what predicting q from x costs over fitting it per datum."""
        return self.elbo_optimal - self.elbo_amortized

    @property
    def total_gap(self) -> torch.Tensor:
        """log p(x) - ELBO(q) = KL(q(z | x) || p(z | x))."""
        return self.log_px - self.elbo_amortized

    @property
    def num_data(self) -> int:
        return self.log_px.shape[0]

    def mean(self, name: str) -> float:
        """Mean over the data of one of ``GAP_NAMES``."""
        return float(self._values(name).mean())

    def stderr(self, name: str) -> float:
        """Standard error of :meth:`mean` over the data, std / sqrt(N) (NaN for N = 1)."""
        if self.num_data < 2:
            return math.nan
        return float(self._values(name).std() / math.sqrt(self.num_data))

    def _values(self, name: str) -> torch.Tensor:
        if name not in GAP_NAMES:
            raise ValueError(f"unknown quantity {name!r}; valid names are {list(GAP_NAMES)}")
        return getattr(self, name)

    def to_dict(self, per_datum: bool = False) -> dict[str, Any]:
        """JSON-ready: {name: {"mean", "stderr"[, "per_datum"]}} for every quantity, plus
        ``family``, ``log_px_method`` and ``num_data``."""
        out: dict[str, Any] = {
            "family": self.family,
            "log_px_method": self.log_px_method,
            "num_data": self.num_data,
        }
        for name in GAP_NAMES:
            entry: dict[str, Any] = {"mean": self.mean(name), "stderr": self.stderr(name)}
            if per_datum:
                entry["per_datum"] = self._values(name).tolist()
            out[name] = entry
        return out


def _log_px(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    log_px: Any,
    ais_options: Mapping[str, Any] | None,
    seed: int | None,
    progress: bool = False,
) -> tuple[torch.Tensor, str]:
    if log_px is None:
        options = {"seed": seed, "progress": progress, **(ais_options or {})}
        return ais_log_likelihood(vae, x, y, **options).per_datum.double().cpu(), "ais"
    values = getattr(log_px, "per_datum", log_px)
    values = torch.as_tensor(values, dtype=torch.double).detach().cpu()
    if values.shape != (x.shape[0],):
        raise ValueError(
            f"log_px must hold one value per datum, shape ({x.shape[0]},), got {values.shape}"
        )
    return values, "given"


def inference_gaps(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    log_px: Any = None,
    family: str | None = None,
    elbo_draws: int = 1000,
    steps: int = 500,
    lr: float = 0.05,
    num_particles: int = 8,
    ais_options: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    progress: bool = False,
    on_step: Callable[[], None] | None = None,
) -> GapResult:
    """Split log p(x_n) - ELBO(q) into the approximation and amortization gaps per datum.

    Args:
        vae: the model.
        x: data as the model sees them (binarized for a Bernoulli decoder), (N, x_dim).
        y: one-hot labels (N, y_dim) for a CVAE.
        log_px: log p(x_n) per datum, (N,) (or a result with ``per_datum``, e.g. of
            :func:`~pyrovae.analysis.likelihood.ais.ais_log_likelihood`); None runs AIS.
        family: family of q*, ``"diagonal"`` or ``"flow"``; None takes the guide's own
            (``"flow"`` unless q(z | x) is a diagonal Normal).
        elbo_draws: draws per datum for each ELBO estimate.
        steps, lr, num_particles: the SVI fit of q* (:func:`optimal_local_guide`).
        ais_options: keyword arguments for ``ais_log_likelihood`` (e.g. ``num_steps``).
        seed: seeds AIS, the fit and the ELBO draws (the global RNG is restored after).
        progress: show progress of AIS and of the SVI fit on stderr.
        on_step: called after every SVI step of the fit. Neither changes the result.
    """
    check_data(vae, x, y)
    check_positive_int("elbo_draws", elbo_draws)
    if family is None:
        with torch.no_grad():
            q = vae.encoder(x[:1], None if y is None else y[:1])
        family = "diagonal" if is_diagonal_normal(q) else "flow"
    values, method = _log_px(vae, x, y, log_px, ais_options, seed, progress)
    optimal = optimal_local_guide(
        vae,
        x,
        y,
        family,
        steps=steps,
        lr=lr,
        num_particles=num_particles,
        seed=seed,
        progress=progress,
        on_step=on_step,
    )
    with seeded(None if seed is None else seed + 1, x.device):
        amortized, amortized_se = guide_elbo(vae, frozen(vae, vae.guide), x, y, elbo_draws)
        best, best_se = guide_elbo(vae, optimal, x, y, elbo_draws)
    return GapResult(
        log_px=values,
        elbo_amortized=amortized,
        elbo_optimal=best,
        elbo_amortized_stderr=amortized_se,
        elbo_optimal_stderr=best_se,
        family=family,
        log_px_method=method,
        optimal_guide=optimal,
    )
