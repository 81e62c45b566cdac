"""Annealed importance sampling for any log target: the schedule, vectorized HMC, the anneal.

Generic over a log target z -> log f(z) of shape (C, B) for chains x data; the VAE
estimators of :mod:`pyrovae.analysis.likelihood.ais` build on it. See that module for the method."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, Normal

from pyrovae.analysis.likelihood.datum_noise import DatumNoise
from pyrovae.nets import check_positive_int
from pyrovae.traces import ValidateFirst

MIN_STEP_SIZE = 1e-6

__all__ = [
    "ADAPT_MODES",
    "AnnealResult",
    "DEFAULT_PILOT_CHAINS",
    "Kernel",
    "adapt_mode",
    "anneal",
    "hmc_transition",
    "initial_draws",
    "sigmoid_schedule",
    "uses_pilot",
]


MAX_STEP_SIZE = 10.0


MIN_VARIANCE = 1e-10
"""Floor of the inverse mass (the preconditioner's variances)."""


LogTarget = Callable[[torch.Tensor], torch.Tensor]

Kernel = Callable[[torch.Tensor, float], torch.Tensor]
"""A Markov transition ``kernel(z, beta) -> z'`` on states (C, B, D) that leaves f_beta
invariant (e.g. an exact sampler of a Gaussian f_beta); replaces HMC in :func:`anneal`."""

ADAPT_MODES = ("pilot", "pooled", "per_chain")
"""How :func:`anneal` adapts its step sizes: on pilot chains run alongside and discarded
(the weights stay exactly unbiased), or on the estimate's own chains, pooled over a
datum's chains or per chain (the weights are then biased; see
:mod:`pyrovae.analysis.likelihood.ais`)."""

DEFAULT_PILOT_CHAINS = 4
"""Pilot chains per datum of ``adapt="pilot"``."""


def sigmoid_schedule(num_steps: int, delta: float = 4.0) -> torch.Tensor:
    """The sigmoid schedule of Grosse et al. (2015): T + 1 values from exactly 0 to 1.

    beta_t = (s_t - s_0) / (s_T - s_0) with s_t = sigmoid(delta (2 t / T - 1)): small steps
    near both ends, where the weights change fastest. Returns float64, shape (T + 1,).
    """
    check_positive_int("num_steps", num_steps)
    if not delta > 0:
        raise ValueError(f"delta must be positive, got {delta!r}")
    t = torch.arange(num_steps + 1, dtype=torch.double) / num_steps
    s = torch.sigmoid(delta * (2 * t - 1))
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def _check_betas(betas: Sequence[float] | torch.Tensor, from_initial: bool) -> list[float]:
    values = [float(b) for b in (betas.tolist() if isinstance(betas, torch.Tensor) else betas)]
    if len(values) < 2:
        raise ValueError(
            f"betas must hold at least 2 values (T + 1 for T steps), got {len(values)}; "
            "use sigmoid_schedule(num_steps)"
        )
    if not all(0.0 <= b <= 1.0 for b in values):
        raise ValueError(
            f"betas must lie in [0, 1], got values from {min(values)} to {max(values)}"
        )
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    if not (all(s >= 0 for s in steps) or all(s <= 0 for s in steps)):
        raise ValueError(
            "betas must be monotone: rising from 0 to 1 (forward AIS) or falling from 1 to 0 "
            "(reverse AIS)"
        )
    if from_initial and values[0] != 0.0:
        raise ValueError(
            f"betas must start at 0 when z0 is drawn from initial, got betas[0]={values[0]}; "
            "pass z0 (draws from f at betas[0]) to start elsewhere"
        )
    return values


@dataclass
class _Point:
    """Chain states z (C, B, D) with the two path components and their gradients cached."""

    z: torch.Tensor
    log_target: torch.Tensor
    log_initial: torch.Tensor
    grad_target: torch.Tensor
    grad_initial: torch.Tensor

    def log_f(self, beta: float) -> torch.Tensor:
        """(1 - beta) log g + beta log gamma, shape (C, B)."""
        return torch.lerp(self.log_initial, self.log_target, beta)

    def grad_f(self, beta: float) -> torch.Tensor:
        return torch.lerp(self.grad_initial, self.grad_target, beta)

    def head(self, chains: int) -> tuple[torch.Tensor, torch.Tensor]:
        """log gamma and log g of the first ``chains`` chains (the estimate's, not the pilot's)."""
        return self.log_target[:chains], self.log_initial[:chains]

    def where(self, keep_new: torch.Tensor, old: _Point) -> _Point:
        """This point where ``keep_new`` (C, B) holds, ``old`` elsewhere."""
        vec = keep_new.unsqueeze(-1)
        return _Point(
            torch.where(vec, self.z, old.z),
            torch.where(keep_new, self.log_target, old.log_target),
            torch.where(keep_new, self.log_initial, old.log_initial),
            torch.where(vec, self.grad_target, old.grad_target),
            torch.where(vec, self.grad_initial, old.grad_initial),
        )


class _Path:
    """Evaluates log gamma and log g (and their gradients in z) at chain states."""

    def __init__(self, log_target: LogTarget, initial: Distribution | None) -> None:
        self.log_target = log_target
        self.initial = initial
        self._validate = ValidateFirst()  # checked once; the leapfrog loop reads nothing back

    def __call__(self, z: torch.Tensor) -> _Point:
        """Values and gradients at z; rows of z that are not finite (a diverged leapfrog
        trajectory) are scored at 0 and given NaN values, so that they are rejected."""
        finite = torch.isfinite(z).all(-1)
        with torch.enable_grad(), self._validate():
            z = torch.where(finite.unsqueeze(-1), z.detach(), 0.0).requires_grad_(True)
            lt = self.log_target(z)
            if not isinstance(lt, torch.Tensor) or lt.shape != z.shape[:-1]:
                shape = tuple(lt.shape) if isinstance(lt, torch.Tensor) else type(lt).__name__
                raise ValueError(
                    f"log_target(z) must return shape {tuple(z.shape[:-1])} (chains, batch) "
                    f"for z of shape {tuple(z.shape)}, got {shape}"
                )
            (grad_target,) = torch.autograd.grad(lt.sum(), z)
            if self.initial is None:
                lg = torch.zeros_like(lt)
                grad_initial = torch.zeros_like(z)
            else:
                lg = self.initial.log_prob(z)
                (grad_initial,) = torch.autograd.grad(lg.sum(), z)
        lt = torch.where(finite, lt.detach().to(z.dtype), math.nan)
        return _Point(z.detach(), lt, lg.detach().to(z.dtype), grad_target, grad_initial)


def _transition(
    path: _Path,
    point: _Point,
    beta: float,
    step_size: torch.Tensor,
    leapfrog_steps: int,
    inverse_mass: torch.Tensor | None,
    draws: DatumNoise | None = None,
) -> tuple[_Point, torch.Tensor]:
    """One HMC transition leaving f_beta invariant, accepted per chain and datum.

    Returns the new point and the acceptance probability (C, B). With ``draws`` the
    momenta and the accept tests come from each datum's own generators.
    """
    chains, _, dims = point.z.shape
    if draws is None:
        noise = torch.randn_like(point.z)
    else:
        noise = draws.normal(chains, dims, point.z.device).to(point.z.dtype)
    momentum = noise if inverse_mass is None else noise * inverse_mass.rsqrt()
    eps = step_size.unsqueeze(-1)
    new = point
    diverged = torch.zeros_like(point.log_target, dtype=torch.bool)
    momentum = momentum + 0.5 * eps * new.grad_f(beta)
    for step in range(leapfrog_steps):
        velocity = momentum if inverse_mass is None else inverse_mass * momentum
        new = path(new.z + eps * velocity)
        diverged |= ~torch.isfinite(new.log_f(beta))
        kick = 0.5 * eps if step == leapfrog_steps - 1 else eps
        momentum = momentum + kick * new.grad_f(beta)
    energy = momentum.pow(2) if inverse_mass is None else inverse_mass * momentum.pow(2)
    log_ratio = (new.log_f(beta) - 0.5 * energy.sum(-1)) - (
        point.log_f(beta) - 0.5 * noise.pow(2).sum(-1)
    )
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf, posinf=0.0)
    accept_prob = log_ratio.clamp(max=0.0).exp()
    accept_prob = accept_prob.masked_fill(diverged, 0.0)
    if draws is None:
        uniform = torch.rand_like(accept_prob)
    else:
        uniform = draws.uniform(chains, 1, point.z.device)[..., 0].to(accept_prob.dtype)
    accept = uniform < accept_prob
    return new.where(accept, point), accept_prob


def _step_sizes(
    step_size: float | torch.Tensor, shape: torch.Size, z: torch.Tensor, name: str = "step_size"
) -> torch.Tensor:
    eps = torch.as_tensor(step_size, dtype=z.dtype, device=z.device)
    try:
        eps = eps.expand(shape).clone()
    except RuntimeError:
        raise ValueError(
            f"{name} must be a float or a tensor that broadcasts to {tuple(shape)}, got shape "
            f"{tuple(eps.shape)}"
        ) from None
    if not bool(((eps > 0) & torch.isfinite(eps)).all()):
        raise ValueError(f"{name} must be positive and finite, got {step_size!r}")
    return eps


def _check_inverse_mass(inverse_mass: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor | None:
    if inverse_mass is None:
        return None
    try:
        inverse_mass = inverse_mass.to(dtype=z.dtype, device=z.device).expand(z.shape)
    except RuntimeError:
        raise ValueError(
            f"inverse_mass must broadcast to z's shape {tuple(z.shape)}, got "
            f"{tuple(inverse_mass.shape)}; pass per-dim variances of shape (batch, z_dim)"
        ) from None
    if not bool(((inverse_mass > 0) & torch.isfinite(inverse_mass)).all()):
        raise ValueError("inverse_mass must be positive and finite (variances of a preconditioner)")
    return inverse_mass


def hmc_transition(
    log_density: LogTarget,
    z: torch.Tensor,
    *,
    step_size: float | torch.Tensor,
    leapfrog_steps: int,
    inverse_mass: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One HMC transition from ``z`` (C, B, D) that leaves exp(log_density) invariant.

    ``log_density(z)`` maps (C, B, D) to (C, B) and must be differentiable in z. Momentum
    p ~ N(0, M) with M = diag(1 / inverse_mass) (identity by default), ``leapfrog_steps``
    leapfrog steps of size ``step_size`` (a float or a (C, B) tensor), and a Metropolis
    test for every chain and datum. Returns the new z and the acceptance probabilities
    (C, B). Costs leapfrog_steps + 1 passes of ``log_density`` (``anneal`` caches the
    first one).
    """
    check_positive_int("leapfrog_steps", leapfrog_steps)
    _check_z(z)
    eps = _step_sizes(step_size, z.shape[:-1], z)
    inverse_mass = _check_inverse_mass(inverse_mass, z)
    path = _Path(log_density, None)
    point, accept_prob = _transition(path, path(z), 1.0, eps, leapfrog_steps, inverse_mass)
    return point.z, accept_prob


def _check_z(z: torch.Tensor, name: str = "z") -> None:
    if not isinstance(z, torch.Tensor) or z.dim() != 3:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{name} must have shape (chains, batch, z_dim), got {shape}")


@dataclass
class AnnealResult:
    """The outcome of one annealing run over C chains for each of B data.

    Attributes:
        log_weights: log w per chain and datum, float64, shape (C, B).
        z: the final chain states, shape (C, B, D) (after the last transition, at
            beta_{T-1}; the final step only adds a weight increment).
        acceptance: mean acceptance probability over the T - 1 transitions, (C, B); NaN
            for T = 1 (no transitions) and with a ``kernel``.
        step_size: the step sizes after adaptation, (C, B) (the estimate's chains; a
            pilot's are dropped).
        num_transitions: T - 1, the HMC transitions made.
        step_history: the step sizes each transition used, (T - 1, C, B), when recorded
            (``record_step_sizes``), else None; replay them reversed with
            ``step_schedule=history.flip(0)`` to run the same kernels backwards.
    """

    log_weights: torch.Tensor
    z: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    num_transitions: int
    step_history: torch.Tensor | None = None


def initial_draws(initial: Distribution, draws: DatumNoise, num_chains: int) -> torch.Tensor:
    """z0 ~ initial, (C, B, D), from per-datum noise: a diagonal Normal (loc + scale eps) or
    a Gaussian mixture proposal (its ``sample_rows``)."""
    base = initial.base_dist if isinstance(initial, Independent) else initial
    dims = initial.event_shape[-1]
    batch = initial.batch_shape[0]
    if isinstance(base, Normal):
        eps = draws.normal(num_chains, dims, base.loc.device).to(base.loc.dtype)
        return base.loc + base.scale * eps
    if hasattr(initial, "sample_rows"):
        rows = torch.arange(batch, device=draws.index.device).repeat(num_chains)
        u = draws.uniform(num_chains, 1)[..., 0].flatten()
        eps = draws.normal(num_chains, dims).flatten(0, 1)
        return initial.sample_rows(rows, u, eps).reshape(num_chains, batch, dims)
    raise ValueError(
        f"per-datum draws need a diagonal Normal or a Gaussian mixture proposal as the "
        f"initial distribution, got {type(initial).__name__}; pass draws=None"
    )


def adapt_mode(adapt: str, adapt_per_chain: bool = False) -> str:
    """The adaptation mode of ``adapt`` (one of :data:`ADAPT_MODES`); ``adapt_per_chain=True``
    (the older spelling) means ``"per_chain"``."""
    if adapt not in ADAPT_MODES:
        raise ValueError(f"adapt must be one of {list(ADAPT_MODES)}, got {adapt!r}")
    if adapt_per_chain:
        if adapt == "pooled":
            raise ValueError(
                "adapt_per_chain=True contradicts adapt='pooled'; pass adapt='per_chain' alone"
            )
        return "per_chain"
    return adapt


def uses_pilot(mode: str, adapt_rate: float, num_steps: int) -> bool:
    """Whether a forward run with T = ``num_steps`` adapts on pilot chains: in mode
    ``"pilot"`` when it adapts at all (a rate above 0 and at least one transition)."""
    return mode == "pilot" and adapt_rate > 0 and num_steps > 1


def anneal(
    log_target: LogTarget,
    initial: Distribution,
    z0: torch.Tensor | None = None,
    *,
    betas: Sequence[float] | torch.Tensor,
    num_chains: int,
    leapfrog_steps: int,
    step_size: float | torch.Tensor = 0.1,
    target_accept: float = 0.65,
    adapt_rate: float = 0.3,
    adapt_per_chain: bool = False,
    adapt: str = "pilot",
    pilot_chains: int = DEFAULT_PILOT_CHAINS,
    pilot_z0: torch.Tensor | None = None,
    step_schedule: torch.Tensor | None = None,
    record_step_sizes: bool = False,
    inverse_mass: torch.Tensor | None = None,
    on_step: Callable[[], None] | None = None,
    draws: DatumNoise | None = None,
    kernel: Kernel | None = None,
) -> AnnealResult:
    """Run AIS along log f_t = (1 - beta_t) log g + beta_t log_target for C chains per datum.

    Forward (betas rising from 0 to 1, z0=None: chains start at z ~ initial) the mean of
    exp(log_weights) over chains estimates Z_target / Z_g (= p_r(x) for a normalized g);
    reverse (betas falling from 1 to 0, z0 exact draws from the normalized target) it
    estimates Z_g / Z_target. Chain c's log weight is sum_t (beta_t - beta_{t-1})
    [log gamma - log g](z_{t-1}), each increment taken at the state *before* the
    transition at beta_t. E[w] is exactly the ratio of normalizers when the sequence of
    kernels does not depend on the chains (Neal, 2001): with fixed step sizes
    (``adapt_rate=0``, a ``step_schedule``), a fixed ``kernel``, or the default
    ``adapt="pilot"``, whose step sizes come from pilot chains that share no random
    numbers with the estimate's chains (then E[w | pilot] is that ratio). ``"pooled"`` and
    ``"per_chain"`` adapt on the estimate's own chains, which biases w.

    Args:
        log_target: maps z (C, B, D) to (C, B), differentiable in z: log p(x | z) + log r(z)
            per chain and datum.
        initial: g, a distribution with batch shape (B,) and event shape (D,), whose
            ``log_prob`` is differentiable in z.
        z0: start states (C, B, D), drawn from f at ``betas[0]``; None draws z0 ~ g
            (then betas must start at 0).
        betas: the schedule, T + 1 monotone values in [0, 1] (see :func:`sigmoid_schedule`).
        num_chains: C, chains per datum.
        leapfrog_steps: L, leapfrog steps per HMC transition (each one forward and one
            backward pass of ``log_target``); a run costs (T - 1) L + 1 passes (of
            C + ``pilot_chains`` chains with a pilot).
        step_size: initial leapfrog step size, a float or a (C, B) tensor (a pilot starts
            from its mean over the chains).
        target_accept: the acceptance probability the step sizes are adapted toward.
        adapt_rate: log step size += adapt_rate (accept_prob - target_accept) after each
            transition; 0 keeps the step sizes fixed.
        adapt_per_chain: the same as ``adapt="per_chain"`` (kept for older calls).
        adapt: where the acceptance probabilities that drive the adaptation come from
            (:data:`ADAPT_MODES`). ``"pilot"``: ``pilot_chains`` extra chains per datum,
            started at their own draws from g and moved by the same kernels (the same step
            size per datum) but with their own random numbers; the estimate's chains use
            the step size the pilot reached from its earlier transitions, and the pilot is
            dropped from every output. ``"pooled"``: the mean over the datum's own chains.
            ``"per_chain"``: each chain's own.
        pilot_chains: P, pilot chains per datum for ``adapt="pilot"``.
        pilot_z0: the pilot's start states (P, B, D), draws from f at ``betas[0]``
            independent of z0; None draws them from g (then betas must start at 0).
        step_schedule: fixed step sizes for the T - 1 transitions, broadcastable to
            (T - 1, C, B), e.g. a recorded ``step_history`` flipped for a reverse run;
            replaces ``step_size`` and the adaptation (exact AIS given the schedule).
        record_step_sizes: keep the step sizes of every transition in ``step_history``
            ((T - 1) C B floats).
        inverse_mass: diagonal inverse mass matrix (per-dim variances), broadcastable to
            (C, B, D); None is the identity. The pilot's chains take chain 0's.
        on_step: called after each of the T steps (e.g. to advance a progress bar).
        draws: per-datum noise (:class:`~pyrovae.analysis.likelihood.datum_noise.DatumNoise` of the
            batch's data) for z0, the momenta and the accept tests, so that a datum's run
            does not depend on the other data of its batch; None uses torch's generator.
            The pilot's numbers are rows C, ..., C + P - 1 of each use.
        kernel: a transition ``kernel(z, beta) -> z'`` leaving f_beta invariant, made in
            place of HMC (step sizes and adaptation unused; acceptance NaN). For tests with
            exact transitions and for samplers other than HMC.
    """
    if not isinstance(initial, Distribution):
        raise ValueError(
            f"initial must be a torch Distribution with batch shape (batch,) and event shape "
            f"(z_dim,), got {type(initial).__name__}"
        )
    if len(initial.batch_shape) != 1 or len(initial.event_shape) != 1:
        raise ValueError(
            f"initial must have batch shape (batch,) and event shape (z_dim,), got "
            f"{tuple(initial.batch_shape)} and {tuple(initial.event_shape)}; "
            "e.g. Normal(loc, scale).to_event(1) with loc of shape (batch, z_dim)"
        )
    check_positive_int("num_chains", num_chains)
    check_positive_int("leapfrog_steps", leapfrog_steps)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    if not adapt_rate >= 0:
        raise ValueError(f"adapt_rate must be >= 0 (0: fixed step sizes), got {adapt_rate!r}")
    mode = adapt_mode(adapt, adapt_per_chain)
    schedule = _check_betas(betas, from_initial=z0 is None)
    num_steps = len(schedule) - 1
    if step_schedule is not None or kernel is not None:
        adapt_rate = 0.0
    pilot = uses_pilot(mode, adapt_rate, num_steps)
    if pilot:
        check_positive_int("pilot_chains", pilot_chains)
    if kernel is not None and not callable(kernel):
        raise ValueError(f"kernel must be callable as kernel(z, beta), got {type(kernel).__name__}")
    shape = (num_chains, *initial.batch_shape, *initial.event_shape)
    if z0 is None:
        extra = pilot_chains if pilot and pilot_z0 is None else 0
        z0 = _draw_initial(initial, draws, num_chains + extra)
        if extra:
            z0, pilot_z0 = z0[:num_chains], z0[num_chains:]
    _check_z(z0, "z0")
    if tuple(z0.shape) != shape:
        raise ValueError(
            f"z0 must have shape (num_chains, batch, z_dim) = {shape}, got {tuple(z0.shape)}"
        )
    if pilot and pilot_z0 is None:
        if schedule[0] != 0.0:
            raise ValueError(
                f"adapt='pilot' needs pilot start states drawn from f at betas[0]={schedule[0]}: "
                "pass pilot_z0, a step_schedule, or adapt_rate=0"
            )
        pilot_z0 = _draw_initial(initial, draws, pilot_chains)
    if pilot:
        assert pilot_z0 is not None
        pilot_shape = (pilot_chains, *shape[1:])
        if not isinstance(pilot_z0, torch.Tensor) or tuple(pilot_z0.shape) != pilot_shape:
            got = tuple(pilot_z0.shape) if isinstance(pilot_z0, torch.Tensor) else pilot_z0
            raise ValueError(
                f"pilot_z0 must have shape (pilot_chains, batch, z_dim) = {pilot_shape}, got {got}"
            )
        start = torch.cat([z0, pilot_z0.to(z0)])
    else:
        pilot_chains = 0
        start = z0
    if step_schedule is None:
        step = _step_sizes(step_size, z0.shape[:-1], z0)
        if pilot:
            step = step.mean(0, keepdim=True).expand(z0.shape[:-1])
    else:
        step_schedule = _step_sizes(
            step_schedule, torch.Size((num_steps - 1, *z0.shape[:-1])), z0, "step_schedule"
        )
    inverse_mass = _check_inverse_mass(inverse_mass, z0)
    if inverse_mass is not None and pilot_chains:
        inverse_mass = torch.cat([inverse_mass, inverse_mass[:1].expand(pilot_chains, -1, -1)])

    path = _Path(log_target, initial)
    point = path(start)
    log_weights = torch.zeros(z0.shape[:-1], dtype=torch.double, device=z0.device)
    accept_sum = torch.zeros_like(log_weights, dtype=point.log_target.dtype)
    history = []
    for t in range(1, num_steps + 1):
        delta = schedule[t] - schedule[t - 1]
        if delta != 0.0:  # the increment at z_{t-1}, before the transition at beta_t
            log_gamma, log_g = point.head(num_chains)
            log_weights += delta * (log_gamma - log_g).double()
        if t == num_steps:
            if on_step is not None:
                on_step()
            break  # a last transition would not change the weights
        if kernel is not None:
            point = path(_kernel_step(kernel, point.z, schedule[t]))
            if on_step is not None:
                on_step()
            continue
        eps = step if step_schedule is None else step_schedule[t - 1]
        if record_step_sizes:
            history.append(eps)
        if pilot_chains:
            eps = torch.cat([eps, eps[:1].expand(pilot_chains, -1)])
        point, accept_prob = _transition(
            path, point, schedule[t], eps, leapfrog_steps, inverse_mass, draws
        )
        own, pilots = accept_prob[:num_chains], accept_prob[num_chains:]
        accept_sum += own
        if adapt_rate > 0:
            if mode == "per_chain":
                signal = own
            else:
                signal = (pilots if pilot_chains else own).mean(0, keepdim=True)
            factor = torch.exp(adapt_rate * (signal - target_accept))
            step = (step * factor).clamp(MIN_STEP_SIZE, MAX_STEP_SIZE)
        if on_step is not None:
            on_step()
    num_transitions = num_steps - 1
    if num_transitions == 0 or kernel is not None:
        acceptance = accept_sum + math.nan
    else:
        acceptance = accept_sum / num_transitions
    if step_schedule is None:
        final_eps = step
    elif num_transitions:
        final_eps = step_schedule[-1]
    else:
        final_eps = torch.full_like(accept_sum, math.nan)
    return AnnealResult(
        log_weights,
        point.z[:num_chains],
        acceptance,
        final_eps,
        num_transitions,
        torch.stack(history) if record_step_sizes and history else None,
    )


def _draw_initial(initial: Distribution, draws: DatumNoise | None, chains: int) -> torch.Tensor:
    """``chains`` draws from g (C, B, D), from per-datum noise when given (one use)."""
    with torch.no_grad():
        if draws is None:
            return initial.sample((chains,))
        return initial_draws(initial, draws, chains)


def _kernel_step(kernel: Kernel, z: torch.Tensor, beta: float) -> torch.Tensor:
    new = kernel(z, beta)
    if not isinstance(new, torch.Tensor) or new.shape != z.shape:
        got = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
        raise ValueError(f"kernel(z, beta) must return z's shape {tuple(z.shape)}, got {got}")
    return new.detach().to(z.dtype)
