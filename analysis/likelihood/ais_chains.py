"""The AIS chain machinery shared by :mod:`~pyrovae.analysis.likelihood.ais` and
:mod:`~pyrovae.analysis.likelihood.bdmc`.

The initial distribution, the log target of a VAE, batching, the run configuration and the
result type; both estimators build on them, so :mod:`.bdmc` does not import :mod:`.ais`.
See :mod:`pyrovae.analysis.likelihood.ais` for the method (Neal, 2001; Wu et al., 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Distribution

from pyrovae.analysis.likelihood.annealing import (
    DEFAULT_PILOT_CHAINS,
    MIN_VARIANCE,
    LogTarget,
    adapt_mode,
    anneal,
    initial_draws,
    sigmoid_schedule,
    uses_pilot,
)
from pyrovae.analysis.likelihood.datum_noise import DatumNoise
from pyrovae.analysis.likelihood.loglik import PerDatumEstimate, default_draws_per_pass
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.helpers import is_diagonal_normal
from pyrovae.nets import check_positive_int
from pyrovae.traces import score_latents

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
    batch) replayed backwards as fixed step sizes. With ``datum_index`` the noise of
    every datum is keyed by its index, ``key`` and ``stream``
    (:mod:`~pyrovae.analysis.likelihood.datum_noise`).
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


def _source_label(source: LatentSource | None) -> str:
    """How a progress bar names a source: its ``name``, or "prior" for None."""
    if source is None:
        return "prior"
    return str(getattr(source, "name", None) or type(source).__name__)


def _num_batches(num_data: int, cfg: _RunConfig) -> int:
    return -(-num_data // cfg.batch_size)
