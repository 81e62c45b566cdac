"""Small residual convolutional networks for images of any (C, H, W), on flat inputs.

Everything outside the networks sees flat data: an image is its C*H*W values in C, H, W
order. :class:`ConvEncoderTrunk` reads ``cat([x, y])`` of shape ``(..., C*H*W + y_dim)``
and returns features of width ``hidden_dim`` (a drop-in for the MLP trunk of
:class:`~pyrovae.guides.DiagonalNormalEncoder`); :class:`ConvDecoderNet` maps ``(...,
z_dim + y_dim)`` to ``(..., params_per_pixel * C*H*W)``, ordered as ``params_per_pixel``
blocks each flattened in C, H, W order (``.chunk(params_per_pixel, -1)`` gives each).

The architecture is that of the ResNet encoders and decoders of pythae's benchmarks
(Chadebec et al., 2022, https://arxiv.org/abs/2206.08309), themselves after the VQ-VAE
nets (van den Oord et al., 2017, https://arxiv.org/abs/1711.00937) used for convHVAE-style
models: 3x3 stride-2 convolutions, each halving H and W (rounding up, so that any size
works), residual blocks ``h + W_2 act(W_1 act(h))`` (3x3 then 1x1 convolution) at the
coarsest level, and a fully connected part between the feature map and the latent code.
The decoder mirrors the encoder with 3x3 stride-2 transposed convolutions whose output
padding restores each size exactly (odd sizes included). There is no batch normalization,
so the encoding of one datum never depends on the others in its batch (importance
sampling and the aggregated posterior score data in batches of any composition).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pyrovae.nets import ACTIVATIONS, MLP, check_dims, check_positive_int

__all__ = [
    "DEFAULT_CHANNELS",
    "NETS",
    "ConvEncoderTrunk",
    "ConvDecoderNet",
    "ResidualBlock",
    "check_image_shape",
    "decoder_net",
    "encoder_trunk",
    "feature_sizes",
]

NETS = ("mlp", "conv")
"""Network kinds of encoders and decoders (``pyrovae.settings.NET_NAMES``)."""

DEFAULT_CHANNELS = (32, 64)
"""Widths of the stride-2 convolutions: two halvings take MNIST's 28 x 28 to 7 x 7 and
CIFAR's 32 x 32 to 8 x 8, at a cost a CPU trains in minutes an epoch."""


def check_image_shape(image_shape: object) -> tuple[int, int, int]:
    """``(C, H, W)`` as three positive integers, or a ``ValueError`` naming ``image_shape``."""
    if (
        isinstance(image_shape, (str, bytes))
        or not isinstance(image_shape, Sequence)
        or len(image_shape) != 3
    ):
        raise ValueError(
            f"image_shape must be (C, H, W), three positive integers, got {image_shape!r}"
        )
    c, h, w = (check_positive_int("each entry of image_shape", n) for n in image_shape)
    return c, h, w


def feature_sizes(height: int, width: int, num_levels: int) -> list[tuple[int, int]]:
    """``[(H, W), (ceil(H/2), ceil(W/2)), ...]``: the map size at each of ``num_levels + 1``
    levels (a 3x3 stride-2 convolution with padding 1 maps n to ceil(n / 2))."""
    sizes = [(height, width)]
    for _ in range(num_levels):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class ResidualBlock(nn.Module):
    """``h + conv1x1(act(conv3x3(act(h))))`` with ``hidden`` channels in between (the
    ResBlock of pythae's and VQ-VAE's nets)."""

    def __init__(self, channels: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.block = nn.Sequential(
            ACTIVATIONS[activation](),
            nn.Conv2d(channels, hidden, 3, padding=1),
            ACTIVATIONS[activation](),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.block(h)


def _check_common(
    image_shape: object, channels: Sequence[int] | None, activation: str, num_res_blocks: int
) -> tuple[tuple[int, int, int], tuple[int, ...]]:
    shape = check_image_shape(image_shape)
    widths = check_dims("channels", DEFAULT_CHANNELS if channels is None else channels)
    if not widths:
        raise ValueError("channels must hold at least one width, got []")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid names are {sorted(ACTIVATIONS)}"
        )
    if (
        isinstance(num_res_blocks, bool)
        or not isinstance(num_res_blocks, int)
        or num_res_blocks < 0
    ):
        raise ValueError(f"num_res_blocks must be a non-negative integer, got {num_res_blocks!r}")
    return shape, widths


class ConvEncoderTrunk(nn.Module):
    """``cat([x, y]) -> hidden``: x as C x H x W images through stride-2 convolutions and
    residual blocks, flattened, joined with y, then fully connected layers of widths
    ``hidden_dims`` (each followed by the activation; the last is ``hidden_dim``).

    Input ``(..., C*H*W + y_dim)`` with any number of leading dims; output
    ``(..., hidden_dims[-1])``.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int] = (400,),
        y_dim: int = 0,
        activation: str = "relu",
        channels: Sequence[int] | None = None,
        num_res_blocks: int = 1,
    ) -> None:
        super().__init__()
        self.image_shape, self.channels = _check_common(
            image_shape, channels, activation, num_res_blocks
        )
        hidden_dims = check_dims("hidden_dims", hidden_dims)
        if not hidden_dims:
            raise ValueError("hidden_dims of an encoder must hold at least one width, got ()")
        c, h, w = self.image_shape
        self.x_dim = c * h * w
        self.y_dim = y_dim
        self.hidden_dim = hidden_dims[-1]
        layers: list[nn.Module] = []
        width = c
        for out in self.channels:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
            width = out
        layers += [
            ResidualBlock(width, max(width // 2, 1), activation) for _ in range(num_res_blocks)
        ]
        if num_res_blocks:
            layers.append(ACTIVATIONS[activation]())
        self.convs = nn.Sequential(*layers)
        fh, fw = feature_sizes(h, w, len(self.channels))[-1]
        self.feature_dim = width * fh * fw
        fc = MLP(self.feature_dim + y_dim, hidden_dims[-1], hidden_dims[:-1], activation)
        self.fc = nn.Sequential(*fc, ACTIVATIONS[activation]())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        lead = inputs.shape[:-1]
        x, y = inputs[..., : self.x_dim], inputs[..., self.x_dim :]
        features = self.convs(x.reshape(-1, *self.image_shape)).reshape(*lead, self.feature_dim)
        if self.y_dim:
            features = torch.cat([features, y], dim=-1)
        return self.fc(features)


class ConvDecoderNet(nn.Module):
    """``cat([z, y]) -> parameters``: fully connected layers of widths ``hidden_dims`` to the
    coarsest feature map, residual blocks, then stride-2 transposed convolutions back to
    ``params_per_pixel * C`` channels of H x W.

    Input ``(..., in_dim)``; output ``(..., params_per_pixel * C*H*W)``, ordered as
    ``params_per_pixel`` blocks each flattened in C, H, W order.
    """

    def __init__(
        self,
        in_dim: int,
        image_shape: Sequence[int],
        hidden_dims: Sequence[int] = (),
        params_per_pixel: int = 1,
        activation: str = "relu",
        channels: Sequence[int] | None = None,
        num_res_blocks: int = 1,
    ) -> None:
        super().__init__()
        self.image_shape, self.channels = _check_common(
            image_shape, channels, activation, num_res_blocks
        )
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.params_per_pixel = check_positive_int("params_per_pixel", params_per_pixel)
        hidden_dims = check_dims("hidden_dims", hidden_dims)
        c, h, w = self.image_shape
        self.out_dim = self.params_per_pixel * c * h * w
        sizes = feature_sizes(h, w, len(self.channels))
        self._map_shape = (self.channels[-1], *sizes[-1])
        fc = MLP(in_dim, math.prod(self._map_shape), hidden_dims, activation)
        self.fc = nn.Sequential(*fc, ACTIVATIONS[activation]())
        width = self.channels[-1]
        layers: list[nn.Module] = [
            ResidualBlock(width, max(width // 2, 1), activation) for _ in range(num_res_blocks)
        ]
        if num_res_blocks:
            layers.append(ACTIVATIONS[activation]())
        outs = [*reversed(self.channels[:-1]), self.params_per_pixel * c]
        for level, out in zip(range(len(self.channels), 0, -1), outs, strict=True):
            (th, tw), (sh, sw) = sizes[level - 1], sizes[level]
            # (n - 1) * 2 - 2 + 3 + pad = 2n - 1 + pad: pad 1 for an even target, 0 for odd
            padding = (th - (2 * sh - 1), tw - (2 * sw - 1))
            layers.append(
                nn.ConvTranspose2d(width, out, 3, stride=2, padding=1, output_padding=padding)
            )
            if level > 1:
                layers.append(ACTIVATIONS[activation]())
            width = out
        self.convs = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        lead = inputs.shape[:-1]
        maps = self.fc(inputs).reshape(-1, *self._map_shape)
        out = self.convs(maps)  # (N, params_per_pixel * C, H, W), parameter-major channels
        return out.reshape(*lead, self.out_dim)


def _check_net(
    net: str, x_dim: int, image_shape: Sequence[int] | None
) -> tuple[int, int, int] | None:
    """The image shape a ``net="conv"`` network needs (None for ``"mlp"``), checked."""
    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; valid names are {list(NETS)}")
    if net == "mlp":
        return None
    if image_shape is None:
        raise ValueError(
            "net='conv' needs image data (image_shape=(C, H, W)); vectors use net='mlp'"
        )
    shape = check_image_shape(image_shape)
    if math.prod(shape) != x_dim:
        raise ValueError(
            f"image_shape {list(shape)} holds {math.prod(shape)} values but x_dim is {x_dim}: "
            "pass the (C, H, W) of the data"
        )
    return shape


def encoder_trunk(
    x_dim: int,
    hidden_dims: Sequence[int],
    y_dim: int = 0,
    activation: str = "relu",
    net: str = "mlp",
    image_shape: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
) -> nn.Module:
    """The trunk ``cat([x, y]) -> act(hidden)`` of an encoder: an MLP (``net="mlp"``, the
    layers and parameter names encoders always had) or a :class:`ConvEncoderTrunk`."""
    shape = _check_net(net, x_dim, image_shape)
    if shape is not None:
        return ConvEncoderTrunk(shape, hidden_dims, y_dim, activation, channels)
    trunk = MLP(x_dim + y_dim, hidden_dims[-1], hidden_dims[:-1], activation)
    return nn.Sequential(*trunk, ACTIVATIONS[activation]())


def decoder_net(
    in_dim: int,
    x_dim: int,
    hidden_dims: Sequence[int],
    params_per_pixel: int = 1,
    activation: str = "relu",
    net: str = "mlp",
    image_shape: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
) -> nn.Module:
    """The network ``cat([z, y]) -> params_per_pixel * x_dim`` parameters of a decoder: an
    MLP (``net="mlp"``) or a :class:`ConvDecoderNet`, both ordered parameter-major."""
    shape = _check_net(net, x_dim, image_shape)
    if shape is not None:
        return ConvDecoderNet(in_dim, shape, hidden_dims, params_per_pixel, activation, channels)
    return MLP(in_dim, params_per_pixel * x_dim, hidden_dims, activation)
