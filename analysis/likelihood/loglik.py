"""Importance-sampled log-likelihood log p_r(x) of a VAE/CVAE, under its prior or any latent source.

With K draws z_k from a proposal g(z | x), the estimate for a latent source r is

    log p_r(x) ~= log 1/K sum_k p(x | z_k) r(z_k) / g(z_k | x),

which is the importance-weighted (IWAE) bound L_K for g = q(z | x): in expectation a lower
bound, rising to log p_r(x) as K grows. With r the model's prior it is the usual
held-out log-likelihood (for a CVAE, log p(x | y)). By default g is the defensive mixture
of the guide and a proposal adapted to every source (:mod:`pyrovae.analysis.likelihood.proposals`):
one set of draws and decoder passes serves every source, and each source has draws where
its own posterior p_r(z | x) lives. Importance Weighted Autoencoders (Burda et al., 2016),
https://arxiv.org/abs/1509.00519
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from pyrovae.analysis.likelihood.datum_noise import (
    DatumNoise,
    check_datum_index,
    datum_normals,
    noise_key,
)
from pyrovae.analysis.likelihood.labels import summed_source_log_likelihoods, sums_out_labels
from pyrovae.analysis.likelihood.proposals import (
    DEFAULT_MAX_COMPONENTS,
    GaussianMixtureProposal,
    adapted_proposal,
    guide_gaussian,
    likelihood_message,
    prior_gaussian,
    source_view,
    uses_guide,
)
from pyrovae.analysis.likelihood.psis import KHAT_THRESHOLD, khat_fraction, psis_khat
from pyrovae.analysis.progress import progress_bar
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.encodings import check_data
from pyrovae.analysis.sources.helpers import seeded
from pyrovae.nets import check_positive_int
from pyrovae.traces import (
    ImportanceTerms,
    ValidateFirst,
    guide_latents,
    importance_terms,
    score_latents,
)

__all__ = [
    "PerDatumEstimate",
    "LogLikelihood",
    "estimate_log_likelihood",
    "estimate_source_log_likelihoods",
    "iwae_bound",
    "default_draws_per_pass",
    "source_cost",
    "SOURCE_BUDGET_BYTES",
    "PROPOSALS",
]

LATENT_SITE = "z"


def plural(n: int, word: str) -> str:
    """``"1 source"``, ``"3 sources"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def default_draws_per_pass(device: torch.device | str) -> int:
    """Draws (particle x datum pairs) per decoder pass: 2^14 on CPU, 2^16 on a GPU."""
    return 2**16 if torch.device(device).type == "cuda" else 2**14


SOURCE_BUDGET_BYTES = 2**31
"""Bytes of float32 intermediates (2 GiB) that one call of a source's ``log_prob`` may
hold. A source is scored on all the draws of a pass (``draws_per_pass``) at once when
draws x :func:`source_cost` x 4 bytes fits, else on chunks of draws that fit; the values
are the same either way (each draw is scored alone). The model's own prior, scored inside
the model trace, bounds its own memory (:data:`pyrovae.models.priors.MIXTURE_CHUNK_ELEMENTS`).
Read at each call, so it can be set (``pyrovae.analysis.likelihood.loglik.SOURCE_BUDGET_BYTES =
...``)."""


def source_cost(source: LatentSource, z_dim: int) -> int:
    """Float32 elements that ``source.log_prob`` holds per draw, roughly (at least 1).

    A source may say so itself with a ``log_prob_cost`` attribute. A Gaussian mixture
    of C components (the 'mog' and 'vamp' priors, 'gmm', ...) makes (C, z_dim) per draw;
    a flow about three times its widest hidden layer; a source with ``chunk_size`` (the
    aggregate posterior) streams over its components itself, like a single Gaussian: z_dim.
    """
    cost = getattr(source, "log_prob_cost", None)
    if cost is not None:
        return max(1, int(cost))
    if getattr(source, "chunk_size", None) is not None:
        return z_dim
    try:
        view = source.gaussian_mixture()
    except (NotImplementedError, ValueError):
        view = None
    if view is not None:
        return view.num_components * z_dim
    hidden = getattr(source, "hidden_dims", None)
    if hidden:
        return 3 * max(hidden) + 2 * z_dim
    return z_dim


def _source_log_prob(
    source: LatentSource, z: torch.Tensor, y: torch.Tensor | None, cost: int
) -> torch.Tensor:
    """log r(z) for draws z of shape (K, B, D), in chunks of draws that fit
    :data:`SOURCE_BUDGET_BYTES`: rows of the flattened draws for an unconditional source,
    particles (all B data each, to keep y aligned) for a conditional one."""
    conditional = getattr(source, "conditional", False)
    rows = max(1, SOURCE_BUDGET_BYTES // (4 * cost))
    if z.shape[0] * z.shape[1] <= rows:
        return source.log_prob(z, y) if conditional else source.log_prob(z)
    if conditional:
        step = max(1, rows // z.shape[1])
        return torch.cat([source.log_prob(part, y) for part in z.split(step)])
    flat = z.reshape(-1, z.shape[-1])
    return torch.cat([source.log_prob(part) for part in flat.split(rows)]).reshape(z.shape[:-1])


class PerDatumEstimate:
    """Summaries of per-datum estimates ``self.per_datum`` (N,), shared by the results of
    importance sampling and AIS."""

    per_datum: torch.Tensor

    @property
    def num_data(self) -> int:
        return self.per_datum.shape[0]

    @property
    def mean(self) -> float:
        """Mean of the per-datum estimates (nats per datum)."""
        return float(self.per_datum.mean())

    @property
    def stderr(self) -> float:
        """Standard error of :attr:`mean` over the data, std / sqrt(N) (NaN for N = 1)."""
        if self.num_data < 2:
            return math.nan
        return float(self.per_datum.std() / math.sqrt(self.num_data))


@dataclass
class LogLikelihood(PerDatumEstimate):
    """Per-datum importance-sampling results for one latent source (float64, on the CPU).

    Attributes:
        per_datum: log p_hat(x_n) = log 1/K sum_k w_nk, shape (N,). In expectation a lower
            bound on log p(x_n) (the IWAE bound L_K), tight as K grows.
        elbo: a K-draw Monte Carlo estimate of the guide's ELBO with the source in place of
            the prior, E_q[log p(x_n | z) r(z) - log q(z | x_n)], shape (N,): the mean log
            weight for draws from the guide, reweighted by q/g for any other proposal g
            (the ELBO of q, not L_1 of g).
        khat: PSIS k-hat of the N rows of weights (see :func:`psis_khat`), or None.
        num_samples: K, the draws per datum.
        log_weights: the log weights, shape (N, K), when asked for; else None.
        iwae: {k: (N,)} unbiased estimates of L_k for the requested k <= K, from the
            K draws split into K // k disjoint groups.
        proposal: where the draws came from: ``"guide"`` (z ~ q(z | x)) or ``"adapted"``
            (the defensive mixture of :mod:`pyrovae.analysis.likelihood.proposals`).
    """

    per_datum: torch.Tensor
    elbo: torch.Tensor
    khat: torch.Tensor | None
    num_samples: int
    log_weights: torch.Tensor | None = None
    iwae: dict[int, torch.Tensor] = field(default_factory=dict)
    proposal: str = "guide"

    @property
    def elbo_mean(self) -> float:
        return float(self.elbo.mean())

    def khat_fraction(self, threshold: float = KHAT_THRESHOLD) -> float:
        """Fraction of data whose k-hat exceeds ``threshold`` (NaN when k-hat is absent)."""
        return math.nan if self.khat is None else khat_fraction(self.khat, threshold)

    def to_dict(self) -> dict[str, float]:
        """Scalar summary: ``loglik``, ``stderr``, ``elbo``, ``khat_gt_0.7``, ``num_samples``."""
        return {
            "loglik": self.mean,
            "stderr": self.stderr,
            "elbo": self.elbo_mean,
            "khat_gt_0.7": self.khat_fraction(),
            "num_samples": self.num_samples,
        }


def iwae_bound(log_weights: torch.Tensor, num_particles: int) -> torch.Tensor:
    """Per-row estimate of the IWAE bound L_k from log weights of shape (B, K), k <= K.

    The K draws are cut into K // k disjoint groups of k (left-over draws are dropped);
    each group gives log 1/k sum w, an unbiased draw of L_k, and the groups are averaged.
    """
    check_positive_int("num_particles", num_particles)
    if log_weights.dim() != 2:
        raise ValueError(
            f"log_weights must have shape (batch, num_samples), got {tuple(log_weights.shape)}"
        )
    total = log_weights.shape[1]
    if num_particles > total:
        raise ValueError(
            f"num_particles={num_particles} exceeds the {total} draws per datum; "
            f"ask for k <= {total} or draw more samples"
        )
    groups = total // num_particles
    grouped = log_weights[:, : groups * num_particles].reshape(-1, groups, num_particles)
    return (torch.logsumexp(grouped, dim=-1) - math.log(num_particles)).mean(-1)


def _check_sources(vae: nn.Module, sources: Mapping[str, LatentSource | None]) -> None:
    if not isinstance(sources, Mapping) or not sources:
        raise ValueError(
            "sources must be a non-empty dict {name: source}; use {'prior': None} for the "
            "model's own prior"
        )
    for name, source in sources.items():
        if source is None:
            continue
        if not callable(getattr(source, "log_prob", None)):
            raise ValueError(
                f"source {name!r} has no log_prob(z); pass a LatentSource (see fit_source)"
            )
        if getattr(source, "z_dim", vae.z_dim) != vae.z_dim:
            raise ValueError(
                f"source {name!r} has z_dim={source.z_dim} but the model has "
                f"z_dim={vae.z_dim}; fit the source to this model's encodings"
            )


PROPOSALS = ("adapted", "separate", "guide")
"""Proposal strategies of :func:`estimate_source_log_likelihoods`."""
DEFAULT_DEFENSIVE = 0.2
"""Share of draws from the guide q(z | x) in the adapted (defensive) mixture."""


def estimate_source_log_likelihoods(
    vae: nn.Module,
    x: torch.Tensor,
    sources: Mapping[str, LatentSource | None],
    y: torch.Tensor | None = None,
    *,
    num_samples: int = 1000,
    draws_per_pass: int | None = None,
    khat: bool = True,
    keep_log_weights: bool = False,
    iwae_particles: Sequence[int] = (),
    seed: int | None = None,
    proposal: str = "adapted",
    defensive: float = DEFAULT_DEFENSIVE,
    max_components: int = DEFAULT_MAX_COMPONENTS,
    progress: bool = True,
    datum_index: torch.Tensor | None = None,
) -> dict[str, LogLikelihood]:
    """Estimate log p_r(x_n) for every source r by importance sampling.

    ``proposal`` chooses where the K draws per datum come from:

    - ``"adapted"`` (default): one defensive mixture for all sources, g = alpha q(z | x) +
      (1 - alpha) sum_r g_r(z | x) / S, where g_r is the source-adapted proposal of
      :mod:`pyrovae.analysis.likelihood.proposals` (the guide itself for the model's prior) and
      alpha = ``defensive``. Every draw is weighted by the full mixture density for every
      source, so one decoder pass serves them all and no source is left without draws.
    - ``"separate"``: the same, with a mixture alpha q + (1 - alpha) g_r and K draws of
      its own for each source (S times the decoder passes).
    - ``"guide"``: z ~ q(z | x) for every source (the plain IWAE estimate; fails for a
      source narrower than the guide in some direction).

    The guide and model run through Pyro traces (:func:`pyrovae.traces.importance_terms`,
    :func:`pyrovae.traces.score_latents`), so any model/guide pair with sites ``"z"`` and
    ``"x"`` in one ``plate("data")`` works: log p(x | z_k) and log q(z_k | x) come from
    the traces, log r(z_k) from the source. A source given as ``None`` is the model's own
    prior as the trace scores it. Sources with ``conditional = True`` (a CVAE's
    conditional prior) get ``log_prob(z, y)`` and the guide as their proposal.

    Work is done in passes of about ``draws_per_pass`` (particle, datum) pairs: a batch of
    data with all K particles, or, when K is larger, one datum and a chunk of particles.
    The encoder runs once or twice per datum and pass, the decoder once per draw. The log
    weights of one batch are kept for the logsumexp and for PSIS, then dropped unless
    ``keep_log_weights``.

    Every random number of datum n comes from a generator seeded with (seed, n,
    use) (:mod:`pyrovae.analysis.likelihood.datum_noise`), so the estimate of datum n is the same
    whatever
    ``draws_per_pass`` and whatever other data it is estimated with: a shard of the data
    with its ``datum_index`` gets the values the whole set would (up to the rounding of
    the networks' matrix products in batches of other sizes).

    Args:
        vae: the model, on the device of ``x``.
        x: data as the model sees them (binarized for a Bernoulli decoder), (N, x_dim).
        sources: ``{name: source}``; ``None`` means the model's prior.
        y: one-hot labels (N, y_dim) for a CVAE (then log p_r(x | y) is estimated).
        num_samples: K, draws per datum (per source with ``"separate"``).
        draws_per_pass: see above; default :func:`default_draws_per_pass`.
        khat: compute PSIS k-hat per datum and source (needs K >= 21 to be defined).
        keep_log_weights: return the (N, K) log weights (N x K x 8 bytes per source).
        iwae_particles: also estimate L_k for each k in this list (unbiased: every draw
            is independent, so disjoint groups of k draws give independent L_k).
        seed: seed the draws (the global RNG is restored afterwards); None uses it.
        proposal: ``"adapted"``, ``"separate"`` or ``"guide"`` (see above).
        defensive: alpha in (0, 1], the guide's share of the adapted mixture.
        max_components: components kept per datum in an adapted mixture proposal.
        progress: show a progress bar over the data on stderr (the results are the same
            either way).
        datum_index: (N,) the data's indices in the whole set, which key their random
            numbers; default 0, ..., N - 1.

    For the semi-supervised M2 given no labels, log p_r(x) sums the label out exactly: the
    estimate is made once per label with K draws each and the C estimates of p_r(x, y)
    are added (:mod:`~pyrovae.analysis.likelihood.labels`).
    """
    summing = sums_out_labels(vae, y)
    if not summing:  # an M2 given no labels: its rows are checked with each label
        check_data(vae, x, y)
    _check_sources(vae, sources)
    check_positive_int("num_samples", num_samples)
    if proposal not in PROPOSALS:
        raise ValueError(f"proposal must be one of {list(PROPOSALS)}, got {proposal!r}")
    if isinstance(defensive, bool) or not (
        isinstance(defensive, int | float) and 0 < defensive <= 1
    ):
        raise ValueError(
            f"defensive must be a share in (0, 1], got {defensive!r}; 0.2 is a safe choice"
        )
    for k in iwae_particles:
        check_positive_int("each of iwae_particles", k)
        if k > num_samples:
            raise ValueError(f"iwae_particles holds {k} > num_samples={num_samples}")
    if summing:
        return summed_source_log_likelihoods(
            estimate_source_log_likelihoods,
            iwae_bound,
            vae,
            x,
            sources,
            keep_log_weights=keep_log_weights,
            datum_index=datum_index,
            num_samples=num_samples,
            draws_per_pass=draws_per_pass,
            khat=khat,
            iwae_particles=iwae_particles,
            seed=seed,
            proposal=proposal,
            defensive=defensive,
            max_components=max_components,
            progress=progress,
        )
    device = next(vae.parameters()).device
    if x.device != device:
        raise ValueError(
            f"x is on {x.device} but the model is on {device}; move one: x.to({str(device)!r})"
        )
    per_pass = draws_per_pass if draws_per_pass is not None else default_draws_per_pass(device)
    check_positive_int("draws_per_pass", per_pass)
    if datum_index is None:
        datum_index = torch.arange(x.shape[0], device=device)
    else:
        check_datum_index(datum_index, x.shape[0])
    options = dict(
        datum_index=datum_index,
        num_samples=num_samples,
        draws_per_pass=per_pass,
        khat=khat,
        keep_log_weights=keep_log_weights,
        iwae_particles=iwae_particles,
        seed=seed,
        defensive=defensive,
        max_components=max_components,
    )
    num_data = x.shape[0]
    desc = f"log p(x): {plural(len(sources), 'source')}, {plural(num_data, 'image')}"
    if proposal == "separate":
        desc += ", separate draws"
    total = num_data * (len(sources) if proposal == "separate" else 1)
    with progress_bar(total, desc, "image", progress) as bar:
        if proposal == "separate":
            out = {}
            for stream, (name, source) in enumerate(sources.items()):
                one = {name: source}
                out.update(_estimate(vae, x, y, one, adapt=True, bar=bar, stream=stream, **options))
            return out
        return _estimate(vae, x, y, sources, adapt=proposal == "adapted", bar=bar, **options)


def _estimate(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    sources: Mapping[str, LatentSource | None],
    *,
    adapt: bool,
    num_samples: int,
    draws_per_pass: int,
    khat: bool,
    keep_log_weights: bool,
    iwae_particles: Sequence[int],
    seed: int | None,
    defensive: float,
    max_components: int,
    bar: tqdm,
    datum_index: torch.Tensor,
    stream: int = 0,
) -> dict[str, LogLikelihood]:
    particles = min(num_samples, draws_per_pass)
    batch = max(1, draws_per_pass // num_samples)
    label = "adapted" if adapt else "guide"
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in sources}
    costs = {
        name: source_cost(source, vae.z_dim)
        for name, source in sources.items()
        if source is not None
    }
    with torch.no_grad(), seeded(seed, x.device):
        key = noise_key(seed)
        views = {}
        if adapt and defensive < 1:
            views = {
                name: source_view(source, seed=seed or 0)
                for name, source in sources.items()
                if not uses_guide(vae, source)
            }
        # shares of the mixture: the guide's defensive share plus the share of every
        # source whose adapted proposal is the guide; the rest split evenly
        share = (1.0 - defensive) / len(sources) if views else 0.0
        log_guide_share = math.log(1.0 - share * len(views))
        log_share = math.log(share) if views else -math.inf
        validate = ValidateFirst()
        for start in range(0, x.shape[0], batch):
            xb = x[start : start + batch]
            yb = None if y is None else y[start : start + batch]
            proposals = {}
            if views:
                message = likelihood_message(
                    guide_gaussian(vae, xb, yb), prior_gaussian(vae, xb, yb)
                )
                proposals = {
                    name: adapted_proposal(message, view, max_components)
                    for name, view in views.items()
                }
            chunks: dict[str, list[torch.Tensor]] = {name: [] for name in sources}
            guide_ratios: list[torch.Tensor] = []
            guide_draws: list[torch.Tensor] = []
            noise = DatumNoise(
                key, datum_index[start : start + batch], total=num_samples, stream=stream
            )
            for done in range(0, num_samples, particles):
                k = min(particles, num_samples - done)
                noise.start_chunk(done)
                with validate():  # checked in the first chunk only: no host reads after
                    if not proposals:
                        with datum_normals(noise):
                            terms = importance_terms(vae.model, vae.guide, xb, yb, num_particles=k)
                        log_proposal = terms.log_guide
                        from_guide = torch.ones_like(log_proposal, dtype=torch.bool)
                    else:
                        terms, log_proposal, from_guide = _mixture_draws(
                            vae, xb, yb, k, proposals, log_guide_share, log_share, noise
                        )
                    base = terms.log_likelihood - log_proposal
                    guide_ratios.append(terms.log_guide - log_proposal)  # log q/g
                    guide_draws.append(from_guide)
                    z = terms.latents[LATENT_SITE]
                    for name, source in sources.items():
                        if source is None:
                            log_r = terms.log_prior
                        else:
                            log_r = _source_log_prob(source, z, yb, costs[name])
                        chunks[name].append(base + log_r)
            log_q_over_g = torch.cat(guide_ratios).T.double()  # (B, K)
            from_guide = torch.cat(guide_draws).T  # (B, K)
            for name in sources:
                lw = torch.cat(chunks[name]).T.double()  # (B, K)
                elbo = _guide_elbo(lw, log_q_over_g, from_guide)
                parts[name].append(
                    _summarize(name, lw, elbo, num_samples, khat, keep_log_weights, iwae_particles)
                )
            bar.update(xb.shape[0])
    return {name: _collect(parts[name], num_samples, label) for name in sources}


def _mixture_draws(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    num_particles: int,
    proposals: Mapping[str, GaussianMixtureProposal],
    log_guide_share: float,
    log_share: float,
    noise: DatumNoise,
    every_pair: bool | None = None,
) -> tuple[ImportanceTerms, torch.Tensor]:
    """K i.i.d. draws per datum from the defensive mixture: their terms, log g(z), and which
    of them came from the guide's component (shape (K, B)). Every draw of every component
    is made (and the unused ones dropped), so each use of ``noise`` is the same in every
    pass.

    On the CPU each adapted proposal draws only the (draw, datum) pairs that chose it
    (found with ``nonzero``); on a GPU (``every_pair``, default: off the CPU) it draws for
    every pair and keeps its own with ``torch.where``, which costs more arithmetic but
    needs no host read of how many pairs chose it. The values are the same either way.
    """
    with datum_normals(noise):
        z = guide_latents(vae.guide, x, y, num_particles=num_particles)[LATENT_SITE]
    # float64 shares: the choice must follow the mixture that scores the draws (float32
    # picked the guide with probability 0.2 - 1.2e-8 for a share of 0.2)
    log_shares = [log_guide_share] + [log_share] * len(proposals)
    shares = torch.tensor(log_shares, dtype=torch.float64).exp()
    cdf = (shares.cumsum(0) / shares.sum()).to(z.device)
    u = noise.uniform(num_particles, device=z.device)[..., 0]  # (K, B)
    which = torch.searchsorted(cdf, u.contiguous()).clamp_(max=len(proposals))
    z = z.clone()
    if every_pair is None:
        every_pair = z.device.type != "cpu"
    rows = torch.arange(x.shape[0], device=z.device).expand(num_particles, -1).reshape(-1)
    for j, g in enumerate(proposals.values(), start=1):
        picked = which == j
        if every_pair:
            pick_u = noise.uniform(num_particles, device=z.device)[..., 0].reshape(-1)
            eps = noise.normal(num_particles, z.shape[-1], device=z.device).flatten(0, 1)
            draws = g.sample_rows(rows, pick_u, eps).to(z.dtype).view_as(z)
            z = torch.where(picked.unsqueeze(-1), draws, z)
            continue
        at = picked.nonzero().unbind(1)  # the (draw, datum) pairs that come from g
        pick_u = noise.uniform(num_particles, device=z.device, at=at)[:, 0]
        eps = noise.normal(num_particles, z.shape[-1], device=z.device, at=at)
        if at[0].numel():
            z[picked] = g.sample_rows(at[1], pick_u, eps).to(z.dtype)
    terms = score_latents(vae.model, vae.guide, {LATENT_SITE: z}, x, y)
    parts = [terms.log_guide.double() + log_guide_share]
    parts += [g.log_prob(z) + log_share for g in proposals.values()]
    log_mixture = torch.logsumexp(torch.stack(parts), 0).to(terms.log_guide.dtype)
    return terms, log_mixture, which == 0


def _summarize(
    name: str,
    lw: torch.Tensor,
    elbo: torch.Tensor,
    num_samples: int,
    khat: bool,
    keep: bool,
    iwae_particles: Sequence[int],
) -> dict[str, Any]:
    if torch.isnan(lw).any():
        raise ValueError(
            f"log weights of source {name!r} hold NaN; check that x lies in the support of "
            "the likelihood (binarize x for a Bernoulli decoder) and that the source's "
            "log_prob is finite"
        )
    out = {
        "per_datum": (torch.logsumexp(lw, dim=1) - math.log(num_samples)).cpu(),
        "elbo": elbo.cpu(),
    }
    if khat:
        out["khat"] = psis_khat(lw)
    if keep:
        out["log_weights"] = lw.cpu()
    out["iwae"] = {k: iwae_bound(lw, k).cpu() for k in iwae_particles}
    return out


def _guide_elbo(
    lw: torch.Tensor, log_q_over_g: torch.Tensor, from_guide: torch.Tensor
) -> torch.Tensor:
    """The ELBO of the guide, E_q[log p(x | z) r(z) - log q(z | x)], per datum (B,).

    With log w_k = log p(x | z_k) r(z_k) / g(z_k), the integrand is log w_k + log (g/q)(z_k).
    It is averaged over the draws that the mixture took from its guide component (draws
    z ~ q exactly; all of them when g = q). A datum without such a draw (only possible
    for small K) takes the importance-reweighted mean 1/K sum_k (q/g)(z_k) [integrand],
    unbiased too: q/g <= 1/alpha in the defensive mixture.
    """
    integrand = lw - log_q_over_g
    count = from_guide.sum(1)
    direct = torch.where(from_guide, integrand, 0.0).sum(1) / count.clamp_min(1)
    reweighted = (log_q_over_g.exp() * integrand).mean(1)
    return torch.where(count > 0, direct, reweighted)


def _collect(parts: list[dict[str, Any]], num_samples: int, proposal: str) -> LogLikelihood:
    def cat(key: str) -> torch.Tensor | None:
        return torch.cat([p[key] for p in parts]) if key in parts[0] else None

    iwae = {k: torch.cat([p["iwae"][k] for p in parts]) for k in parts[0]["iwae"]}
    return LogLikelihood(
        per_datum=cat("per_datum"),
        elbo=cat("elbo"),
        khat=cat("khat"),
        num_samples=num_samples,
        log_weights=cat("log_weights"),
        iwae=iwae,
        proposal=proposal,
    )


def estimate_log_likelihood(
    vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
) -> LogLikelihood:
    """Estimate log p(x_n) (log p(x_n | y_n) for a CVAE) under the model's own prior.

    Keyword arguments as :func:`estimate_source_log_likelihoods` (``num_samples=1000``,
    ``draws_per_pass``, ``khat``, ``keep_log_weights``, ``iwae_particles``, ``seed``,
    ``progress=True``).

    Example:
        >>> result = estimate_log_likelihood(vae, fixed_binarization(test.x), num_samples=5000)
        >>> print(f"{result.mean:.2f} +- {result.stderr:.2f} nats")
    """
    return estimate_source_log_likelihoods(vae, x, {"prior": None}, y, **kwargs)["prior"]
