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

Every public name of the modules here is importable from the package itself; each is
imported on first use, so the package adds no import edge between its modules.
"""

from __future__ import annotations

from pyrovae._lazy import lazy_exports

_EXPORTS = {
    "AggregatePosterior": "pyrovae.analysis.sources.classes",
    "FlowSource": "pyrovae.analysis.sources.classes",
    "GaussianMixtureView": "pyrovae.analysis.sources.classes",
    "GaussianSource": "pyrovae.analysis.sources.classes",
    "LatentSource": "pyrovae.analysis.sources.classes",
    "MixtureSource": "pyrovae.analysis.sources.classes",
    "PriorSource": "pyrovae.analysis.sources.classes",
    "Encodings": "pyrovae.analysis.sources.encodings",
    "check_data": "pyrovae.analysis.sources.encodings",
    "model_inputs": "pyrovae.analysis.sources.encodings",
    "SOURCES": "pyrovae.analysis.sources.fits",
    "fit_flow": "pyrovae.analysis.sources.fits",
    "fit_gaussian": "pyrovae.analysis.sources.fits",
    "fit_gaussian_mixture": "pyrovae.analysis.sources.fits",
    "fit_per_class": "pyrovae.analysis.sources.fits",
    "fit_source": "pyrovae.analysis.sources.fits",
    "fit_sources": "pyrovae.analysis.sources.fits",
    "FlowPairs": "pyrovae.analysis.sources.flow_pairs",
    "supports": "pyrovae.analysis.sources.flow_pairs",
    "is_diagonal_normal": "pyrovae.analysis.sources.helpers",
    "one_cpu_thread": "pyrovae.analysis.sources.helpers",
    "seeded": "pyrovae.analysis.sources.helpers",
    "DEFAULT_TOLERANCE": "pyrovae.analysis.sources.mixture_pruning",
    "DiagonalLogDensities": "pyrovae.analysis.sources.mixture_pruning",
    "PrunedDiagonalMixture": "pyrovae.analysis.sources.mixture_pruning",
    "REFINE_ABOVE": "pyrovae.analysis.sources.mixture_pruning",
    "Terms": "pyrovae.analysis.sources.mixture_pruning",
    "centred_rows": "pyrovae.analysis.sources.mixture_pruning",
    "FORMAT": "pyrovae.analysis.sources.saved",
    "PER_CLASS_SUFFIX": "pyrovae.analysis.sources.saved",
    "StaleSourceError": "pyrovae.analysis.sources.saved",
    "load_source": "pyrovae.analysis.sources.saved",
    "model_fingerprint": "pyrovae.analysis.sources.saved",
    "save_source": "pyrovae.analysis.sources.saved",
    "save_sources": "pyrovae.analysis.sources.saved",
    "saved_source_names": "pyrovae.analysis.sources.saved",
    "source_from_state": "pyrovae.analysis.sources.saved",
    "source_path": "pyrovae.analysis.sources.saved",
    "source_state": "pyrovae.analysis.sources.saved",
    "fit_record": "pyrovae.analysis.sources.store",
    "fit_run_per_class": "pyrovae.analysis.sources.store",
    "fit_run_sources": "pyrovae.analysis.sources.store",
    "load_sources": "pyrovae.analysis.sources.store",
    "sample_latents": "pyrovae.analysis.sources.store",
    "saved_or_fit": "pyrovae.analysis.sources.store",
    "ACTIVITY_THRESHOLD": "pyrovae.analysis.sources.surgery",
    "ElboSurgery": "pyrovae.analysis.sources.surgery",
    "elbo_surgery": "pyrovae.analysis.sources.surgery",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
