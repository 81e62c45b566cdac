"""Bidirectional Monte Carlo (BDMC): AIS bounds on simulated data, to know how far to trust AIS.

Sandwiching the marginal likelihood using bidirectional Monte Carlo (Grosse, Ghahramani &
Adams, 2015), https://arxiv.org/abs/1511.02543: on data simulated from the model (z ~ r,
x ~ p(x | z)), forward AIS from the proposal is a stochastic lower bound of log p_r(x) and
reverse AIS started at the true z an upper bound; their gap bounds the error of AIS at
that number of steps for that model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.likelihood.ais_chains import (
    AISResult,
    InitialFn,
    _ais_result,
    _check_source,
    _config,
    _num_batches,
    _run_batches,
    _source_label,
)
from pyrovae.analysis.likelihood.datum_noise import noise_key
from pyrovae.analysis.likelihood.loglik import progress_bar
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.helpers import seeded
from pyrovae.nets import check_positive_int

__all__ = ["BDMCResult", "bdmc"]


@dataclass
class BDMCResult:
    """Stochastic lower and upper bounds of log p_r(x_n) on data simulated from the model.

    Attributes:
        lower_per_datum: forward AIS, log 1/C sum_c w_c, shape (N,) (float64, CPU).
        upper_per_datum: reverse AIS from the true z, -log 1/C sum_c w_rev_c, shape (N,).
        x: the simulated data, (N, x_dim) (on the CPU; all of them, also with ``rows``).
        y: their one-hot labels for a CVAE (cycling through the classes), else None.
        z: the latent draws that generated them, (N, z_dim).
        forward: the forward AIS result (log weights, acceptance).
        reverse: the reverse AIS result; its ``per_datum`` is log 1/C sum_c w_rev_c.
        num_steps: T; num_chains: C; num_data: the data bounded (N, or the ``rows``).
    """

    lower_per_datum: torch.Tensor
    upper_per_datum: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor | None
    z: torch.Tensor
    forward: AISResult
    reverse: AISResult
    num_steps: int
    num_chains: int
    num_data: int

    @property
    def lower(self) -> float:
        """Mean lower bound (nats per datum)."""
        return float(self.lower_per_datum.mean())

    @property
    def upper(self) -> float:
        """Mean upper bound (nats per datum)."""
        return float(self.upper_per_datum.mean())

    @property
    def gap(self) -> float:
        """upper - lower, mean over the data: bounds the error of either estimate."""
        return self.upper - self.lower

    @property
    def gap_stderr(self) -> float:
        """Standard error of :attr:`gap` over the data (NaN for one datum)."""
        if self.num_data < 2:
            return math.nan
        gaps = self.upper_per_datum - self.lower_per_datum
        return float(gaps.std() / math.sqrt(self.num_data))

    def to_dict(self) -> dict[str, float | int]:
        """Scalar summary: ``lower``, ``upper``, ``gap``, ``steps``, ``chains``, ``num_data``."""
        return {
            "lower": self.lower,
            "upper": self.upper,
            "gap": self.gap,
            "gap_stderr": self.gap_stderr,
            "steps": int(self.num_steps),
            "chains": int(self.num_chains),
            "num_data": int(self.num_data),
        }


def _simulate(
    vae: nn.Module, source: LatentSource | None, num_data: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(x, y, z) with z ~ r (y cycling through the classes for a CVAE) and x ~ p(x | z)."""
    y = None
    if vae.conditional:
        labels = torch.arange(num_data, device=device) % vae.y_dim
        y = F.one_hot(labels, vae.y_dim).float()
    if source is None:
        prior = vae.prior(y)
        z = prior.sample() if prior.batch_shape else prior.sample((num_data,))
    elif getattr(source, "conditional", False):
        z = source.sample(num_data, y)
    else:
        z = source.sample(num_data)
    if tuple(z.shape) != (num_data, vae.z_dim):
        raise ValueError(
            f"the source drew z of shape {tuple(z.shape)}, expected ({num_data}, {vae.z_dim})"
        )
    x = vae.decoder(z, y).sample()
    return x, y, z


def bdmc(
    vae: nn.Module,
    source: LatentSource | None = None,
    *,
    num_data: int = 100,
    num_steps: int = 500,
    num_chains: int = 16,
    leapfrog_steps: int = 10,
    step_size: float = 0.1,
    target_accept: float = 0.65,
    adapt_rate: float = 0.3,
    adapt_per_chain: bool = False,
    precondition: bool = True,
    initial: InitialFn | None = None,
    batch_size: int | None = None,
    seed: int | None = 0,
    progress: bool = True,
    rows: torch.Tensor | None = None,
) -> BDMCResult:
    """Bidirectional Monte Carlo: sandwich log p_r(x) on data simulated from the model.

    Draws z_n ~ r (the prior ``vae.prior(y)`` or ``source.sample``) and x_n ~ p(x | z_n)
    (``vae.decoder(z, y).sample()``; for a CVAE with labels cycling through the classes),
    then runs forward AIS from g (a lower bound of log p_r(x_n) in expectation) and
    reverse AIS from z_n with the schedule run backwards (an upper bound). The gap
    upper - lower bounds the error of AIS with this schedule on data like these
    (Grosse et al., 2015). Arguments as :func:`ais_log_likelihood`; the default schedule
    and chains match it, so the gap measures the accuracy of that estimator. The gap
    speaks for one chain only: AIS toward this ``source``, from this ``initial``, with this
    schedule. To bound the error of an AIS run, pass its source and its ``initial`` (for
    ``pyrovae evaluate``, :func:`~pyrovae.analysis.likelihood.proposals.initial_distribution`, as
    :func:`~pyrovae.analysis.evaluation.evaluate.run_ais` does); the default, the guide, is the
    start
    of AIS for the model's own prior only.

    The reverse chains do not adapt: they replay, backwards, the step sizes the forward
    run of the same datum adapted to (by default its pilot's, one per datum; with
    ``adapt="per_chain"`` chain c uses forward chain c's). Those depend on
    x but not on z_n nor on the reverse chains, so every reverse transition is a fixed
    f_t-invariant kernel and the upper bound holds exactly in expectation; the two runs
    also use the same kernels, as the sandwich assumes. Memory: (T - 1) C floats per
    datum of a batch for the recorded step sizes.

    ``progress`` shows one bar on stderr over the steps of both runs (the results are the
    same either way).

    Every random number of the chains of simulated datum n comes from generators keyed by
    (seed, n) (:mod:`~pyrovae.analysis.likelihood.datum_noise`; its own streams for the forward and
    the reverse run), so its bounds do not depend on ``batch_size`` or on the other data.
    ``rows`` runs the chains of those simulated data only (all ``num_data`` are simulated,
    the same whatever ``rows``): the result's bounds and AIS results are theirs, in that
    order, while ``x``, ``y`` and ``z`` hold every simulated datum; a sharded evaluation
    gives each process its rows (:func:`~pyrovae.analysis.likelihood.sharding.sharded_bdmc`).
    """
    check_positive_int("num_data", num_data)
    device = next(vae.parameters()).device
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
    )
    desc = (
        f"BDMC, {_source_label(source)}: {num_data} simulated data, {num_steps} steps "
        "forward + reverse"
    )
    index = torch.arange(num_data, device=device) if rows is None else rows.to(device)
    check_datum_rows(index, num_data)
    total = 2 * _num_batches(index.numel(), cfg) * num_steps
    with torch.no_grad(), seeded(seed, device), progress_bar(total, desc, "step", progress) as bar:
        key = noise_key(seed)
        x, y, z = _simulate(vae, source, num_data, device)
        xs, ys, zs = x[index], None if y is None else y[index], z[index]
        keyed = {"datum_index": index, "key": key, "on_step": bar.update}
        forward_weights, forward_accept, steps = _run_batches(
            vae, xs, ys, source, initial, cfg, record=True, stream=FORWARD_STREAM, **keyed
        )
        reverse_weights, reverse_accept, _ = _run_batches(
            vae,
            xs,
            ys,
            source,
            initial,
            cfg,
            z_start=zs,
            replay=steps,
            stream=REVERSE_STREAM,
            **keyed,
        )
    forward = _ais_result(forward_weights, forward_accept, cfg)
    reverse = _ais_result(reverse_weights, reverse_accept, cfg)
    return BDMCResult(
        lower_per_datum=forward.per_datum,
        upper_per_datum=-reverse.per_datum,
        x=x.cpu(),
        y=None if y is None else y.cpu(),
        z=z.cpu(),
        forward=forward,
        reverse=reverse,
        num_steps=num_steps,
        num_chains=num_chains,
        num_data=int(index.numel()),
    )


FORWARD_STREAM, REVERSE_STREAM = 1, 2
"""Noise streams of BDMC's forward and reverse chains (AIS on held-out data uses 0), so a
simulated datum n and a held-out image n never share random numbers."""


def check_datum_rows(rows: torch.Tensor, num_data: int) -> None:
    """``rows`` must be distinct int64 indices into the ``num_data`` simulated data."""
    bad = (
        rows.dtype != torch.int64
        or rows.dim() != 1
        or rows.numel() == 0
        or bool((rows < 0).any() or (rows >= num_data).any())
        or rows.unique().numel() != rows.numel()
    )
    if bad:
        raise ValueError(
            f"rows must be distinct int64 indices in [0, {num_data}) (num_data), got "
            f"{rows.tolist() if rows.numel() <= 8 else tuple(rows.shape)}"
        )
