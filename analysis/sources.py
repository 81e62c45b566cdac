"""Latent sources: distributions over z from which new data can be generated.

A source has ``sample(num_samples) -> (num_samples, z_dim)``, ``log_prob(z)`` (batched
over the leading dims of ``z``), a ``name`` and a ``z_dim``; every source here is an
``nn.Module`` whose tensors are buffers or parameters, so ``source.to(device)`` moves it.

Sources are fitted to the encoder's posteriors q(z | x_n) on a data set (usually the
training set). The exact aggregated posterior is q(z) = 1/N sum_n q(z | x_n); the other
fits approximate it. How far q(z) lies from the prior is measured in ELBO surgery: yet
another way to carve up the variational evidence lower bound (Hoffman & Johnson, 2016),
http://approximateinference.org/accepted/HoffmanJohnson2016.pdf

============== ===============================================================
name           source
============== ===============================================================
prior          the model's own prior p(z) (for a conditional prior see PriorSource)
aggregate      the exact mixture q(z) = 1/N sum_n q(z | x_n)
gaussian-loc   diagonal Gaussian fitted to the encoder means E_q[z | x_n]
gaussian-z     diagonal Gaussian with the mean and variances of q(z)
gaussian-full  full-covariance Gaussian with the mean and covariance of q(z)
gmm            Gaussian mixture fitted by EM to draws z ~ q(z)
flow           Real NVP flow fitted by maximum likelihood to draws z ~ q(z)
============== ===============================================================
"""

from __future__ import annotations

from typing import Any

# The classes live in .source_types and the helpers in .source_helpers, below .source_fits
# and .encodings, which build on them; every name stays importable from here.
from .source_helpers import is_diagonal_normal, one_cpu_thread, seeded  # noqa: F401
from .source_types import (  # noqa: F401
    LOG_2PI,
    VARIANCE_FLOOR,
    AggregatePosterior,
    FlowSource,
    GaussianMixtureView,
    GaussianSource,
    LatentSource,
    MixtureSource,
    PriorSource,
    _check_samples,
    gaussian_mixture_of,
)

__all__ = [
    "GaussianMixtureView",
    "LatentSource",
    "PriorSource",
    "AggregatePosterior",
    "GaussianSource",
    "MixtureSource",
    "FlowSource",
]


def __getattr__(name: str) -> Any:  # fits and encodings live in modules built on this one
    if name in ("Encodings", "check_data"):
        from . import encodings

        return getattr(encodings, name)
    if not name.startswith("__"):
        from . import source_fits

        if name in source_fits.__all__:
            return getattr(source_fits, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
