"""Reference posteriors p(z | x) by NUTS, and how the guide q(z | x) compares with them.

For one datum x, NUTS runs on the unnormalized posterior p(z | x) ∝ p(x | z) p(z) of the
model itself: ``vae.model`` on the batch ``x[None]`` (its site ``"x"`` is observed), so no
density is written by hand and any prior or decoder works. C chains run one after the
other, each started at a dispersed point z_0 = m + spread (z_q - m) with z_q ~ q(z | x)
and m the guide's mean, and each adapts its own step size and diagonal mass matrix during
warm-up. The No-U-Turn Sampler (Hoffman & Gelman, 2014), https://arxiv.org/abs/1111.4246

Convergence is judged by ArviZ's rank-normalized split R-hat, the bulk and tail
effective sample sizes and NUTS's divergent transitions. A run is flagged, with each
reason named (:data:`FLAG_REASONS`), when R-hat exceeds 1.01 in any dim, when the bulk or
the tail ESS of any dim falls below 100 per chain (400 for four chains), when any
transition after warm-up diverged (the sampler met curvature it could not follow, so
the draws may miss part of the posterior), or when a diagnostic or draw is not finite.
The thresholds are those recommended by Rank-normalization, folding, and localization:
an improved R-hat for assessing convergence of MCMC (Vehtari et al., 2021),
https://arxiv.org/abs/1903.08008

Example::

    ref = reference_posterior(vae, x[0], num_chains=4, warmup=300, num_samples=500)
    if not ref.flagged:
        print(guide_vs_posterior(vae, x[0], None, ref)["coverage_90"])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pyro.poutine as poutine
import torch
from pyro.infer import MCMC, NUTS
from torch import nn

from pyrovae.analysis.progress import progress_bar
from pyrovae.analysis.sources.helpers import is_diagonal_normal, seeded
from pyrovae.nets import check_positive_int

__all__ = [
    "RHAT_THRESHOLD",
    "ESS_PER_CHAIN",
    "MAX_DIVERGENT",
    "FLAG_REASONS",
    "ReferencePosterior",
    "ess_threshold",
    "flag_reasons",
    "reference_posterior",
    "reference_posteriors",
    "guide_vs_posterior",
    "default_data",
    "NutsLength",
    "UNADAPTED_WARMUP",
    "nuts_length",
    "gradient_timer",
]

RHAT_THRESHOLD = 1.01
"""Runs whose largest rank-normalized split R-hat exceeds this are flagged."""
ESS_PER_CHAIN = 100
"""Runs whose smallest bulk or tail ESS is below this many per chain are flagged (Vehtari
et al. 2021: at least 100 per chain, 400 for four chains, before R-hat and the Monte Carlo
errors can be trusted)."""
MAX_DIVERGENT = 0
"""Runs with more divergent transitions after warm-up than this are flagged (any one)."""
FLAG_REASONS = ("r_hat", "ess_bulk", "ess_tail", "divergent", "not_finite")
"""Why a run is flagged: R-hat above :data:`RHAT_THRESHOLD`; bulk or tail ESS below
:func:`ess_threshold`; divergent transitions; a NaN diagnostic or a non-finite draw."""
MOMENT_DRAWS = 256
"""Draws of a guide that is not a diagonal Normal, for its mean (chain initialisation)."""
Z_95 = 1.6448536269514722
"""The standard Normal's 95% quantile: the central 90% interval is mean +- Z_95 std."""


@dataclass
class ReferencePosterior:
    """NUTS draws from p(z | x) for one datum, with ArviZ's convergence diagnostics.

    Attributes:
        draws: the draws after warm-up, (num_chains, num_samples, z_dim), on the CPU.
        inference_data: ``az.from_pyro`` of the chains, concatenated along ``chain``; the
            posterior group holds ``"z"`` with dims (chain, draw, z_dim).
        r_hat_max: the largest rank-normalized split R-hat over the latent dims.
        ess_bulk_min: the smallest bulk effective sample size over the latent dims.
        ess_tail_min: the smallest tail effective sample size over the latent dims.
        num_divergent: divergent transitions after warm-up, all chains together.
        flagged: True when any check failed (``flag_reasons`` is not empty): the draws
            should not be trusted as a reference.
        mean: the posterior mean per dim, float64 (z_dim,).
        std: the posterior standard deviation per dim, float64 (z_dim,).
        flag_reasons: which checks failed, a sub-list of :data:`FLAG_REASONS` (see
            :func:`flag_reasons`); empty for a run that can serve as a reference.
    """

    draws: torch.Tensor
    inference_data: Any
    r_hat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    num_divergent: int
    flagged: bool
    mean: torch.Tensor
    std: torch.Tensor
    flag_reasons: list[str] = field(default_factory=list)

    @property
    def num_chains(self) -> int:
        return self.draws.shape[0]

    @property
    def num_samples(self) -> int:
        return self.draws.shape[1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: diagnostics, and the posterior mean and std per dim."""
        return {
            "num_chains": self.num_chains,
            "num_samples": self.num_samples,
            "r_hat_max": self.r_hat_max,
            "ess_bulk_min": self.ess_bulk_min,
            "ess_tail_min": self.ess_tail_min,
            "num_divergent": self.num_divergent,
            "flagged": self.flagged,
            "flag_reasons": list(self.flag_reasons),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }


@contextmanager
def unregistered(vae: nn.Module) -> Iterator[None]:
    """Run the block with ``vae.register_params`` off, so that ``vae.model`` and
    ``vae.guide`` leave Pyro's param store alone (restored after)."""
    had_own = "register_params" in vae.__dict__
    before = getattr(vae, "register_params", None)
    vae.register_params = False
    try:
        yield
    finally:
        if had_own:
            vae.register_params = before
        else:
            del vae.register_params


def frozen(vae: nn.Module, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (``vae.model`` or ``vae.guide``) with the network's parameters as constants:
    no param sites and nothing written to Pyro's param store, so that inference (NUTS,
    SVI over another guide's parameters) never sees or updates them."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with unregistered(vae):
            return poutine.block(fn, hide_types=["param"])(*args, **kwargs)

    return wrapped


def latent_model(vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> Callable[[], None]:
    """``vae.model`` on the batch ``x`` (its ``"x"`` site observed) as a model without
    arguments whose only latent site is ``"z"``, its parameters frozen (:func:`frozen`)."""
    model = frozen(vae, vae.model)

    def conditioned() -> None:
        model(x, y)

    return conditioned


def _one_datum(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x`` (x_dim,) and ``y`` (y_dim,) as a batch of one, checked against the model."""
    if not isinstance(x, torch.Tensor) or x.shape != (vae.x_dim,):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be one datum of shape ({vae.x_dim},), got {shape}")
    if vae.conditional:
        if not isinstance(y, torch.Tensor) or y.shape != (vae.y_dim,):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else y
            raise ValueError(
                f"a CVAE needs y, one one-hot label of shape ({vae.y_dim},), got {shape}"
            )
        return x[None], y[None].to(x)
    if y is not None:
        raise ValueError("y was given for an unconditional VAE; drop it (pass y=None)")
    return x[None], None


@torch.no_grad()
def _dispersed_inits(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None, num_chains: int, spread: float
) -> torch.Tensor:
    """z_0 = m + spread (z_q - m), z_q ~ q(z | x), m the guide's mean: (num_chains, 1, z_dim)."""
    with unregistered(vae):
        q = vae.encoder(x, y)
    z = q.sample((num_chains,))
    if is_diagonal_normal(q):
        mean = q.base_dist.loc
    else:
        mean = q.sample((MOMENT_DRAWS,)).mean(0)
    return mean + spread * (z - mean)


def _min_or_nan(values: np.ndarray) -> float:
    return math.nan if np.isnan(values).any() else float(values.min())


def ess_threshold(num_chains: int) -> float:
    """The smallest bulk and tail ESS a run of ``num_chains`` chains may have unflagged:
    :data:`ESS_PER_CHAIN` per chain."""
    return float(ESS_PER_CHAIN * num_chains)


def flag_reasons(
    r_hat_max: float,
    ess_bulk_min: float,
    ess_tail_min: float,
    num_divergent: int,
    num_chains: int,
    finite: bool = True,
) -> list[str]:
    """The checks that a NUTS run fails, in the order of :data:`FLAG_REASONS`.

    ``"r_hat"``: R-hat > :data:`RHAT_THRESHOLD`; ``"ess_bulk"``/``"ess_tail"``: that ESS
    below :func:`ess_threshold` (``num_chains``); ``"divergent"``: more than
    :data:`MAX_DIVERGENT` divergent transitions; ``"not_finite"``: a NaN diagnostic, or
    ``finite`` False (a draw that is not finite). Vehtari et al. (2021),
    https://arxiv.org/abs/1903.08008
    """
    minimum = ess_threshold(num_chains)
    reasons = []
    if r_hat_max > RHAT_THRESHOLD:
        reasons.append("r_hat")
    if ess_bulk_min < minimum:
        reasons.append("ess_bulk")
    if ess_tail_min < minimum:
        reasons.append("ess_tail")
    if num_divergent > MAX_DIVERGENT:
        reasons.append("divergent")
    if not finite or any(math.isnan(v) for v in (r_hat_max, ess_bulk_min, ess_tail_min)):
        reasons.append("not_finite")
    return reasons


def reference_posterior(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    num_chains: int = 4,
    warmup: int = 300,
    num_samples: int = 500,
    seed: int | None = 0,
    target_accept: float = 0.8,
    init_spread: float = 2.0,
    progress: bool = False,
    on_iteration: Callable[[], None] | None = None,
) -> ReferencePosterior:
    """NUTS draws from p(z | x) ∝ p(x | z) p(z) for ONE datum, with convergence checks.

    Args:
        vae: the model (its parameters are held fixed).
        x: one datum as the model sees it (binarized for a Bernoulli decoder), (x_dim,).
        y: one one-hot label (y_dim,) for a CVAE (the posterior is then p(z | x, y)).
        num_chains: chains, run one after the other, each with its own adaptation.
        warmup: warm-up (adaptation) steps per chain, discarded.
        num_samples: draws kept per chain.
        seed: seeds the chains' starting points and NUTS (the global RNG is restored
            after); the same seed gives the same draws. None uses the global RNG.
        target_accept: NUTS's target acceptance probability for step-size adaptation.
        init_spread: chains start at m + init_spread (z_q - m), z_q ~ q(z | x): values
            above 1 overdisperse the starts relative to the guide, as R-hat assumes.
        progress: show progress over the num_chains x (warmup + num_samples) NUTS
            iterations on stderr (:func:`~pyrovae.analysis.progress.progress_bar`).
        on_iteration: called after every NUTS iteration (e.g. a caller's progress bar
            over many data). Neither changes the draws.
    """
    check_positive_int("num_chains", num_chains)
    check_positive_int("num_samples", num_samples)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    x1, y1 = _one_datum(vae, x, y)
    model = latent_model(vae, x1, y1)
    runs = []
    total = num_chains * (warmup + num_samples)
    bar = progress_bar(total, "NUTS p(z | x)", "iteration", progress)

    def hook(*_: Any) -> None:
        bar.update()
        if on_iteration is not None:
            on_iteration()

    with bar, seeded(seed, x1.device):
        inits = _dispersed_inits(vae, x1, y1, num_chains, float(init_spread))
        for start in inits:
            kernel = NUTS(model, target_accept_prob=target_accept)
            mcmc = MCMC(
                kernel,
                num_samples=num_samples,
                warmup_steps=warmup,
                initial_params={"z": start},
                disable_progbar=True,
                hook_fn=hook,
            )
            mcmc.run()
            runs.append(mcmc)
    draws = torch.stack([run.get_samples()["z"][:, 0].detach().cpu() for run in runs])
    idata = az.concat(
        *[
            az.from_pyro(
                run, log_likelihood=False, dims={"z": ["datum", "z_dim"], "x": ["datum", "x_dim"]}
            )
            for run in runs
        ],
        dim="chain",
    ).isel(datum=0)
    r_hat = az.rhat(idata, var_names=["z"])["z"].values
    ess_bulk = az.ess(idata, var_names=["z"], method="bulk")["z"].values
    ess_tail = az.ess(idata, var_names=["z"], method="tail")["z"].values
    diverging = idata.sample_stats["diverging"].values
    r_hat_max = math.nan if np.isnan(r_hat).any() else float(r_hat.max())
    ess_bulk_min, ess_tail_min = _min_or_nan(ess_bulk), _min_or_nan(ess_tail)
    num_divergent = int(diverging.sum())
    reasons = flag_reasons(
        r_hat_max,
        ess_bulk_min,
        ess_tail_min,
        num_divergent,
        num_chains,
        finite=bool(torch.isfinite(draws).all()),
    )
    flat = draws.double().reshape(-1, draws.shape[-1])
    return ReferencePosterior(
        draws=draws,
        inference_data=idata,
        r_hat_max=r_hat_max,
        ess_bulk_min=ess_bulk_min,
        ess_tail_min=ess_tail_min,
        num_divergent=num_divergent,
        flagged=bool(reasons),
        mean=flat.mean(0),
        std=flat.std(0),
        flag_reasons=reasons,
    )


def reference_posteriors(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
) -> list[ReferencePosterior]:
    """:func:`reference_posterior` for every row of ``x`` (N, x_dim) (and ``y`` (N, y_dim))."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a batch of shape (num_data, x_dim)")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape[0] != x.shape[0]):
        raise ValueError("y must hold one one-hot label per row of x, shape (num_data, y_dim)")
    return [
        reference_posterior(vae, x[n], None if y is None else y[n], **kwargs)
        for n in range(x.shape[0])
    ]


@torch.no_grad()
def guide_vs_posterior(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    reference: ReferencePosterior,
    num_draws: int = 2000,
    seed: int | None = 0,
) -> dict[str, Any]:
    """The guide q(z | x) against the NUTS reference p(z | x), per latent dim, JSON-ready.

    Mean and standard deviation of q are exact for a diagonal Normal guide and from
    ``num_draws`` draws otherwise (its 5% and 95% quantiles likewise). ``coverage_90`` is
    the share of the reference draws inside q's central 90% interval: 0.9 when q's
    marginals match the posterior's, lower when q is too narrow or misplaced (the
    typical failure of a guide fitted by KL(q || p)). ``coverage_90_stderr`` is its
    Monte Carlo standard error, sqrt(c (1 - c) / ESS) with the ESS of the indicator
    draws. ``std_ratio`` is q's std over the posterior's; ``mean_shift`` the distance of
    the means in posterior standard deviations.
    """
    check_positive_int("num_draws", num_draws)
    x1, y1 = _one_datum(vae, x, y)
    with unregistered(vae):
        q = vae.encoder(x1, y1)
    if is_diagonal_normal(q):
        family = "diagonal"
        mean = q.base_dist.loc[0].double().cpu()
        std = q.base_dist.scale.expand_as(q.base_dist.loc)[0].double().cpu()
        low, high = mean - Z_95 * std, mean + Z_95 * std
    else:
        family = "flow"
        with seeded(seed, x1.device):
            z = q.sample((num_draws,))[:, 0].double().cpu()
        mean, std = z.mean(0), z.std(0)
        low, high = torch.quantile(z, 0.05, dim=0), torch.quantile(z, 0.95, dim=0)
    post = reference.draws.double()
    inside = ((post >= low) & (post <= high)).double()  # (chains, samples, z_dim)
    coverage = inside.mean((0, 1))
    ess = az.ess(az.convert_to_dataset({"inside": inside.numpy()}))["inside"].values
    spread = (coverage * (1 - coverage)).numpy()
    stderr = np.where(spread > 0, np.sqrt(spread / np.where(spread > 0, ess, 1.0)), 0.0)
    return {
        "guide_family": family,
        "guide_mean": mean.tolist(),
        "guide_std": std.tolist(),
        "posterior_mean": reference.mean.tolist(),
        "posterior_std": reference.std.tolist(),
        "std_ratio": (std / reference.std).tolist(),
        "mean_shift": ((mean - reference.mean) / reference.std).tolist(),
        "coverage_90": coverage.tolist(),
        "coverage_90_stderr": [float(v) for v in stderr],
        "coverage_90_mean": float(coverage.mean()),
        "reference_flagged": reference.flagged,
        "reference_flag_reasons": list(reference.flag_reasons),
    }


def default_data(split: Any, per_class: int = 2, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` data of each class of ``split`` (``.y`` integer labels (N,)),
    drawn with a fixed seed, in class order (all of a class when it has fewer)."""
    check_positive_int("per_class", per_class)
    labels = split.y.detach().cpu()
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for label in torch.unique(labels).tolist():
        members = (labels == label).nonzero().flatten()
        picks.append(members[torch.randperm(len(members), generator=gen)[:per_class]].sort()[0])
    return torch.cat(picks)


UNADAPTED_WARMUP = 100
"""Warm-up iterations before NUTS's first mass-matrix update (Stan's and Pyro's schedule:
a 75-iteration buffer, then a first window of 25): trees there are as deep as the
pilot's, whose short warm-up adapts only the step size for most of its length."""


@dataclass(frozen=True)
class NutsLength:
    """Gradients of the log joint per NUTS iteration, counted on a short pilot chain, and
    their rate there.

    Attributes:
        warmup: per warm-up iteration of the pilot (its short adaptation: an upper value).
        sample: per kept draw (2^depth - 1 leapfrog steps of the tree, plus rejections).
        pilot_warmup, pilot_samples: the pilot's iterations.
        rate: gradients per second from the pilot's first iteration to its last, the tree
            building's own work included (NaN for a pilot of one iteration).
    """

    warmup: float
    sample: float
    pilot_warmup: int
    pilot_samples: int
    rate: float = math.nan

    def gradients(self, warmup: int, num_samples: int) -> float:
        """Expected gradients of one chain of ``warmup`` + ``num_samples`` iterations.

        The first :data:`UNADAPTED_WARMUP` warm-up iterations run before the first update
        of the mass matrix and cost what the pilot's warm-up did; the later ones, with an
        adapted metric, are taken halfway between that and a draw; every kept draw costs a
        pilot draw. On two images of a z=50 MNIST VAE this came within 20% of the counted
        gradients of 100 + 100 and of 300 + 500 iterations.
        """
        early = min(warmup, UNADAPTED_WARMUP)
        late = warmup - early
        return (
            early * self.warmup
            + late * (self.warmup + self.sample) / 2
            + (num_samples * self.sample)
        )


def nuts_length(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    warmup: int = 40,
    num_samples: int = 10,
    seed: int | None = 0,
    target_accept: float = 0.8,
    init_spread: float = 2.0,
) -> NutsLength:
    """Run one short NUTS chain on p(z | x) for ONE datum (started as in
    :func:`reference_posterior`) and count the log-joint gradients of each iteration: the
    units of work of a NUTS run, whose tree size depends on the posterior's geometry. The
    global RNG is left as it was."""
    check_positive_int("num_samples", num_samples)
    x1, y1 = _one_datum(vae, x, y)
    model = latent_model(vae, x1, y1)
    calls = [0]
    marks = {"Warmup": 0, "Sample": 0}
    times: list[tuple[float, int]] = []  # (time, gradients so far) after each iteration

    def counted() -> None:
        calls[0] += 1
        model()

    def hook(_kernel: Any, _params: Any, stage: str, _i: int) -> None:
        marks[stage.split(" ")[0]] = calls[0]
        times.append((time.perf_counter(), calls[0]))

    with seeded(seed, x1.device):
        start = _dispersed_inits(vae, x1, y1, 1, float(init_spread))[0]
        calls[0] = 0
        MCMC(
            NUTS(counted, target_accept_prob=target_accept),
            num_samples=num_samples,
            warmup_steps=warmup,
            initial_params={"z": start},
            disable_progbar=True,
            hook_fn=hook,
        ).run()
    in_warmup = marks["Warmup"]
    (start_time, start_calls), (end_time, end_calls) = times[0], times[-1]
    rate = (end_calls - start_calls) / (end_time - start_time) if len(times) > 1 else math.nan
    return NutsLength(
        warmup=in_warmup / max(warmup, 1),
        sample=(marks["Sample"] - in_warmup) / num_samples,
        pilot_warmup=warmup,
        pilot_samples=num_samples,
        rate=rate,
    )


def gradient_timer(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, repeats: int = 5
) -> Callable[[], float]:
    """A call that evaluates the gradient of log p(x, z) in z ``repeats`` times for ONE
    datum, as NUTS does (Pyro's potential energy of :func:`latent_model`), and returns
    ``repeats``: the unit of :func:`~pyrovae.analysis.cost.measure_rate`."""
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad

    x1, y1 = _one_datum(vae, x, y)
    with seeded(0, x1.device):  # the global RNG is left as it was
        start = {"z": _dispersed_inits(vae, x1, y1, 1, 0.0)[0]}
        model = latent_model(vae, x1, y1)
        _, potential_fn, _, _ = initialize_model(model, initial_params=start)

    def run() -> float:
        for _ in range(repeats):
            potential_grad(potential_fn, start)
        return float(repeats)

    return run
