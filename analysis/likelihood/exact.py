"""Probabilistic PCA as a VAE: a model whose log p_r(x) is known exactly for checking estimators.

With a linear Gaussian decoder p(x | z) = N(x; W z + b, s^2 I) (or diag(s^2), one s per
dim, as a decoder of standardized data is in the data's units) and a Gaussian mixture
latent source r(z) = sum_k pi_k N(z; m_k, S_k), the marginal is again a mixture,

    p_r(x) = sum_k pi_k N(x; W m_k + b, W S_k W^T + s^2 I),

and for the standard Normal prior the posterior is p(z | x) = N((W^T W + s^2 I)^-1 W^T
(x - b), s^2 (W^T W + s^2 I)^-1), diagonal when the columns of W are orthogonal. A zero
column of W makes a latent dim that the decoder ignores (an inactive unit), where the
posterior equals the prior. Probabilistic principal component analysis (Tipping &
Bishop, 1999), https://doi.org/10.1111/1467-9868.00196
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.analysis.sources.classes import GaussianMixtureView, LatentSource
from pyrovae.models import VAE, GaussianDecoder, StandardNormalPrior
from pyrovae.nets import data_scaling

__all__ = [
    "LinearGaussianEncoder",
    "ppca_vae",
    "ppca_log_marginal",
    "ppca_posterior",
    "ppca_elbo",
]


class LinearGaussianEncoder(nn.Module):
    """q(z | x) = N(z; A x + c, diag(scale^2)): an affine encoder with a fixed scale.

    Set to the exact PPCA posterior by :func:`ppca_vae`; its ``encode`` matches the
    library's encoders, so every analysis that reads ``loc``/``scale`` works with it.
    """

    y_dim = 0

    def __init__(self, gain: torch.Tensor, offset: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.z_dim, self.x_dim = gain.shape
        # kept in the dtype given (ppca_vae passes the decoder's): a float64 model stays exact
        self.register_buffer("gain", gain.clone())
        self.register_buffer("offset", offset.clone())
        self.register_buffer("scale", scale.clone())

    def encode(
        self, x: torch.Tensor, y: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc = x @ self.gain.T + self.offset
        return loc, self.scale.expand(loc.shape), loc

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.Distribution:
        loc, scale, _ = self.encode(x, y)
        return dist.Normal(loc, scale).to_event(1)


def ppca_posterior(
    weight: torch.Tensor, bias: torch.Tensor, noise: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact posterior of PPCA under N(0, I): ``(gain, offset, cov)`` with
    p(z | x) = N(gain x + offset, cov), all float64. ``noise`` is the decoder's standard
    deviation s, one for all dims or one per dim (then W^T W / s^2 reads W^T diag(s^-2) W)."""
    w, b = weight.double(), bias.double()
    inv_var = torch.as_tensor(noise, dtype=torch.double).pow(-2).expand(w.shape[0])
    precision = w.T @ (inv_var[:, None] * w) + torch.eye(w.shape[1], dtype=torch.double)
    cov = torch.linalg.inv(precision)
    gain = cov @ w.T * inv_var
    return gain, -gain @ b, cov


def ppca_vae(
    weight: torch.Tensor,
    bias: torch.Tensor,
    noise: float,
    *,
    widen: float = 1.0,
    shift: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> VAE:
    """PPCA with decoder N(W z + b, noise^2 I), prior N(0, I) and its exact posterior as guide.

    Args:
        weight: W, shape (x_dim, z_dim), with orthogonal columns (zero columns allowed:
            inactive latent dims), so that the exact posterior is a diagonal Normal.
        bias: b, shape (x_dim,).
        noise: the decoder's standard deviation s > 0.
        widen: multiplies the guide's scale (1 keeps it exact).
        shift: added to the guide's mean in every dim (0 keeps it exact).
        dtype: of every parameter and buffer; the guide is the exact posterior of the
            decoder as stored in this dtype (computed in float64, then cast), so a
            float64 model's guide is exact to float64 rounding.
    """
    if weight.dim() != 2 or bias.shape != (weight.shape[0],):
        raise ValueError(
            f"weight must be (x_dim, z_dim) and bias (x_dim,), got {tuple(weight.shape)} "
            f"and {tuple(bias.shape)}"
        )
    if not noise > 0 or not widen > 0:
        raise ValueError(f"noise and widen must be positive, got {noise!r} and {widen!r}")
    x_dim, z_dim = weight.shape
    gram = weight.double().T @ weight.double()
    off_diagonal = gram - torch.diag(gram.diagonal())
    if off_diagonal.abs().max() > 1e-6 * max(1.0, float(gram.abs().max())):
        raise ValueError(
            "the columns of weight must be orthogonal for the exact posterior to be a "
            "diagonal Normal; orthogonalize them, e.g. with torch.linalg.qr"
        )
    decoder = GaussianDecoder(
        z_dim, x_dim, hidden_dims=(), scale="isotropic", min_scale=0.0, init_scale=float(noise)
    ).to(dtype)
    with torch.no_grad():
        decoder.net[0].weight.copy_(weight)
        decoder.net[0].bias.copy_(bias)
    stored = decoder.net[0]  # the posterior of the decoder as stored, not of the inputs
    gain, offset, cov = ppca_posterior(
        stored.weight.detach(), stored.bias.detach(), float(decoder.scale.detach().double())
    )
    scale = widen * cov.diagonal().sqrt()
    encoder = LinearGaussianEncoder(gain.to(dtype), (offset + shift).to(dtype), scale.to(dtype))
    return VAE(encoder, decoder, StandardNormalPrior(z_dim)).to(dtype).eval()


def _decoder_parts(vae: VAE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W, b, s) of the decoder N(x; W z + b, diag(s^2)) in the data's units, float64 on
    the CPU; s has one entry per dim. A decoder with a :class:`~pyrovae.nets.DataScaling`
    (m, d) models x = m + d u with u ~ N(W z + b, diag(s^2)), which is the linear Gaussian
    N(x; d W z + m + d b, diag(d^2 s^2))."""
    decoder = vae.decoder
    net = getattr(decoder, "net", None)
    if (
        not isinstance(decoder, GaussianDecoder)
        or not isinstance(net, nn.Sequential)
        or len(net) != 1
    ):
        raise ValueError(
            "ppca_log_marginal needs a linear GaussianDecoder (hidden_dims=()), e.g. from ppca_vae"
        )
    linear = net[0]
    w = linear.weight.detach().double().cpu()
    b = linear.bias.detach().double().cpu()
    s = decoder.scale.detach().double().cpu().expand(w.shape[0])
    scaling = data_scaling(decoder)
    if scaling is not None:
        loc, gain = scaling.loc.double().cpu(), scaling.scale.double().cpu()
        w, b, s = gain[:, None] * w, loc + gain * b, gain * s
    return w, b, s


def ppca_log_marginal(
    vae: VAE, x: torch.Tensor, source: LatentSource | GaussianMixtureView | None = None
) -> torch.Tensor:
    """Exact log p_r(x_n) = log sum_k pi_k N(x_n; W m_k + b, W S_k W^T + s^2 I), float64 (N,).

    ``source`` is any latent source with a Gaussian-mixture form (see
    :meth:`~pyrovae.analysis.sources.LatentSource.gaussian_mixture`), a
    :class:`~pyrovae.analysis.sources.GaussianMixtureView`, or None for the prior N(0, I).
    """
    w, b, s = _decoder_parts(vae)
    x_dim, z_dim = w.shape
    if source is None:
        view = GaussianMixtureView(
            torch.zeros(1), torch.zeros(1, z_dim), scale=torch.ones(1, z_dim)
        )
    elif isinstance(source, GaussianMixtureView):
        view = source
    else:
        view = source.gaussian_mixture()
        if view is None:
            raise ValueError(
                f"source {getattr(source, 'name', source)!r} is not a Gaussian mixture, so "
                "its PPCA marginal has no closed form; use a Gaussian or mixture source"
            )
    x = x.detach().double().to("cpu")
    locs = view.loc.detach().double().cpu() @ w.T + b  # (C, X)
    covs = w @ view.covariance.detach().double().cpu() @ w.T
    covs = covs + torch.diag(s.pow(2))
    log_weights = view.log_weights.detach().double().cpu()
    out = torch.full((x.shape[0],), -math.inf, dtype=torch.double)
    step = max(1, 2**16 // max(1, x.shape[0]))  # components per step: bounded memory
    for start in range(0, view.num_components, step):
        comps = torch.distributions.MultivariateNormal(
            locs[start : start + step], covs[start : start + step]
        )
        lp = comps.log_prob(x.unsqueeze(1)) + log_weights[start : start + step]
        out = torch.logaddexp(out, torch.logsumexp(lp, dim=1))
    return out


def ppca_elbo(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """Exact ELBO of the guide under the prior N(0, I), float64 (N,):
    ELBO(x) = log p(x) - KL(q(z | x) || p(z | x)), both Gaussian (any diagonal guide whose
    ``encoder.encode`` gives loc and scale, e.g. :func:`ppca_vae` with ``widen``/``shift``).
    """
    w, b, s = _decoder_parts(vae)
    gain, offset, post_cov = ppca_posterior(w, b, s)
    x64 = x.detach().double().cpu()
    post_mean = x64 @ gain.T + offset
    with torch.no_grad():
        loc, scale, _ = vae.encoder.encode(x.to(next(vae.decoder.parameters()).device))
    loc, var = loc.double().cpu(), scale.double().cpu().pow(2)
    precision = torch.linalg.inv(post_cov)
    diff = post_mean - loc
    kl = 0.5 * (
        (precision.diagonal() * var).sum(-1)
        + ((diff @ precision) * diff).sum(-1)
        - w.shape[1]
        + torch.logdet(post_cov)
        - var.log().sum(-1)
    )
    return ppca_log_marginal(vae, x) - kl
