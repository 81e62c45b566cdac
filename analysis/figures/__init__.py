"""Figures of trained VAEs and CVAEs, each returned as a ``matplotlib.figure.Figure``.

Figures are built with ``Figure()`` directly, never through pyplot: nothing here picks a
backend or keeps a global reference, so they render headless (:func:`save_figure`) and
in notebooks (a ``Figure`` displays as the last value of a cell), and are freed like any
other object (a notebook shows them through ``_repr_png_`` even when pyplot was never
imported).

Figures follow the data (:func:`pyrovae.images.image_shape_of`): images of any (C, H, W)
are the decoder means, grey for one channel, in colour for three (other channel counts side
by side), values in [0, 1] drawn as they are, 8-bit values over 255 and real values min-max
scaled per figure (the title says so; ``kind=`` overrides the kind read from the model).
Vector data get what fits vectors instead: marginal histograms and pair plots of features
for samples, x against its reconstruction per feature, heat maps of decoded features for
traversals (:mod:`._vectors`). Classes are any number (a CVAE's ``y_dim`` or the labels'),
with tab10/tab20 colours up to 20 classes and spread turbo colours beyond, legends in
columns, and ``class_names`` / ``feature_names`` where known.

One module per family of pictures, every public name re-exported here
(``from pyrovae.analysis import figures; figures.plot_samples(...)``):

- :mod:`.latent`: per-class Gaussians as ellipses, projections, the latent space per class;
- :mod:`.grids`: reconstructions, samples per latent source, class-conditional samples
  (image grids, or their vector figures);
- :mod:`.traversal`: traversals, neighbourhood maps, the CVAE's style grid;
- :mod:`.curves`: training curves, held-out log-likelihoods, L_K against K, KL per dim;
- :mod:`.posterior`: NUTS posteriors against the guide, and the inference gaps;
- ``_common``: the shared input checks, model helpers and drawing helpers.
"""

from pyrovae.analysis.figures._common import LatentSourceLike, save_figure
from pyrovae.analysis.figures.curves import (
    plot_kl_per_dim,
    plot_ksweep,
    plot_loglik,
    plot_training_curves,
    robust_limits,
)
from pyrovae.analysis.figures.grids import plot_class_samples, plot_reconstructions, plot_samples
from pyrovae.analysis.figures.latent import (
    class_gaussians,
    pca_projection,
    plot_latent_ellipses,
    plot_latent_space,
)
from pyrovae.analysis.figures.posterior import (
    differing_dims,
    hdr_levels,
    log_posterior_grid,
    plot_gaps,
    plot_posterior,
    plot_posteriors,
)
from pyrovae.analysis.figures.traversal import plot_cvae_style, plot_neighbourhood, plot_traversal

__all__ = [
    "LatentSourceLike",
    "class_gaussians",
    "differing_dims",
    "hdr_levels",
    "log_posterior_grid",
    "pca_projection",
    "plot_class_samples",
    "plot_cvae_style",
    "plot_gaps",
    "plot_kl_per_dim",
    "plot_ksweep",
    "plot_latent_ellipses",
    "plot_latent_space",
    "plot_loglik",
    "plot_neighbourhood",
    "plot_posterior",
    "plot_posteriors",
    "plot_reconstructions",
    "plot_samples",
    "plot_training_curves",
    "plot_traversal",
    "robust_limits",
    "save_figure",
]
