"""The semi-supervised VAE M2: the label is a latent variable when it is missing.

Semi-Supervised Learning with Deep Generative Models (Kingma, Rezende, Mohamed and
Welling, 2014), https://arxiv.org/abs/1406.5298, section 3.1.2.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.models.vae import CVAE

__all__ = ["M2", "LABEL"]

LABEL = "y"
"""The site of the label: observed where it is known, enumerated where it is not."""


class M2(CVAE):
    """p(y) p(z) p_theta(x | y, z) with guide q_phi(y | x) q_phi(z | x, y).

    y is one-hot over ``y_dim`` classes with a uniform prior p(y). ``model(x, y)`` and
    ``guide(x, y)`` take the labels of a labelled batch; ``model(x)`` and ``guide(x)`` treat
    them as missing: the guide's site ``"y"`` is q(y | x) (the ``classifier``'s logits),
    marked for parallel enumeration, so that ``TraceEnum_ELBO`` sums the unlabelled bound

        U(x) = sum_y q(y | x) (L(x, y)) + H(q(y | x)),

    exactly over the labels, where L(x, y) = E_q(z|x,y)[log p(x | y, z) + log p(y) + log p(z)
    - log q(z | x, y)] is the labelled bound (Kingma et al. 2014, eqs. 6-7). Like the CVAE's,
    the encoder and decoder take y as an input beside x and z; the prior p(z) does not
    depend on y.
    """

    semi_supervised = True

    def __init__(
        self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module, classifier: nn.Module
    ) -> None:
        super().__init__(encoder, decoder, prior)
        if getattr(prior, "conditional", False):
            raise ValueError(
                "M2's prior p(z) does not depend on the label; use an unconditional one"
            )
        if getattr(classifier, "y_dim", None) != self.y_dim:
            raise ValueError(
                f"the classifier q(y | x) must give {self.y_dim} classes, got "
                f"{getattr(classifier, 'y_dim', None)}"
            )
        self.classifier = classifier

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        if y is None:  # unlabelled: the label is summed out
            super(CVAE, self)._check_inputs(x, None)
        else:
            super()._check_inputs(x, y)

    def label_prior(self) -> dist.OneHotCategorical:
        """p(y): uniform over the ``y_dim`` classes."""
        device = self.classifier.head.weight.device
        return dist.OneHotCategorical(logits=torch.zeros(self.y_dim, device=device))

    def label_posterior(self, x: torch.Tensor) -> dist.OneHotCategorical:
        """q(y | x), batch shape (B,)."""
        return dist.OneHotCategorical(logits=self.classifier(x))

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class under q(y | x), shape (B,)."""
        return self.classifier(x).argmax(-1)

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """p(y) p(z) p_theta(x | y, z), with y observed when given."""
        self._check_inputs(x, y)
        if self.register_params:
            pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            label = pyro.sample(LABEL, self.label_prior(), obs=y)
            z = pyro.sample("z", self.prior(None))
            pyro.sample("x", self.decoder(z, label), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        """q_phi(y | x) (enumerated, when y is not given) q_phi(z | x, y)."""
        self._check_inputs(x, y)
        if self.register_params:
            pyro.module("vae", self)
        with pyro.plate("data", x.shape[0]):
            if y is None:
                y = pyro.sample(LABEL, self.label_posterior(x), infer={"enumerate": "parallel"})
            pyro.sample("z", self.encoder(x, y))
