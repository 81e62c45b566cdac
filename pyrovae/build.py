"""Build a VAE, CVAE or semi-supervised M2 from a plain, JSON-serializable configuration."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from pyrovae.convnets import DEFAULT_CHANNELS
from pyrovae.guides import GUIDES, LabelClassifier
from pyrovae.models import CVAE, LIKELIHOODS, M2, PRIORS, VAE
from pyrovae.models.priors import VampPrior
from pyrovae.nets import ACTIVATIONS, DataScaling, check_dims, check_positive_int
from pyrovae.settings import NET_NAMES

__all__ = ["ModelConfig", "build_model", "MODELS", "lookup"]

MODELS: dict[str, type[VAE]] = {"vae": VAE, "cvae": CVAE, "m2": M2}
LABELLED_MODELS = ("cvae", "m2")
"""The models whose networks take the label y (``y_dim`` classes)."""
STANDARDIZED_LIKELIHOODS = ("gaussian", "discretized-logistic")
"""Likelihoods that can model standardized data (``ModelConfig.standardize``)."""


def lookup(registry: dict[str, Any], name: str, what: str) -> Any:
    """``registry[name]``, or a ``ValueError`` that lists the valid names."""
    try:
        return registry[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown {what} {name!r}; valid names are {sorted(registry)}") from None


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored as ``config.json`` in a run).

    Attributes:
        model: ``"vae"``, ``"cvae"`` or ``"m2"`` (semi-supervised, :class:`~pyrovae.models.M2`).
        prior: a key of :data:`pyrovae.models.PRIORS`.
        guide: a key of :data:`pyrovae.guides.GUIDES`.
        likelihood: a key of :data:`pyrovae.models.LIKELIHOODS`.
        x_dim: data dimension (784 for MNIST).
        z_dim: latent dimension.
        y_dim: number of classes for a CVAE or M2 (ignored by a VAE).
        hidden_dims: encoder widths; the decoder uses them reversed.
        decoder_hidden_dims: decoder widths if not the reversed encoder's (``[]``: linear).
        activation: hidden activation name.
        num_components: mixture / VampPrior components.
        num_flows: flow steps of a flow prior or flow guide.
        net: ``"mlp"``, or ``"conv"`` for images (needs ``image_shape``): residual
            convolutional encoder and decoder (:mod:`pyrovae.convnets`). The encoder's
            feature maps go through one fully connected layer of width ``hidden_dims[-1]``
            (the convolutions take the place of the other widths); the decoder maps z
            linearly to its first feature map, or through ``decoder_hidden_dims`` when
            given. (Deeper fully connected parts, without normalization, train markedly
            slower: benchmarks/conv_speed.py.)
        channels: widths of the stride-2 convolutions of ``net="conv"`` (None: the
            default, :data:`pyrovae.convnets.DEFAULT_CHANNELS`, recorded as such).
        image_shape: (C, H, W) of image data, flattened in that order into ``x_dim``
            values; None for vectors. Read it with :func:`pyrovae.images.image_shape_of`,
            which also knows the shape of runs written before it was recorded.
        standardize: the encoder reads (x - m) / s and the decoder's distribution is mapped
            back to the data's units (m, s: per-dimension mean and standard deviation of the
            training data, :class:`~pyrovae.nets.DataScaling`); for the ``gaussian`` and
            ``discretized-logistic`` likelihoods.
    """

    model: str = "vae"
    prior: str = "normal"
    guide: str = "diagonal"
    likelihood: str = "bernoulli"
    x_dim: int = 784
    z_dim: int = 50
    y_dim: int = 10
    hidden_dims: list[int] = field(default_factory=lambda: [400, 400])
    decoder_hidden_dims: list[int] | None = None
    activation: str = "relu"
    num_components: int = 10
    num_flows: int = 2
    net: str = "mlp"
    channels: list[int] | None = None
    image_shape: list[int] | None = None
    standardize: bool = False

    def __post_init__(self) -> None:
        lookup(MODELS, self.model, "model")
        lookup(PRIORS, self.prior, "prior")
        lookup(GUIDES, self.guide, "guide")
        lookup(LIKELIHOODS, self.likelihood, "likelihood")
        lookup(ACTIVATIONS, self.activation, "activation")
        check_positive_int("x_dim", self.x_dim)
        check_positive_int("z_dim", self.z_dim)
        check_positive_int("num_components", self.num_components)
        check_positive_int("num_flows", self.num_flows)
        self.hidden_dims = list(check_dims("hidden_dims", self.hidden_dims))
        if not self.hidden_dims:
            raise ValueError("hidden_dims must hold at least one width, got []")
        if self.decoder_hidden_dims is not None:
            self.decoder_hidden_dims = list(
                check_dims("decoder_hidden_dims", self.decoder_hidden_dims)
            )
        if self.net not in NET_NAMES:
            raise ValueError(f"unknown net {self.net!r}; valid names are {list(NET_NAMES)}")
        if self.net == "conv":
            if self.image_shape is None:
                raise ValueError(
                    "--net conv (net='conv') needs image data (image_shape [C, H, W]); "
                    "vectors use --net mlp"
                )
            channels = DEFAULT_CHANNELS if self.channels is None else self.channels
            self.channels = list(check_dims("channels", channels))
            if not self.channels:
                raise ValueError("channels must hold at least one width, got []")
        elif self.channels is not None:
            raise ValueError(
                f"--channels (channels={self.channels!r}) sets the widths of --net conv; "
                "drop it for --net mlp"
            )
        if self.model in LABELLED_MODELS:
            check_positive_int("y_dim", self.y_dim)
        if self.model == "m2" and self.y_dim < 2:
            raise ValueError(f"m2 needs at least 2 classes, got y_dim={self.y_dim}")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"standardize must be True or False, got {self.standardize!r}")
        if self.standardize and self.likelihood not in STANDARDIZED_LIKELIHOODS:
            raise ValueError(
                f"standardize applies to the {' and '.join(STANDARDIZED_LIKELIHOODS)} "
                f"likelihoods, not {self.likelihood!r}: turn it off for this likelihood"
            )
        if self.standardize and self.prior == "vamp":
            raise ValueError(
                "the vamp prior's pseudo-inputs live in [0, 1], which standardized data do "
                "not: use another prior (mog, flow) with standardized data"
            )
        if self.image_shape is not None:
            shape = list(check_dims("image_shape", self.image_shape))
            if len(shape) != 3 or math.prod(shape) != self.x_dim:
                raise ValueError(
                    f"image_shape must be [C, H, W] with C*H*W = x_dim = {self.x_dim}, got "
                    f"{self.image_shape!r}"
                )
            self.image_shape = shape

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; valid keys are {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_model(config: ModelConfig | None = None, **overrides: Any) -> VAE:
    """Build the VAE/CVAE that ``config`` (updated with ``overrides``) describes.

    Example:
        >>> vae = build_model(z_dim=10, prior="mog")
    """
    data = (config or ModelConfig()).to_dict()
    data.update(overrides)
    cfg = ModelConfig.from_dict(data)
    y_dim = cfg.y_dim if cfg.model in LABELLED_MODELS else 0
    dec_hidden = (
        cfg.decoder_hidden_dims
        if cfg.decoder_hidden_dims is not None
        else list(reversed(cfg.hidden_dims))
    )
    enc_hidden = cfg.hidden_dims
    # conv only, so that a user's registered MLP-only encoder or decoder class still fits
    net_kwargs: dict[str, Any] = {}
    if cfg.net == "conv":
        net_kwargs = {"net": "conv", "image_shape": cfg.image_shape, "channels": cfg.channels}
        enc_hidden = cfg.hidden_dims[-1:]
        dec_hidden = cfg.decoder_hidden_dims or []
    encoder_kwargs: dict[str, Any] = dict(net_kwargs)
    if cfg.guide == "flow":
        encoder_kwargs["num_flows"] = cfg.num_flows
    encoder = GUIDES[cfg.guide](
        cfg.x_dim,
        cfg.z_dim,
        enc_hidden,
        y_dim=y_dim,
        activation=cfg.activation,
        **encoder_kwargs,
    )
    decoder = LIKELIHOODS[cfg.likelihood](
        cfg.z_dim, cfg.x_dim, dec_hidden, y_dim=y_dim, activation=cfg.activation, **net_kwargs
    )
    if cfg.model == "m2" and cfg.prior == "vamp":  # p(z), its components over every label
        prior = VampPrior(encoder, num_components=cfg.num_components, over_labels=True)
    else:
        prior = PRIORS[cfg.prior].from_config(
            encoder, num_components=cfg.num_components, num_flows=cfg.num_flows
        )
    classifier = None
    if cfg.model == "m2":
        classifier = LabelClassifier(
            cfg.x_dim, cfg.y_dim, enc_hidden, activation=cfg.activation, **net_kwargs
        )
    if cfg.standardize:  # one module, so that encoder and decoder share m and s
        encoder.scaling = decoder.scaling = DataScaling(cfg.x_dim)
        if classifier is not None:
            classifier.scaling = encoder.scaling
    if classifier is not None:
        model = M2(encoder, decoder, prior, classifier)
    else:
        model = MODELS[cfg.model](encoder, decoder, prior)
    model.config = cfg
    return model
