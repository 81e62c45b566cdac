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

import torch
from torch import nn

# The chain machinery lived here before it moved to .ais_chains: its names stay importable.
from pyrovae.analysis.likelihood.ais_chains import (  # noqa: F401
    LATENT_SITE,
    MOMENT_DRAWS,
    AISResult,
    InitialFn,
    _ais_result,
    _batch_initial,
    _chain_stderr,
    _check_source,
    _config,
    _initial_variance,
    _log_mean_exp,
    _model_device,
    _num_batches,
    _run_batches,
    _RunConfig,
    _source_label,
    _vae_log_target,
    guide_initial,
)
from pyrovae.analysis.likelihood.annealing import (
    ADAPT_MODES,
    DEFAULT_PILOT_CHAINS,
    AnnealResult,
    anneal,
    hmc_transition,
    sigmoid_schedule,
)
from pyrovae.analysis.likelihood.bdmc import BDMCResult, bdmc  # noqa: F401  (BDMC builds on .ais_chains; importable here)
from pyrovae.analysis.likelihood.datum_noise import check_datum_index, noise_key
from pyrovae.analysis.likelihood.labels import label_rows, summed_ais, sums_out_labels
from pyrovae.analysis.likelihood.loglik import plural, progress_bar
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.encodings import check_data
from pyrovae.analysis.sources.helpers import seeded

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
            :func:`~pyrovae.analysis.likelihood.loglik.default_draws_per_pass` / (C + P).
        seed: seed the run (the global RNG is restored afterwards); None uses it.
        progress: show a progress bar over the annealing steps of every data batch on
            stderr (the results are the same either way).
        datum_index: (N,) the data's indices in the whole set: every random number of
            datum n (start, momenta, accept tests) then comes from a generator seeded with
            (seed, n, use) (:mod:`~pyrovae.analysis.likelihood.datum_noise`), so its estimate does
            not
            depend on ``batch_size`` or on the other data (a shard gets the values of the
            whole set). The initial distribution must then be a diagonal Normal or a
            Gaussian mixture proposal. None: torch's generator, in batch order.
        adapt: what drives the step-size adaptation (see the module docstring):
            ``"pilot"`` (default) P pilot chains per datum, run in the same passes and
            dropped, so that E[w] = p_r(x) exactly; ``"pooled"`` the mean acceptance of
            the datum's own chains, ``"per_chain"`` each chain's own (both biased).
        pilot_chains: P, the pilot chains per datum of ``adapt="pilot"`` (P / C more work).

    For the semi-supervised M2 given no labels, log p_r(x) sums the label out exactly: AIS
    runs once per label (C chains each, from q(z | x, y)) and the C estimates of p_r(x, y)
    are added (:mod:`~pyrovae.analysis.likelihood.labels`).
    """
    if sums_out_labels(vae, y):
        rows, labels, index = label_rows(x, vae.y_dim, datum_index)
        result = ais_log_likelihood(
            vae,
            rows,
            labels,
            source,
            initial=initial,
            num_steps=num_steps,
            num_chains=num_chains,
            leapfrog_steps=leapfrog_steps,
            step_size=step_size,
            target_accept=target_accept,
            adapt_rate=adapt_rate,
            adapt_per_chain=adapt_per_chain,
            precondition=precondition,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            datum_index=index,
            adapt=adapt,
            pilot_chains=pilot_chains,
        )
        return summed_ais(result, vae.y_dim)
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
