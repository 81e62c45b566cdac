"""Per-datum importance weights of any model/guide pair, computed from Pyro traces."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites

from pyrovae.nets import check_positive_int

__all__ = [
    "IWAE",
    "ImportanceTerms",
    "ValidateFirst",
    "guide_latents",
    "importance_terms",
    "score_latents",
]

PARTICLE_PLATE = "_pyrovae_particles"


class ValidateFirst:
    """Pyro's and torch's distribution checks on the first call of a loop, off after it.

    Each check (a parameter's constraint, a value's support) reads a flag back from the
    device, six per evaluation of a VAE's model, and costs about a tenth of a CPU training
    step. The first call of a training loop, an AIS run or an estimator pass catches the
    shape and support mistakes; the calls after it run the same code on the same shapes.

        validate = ValidateFirst()
        for batch in batches:
            with validate():
                loss = ...
    """

    def __init__(self) -> None:
        self._done = False

    def __call__(self) -> AbstractContextManager[None]:
        first, self._done = not self._done, True
        return pyro.validation_enabled(first)


@dataclass
class ImportanceTerms:
    """Log densities at K draws z_k ~ q(z | x) for each of B data, each of shape (K, B).

    Attributes:
        log_likelihood: sum over observed model sites, log p(x | z_k).
        log_prior: sum over latent model sites, log p(z_k).
        log_guide: sum over guide sites, log q(z_k | x).
        latents: the guide's draws by site name, each of shape ``(K, B, *event_shape)``.
    """

    log_likelihood: torch.Tensor
    log_prior: torch.Tensor
    log_guide: torch.Tensor
    latents: dict[str, torch.Tensor]

    @property
    def log_weights(self) -> torch.Tensor:
        """log w_k = log p(x, z_k) - log q(z_k | x), shape (K, B)."""
        return self.log_likelihood + self.log_prior - self.log_guide


def _per_datum(site: dict[str, Any], shape: torch.Size, data_plate: str) -> torch.Tensor:
    """The site's log density per (particle, datum), times the site's scale."""
    names = {frame.name for frame in site["cond_indep_stack"]}
    if data_plate not in names:
        raise ValueError(
            f"sample site {site['name']!r} is outside the plate {data_plate!r}, so its density "
            "cannot be split per datum; put every sample site of model and guide inside "
            f"pyro.plate({data_plate!r}, batch_size)"
        )
    log_prob = site["fn"].log_prob(site["value"])
    scale = site["scale"]  # poutine.scale, a subsampling plate, or the KL warm-up weight
    if not (isinstance(scale, (int, float)) and scale == 1.0):
        log_prob = log_prob * scale
    try:
        return log_prob.expand(shape)
    except RuntimeError:
        raise ValueError(
            f"site {site['name']!r} has log_prob of shape {tuple(log_prob.shape)}, expected one "
            f"that broadcasts to (num_particles, batch) = {tuple(shape)}; keep the data plate at "
            "dim=-1 and extra dims in the event shape (e.g. .to_event(1))"
        ) from None


def _vectorized(fn: Callable[..., Any], num_particles: int) -> Callable[..., Any]:
    """``fn`` run inside a plate of ``num_particles`` particles at dim -2."""

    def wrapped(*a: Any, **k: Any) -> Any:
        with pyro.plate(PARTICLE_PLATE, num_particles, dim=-2):
            return fn(*a, **k)

    return wrapped


def importance_terms(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_particles: int = 1,
    data_plate: str = "data",
    **kwargs: Any,
) -> ImportanceTerms:
    """Draw ``num_particles`` z ~ guide for every datum and score them under model and guide.

    Both functions run once inside an extra plate of size K at dim -2, so the encoder runs
    once per datum and the decoder once on all K x B draws. Unlike
    ``pyro.infer.importance.vectorized_importance_weights``, the data plate is kept, so
    the result has one entry per particle and datum.
    """
    check_positive_int("num_particles", num_particles)

    guide_trace = poutine.trace(_vectorized(guide, num_particles)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(
        poutine.replay(_vectorized(model, num_particles), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    return _collect_terms(guide_trace, model_trace, num_particles, data_plate)


def guide_latents(
    guide: Callable[..., Any], *args: Any, num_particles: int = 1, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Draw ``num_particles`` values of every latent guide site per datum: (K, B, *event)."""
    check_positive_int("num_particles", num_particles)
    with torch.no_grad():
        trace = poutine.trace(_vectorized(guide, num_particles)).get_trace(*args, **kwargs)
    return {
        name: site["value"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"]
    }


def score_latents(
    model: Callable[..., Any],
    guide: Callable[..., Any] | None,
    latents: dict[str, torch.Tensor],
    *args: Any,
    data_plate: str = "data",
    **kwargs: Any,
) -> ImportanceTerms:
    """Score given latent values under model and guide: log p(x | z), log p(z), log q(z | x).

    ``latents`` maps each latent site to values of shape (K, B, *event_shape), K particles
    for each of B data (any source of draws: a proposal, an MCMC chain). Model and guide
    run once, conditioned on those values, inside a plate of size K at dim -2, so the
    decoder runs once on all K x B values. The values may require grad (for HMC). With
    ``guide=None`` the guide is not run and ``log_guide`` is zero.
    """
    if not latents:
        raise ValueError("latents is empty; pass {'z': z} with z of shape (K, B, z_dim)")
    num_particles = next(iter(latents.values())).shape[0]
    for name, value in latents.items():
        if value.dim() < 2 or value.shape[0] != num_particles:
            raise ValueError(
                f"latents[{name!r}] has shape {tuple(value.shape)}; every value needs shape "
                f"(num_particles, batch, *event_shape) with num_particles={num_particles}"
            )

    guide_trace = None
    if guide is not None:
        conditioned = poutine.condition(_vectorized(guide, num_particles), data=latents)
        guide_trace = poutine.trace(conditioned).get_trace(*args, **kwargs)
    conditioned_model = poutine.condition(_vectorized(model, num_particles), data=latents)
    model_trace = poutine.trace(conditioned_model).get_trace(*args, **kwargs)
    return _collect_terms(guide_trace, model_trace, num_particles, data_plate, set(latents))


def _collect_terms(
    guide_trace: poutine.Trace | None,
    model_trace: poutine.Trace,
    num_particles: int,
    data_plate: str,
    latent_names: set[str] | None = None,
) -> ImportanceTerms:
    """Sum per-datum log densities of a model trace (and guide trace) into ImportanceTerms.

    Model sites named in ``latent_names`` (conditioned latents) count as latent; without
    it, the trace's own ``is_observed`` decides.
    """
    model_trace = prune_subsample_sites(model_trace)
    batch = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            for frame in site["cond_indep_stack"]:
                if frame.name == data_plate:
                    batch = frame.size
    if batch is None:
        raise ValueError(f"the model has no sample site inside pyro.plate({data_plate!r}, ...)")
    shape = torch.Size((num_particles, batch))
    log_likelihood = log_prior = log_guide = None
    latents: dict[str, torch.Tensor] = {}
    for site in model_trace.nodes.values():
        if site["type"] != "sample":
            continue
        lp = _per_datum(site, shape, data_plate)
        observed = site["is_observed"]
        if latent_names is not None and site["name"] in latent_names:
            observed = False
            latents[site["name"]] = site["value"]
        if observed:
            log_likelihood = lp if log_likelihood is None else log_likelihood + lp
        else:
            log_prior = lp if log_prior is None else log_prior + lp
    if guide_trace is not None:
        guide_trace = prune_subsample_sites(guide_trace)
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            if site["is_observed"] and (latent_names is None or site["name"] not in latent_names):
                continue
            lp = _per_datum(site, shape, data_plate)
            log_guide = lp if log_guide is None else log_guide + lp
            latents[site["name"]] = site["value"]
    if log_likelihood is None:
        raise ValueError("the model has no observed sample site (pass obs=x to pyro.sample)")
    zeros = torch.zeros(shape, dtype=log_likelihood.dtype, device=log_likelihood.device)
    return ImportanceTerms(
        log_likelihood=log_likelihood,
        log_prior=zeros if log_prior is None else log_prior,
        log_guide=zeros if log_guide is None else log_guide,
        latents=latents,
    )


class IWAE:
    """The importance-weighted bound L_K = E[log 1/K sum_k w_k] as a training objective.

    Importance Weighted Autoencoders (Burda et al., 2016), https://arxiv.org/abs/1509.00519.
    Particles are vectorized; the guide must be reparameterizable. With K=1 it is the ELBO.

    Every site's log density is multiplied by its ``scale`` (as Pyro's ELBOs do), so a KL
    warm-up that scales the latent sites by beta trains on the tempered bound
    E[log 1/K sum_k p(x | z_k) (p(z_k) / q(z_k | x))^beta], z_k ~ q: for beta = 1 the
    IWAE bound, for beta = 0 a bound on log p(x | z) alone averaged over K draws of q (the
    reconstruction term of the warm-up's start).
    """

    def __init__(self, num_particles: int = 5) -> None:
        self.num_particles = check_positive_int("num_particles", num_particles)

    def differentiable_loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """-sum_b L_K(x_b), differentiable with respect to model and guide parameters."""
        terms = importance_terms(model, guide, *args, num_particles=self.num_particles, **kwargs)
        bound = torch.logsumexp(terms.log_weights, dim=0) - math.log(self.num_particles)
        return -bound.sum()

    def loss(
        self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()
