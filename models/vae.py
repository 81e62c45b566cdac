"""The VAE and CVAE as Pyro model/guide pairs built from a prior, a decoder and an encoder."""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

__all__ = ["VAE", "CVAE"]


class VAE(nn.Module):
    """Variational autoencoder p(z) p_theta(x | z) with amortized guide q_phi(z | x).

    ``model(x)`` and ``guide(x)`` share one ``pyro.plate("data")`` over the rows of ``x``
    and the sample sites ``"z"`` (latent) and ``"x"`` (observed). Any component can be
    swapped as long as it keeps the call signature and returns a distribution with
    event dim 1: ``prior(y) -> p(z)``, ``decoder(z, y) -> p(x | z)``,
    ``encoder(x, y) -> q(z | x)``. Extra leading batch dims on ``z`` (vectorized
    particles) broadcast through every component.

    Auto-Encoding Variational Bayes (Kingma & Welling, 2014), https://arxiv.org/abs/1312.6114
    """

    conditional = False
    #: Register the parameters in Pyro's param store (``pyro.module``) on every call, as
    #: ``pyro.infer.SVI`` with a ``pyro.optim`` optimizer needs. pyrovae's own training
    #: loop optimizes ``self.parameters()`` directly and switches this off for speed.
    register_params = True

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module) -> None:
        super().__init__()
        for name, module in (("encoder", encoder), ("decoder", decoder), ("prior", prior)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        if encoder.z_dim != decoder.z_dim or prior.z_dim != decoder.z_dim:
            raise ValueError(
                "z_dim must agree between encoder, decoder and prior, got "
                f"{encoder.z_dim}, {decoder.z_dim} and {prior.z_dim}"
            )
        if encoder.x_dim != decoder.x_dim:
            raise ValueError(
                f"x_dim must agree between encoder ({encoder.x_dim}) and decoder ({decoder.x_dim})"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.x_dim = decoder.x_dim
        self.z_dim = decoder.z_dim
        self.y_dim = getattr(decoder, "y_dim", 0)
        self._check_components()

    def _check_components(self) -> None:
        if self.y_dim != 0 or getattr(self.encoder, "y_dim", 0) != 0:
            raise ValueError(
                "an unconditional VAE needs y_dim=0 in encoder and decoder; use CVAE for labels"
            )
        if getattr(self.prior, "conditional", False):
            raise ValueError("a conditional prior p(z | y) needs a CVAE")

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.x_dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"x must be a tensor of shape (batch, {self.x_dim}), got {shape}; "
                "flatten images with x.reshape(len(x), -1)"
            )
        if y is not None:
            raise ValueError(
                "y was given to an unconditional VAE; drop it, or build a CVAE to use labels"
            )

    def latent_prior(self, y: torch.Tensor | None = None) -> dist.Distribution:
        """The prior p(z) (or p(z | y) for a CVAE with a conditional prior)."""
        return self.prior(y)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(z [| y]) p_theta(x | z [, y]), with x observed."""
        self._check_inputs(x, y)
        if self.register_params:
            pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior(y))
            pyro.sample("x", self.decoder(z, y), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q_phi(z | x [, y])."""
        self._check_inputs(x, y)
        if self.register_params:
            pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encoder(x, y))

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        y: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        source: Any = None,
    ) -> torch.Tensor:
        """Decoder means for ``z``, shape (n, x_dim).

        ``z`` is drawn, when not given, from ``source``: a latent source (see
        :mod:`pyrovae.analysis.sources`) or the name of one saved with the run
        (``RUN/sources/NAME.pt``, see :func:`pyrovae.analysis.sources.store.load_sources`);
        from the prior when neither is given.
        """
        return self.decoder.mean(self._latents(num_samples, y, z, source), y)

    def _latents(
        self, num_samples: int, y: torch.Tensor | None, z: torch.Tensor | None, source: Any
    ) -> torch.Tensor:
        if z is not None:
            if source is not None:
                raise ValueError("give z or source, not both")
            return z
        if source is None:
            prior = self.prior(y)
            return prior.sample() if prior.batch_shape else prior.sample((num_samples,))
        if isinstance(source, str):
            run_dir = getattr(self, "run_dir", None)
            if run_dir is None:
                raise ValueError(
                    f"source={source!r} names a source saved with a run, but this model was "
                    "not loaded with pyrovae.load_run; pass a fitted source instead "
                    "(pyrovae.analysis.sources.fit_source)"
                )
            from pyrovae.analysis.sources.saved import load_source, source_path

            source = load_source(source_path(run_dir, source), self)
        if not hasattr(source, "sample"):
            raise ValueError(
                f"source must be a latent source with sample(n) or a saved source's name, "
                f"got {type(source).__name__}"
            )
        device = next(self.parameters()).device
        if getattr(source, "conditional", False):
            return source.sample(num_samples, y=y).to(device)
        return source.sample(num_samples).to(device)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder mean at the encoder's mean: a deterministic reconstruction of ``x``."""
        loc, _, _ = self.encoder.encode(x, y)
        return self.decoder.mean(loc, y)


class CVAE(VAE):
    """Conditional VAE p(z [| y]) p_theta(x | z, y) with guide q_phi(z | x, y).

    ``y`` is a one-hot label of shape (batch, y_dim), always observed (an input of both
    model and guide). Learning Structured Output Representation using Deep Conditional
    Generative Models (Sohn et al., 2015).
    """

    conditional = True

    def _check_components(self) -> None:
        if self.y_dim < 1 or getattr(self.encoder, "y_dim", 0) != self.y_dim:
            raise ValueError(
                "a CVAE needs the same positive y_dim in encoder and decoder, got "
                f"{getattr(self.encoder, 'y_dim', 0)} and {self.y_dim}"
            )

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if y is None:
            raise ValueError(
                f"a CVAE needs y: one-hot labels of shape (batch, {self.y_dim}); "
                "make them with torch.nn.functional.one_hot(labels, num_classes).float()"
            )
        super()._check_inputs(x, None)
        if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0], self.y_dim):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"y must be one-hot labels of shape ({x.shape[0]}, {self.y_dim}), got {shape}; "
                "make them with torch.nn.functional.one_hot(labels, num_classes).float()"
            )

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        y: torch.Tensor | None = None,
        z: torch.Tensor | None = None,
        source: Any = None,
    ) -> torch.Tensor:
        if y is None or y.dim() != 2 or y.shape[-1] != self.y_dim:
            raise ValueError(f"a CVAE generates given y: one-hot labels of shape (n, {self.y_dim})")
        return self.decoder.mean(self._latents(y.shape[0], y, z, source), y)
