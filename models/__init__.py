"""Generative models: the VAE and CVAE, their priors and their decoders (likelihoods)."""

from .decoders import (
    LIKELIHOODS,
    BernoulliDecoder,
    ContinuousBernoulliDecoder,
    Decoder,
    DiscretizedLogisticDecoder,
    GaussianDecoder,
)
from .discretized import DiscretizedLogistic, bits_per_dim
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
    "DiscretizedLogisticDecoder",
    "DiscretizedLogistic",
    "bits_per_dim",
]
