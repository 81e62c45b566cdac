"""Source-adapted importance proposals for log p_r(x) = log integral p(x | z) r(z) dz.

The guide q(z | x) was trained to approximate p(z | x), the posterior under the model's
prior p(z). For another latent source r the target is p_r(z | x) ∝ p(x | z) r(z), and q
can be a very poor proposal for it: a source narrower than q in some direction (the
Gaussian fitted to the encoder means, in the latent dims the decoder ignores) gets almost
no draws where it has mass, and the estimate collapses by orders of magnitude.

Since q(z | x) ≈ p(x | z) p(z) / p(x), the guide divided by the prior approximates the
likelihood as a function of z. With diagonal Gaussian approximations q ≈ N(m_q, diag v_q)
and p ≈ N(m_p, diag v_p) this "likelihood message" is the Gaussian factor

    l(z) = exp(-1/2 z^T Lambda z + h^T z),  Lambda = diag(max(1/v_q - 1/v_p, 0)),
    h = m_q / v_q - m_p / v_p  (zero where Lambda is clipped to 0: a flat direction),

exact for a linear Gaussian decoder with the exact posterior as guide. For a Gaussian
mixture source r = sum_c pi_c N(m_c, S_c) the adapted proposal is l(z) r(z), normalized:
again a mixture, with components N(Lambda_c^-1 h_c, Lambda_c^-1), Lambda_c = Lambda +
S_c^-1, h_c = h + S_c^-1 m_c, and weights pi_c Z_c, where log Z_c = -1/2 log|S_c| - 1/2
m_c^T S_c^-1 m_c - 1/2 log|Lambda_c| + 1/2 h_c^T Lambda_c^-1 h_c (up to a constant). For
probabilistic PCA with its exact guide this is exactly p_r(z | x). A mixture with many
components (the aggregate posterior, one per training datum) keeps only the
``max_components`` of highest posterior weight for each x; the proposal is whatever
mixture is kept, so the estimate stays unbiased. A source that is not a Gaussian mixture
(a flow) is replaced, for building its proposal only, by a Gaussian mixture fitted to its
draws; its density still scores the weights.

No proposal of this kind is trusted alone. The estimator in
:mod:`pyrovae.analysis.likelihood.loglik` draws from the defensive mixture g = alpha q + (1 - alpha)
sum_r g_r / S (Safe and effective importance sampling, Owen & Zhou, 2000,
https://doi.org/10.1080/01621459.2000.10473909; Weighted average importance sampling and
defensive mixture distributions, Hesterberg, 1995, https://doi.org/10.2307/1269620), and
weights every draw by the whole mixture density (the balance heuristic of Optimally
combining sampling techniques for Monte Carlo rendering, Veach & Guibas, 1995). Then
p_r(x | z) r(z) / g(z) <= p_r(x | z) r(z) / (alpha q(z | x)): the weights are never worse
than alpha times those of the guide alone, and one set of decoder passes serves every
source.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro.poutine as poutine
import torch
from torch import nn
from torch.distributions import Distribution, constraints

from pyrovae.analysis.sources.classes import GaussianMixtureView, LatentSource, PriorSource
from pyrovae.analysis.sources.fits import fit_gaussian_mixture
from pyrovae.analysis.sources.helpers import seeded
from pyrovae.nets import check_positive_int

__all__ = [
    "DiagonalGaussian",
    "LikelihoodMessage",
    "GaussianMixtureProposal",
    "DEFAULT_MAX_COMPONENTS",
    "diagonal_moments",
    "guide_gaussian",
    "prior_gaussian",
    "likelihood_message",
    "adapted_proposal",
    "source_view",
    "uses_guide",
    "initial_distribution",
]

DEFAULT_MAX_COMPONENTS = 256
"""Components kept per datum in the adapted proposal of a large mixture (the aggregate)."""
LATENT_SITE = "z"
_PAIRS_PER_STEP = 2**23
"""(datum, component, dim) triples per step when weighing a large mixture's components."""


@dataclass
class DiagonalGaussian:
    """N(loc, diag(scale^2)) per datum: ``loc`` and ``scale`` of shape (B, z_dim), float64.

    ``exact`` says whether it is the distribution itself or a moment-matched stand-in.
    """

    loc: torch.Tensor
    scale: torch.Tensor
    exact: bool = True


@dataclass
class LikelihoodMessage:
    """The Gaussian factor l(z) = exp(-1/2 z^T diag(precision) z + shift^T z) per datum.

    Attributes:
        precision: (B, z_dim), >= 0; zero in the directions the data do not inform.
        shift: (B, z_dim), the natural mean h.
    """

    precision: torch.Tensor
    shift: torch.Tensor


def diagonal_moments(d: Distribution, num_draws: int = 256) -> DiagonalGaussian:
    """Mean and per-dim standard deviation of a batched distribution over vectors.

    Exact for a diagonal Normal, and wherever torch implements ``mean`` and ``variance``
    (a Gaussian mixture); else moment-matched from ``num_draws`` draws (a flow).
    """
    base = getattr(d, "base_dist", None)
    if isinstance(d, torch.distributions.Independent) and isinstance(
        base, torch.distributions.Normal
    ):
        shape = d.batch_shape + d.event_shape
        return DiagonalGaussian(
            base.loc.expand(shape).double(), base.scale.expand(shape).double(), True
        )
    try:
        mean, variance = d.mean, d.variance
        return DiagonalGaussian(mean.double(), variance.double().sqrt(), True)
    except NotImplementedError:
        pass
    with torch.no_grad():
        draws = d.sample((num_draws,)).double()
    return DiagonalGaussian(draws.mean(0), draws.std(0), False)


def _site_distribution(
    fn: Any, args: tuple[Any, ...], site: str = LATENT_SITE
) -> tuple[Distribution, int]:
    trace = poutine.trace(fn).get_trace(*args)
    node = trace.nodes.get(site)
    if node is None or node["type"] != "sample":
        raise ValueError(f"no sample site {site!r} in {getattr(fn, '__name__', fn)}")
    return node["fn"], node["value"].shape[0]


@torch.no_grad()
def guide_gaussian(vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> DiagonalGaussian:
    """A diagonal Gaussian for q(z | x_b) per datum, read from a trace of ``vae.guide``."""
    d, _ = _site_distribution(vae.guide, (x, y))
    return diagonal_moments(d)


@torch.no_grad()
def prior_gaussian(vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> DiagonalGaussian:
    """A diagonal Gaussian for the model's prior p(z [| y_b]) per datum (from a model trace)."""
    d, batch = _site_distribution(poutine.block(vae.model, hide=["x"]), (x, y))
    moments = diagonal_moments(d)
    shape = (batch, moments.loc.shape[-1])
    return DiagonalGaussian(moments.loc.expand(shape), moments.scale.expand(shape), moments.exact)


def likelihood_message(guide: DiagonalGaussian, prior: DiagonalGaussian) -> LikelihoodMessage:
    """l(z) ∝ q(z | x) / p(z): precision max(1/v_q - 1/v_p, 0), shift m_q/v_q - m_p/v_p."""
    q_prec = guide.scale.pow(-2)
    p_prec = prior.scale.pow(-2)
    precision = q_prec - p_prec
    informed = precision > 0
    shift = guide.loc * q_prec - prior.loc * p_prec
    return LikelihoodMessage(
        precision=torch.where(informed, precision, torch.zeros_like(precision)),
        shift=torch.where(informed, shift, torch.zeros_like(shift)),
    )


class GaussianMixtureProposal(Distribution):
    """A Gaussian mixture per datum: batch shape (B,), event shape (z_dim,), float64.

    Components are diagonal (``scale``, (B, M, D)) or full (``scale_tril``, (B, M, D, D));
    ``logits`` (B, M) are normalized log weights. ``log_prob`` is differentiable in z and
    takes z of shape (..., B, D); for diagonal components it is one batched matrix
    product per datum (memory (..., B, M), not (..., B, M, D)).
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor | None = None,
        scale_tril: torch.Tensor | None = None,
    ) -> None:
        if (scale is None) == (scale_tril is None):
            raise ValueError("give exactly one of scale (diagonal) or scale_tril (full)")
        self.logits = logits.log_softmax(-1)
        self.loc = loc
        self.scale = scale
        self.scale_tril = scale_tril
        batch, _, z_dim = loc.shape
        super().__init__(torch.Size((batch,)), torch.Size((z_dim,)), validate_args=False)
        if scale is not None:
            precision = scale.pow(-2)
            # log N(z; loc, scale) = [z^2, z] . [-precision / 2, loc precision] + const
            self._weights = torch.cat([-0.5 * precision, loc * precision], -1)  # (B, M, 2D)
            self._const = (
                -0.5 * (loc.pow(2) * precision).sum(-1)
                - scale.log().sum(-1)
                - 0.5 * z_dim * math.log(2 * math.pi)
                + self.logits
            )
        else:
            eye = torch.eye(z_dim, dtype=loc.dtype, device=loc.device)
            inv = torch.linalg.solve_triangular(scale_tril, eye, upper=False)  # L^-1
            self._whiten = inv.transpose(-1, -2).permute(0, 2, 1, 3).reshape(batch, z_dim, -1)
            self._white_loc = (inv @ loc.unsqueeze(-1)).squeeze(-1)  # (B, M, D)
            self._const = (
                -scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
                - 0.5 * z_dim * math.log(2 * math.pi)
                + self.logits
            )

    @property
    def num_components(self) -> int:
        return self.loc.shape[1]

    @property
    def mean(self) -> torch.Tensor:
        """Mixture mean per datum, (B, D)."""
        return (self.logits.exp().unsqueeze(-1) * self.loc).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        """Per-dim mixture variance (the diagonal of the covariance) per datum, (B, D)."""
        weights = self.logits.exp().unsqueeze(-1)
        if self.scale is not None:
            within = self.scale.pow(2)
        else:
            within = self.scale_tril.pow(2).sum(-1)
        second = (weights * (within + self.loc.pow(2))).sum(-2)
        return (second - self.mean.pow(2)).clamp_min(0.0)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Draws of shape ``(*sample_shape, B, D)``."""
        shape = torch.Size(sample_shape)
        with torch.no_grad():
            n = int(math.prod(shape)) if shape else 1
            idx = torch.distributions.Categorical(logits=self.logits).sample((n,))  # (n, B)
            rows = torch.arange(self.loc.shape[0], device=self.loc.device)
            loc = self.loc[rows, idx]  # (n, B, D)
            eps = torch.randn_like(loc)
            if self.scale is not None:
                z = loc + self.scale[rows, idx] * eps
            else:
                z = loc + (self.scale_tril[rows, idx] @ eps.unsqueeze(-1)).squeeze(-1)
            return z.reshape(*shape, *self.batch_shape, *self.event_shape)

    def sample_rows(
        self,
        rows: torch.Tensor,
        uniform: torch.Tensor | None = None,
        normal: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One draw from the mixture of datum ``rows[i]`` for each i: shape (len(rows), D).

        Cheaper than :meth:`sample` when only some (draw, datum) pairs need a value. Given
        ``uniform`` (len(rows),) and ``normal`` (len(rows), D), the component is the inverse
        CDF of the uniform and the draw loc + scale * normal (no other randomness).
        """
        with torch.no_grad():
            logits = self.logits[rows]
            if uniform is None:
                idx = torch.distributions.Categorical(logits=logits).sample()
            else:
                cdf = torch.softmax(logits.double(), -1).cumsum(-1)
                idx = torch.searchsorted(cdf, uniform.double().unsqueeze(-1)).squeeze(-1)
                idx = idx.clamp_(max=logits.shape[-1] - 1)
            loc = self.loc[rows, idx]
            eps = torch.randn_like(loc) if normal is None else normal.to(loc.dtype)
            if self.scale is not None:
                return loc + self.scale[rows, idx] * eps
            return loc + (self.scale_tril[rows, idx] @ eps.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log g(z) for z of shape (..., B, D): shape (...)."""
        z = value.to(self.loc.dtype)
        lead = z.shape[:-2]
        flat = z.reshape(-1, *z.shape[-2:])  # (n, B, D)
        if self.scale is not None:
            feats = torch.cat([flat.pow(2), flat], -1).transpose(0, 1)  # (B, n, 2D)
            logits = torch.baddbmm(
                self._const.unsqueeze(1), feats, self._weights.transpose(1, 2)
            )  # (B, n, M)
            out = torch.logsumexp(logits, -1).transpose(0, 1)
        else:
            # |L^-1 (z - loc)|^2 as one batched product per datum: (B, n, D) @ (B, D, M D)
            batch, num, z_dim = self.loc.shape
            white = torch.bmm(flat.transpose(0, 1), self._whiten).reshape(batch, -1, num, z_dim)
            maha = (white - self._white_loc.unsqueeze(1)).pow(2).sum(-1)  # (B, n, M)
            out = torch.logsumexp(self._const.unsqueeze(1) - 0.5 * maha, -1).transpose(0, 1)
        return out.reshape(*lead, self.loc.shape[0])


def _top(log_weights: torch.Tensor, max_components: int) -> torch.Tensor:
    k = min(max_components, log_weights.shape[-1])
    return log_weights.topk(k, dim=-1).indices


def _diagonal_proposal(
    message: LikelihoodMessage, view: GaussianMixtureView, max_components: int
) -> GaussianMixtureProposal:
    lam, h = message.precision, message.shift  # (B, D)
    loc = view.loc.double().to(lam.device)  # (C, D)
    prec_c = view.scale.double().to(lam.device).pow(-2)
    pi = view.log_weights.double().to(lam.device)
    const_c = pi + 0.5 * prec_c.log().sum(-1) - 0.5 * (loc.pow(2) * prec_c).sum(-1)  # (C,)
    batch, z_dim = lam.shape
    num = loc.shape[0]
    step = max(1, _PAIRS_PER_STEP // max(1, batch * z_dim))
    best_lw: torch.Tensor | None = None
    best_idx: torch.Tensor | None = None
    for start in range(0, num, step):
        sl = slice(start, start + step)
        prec = lam.unsqueeze(1) + prec_c[sl]  # (B, c, D)
        shift = h.unsqueeze(1) + loc[sl] * prec_c[sl]
        lw = const_c[sl] + 0.5 * (shift.pow(2) / prec - prec.log()).sum(-1)  # (B, c)
        idx = torch.arange(start, start + lw.shape[1], device=lam.device).expand_as(lw)
        if best_lw is not None:
            lw, idx = torch.cat([best_lw, lw], 1), torch.cat([best_idx, idx], 1)
        keep = _top(lw, max_components)
        best_lw, best_idx = lw.gather(1, keep), idx.gather(1, keep)
    prec = lam.unsqueeze(1) + prec_c[best_idx]  # (B, M, D)
    shift = h.unsqueeze(1) + loc[best_idx] * prec_c[best_idx]
    return GaussianMixtureProposal(best_lw, shift / prec, scale=prec.rsqrt())


def _full_proposal(
    message: LikelihoodMessage, view: GaussianMixtureView, max_components: int
) -> GaussianMixtureProposal:
    lam, h = message.precision, message.shift  # (B, D)
    loc = view.loc.double().to(lam.device)  # (C, D)
    cov = view.covariance.double().to(lam.device)
    tril = torch.linalg.cholesky(cov)
    prec_c = torch.cholesky_inverse(tril)  # (C, D, D)
    pi = view.log_weights.double().to(lam.device)
    half_logdet_c = tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    nat_c = (prec_c @ loc.unsqueeze(-1)).squeeze(-1)  # S_c^-1 m_c
    const_c = pi - half_logdet_c - 0.5 * (loc * nat_c).sum(-1)
    prec = torch.diag_embed(lam).unsqueeze(1) + prec_c  # (B, C, D, D)
    shift = h.unsqueeze(1) + nat_c  # (B, C, D)
    chol = torch.linalg.cholesky(prec)
    mean = torch.cholesky_solve(shift.unsqueeze(-1), chol).squeeze(-1)
    lw = const_c - chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) + 0.5 * (shift * mean).sum(-1)
    keep = _top(lw, max_components)
    rows = torch.arange(lam.shape[0], device=lam.device).unsqueeze(1)
    cov_post = torch.cholesky_inverse(chol[rows, keep])
    return GaussianMixtureProposal(
        lw.gather(1, keep), mean[rows, keep], scale_tril=torch.linalg.cholesky(cov_post)
    )


def adapted_proposal(
    message: LikelihoodMessage,
    view: GaussianMixtureView,
    max_components: int = DEFAULT_MAX_COMPONENTS,
) -> GaussianMixtureProposal:
    """The normalized product l(z) r(z) for each datum: a Gaussian mixture (see module doc).

    Args:
        message: the likelihood message per datum (:func:`likelihood_message`).
        view: the source r as a Gaussian mixture.
        max_components: keep at most this many components per datum (highest weight).
    """
    check_positive_int("max_components", max_components)
    if view.scale is not None:
        return _diagonal_proposal(message, view, max_components)
    return _full_proposal(message, view, max_components)


def uses_guide(vae: nn.Module, source: LatentSource | None) -> bool:
    """True when the guide itself is the adapted proposal: the model's own prior, or a
    conditional source (whose density depends on the label)."""
    if source is None or getattr(source, "conditional", False):
        return True
    return isinstance(source, PriorSource) and source._vae[0] is vae and source.label is None


@torch.no_grad()
def source_view(
    source: LatentSource, num_draws: int = 4096, num_components: int = 10, seed: int = 0
) -> GaussianMixtureView:
    """``source`` as a Gaussian mixture: its own form, or EM on ``num_draws`` of its draws
    (drawn under ``seed``, so the view, and every estimate that starts from it, is the same
    whatever the global random state, e.g. on every process of a torchrun job)."""
    view = source.gaussian_mixture()
    if view is not None:
        return view
    with seeded(seed, "cuda" if torch.cuda.is_available() else None):
        z = source.sample(num_draws)
    fit = fit_gaussian_mixture(z, num_components=min(num_components, num_draws), seed=seed)
    return fit.gaussian_mixture()


def initial_distribution(
    vae: nn.Module,
    source: LatentSource | None,
    max_components: int = DEFAULT_MAX_COMPONENTS,
    seed: int = 0,
) -> Callable[[torch.Tensor, torch.Tensor | None], Distribution]:
    """A start for annealing toward p(x | z) r(z): ``(x, y) -> Distribution`` per datum.

    The adapted proposal of ``source`` (see the module docstring), or, for the model's own
    prior and for conditional sources, the guide's diagonal Gaussian (exact for a diagonal
    Normal guide, moment-matched otherwise). Closed-form Gaussians: sampling and density
    need no guide pass, and the density is differentiable in z.
    """
    view = None if uses_guide(vae, source) else source_view(source, seed=seed)

    def initial(x: torch.Tensor, y: torch.Tensor | None = None) -> Distribution:
        guide = guide_gaussian(vae, x, y)
        if view is None:
            return torch.distributions.Independent(
                torch.distributions.Normal(guide.loc, guide.scale), 1
            )
        message = likelihood_message(guide, prior_gaussian(vae, x, y))
        return adapted_proposal(message, view, max_components)

    return initial
