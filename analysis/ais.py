"""Annealed importance sampling (AIS) and bidirectional Monte Carlo (BDMC) for log p_r(x).

For a datum x, a latent source r (the model's prior by default) and an initial
distribution g(z) (by default the guide q(z | x)), AIS moves C chains through the
geometric path between g and the unnormalized posterior gamma(z) = p(x | z) r(z),

    log f_t(z) = (1 - beta_t) log g(z) + beta_t log gamma(z),   0 = beta_0 < ... < beta_T = 1,

with z_0 ~ g and, for t = 1 .. T - 1, z_t drawn from an HMC transition that leaves f_t
invariant. Each chain's log weight is

    log w = sum_{t=1}^T (beta_t - beta_{t-1}) [log gamma(z_{t-1}) - log g(z_{t-1})],

each increment taken at the state before the transition at beta_t. When the kernels do
not depend on the chains (see "What is unbiased" below), E[w] = p_r(x) =
int p(x | z) r(z) dz exactly, so log 1/C sum_c w_c is a stochastic lower bound of
log p_r(x) (by Jensen's inequality), tight as T grows. With T = 1 it is importance
sampling from g. Annealed importance sampling (Neal, 2001),
https://arxiv.org/abs/physics/9803008

The same chains run with the schedule reversed (beta from 1 to 0), started at an exact
posterior sample, give E[w_rev] = 1 / p_r(x), so -log 1/C sum_c w_rev_c is a stochastic
upper bound. On data simulated from the model, (z, x) ~ r(z) p(x | z), z is such an exact
sample, and the two bounds sandwich log p_r(x); their gap bounds the error of either
(bidirectional Monte Carlo). At T = 1 the expected gap is the Jeffreys divergence
KL(g || p(z | x)) + KL(p(z | x) || g); with perfect transitions annealing divides it by
about T / max_t(T (beta_t - beta_{t-1})). Sandwiching the marginal likelihood using
bidirectional Monte Carlo (Grosse et al., 2015), https://arxiv.org/abs/1511.02543

The default schedule is the sigmoid schedule of Grosse et al. (2015), beta_t proportional
to sigmoid(delta (2 t / T - 1)) rescaled to run from exactly 0 to 1, with delta = 4.

HMC transitions draw fresh momentum p ~ N(0, M) with a diagonal mass matrix M (by default
the inverse of g's variance, a fixed preconditioner that depends on x only), take L
leapfrog steps and accept or reject per chain and datum. Values and gradients are cached,
so a leapfrog step costs one forward and one backward pass of the model and the weight
increments cost nothing extra. The step size is adapted after every transition toward an
acceptance probability of 0.65 by log eps <- log eps + rate (a - 0.65), as is standard in
AIS for decoder-based models: On the quantitative analysis of decoder-based generative
models (Wu et al., 2017), https://arxiv.org/abs/1611.04273.

What is unbiased. The argument above (E[w] = p_r(x)) holds for any sequence of
f_t-invariant kernels fixed in advance, and so, conditionally, for kernels chosen by
anything independent of the chains. By default (``adapt="pilot"``) each datum also runs
P = 4 pilot chains, started at their own draws from g and moved by the same kernels with
their own random numbers; a is the acceptance probability averaged over the pilot, and
the estimate's C chains use the step size the pilot reached from its earlier transitions.
Given the pilot, the chains follow a fixed sequence of kernels, so E[w | pilot] = p_r(x)
exactly, E[log 1/C sum_c w_c] <= log p_r(x), and the pilot is dropped from every output
(it costs P / C more chains in the same passes: C + P chains per datum). With
``adapt="pooled"`` (a averaged over the datum's own C chains; the default before) or
``"per_chain"`` (each chain's own a) the step size depends on the chains' own past, the
weights are no longer unbiased and the bound holds only approximately; per-chain
adaptation ties small steps to the states where acceptance is low (the tails) and can put
the estimate above log p_r(x). ``benchmarks/ais_bias.py`` (PPCA with 6 latent dims and an
inexact guide, T = 100, 8 chains, 10 leapfrog steps, 1,024 data) measured the mean error
against the exact log p(x): pilot -0.011 +- 0.006 nats, pooled -0.010 +- 0.005, per-chain
+0.029 +- 0.005 (5.5 standard errors above the truth, where an estimate with E[w] = p(x)
lies below it in expectation), fixed step sizes -0.008 +- 0.003; at T = 200 pilot
-0.010 +- 0.004, pooled -0.013 +- 0.004, per-chain +0.028 +- 0.004. The pilot took 1.3x
the CPU time of the pooled adaptation with 8 chains (1.14x with P = 2) and 1.27x with 16
(``--num-chains 16``). ``adapt_rate=0`` (fixed step sizes) is exact too;
:func:`bdmc` replays the forward step sizes in its reverse runs (they depend on x and the
forward run, not on the true z), so its upper bound is exact in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from pyrovae.nets import check_positive_int
from pyrovae.traces import score_latents

from .annealing import (
    ADAPT_MODES,
    DEFAULT_PILOT_CHAINS,
    MIN_VARIANCE,
    AnnealResult,
    LogTarget,
    adapt_mode,
    anneal,
    hmc_transition,
    initial_draws,
    sigmoid_schedule,
    uses_pilot,
)
from .datum_noise import DatumNoise, check_datum_index, noise_key
from .encodings import check_data
from .loglik import PerDatumEstimate, default_draws_per_pass, plural, progress_bar
from .sources import LatentSource, is_diagonal_normal, seeded

__all__ = [
    "ADAPT_MODES",
    "AnnealResult",
    "AISResult",
    "anneal",
    "hmc_transition",
    "sigmoid_schedule",
    "guide_initial",
    "ais_log_likelihood",
]

LATENT_SITE = "z"
MOMENT_DRAWS = 64
"""Draws of a guide that is not a diagonal Normal, for its moment-matched stand-in."""

InitialFn = Callable[[torch.Tensor, torch.Tensor | None], Distribution]


# --------------------------------------------------------------------------- VAE estimates


@dataclass
class AISResult(PerDatumEstimate):
    """Per-datum AIS estimates of log p_r(x_n) (float64, on the CPU).

    Attributes:
        per_datum: log p_hat(x_n) = log 1/C sum_c w_nc, shape (N,): a stochastic lower
            bound of log p_r(x_n) (E[exp(per_datum)] = p_r(x_n) with fixed or pilot-adapted
            step sizes), tight as the number of steps grows.
        per_datum_stderr: delta-method standard error of each estimate over the chains,
            sd(w) / (sqrt(C) mean(w)), shape (N,) (NaN for one chain).
        log_weights: log w_nc, shape (N, C).
        acceptance: mean HMC acceptance probability over chains, data and transitions
            (NaN for one step: no transitions).
        num_steps: T, the annealing steps.
        num_chains: C, the chains per datum.
        leapfrog_steps: L, the leapfrog steps per transition.
    """

    per_datum: torch.Tensor
    per_datum_stderr: torch.Tensor
    log_weights: torch.Tensor
    acceptance: float
    num_steps: int
    num_chains: int
    leapfrog_steps: int

    @classmethod
    def from_log_weights(
        cls,
        log_weights: torch.Tensor,
        acceptance: float,
        num_steps: int,
        num_chains: int,
        leapfrog_steps: int,
    ) -> AISResult:
        """The result of (N, C) log weights: per-datum log-mean-exp and its chain error."""
        return cls(
            per_datum=_log_mean_exp(log_weights),
            per_datum_stderr=_chain_stderr(log_weights),
            log_weights=log_weights,
            acceptance=acceptance,
            num_steps=num_steps,
            num_chains=num_chains,
            leapfrog_steps=leapfrog_steps,
        )

    def to_dict(self) -> dict[str, float | int]:
        """Scalar summary: ``loglik``, ``stderr``, ``acceptance``, ``steps``, ``chains``,
        ``leapfrog_steps``, ``num_data``."""
        return {
            "loglik": self.mean,
            "stderr": self.stderr,
            "acceptance": float(self.acceptance),
            "steps": int(self.num_steps),
            "chains": int(self.num_chains),
            "leapfrog_steps": int(self.leapfrog_steps),
            "num_data": int(self.num_data),
        }


def _log_mean_exp(log_weights: torch.Tensor) -> torch.Tensor:
    """log 1/C sum_c w_c over the last dim."""
    return torch.logsumexp(log_weights, dim=-1) - math.log(log_weights.shape[-1])


def _chain_stderr(log_weights: torch.Tensor) -> torch.Tensor:
    """sd(w) / (sqrt(C) mean(w)) per row of (N, C) log weights."""
    num_chains = log_weights.shape[-1]
    if num_chains < 2:
        return torch.full(log_weights.shape[:-1], math.nan, dtype=log_weights.dtype)
    top = log_weights.max(-1, keepdim=True).values
    w = (log_weights - torch.nan_to_num(top, neginf=0.0)).exp()
    return w.std(-1) / (math.sqrt(num_chains) * w.mean(-1))


def guide_initial(vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
    """The default initial distribution: the guide's own q(z | x) when it is a diagonal
    Normal, else a diagonal Normal with the mean and standard deviation of 64 of its draws."""
    with torch.no_grad():
        q = vae.encoder(x, y)
        if is_diagonal_normal(q):
            loc, scale = q.base_dist.loc, q.base_dist.scale
        else:
            draws = q.sample((MOMENT_DRAWS,))
            loc, scale = draws.mean(0), draws.std(0).clamp_min(math.sqrt(MIN_VARIANCE))
        normal = torch.distributions.Normal(loc.detach(), scale.detach().expand(loc.shape))
        return torch.distributions.Independent(normal, 1)


def _initial_variance(initial: Distribution) -> torch.Tensor:
    with torch.no_grad():
        try:
            variance = initial.variance
        except NotImplementedError:
            variance = initial.sample((MOMENT_DRAWS,)).var(0)
        return torch.nan_to_num(variance, nan=1.0, posinf=1.0).clamp_min(MIN_VARIANCE)


def _check_source(vae: nn.Module, source: Any, device: torch.device) -> None:
    if source is None:
        return
    if not callable(getattr(source, "log_prob", None)):
        raise ValueError(
            f"source must have log_prob(z) (a LatentSource, see fit_source), got "
            f"{type(source).__name__}; pass None for the model's own prior"
        )
    if getattr(source, "z_dim", vae.z_dim) != vae.z_dim:
        raise ValueError(
            f"source has z_dim={source.z_dim} but the model has z_dim={vae.z_dim}; fit the "
            "source to this model's encodings"
        )
    if isinstance(source, nn.Module):
        tensor = next(iter([*source.parameters(), *source.buffers()]), None)
        if tensor is not None and tensor.device != device:
            raise ValueError(
                f"source is on {tensor.device} but the model is on {device}; move it: "
                f"source.to({str(device)!r})"
            )


def _model_device(vae: nn.Module, x: torch.Tensor) -> torch.device:
    device = next(vae.parameters()).device
    if x.device != device:
        raise ValueError(
            f"x is on {x.device} but the model is on {device}; move one: x.to({str(device)!r})"
        )
    return device


def _vae_log_target(
    vae: nn.Module, source: LatentSource | None, x: torch.Tensor, y: torch.Tensor | None
) -> LogTarget:
    """z (C, B, D) -> log p(x | z) + log r(z), scored through the model's Pyro trace."""
    conditional = bool(getattr(source, "conditional", False))

    def log_target(z: torch.Tensor) -> torch.Tensor:
        terms = score_latents(vae.model, None, {LATENT_SITE: z}, x, y)
        if source is None:
            log_r = terms.log_prior
        elif conditional:
            log_r = source.log_prob(z, y)
        else:
            log_r = source.log_prob(z)
        return terms.log_likelihood + log_r

    return log_target


def _batch_initial(
    vae: nn.Module,
    initial: InitialFn | None,
    x: torch.Tensor,
    y: torch.Tensor | None,
) -> Distribution:
    g = guide_initial(vae, x, y) if initial is None else initial(x, y)
    expected = (x.shape[0],), (vae.z_dim,)
    if not isinstance(g, Distribution) or (tuple(g.batch_shape), tuple(g.event_shape)) != expected:
        got = (
            f"batch shape {tuple(g.batch_shape)} and event shape {tuple(g.event_shape)}"
            if isinstance(g, Distribution)
            else type(g).__name__
        )
        raise ValueError(
            f"initial(x, y) must return a Distribution with batch shape ({x.shape[0]},) and "
            f"event shape ({vae.z_dim},) for a batch of {x.shape[0]} data, got {got}; "
            "e.g. Normal(loc, scale).to_event(1) with loc of shape (batch, z_dim)"
        )
    return g


@dataclass
class _RunConfig:
    num_steps: int
    num_chains: int
    leapfrog_steps: int
    step_size: float
    target_accept: float
    adapt_rate: float
    adapt_per_chain: bool
    precondition: bool
    batch_size: int
    adapt: str = "pilot"
    pilot_chains: int = DEFAULT_PILOT_CHAINS

    @property
    def piloted(self) -> bool:
        """Whether forward runs adapt on pilot chains (then drawn with the chains' starts)."""
        return uses_pilot(self.adapt, self.adapt_rate, self.num_steps)


def _run_batches(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    source: LatentSource | None,
    initial: InitialFn | None,
    cfg: _RunConfig,
    z_start: torch.Tensor | None = None,
    replay: Sequence[torch.Tensor | None] | None = None,
    record: bool = False,
    on_step: Callable[[], None] | None = None,
    datum_index: torch.Tensor | None = None,
    key: int = 0,
    stream: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor | None]]:
    """AIS over data batches of ``cfg.batch_size``.

    Chains run in the model's dtype. Returns the log weights (N, C) (float64, CPU), the
    acceptance sum and count as a 2-vector, and, with ``record``, each batch's step-size
    history. With ``z_start``
    (N, D) the schedule runs in reverse from it, with ``replay`` (one forward history per
    batch) replayed backwards as fixed step sizes. With ``datum_index`` the noise of every
    datum is keyed by its index, ``key`` and ``stream`` (:mod:`~pyrovae.analysis.datum_noise`).
    """
    betas = sigmoid_schedule(cfg.num_steps)
    if z_start is not None:
        betas = betas.flip(0)
    parts, histories, accept = [], [], torch.zeros(2, dtype=torch.double)
    dtype = next(vae.parameters()).dtype
    for index, start in enumerate(range(0, x.shape[0], cfg.batch_size)):
        stop = start + cfg.batch_size
        xb, yb = x[start:stop], None if y is None else y[start:stop]
        g = _batch_initial(vae, initial, xb, yb)
        draws = (
            None if datum_index is None else DatumNoise(key, datum_index[start:stop], stream=stream)
        )
        schedule = None if replay is None or replay[index] is None else replay[index].flip(0)
        pilot_z0 = None
        if z_start is None:  # drawn here to run in the model's dtype, whatever g's
            pilots = cfg.pilot_chains if cfg.piloted and schedule is None else 0
            chains = cfg.num_chains + pilots
            z0 = g.sample((chains,)) if draws is None else initial_draws(g, draws, chains)
            z0 = z0.to(dtype)
            if pilots:  # one use of the noise: the chains' rows first, the pilot's after
                z0, pilot_z0 = z0[: cfg.num_chains], z0[cfg.num_chains :]
        else:
            zb = z_start[start:stop].to(dtype)
            z0 = zb.unsqueeze(0).expand(cfg.num_chains, *zb.shape).contiguous()
        result = anneal(
            _vae_log_target(vae, source, xb, yb),
            g,
            z0,
            betas=betas,
            num_chains=cfg.num_chains,
            leapfrog_steps=cfg.leapfrog_steps,
            step_size=cfg.step_size,
            target_accept=cfg.target_accept,
            adapt_rate=cfg.adapt_rate,
            adapt=cfg.adapt,
            pilot_chains=cfg.pilot_chains,
            pilot_z0=pilot_z0,
            step_schedule=schedule,
            record_step_sizes=record,
            inverse_mass=_initial_variance(g) if cfg.precondition else None,
            on_step=on_step,
            draws=draws,
        )
        parts.append(result.log_weights.T.cpu())
        histories.append(result.step_history)
        if result.num_transitions:
            total = float(result.acceptance.double().sum())
            accept += torch.tensor([total, result.acceptance.numel()], dtype=torch.double)
    return torch.cat(parts), accept, histories


def _config(
    num_steps: int,
    num_chains: int,
    leapfrog_steps: int,
    step_size: float,
    target_accept: float,
    adapt_rate: float,
    adapt_per_chain: bool,
    precondition: bool,
    batch_size: int | None,
    device: torch.device,
    *,
    adapt: str = "pilot",
    pilot_chains: int = DEFAULT_PILOT_CHAINS,
) -> _RunConfig:
    check_positive_int("num_steps", num_steps)
    check_positive_int("num_chains", num_chains)
    check_positive_int("leapfrog_steps", leapfrog_steps)
    if not (isinstance(step_size, int | float) and 0 < step_size < math.inf):
        raise ValueError(f"step_size must be a positive float, got {step_size!r}")
    mode = adapt_mode(adapt, adapt_per_chain)
    if mode == "pilot":
        check_positive_int("pilot_chains", pilot_chains)
    if batch_size is None:
        chains = num_chains + (pilot_chains if uses_pilot(mode, adapt_rate, num_steps) else 0)
        batch_size = max(1, default_draws_per_pass(device) // chains)
    check_positive_int("batch_size", batch_size)
    return _RunConfig(
        num_steps,
        num_chains,
        leapfrog_steps,
        float(step_size),
        target_accept,
        adapt_rate,
        mode == "per_chain",
        bool(precondition),
        batch_size,
        mode,
        pilot_chains,
    )


def _ais_result(log_weights: torch.Tensor, accept: torch.Tensor, cfg: _RunConfig) -> AISResult:
    if torch.isnan(log_weights).any():
        raise ValueError(
            "AIS log weights hold NaN; check that x lies in the support of the likelihood "
            "(binarize x for a Bernoulli decoder) and that the source's log_prob is finite"
        )
    acceptance = float(accept[0] / accept[1]) if accept[1] > 0 else math.nan
    return AISResult.from_log_weights(
        log_weights, acceptance, cfg.num_steps, cfg.num_chains, cfg.leapfrog_steps
    )


def ais_log_likelihood(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    source: LatentSource | None = None,
    *,
    initial: InitialFn | None = None,
    num_steps: int = 500,
    num_chains: int = 16,
    leapfrog_steps: int = 10,
    step_size: float = 0.1,
    target_accept: float = 0.65,
    adapt_rate: float = 0.3,
    adapt_per_chain: bool = False,
    precondition: bool = True,
    batch_size: int | None = None,
    seed: int | None = None,
    progress: bool = True,
    datum_index: torch.Tensor | None = None,
    adapt: str = "pilot",
    pilot_chains: int = DEFAULT_PILOT_CHAINS,
) -> AISResult:
    """AIS estimate of log p_r(x_n) = log int p(x_n | z) r(z) dz for every datum.

    The model runs through its Pyro trace (:func:`pyrovae.traces.score_latents`), so any
    model/guide pair with sites ``"z"`` and ``"x"`` in one ``plate("data")`` works;
    ``source=None`` is the model's own prior (for a CVAE, log p(x | y)); a source with
    ``conditional = True`` gets ``log_prob(z, y)``. Only gradients in z are taken
    (``torch.autograd.grad``): model parameters accumulate none.

    The defaults follow Wu et al. (2017) for MNIST-sized models (16 chains, 10 leapfrog
    steps) with a shorter sigmoid schedule of 500 steps: (500 - 1) x 10 + 1 = 4,991
    decoder forward and backward passes on the 16 chains and the 4 pilot chains of a
    datum. For a 50-dim VAE with a 400-400 MLP that is about 0.03 s per pass of 1,024
    chains on one CPU core (``benchmarks/ais_speed.py``), some 40 minutes per 1,000 MNIST
    images for 16 chains, and a quarter more for the pilot; run it on a GPU, where the
    default batch puts about 65,536 chains (pilot included) in each pass. Check the schedule
    with :func:`bdmc` (its gap bounds the error), and raise ``num_steps`` if the gap is
    large.

    Args:
        vae: the model, on the device of ``x``.
        x: data as the model sees them (binarized for a Bernoulli decoder), (N, x_dim).
        y: one-hot labels (N, y_dim) for a CVAE.
        source: the latent source r; None for the model's prior.
        initial: ``(x_batch, y_batch) -> Distribution`` with batch shape (B,) and event
            shape (z_dim,), the start g of the path; None uses :func:`guide_initial`.
        num_steps: T, annealing steps of the sigmoid schedule (1: importance sampling
            from g with C draws).
        num_chains: C, chains per datum.
        leapfrog_steps: L, leapfrog steps per HMC transition.
        step_size: initial step size (in units of g's standard deviation when
            ``precondition``), adapted per datum (per chain with ``"per_chain"``).
        target_accept: acceptance probability the step sizes are adapted toward.
        adapt_rate: rate of the step-size adaptation; 0 keeps the step sizes fixed (exact
            AIS, no pilot).
        adapt_per_chain: the same as ``adapt="per_chain"`` (kept for older calls).
        precondition: use g's variances as the diagonal inverse mass matrix (fixed given
            x, so exactness is kept); False uses the identity.
        batch_size: data per pass (C x batch_size chains at once); default
            :func:`~pyrovae.analysis.loglik.default_draws_per_pass` / (C + P).
        seed: seed the run (the global RNG is restored afterwards); None uses it.
        progress: show a progress bar over the annealing steps of every data batch on
            stderr (the results are the same either way).
        datum_index: (N,) the data's indices in the whole set: every random number of
            datum n (start, momenta, accept tests) then comes from a generator seeded with
            (seed, n, use) (:mod:`~pyrovae.analysis.datum_noise`), so its estimate does not
            depend on ``batch_size`` or on the other data (a shard gets the values of the
            whole set). The initial distribution must then be a diagonal Normal or a
            Gaussian mixture proposal. None: torch's generator, in batch order.
        adapt: what drives the step-size adaptation (see the module docstring):
            ``"pilot"`` (default) P pilot chains per datum, run in the same passes and
            dropped, so that E[w] = p_r(x) exactly; ``"pooled"`` the mean acceptance of
            the datum's own chains, ``"per_chain"`` each chain's own (both biased).
        pilot_chains: P, the pilot chains per datum of ``adapt="pilot"`` (P / C more work).
    """
    check_data(vae, x, y)
    device = _model_device(vae, x)
    if datum_index is not None:
        check_datum_index(datum_index, x.shape[0])
    _check_source(vae, source, device)
    cfg = _config(
        num_steps,
        num_chains,
        leapfrog_steps,
        step_size,
        target_accept,
        adapt_rate,
        adapt_per_chain,
        precondition,
        batch_size,
        device,
        adapt=adapt,
        pilot_chains=pilot_chains,
    )
    num_data = x.shape[0]
    desc = f"AIS log p(x), {_source_label(source)}: {plural(num_data, 'image')}, {num_steps} steps"
    total = _num_batches(num_data, cfg) * num_steps
    with torch.no_grad(), seeded(seed, device), progress_bar(total, desc, "step", progress) as bar:
        key = noise_key(seed)
        log_weights, accept, _ = _run_batches(
            vae, x, y, source, initial, cfg, on_step=bar.update, datum_index=datum_index, key=key
        )
    return _ais_result(log_weights, accept, cfg)


def _source_label(source: LatentSource | None) -> str:
    """How a progress bar names a source: its ``name``, or "prior" for None."""
    if source is None:
        return "prior"
    return str(getattr(source, "name", None) or type(source).__name__)


def _num_batches(num_data: int, cfg: _RunConfig) -> int:
    return -(-num_data // cfg.batch_size)


def __getattr__(name: str) -> Any:  # BDMC lives in .bdmc (it builds on this module)
    if name in ("bdmc", "BDMCResult"):
        from . import bdmc as module

        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
