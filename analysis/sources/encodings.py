"""The encoder's posteriors q(z | x_n) on a data set, computed once, for fitting sources."""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.analysis.sources.helpers import is_diagonal_normal, seeded
from pyrovae.data import Split, fixed_binarization
from pyrovae.nets import check_positive_int
from pyrovae.train import one_hot

__all__ = ["Encodings", "check_data", "model_inputs"]


class Encodings:
    """The encoder's posteriors q(z | x_n [, y_n]) on a data set, computed once per fit.

    For an encoder that returns a diagonal Normal, ``loc`` and ``scale`` (N, z_dim) are
    stored; any other guide (e.g. the flow guide) is kept as the data and re-run when needed.

    Args:
        vae: the trained model (its ``encoder`` is used).
        x: data as the model sees them (binarized for a Bernoulli decoder), (N, x_dim).
        y: one-hot labels (N, y_dim), required for a CVAE and refused for a VAE.
        label: the class these data belong to, if they are one class (set by
            :func:`fit_per_class`; binds a conditional prior).
        batch_size: data per encoder pass.
    """

    def __init__(
        self,
        vae: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        label: int | None = None,
        batch_size: int = 10_000,
    ) -> None:
        check_data(vae, x, y)
        self.vae = vae
        self.x = x
        self.y = y
        self.label = label
        self.batch_size = check_positive_int("batch_size", batch_size)
        with torch.no_grad():
            self.diagonal = is_diagonal_normal(self.posterior(0, 1))
            self.loc: torch.Tensor | None = None
            self.scale: torch.Tensor | None = None
            if self.diagonal:
                parts = [self.posterior(s, s + batch_size) for s in self.starts()]
                self.loc = torch.cat([q.base_dist.loc for q in parts])
                self.scale = torch.cat([q.base_dist.scale for q in parts])
        self._means: torch.Tensor | None = None
        self._mean_noise: torch.Tensor | None = None

    @property
    def num_data(self) -> int:
        return self.x.shape[0]

    @property
    def z_dim(self) -> int:
        return self.vae.z_dim

    @property
    def device(self) -> torch.device:
        return self.x.device

    def starts(self) -> range:
        return range(0, self.num_data, self.batch_size)

    def posterior(self, start: int, stop: int) -> dist.Distribution:
        """q(z | x_n [, y_n]) for n in [start, stop), batch shape (stop - start,)."""
        y = None if self.y is None else self.y[start:stop]
        return self.vae.encoder(self.x[start:stop], y)

    def means(self, num_draws: int = 64, seed: int | None = 0) -> torch.Tensor:
        """E_q[z | x_n], shape (N, z_dim): ``loc`` for a diagonal Normal, else a Monte Carlo
        average of ``num_draws`` draws (cached after the first call; its noise is
        :meth:`mean_noise`)."""
        if self.loc is not None:
            return self.loc
        if self._means is None:
            check_positive_int("num_draws", num_draws)
            if num_draws < 2:
                raise ValueError(f"num_draws must be at least 2, got {num_draws}")
            means, noise = [], []
            with torch.no_grad(), seeded(seed, self.device):
                for s in self.starts():
                    draws = self.posterior(s, s + self.batch_size).sample((num_draws,))
                    means.append(draws.mean(0))
                    noise.append(draws.double().var(0).sum(0) / num_draws)
            self._means = torch.cat(means)
            self._mean_noise = (torch.stack(noise).sum(0) / self.num_data).to(self._means.dtype)
        return self._means

    def mean_noise(self, num_draws: int = 64, seed: int | None = 0) -> torch.Tensor:
        """The Monte Carlo variance of :meth:`means`, averaged over data, per dim (z_dim,):
        E_n[Var_q(z_d | x_n)] / num_draws (zero for a diagonal Normal, whose means are exact).

        The variance over data of estimated means is the variance of the true means plus
        this, so subtracting it removes the noise from active units and from 'gaussian-loc'.
        """
        if self.loc is not None:
            return torch.zeros(self.z_dim, device=self.device)
        self.means(num_draws, seed)
        return self._mean_noise

    def sample(self, draws_per_datum: int = 1, seed: int | None = 0) -> torch.Tensor:
        """z ~ q(z | x_n), ``draws_per_datum`` per datum: shape (N * draws_per_datum, z_dim).

        The draws are a stratified sample of the aggregate q(z).
        """
        check_positive_int("draws_per_datum", draws_per_datum)
        with torch.no_grad(), seeded(seed, self.device):
            if self.loc is not None:
                eps = torch.randn(self.num_data, draws_per_datum, self.z_dim, device=self.device)
                z = self.loc.unsqueeze(1) + self.scale.unsqueeze(1) * eps
                return z.reshape(-1, self.z_dim)
            parts = [
                self.posterior(s, s + self.batch_size).sample((draws_per_datum,)).transpose(0, 1)
                for s in self.starts()
            ]
            return torch.cat(parts).reshape(-1, self.z_dim)

    def moments(
        self, draws_per_datum: int = 1, seed: int | None = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (z_dim,) and covariance (z_dim, z_dim) of the aggregate q(z).

        Exact for a diagonal Normal encoder (law of total covariance:
        Cov[z] = Cov_n[loc_n] + mean_n diag(scale_n^2)); from draws otherwise.
        """
        if self.loc is None:
            z = self.sample(draws_per_datum, seed).double()
            return z.mean(0), torch.cov(z.T, correction=0).reshape(self.z_dim, self.z_dim)
        loc = self.loc.double()
        cov = torch.cov(loc.T, correction=0).reshape(self.z_dim, self.z_dim)
        return loc.mean(0), cov + torch.diag(self.scale.double().pow(2).mean(0))


def check_data(vae: nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> None:
    """Raise ``ValueError`` unless ``x`` is (N, x_dim), N >= 1, and ``y`` suits the model."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != vae.x_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a tensor of shape (num_data, {vae.x_dim}), got {shape}; "
            "flatten images with x.reshape(len(x), -1)"
        )
    if x.shape[0] == 0:
        raise ValueError("x holds no data (shape (0, x_dim)); pass at least one datum")
    if vae.conditional:
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0], vae.y_dim):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else y
            raise ValueError(
                f"a CVAE needs y, one-hot labels of shape ({x.shape[0]}, {vae.y_dim}), got "
                f"{shape}; make them with pyrovae.train.one_hot(labels, {vae.y_dim})"
            )
    elif y is not None:
        raise ValueError("y was given for an unconditional VAE; drop it (pass y=None)")


def model_inputs(vae: nn.Module, split: Split, limit: int | None, random_subset: bool) -> tuple:
    """(x, y) as the model sees them: binarized once for the whole split, then subset.

    Held-out data (``random_subset``) come in the fixed random order of
    :meth:`Split.sample` (the first ``limit`` of it, or all); training data are the first
    ``limit``. Held-out data of the semi-supervised M2 come without labels (y is None):
    its held-out log p(x) sums the label out (:mod:`~pyrovae.analysis.likelihood.labels`),
    while its sources are fitted to q(z | x, y) with the training data's labels.
    """
    if not isinstance(split, Split):
        raise ValueError(
            f"expected a pyrovae.data.Split (x, y), got {type(split).__name__}; "
            "pass e.g. load_dataset('mnist').test"
        )
    device = next(vae.parameters()).device
    x = split.x
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    labels = split.y
    if limit is not None:
        check_positive_int("num_train/num_test", limit)
    if random_subset:  # the fixed random order even for all data, so that its prefixes
        idx = split.sample_indices(limit or len(split)).to(x.device)  # are the AIS images
        x, labels = x[idx], labels[idx]
    elif limit is not None:
        x, labels = x[:limit], labels[:limit]
    x, labels = x.to(device), labels.to(device)
    held_out_m2 = random_subset and getattr(vae, "semi_supervised", False)
    y = one_hot(labels, vae.y_dim) if vae.conditional and not held_out_m2 else None
    return x, y
