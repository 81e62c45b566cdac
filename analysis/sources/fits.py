"""Fitting latent sources to the encoder's posteriors q(z | x_n): Gaussians, EM mixtures, flows.

The registry :data:`SOURCES` maps each source name of :mod:`pyrovae.analysis.sources`
to its fit; :func:`fit_source`, :func:`fit_sources` and :func:`fit_per_class` are the
entry points (also importable from :mod:`pyrovae.analysis.sources`)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.progress import progress_iter
from pyrovae.analysis.sources.classes import (
    LOG_2PI,
    VARIANCE_FLOOR,
    AggregatePosterior,
    FlowSource,
    GaussianSource,
    LatentSource,
    MixtureSource,
    PriorSource,
    _check_samples,
)
from pyrovae.analysis.sources.encodings import Encodings
from pyrovae.analysis.sources.helpers import one_cpu_thread, seeded
from pyrovae.analysis.sources.mixture_pruning import DEFAULT_TOLERANCE
from pyrovae.build import lookup
from pyrovae.nets import check_positive_int
from pyrovae.settings import AGGREGATE_COMPONENTS

__all__ = [
    "SOURCES",
    "fit_source",
    "fit_sources",
    "fit_per_class",
    "fit_gaussian",
    "fit_gaussian_mixture",
    "fit_flow",
]


def fit_gaussian(
    z: torch.Tensor,
    diagonal: bool = False,
    variance_floor: float = VARIANCE_FLOOR,
    name: str = "gaussian",
) -> GaussianSource:
    """Maximum-likelihood Gaussian (full or diagonal covariance) of draws ``z`` (n, z_dim),
    with ``variance_floor * I`` added to the covariance."""
    z = _check_samples("z", z).double()
    cov = torch.cov(z.T, correction=0).reshape(z.shape[1], z.shape[1])
    return GaussianSource.from_moments(z.mean(0), cov, diagonal, variance_floor, name=name)


def _kmeans_pp(z: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each new center drawn with probability proportional to D(z)^2."""
    n = z.shape[0]
    first = torch.randint(n, (1,), generator=generator, device=z.device)
    centers = [z[first[0]]]
    d2 = (z - centers[0]).pow(2).sum(-1)
    for _ in range(k - 1):
        cdf = d2.cumsum(0)
        u = torch.rand(1, generator=generator, device=z.device, dtype=z.dtype) * cdf[-1]
        idx = int(torch.searchsorted(cdf, u).clamp(max=n - 1))
        centers.append(z[idx])
        d2 = torch.minimum(d2, (z - z[idx]).pow(2).sum(-1))
    return torch.stack(centers)


def _component_log_probs(z: torch.Tensor, locs: torch.Tensor, trils: torch.Tensor) -> torch.Tensor:
    """log N(z_i; loc_c, L_c L_c^T) for every point i and component c: shape (n, C)."""
    d = z.shape[1]
    out = []
    for loc, tril in zip(locs, trils, strict=True):
        sol = torch.linalg.solve_triangular(tril, (z - loc).T, upper=False)
        out.append(-0.5 * sol.pow(2).sum(0) - tril.diagonal().log().sum() - 0.5 * d * LOG_2PI)
    return torch.stack(out, dim=1)


def _m_step(
    z: torch.Tensor, resp: torch.Tensor, floor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, d = z.shape
    counts = resp.sum(0) + 10 * torch.finfo(z.dtype).eps
    locs = (resp.T @ z) / counts[:, None]
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    trils = []
    for c in range(resp.shape[1]):
        diff = z - locs[c]
        cov = (resp[:, c, None] * diff).T @ diff / counts[c] + floor * eye
        trils.append(torch.linalg.cholesky(cov))
    return (counts / n).log(), locs, torch.stack(trils)


def fit_gaussian_mixture(
    z: torch.Tensor,
    num_components: int = 10,
    covariance_floor: float = 1e-4,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    name: str = "gmm",
) -> MixtureSource:
    """Gaussian mixture with full covariances fitted to ``z`` (n, z_dim) by EM.

    Initialized by k-means++ seeding (from ``seed``) and one hard assignment; every
    covariance gets ``covariance_floor * I`` added so no component collapses onto a point.
    Stops when the mean log-likelihood per point improves by less than ``tol`` nats.
    Computed in float64 on the device of ``z`` (on one thread on a CPU: see
    :func:`one_cpu_thread`).
    """
    num_components = check_positive_int("num_components", num_components)
    z = _check_samples("z", z, min_rows=num_components).double()
    if not covariance_floor > 0:
        raise ValueError(f"covariance_floor must be positive, got {covariance_floor!r}")
    check_positive_int("max_iter", max_iter)
    generator = torch.Generator(device=z.device).manual_seed(seed)
    with one_cpu_thread(z.device):
        centers = _kmeans_pp(z, num_components, generator)
        nearest = torch.cdist(z, centers).argmin(-1)
        resp = F.one_hot(nearest, num_components).to(z.dtype)
        log_weights, locs, trils = _m_step(z, resp, covariance_floor)
        previous = -math.inf
        for _ in range(max_iter):
            joint = _component_log_probs(z, locs, trils) + log_weights
            log_norm = torch.logsumexp(joint, dim=1, keepdim=True)
            mean_ll = float(log_norm.mean())
            resp = (joint - log_norm).exp()
            log_weights, locs, trils = _m_step(z, resp, covariance_floor)
            if mean_ll - previous < tol:
                break
            previous = mean_ll
    return MixtureSource(log_weights, locs, trils, name=name)


def fit_flow(
    z: torch.Tensor,
    num_flows: int = 6,
    hidden_dims: Sequence[int] | None = None,
    num_steps: int = 400,
    batch_size: int = 1024,
    lr: float = 5e-3,
    seed: int = 0,
    name: str = "flow",
) -> FlowSource:
    """A :class:`FlowSource` fitted to ``z`` (n, z_dim) by maximum likelihood with Adam.

    ``num_steps`` minibatch steps of ``batch_size`` draws, with the learning rate decayed
    to zero on a cosine schedule. Seeded by ``seed`` (initial weights and minibatches);
    the global RNG is left as it was. On a CPU it runs on one thread (see
    :func:`one_cpu_thread`).
    """
    z = _check_samples("z", z).float()
    check_positive_int("num_steps", num_steps)
    check_positive_int("batch_size", batch_size)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    scale = z.std(0).clamp_min(1e-6)
    with seeded(seed, z.device), one_cpu_thread(z.device), torch.enable_grad():
        source = FlowSource(z.mean(0), scale, num_flows, hidden_dims, name=name).to(z.device)
        optimizer = torch.optim.Adam(source.parameters(), lr=lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, num_steps)
        for _ in range(num_steps):
            idx = torch.randint(z.shape[0], (min(batch_size, z.shape[0]),), device=z.device)
            loss = -source.log_prob(z[idx]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return source.eval().requires_grad_(False)


def _fit_prior(enc: Encodings, seed: int = 0, name: str = "prior") -> LatentSource:
    return PriorSource(enc.vae, label=enc.label, name=name)


def _fit_aggregate(
    enc: Encodings,
    max_components: int | None = None,
    seed: int = 0,
    chunk_size: int = 2**22,
    name: str = "aggregate",
    tolerance: float = DEFAULT_TOLERANCE,
    flow_components: int | None = AGGREGATE_COMPONENTS,
) -> LatentSource:
    """The aggregate q(z) = 1/N sum_n q(z | x_n) (:class:`AggregatePosterior`).

    ``max_components`` keeps a seeded random subset of that many data for any guide.
    ``flow_components`` caps a guide that is not a diagonal Normal (the flow guide, whose
    every (draw, encoding) pair costs a pass of its networks): it keeps a seeded random
    subset of that many encodings and says so on stderr, so the source is the exact mixture
    over that subset, not over all N; ``None`` sums all N. A diagonal guide is never capped
    by it (its sum is pruned and fast).
    """
    if flow_components is not None:
        check_positive_int("flow_components", flow_components)
    n = enc.num_data if max_components is None else min(max_components, enc.num_data)
    if not enc.diagonal and flow_components is not None and flow_components < n:
        print(
            f"{name}: the guide is not a diagonal Normal (each draw costs a pass of its "
            f"networks per training encoding), so q(z) is the mixture over a random "
            f"{flow_components} of the {n} training encodings (seed {seed}; an exact density "
            f"of a slightly different source); pass --aggregate-components all (Python: the "
            f"fitting option flow_components=None) for the exact sum over all {n}",
            file=sys.stderr,
        )
        max_components = flow_components
    return AggregatePosterior(enc, max_components, seed, chunk_size, name, tolerance)


def _fit_gaussian_loc(enc: Encodings, seed: int = 0, name: str = "gaussian-loc") -> LatentSource:
    """Diagonal Gaussian of the encoder means; for means estimated by Monte Carlo (a flow
    guide) their noise variance is taken off the variance (see Encodings.mean_noise)."""
    means = enc.means(seed=seed)
    if enc.loc is not None:
        return fit_gaussian(means, diagonal=True, name=name)
    means = _check_samples("encoder means", means).double()
    variance = means.var(0, correction=0) - enc.mean_noise(seed=seed).double()
    scale = (variance.clamp_min(0) + VARIANCE_FLOOR).sqrt()
    return GaussianSource(means.mean(0), scale=scale, name=name)


def _fit_moment_gaussian(diagonal: bool, default_name: str) -> Callable[..., LatentSource]:
    def fit(
        enc: Encodings, draws_per_datum: int = 1, seed: int = 0, name: str = default_name
    ) -> LatentSource:
        mean, cov = enc.moments(draws_per_datum, seed)
        return GaussianSource.from_moments(mean, cov, diagonal, name=name)

    fit.__doc__ = (
        f"{'Diagonal' if diagonal else 'Full-covariance'} Gaussian with the moments of q(z)."
    )
    return fit


def _fit_gmm(
    enc: Encodings, draws_per_datum: int = 1, seed: int = 0, **kwargs: Any
) -> LatentSource:
    return fit_gaussian_mixture(enc.sample(draws_per_datum, seed), seed=seed, **kwargs)


def _fit_flow(
    enc: Encodings, draws_per_datum: int = 1, seed: int = 0, **kwargs: Any
) -> LatentSource:
    return fit_flow(enc.sample(draws_per_datum, seed), seed=seed, **kwargs)


SOURCES: dict[str, Callable[..., LatentSource]] = {
    "prior": _fit_prior,
    "aggregate": _fit_aggregate,
    "gaussian-loc": _fit_gaussian_loc,
    "gaussian-z": _fit_moment_gaussian(True, "gaussian-z"),
    "gaussian-full": _fit_moment_gaussian(False, "gaussian-full"),
    "gmm": _fit_gmm,
    "flow": _fit_flow,
}
"""Fitting functions by name: ``SOURCES[name](encodings, seed=0, **options) -> LatentSource``.

Every function takes ``seed`` (deterministic fits ignore it) and ``name``."""


def fit_source(
    name: str, vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, **options: Any
) -> LatentSource:
    """Fit the source ``name`` (a key of :data:`SOURCES`) to q(z | x_n [, y_n]).

    ``x`` must be the data as the model sees them (binarized for a Bernoulli decoder);
    ``options`` go to the fitting function (e.g. ``num_components=20`` for 'gmm').

    Example:
        >>> gmm = fit_source("gmm", vae, x_train, num_components=20)
        >>> images = vae.generate(64, z=gmm.sample(64))
    """
    fit = lookup(SOURCES, name, "latent source")
    with torch.no_grad():
        return fit(Encodings(vae, x, y), **options)


def fit_sources(
    names: Iterable[str],
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> dict[str, LatentSource]:
    """Fit several sources to one set of encodings (the encoder runs once).

    ``options`` maps a source name to its keyword arguments; ``progress`` shows a bar over
    the sources on stderr (the fits are the same either way).
    """
    names = list(names)
    for name in names:
        lookup(SOURCES, name, "latent source")
    options = dict(options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"options given for {stray}, which are not in names={names}")
    desc = f"fitting sources to {x.shape[0]} encodings"
    with torch.no_grad(), progress_iter(names, desc, "source", progress) as bar:
        enc = Encodings(vae, x, y)
        fitted = {}
        for name in bar:
            bar.set_postfix_str(name)
            fitted[name] = SOURCES[name](enc, **options.get(name, {}))
        return fitted


def fit_per_class(
    name: str, vae: nn.Module, x: torch.Tensor, labels: torch.Tensor, **options: Any
) -> dict[int, LatentSource]:
    """Fit the source ``name`` separately to the data of each class: ``{class: source}``.

    ``labels`` holds integer classes (N,). For a CVAE the encoder is given the one-hot
    labels; for a conditional prior the 'prior' of class c is p(z | y = c). Used for
    class-conditional generation from an unconditional VAE and for per-class pictures.
    """
    fit = lookup(SOURCES, name, "latent source")
    if not isinstance(labels, torch.Tensor) or labels.shape != (x.shape[0],):
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else labels
        raise ValueError(f"labels must be integer classes of shape ({x.shape[0]},), got {shape}")
    if labels.is_floating_point():
        raise ValueError("labels must be integer classes, not floats (one-hot labels?)")
    sources = {}
    with torch.no_grad():
        for c in torch.unique(labels).tolist():
            mask = labels == c
            y = F.one_hot(labels[mask], vae.y_dim).float() if vae.conditional else None
            enc = Encodings(vae, x[mask], y, label=int(c))
            source = fit(enc, **options)
            source.name = f"{source.name}[{c}]"
            sources[int(c)] = source
    return sources
