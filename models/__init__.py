"""Generative models: the VAE and CVAE, their priors and their decoders (likelihoods)."""

from .decoders import (
    LIKELIHOODS,
    BernoulliDecoder,
    ContinuousBernoulliDecoder,
    Decoder,
    GaussianDecoder,
)
from .priors import PRIORS, FlowPrior, MixturePrior, StandardNormalPrior, VampPrior
from .vae import CVAE, VAE

__all__ = [
    "VAE",
    "CVAE",
    "PRIORS",
    "StandardNormalPrior",
    "MixturePrior",
    "VampPrior",
    "FlowPrior",
    "LIKELIHOODS",
    "Decoder",
    "BernoulliDecoder",
    "ContinuousBernoulliDecoder",
    "GaussianDecoder",
]
