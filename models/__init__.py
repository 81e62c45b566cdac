"""Generative models: the VAE, the CVAE and the semi-supervised M2, their priors and their
decoders (likelihoods)."""

from .decoders import (
    LIKELIHOODS,
    BernoulliDecoder,
    ContinuousBernoulliDecoder,
    Decoder,
    DiscretizedLogisticDecoder,
    GaussianDecoder,
)
from .discretized import DiscretizedLogistic, bits_per_dim
from .m2 import M2
from .priors import PRIORS, FlowPrior, MixturePrior, StandardNormalPrior, VampPrior
from .vae import CVAE, VAE

__all__ = [
    "VAE",
    "CVAE",
    "M2",
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
