"""Small building blocks shared by encoders, decoders and priors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "MLP", "cat_broadcast", "check_positive_int", "check_dims"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int``, else raise a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_dims(name: str, dims: Sequence[int]) -> tuple[int, ...]:
    """Validate a list of layer widths (possibly empty)."""
    if isinstance(dims, int) or not isinstance(dims, Sequence):
        raise ValueError(f"{name} must be a sequence of positive integers, got {dims!r}")
    for d in dims:
        check_positive_int(f"each entry of {name}", d)
    return tuple(dims)


class MLP(nn.Sequential):
    """Fully connected network ``in_dim -> hidden_dims... -> out_dim``.

    With ``hidden_dims=()`` it is a single affine map (used for linear decoders).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden_dims: Sequence[int] = (),
        activation: str = "relu",
    ) -> None:
        check_positive_int("in_dim", in_dim)
        check_positive_int("out_dim", out_dim)
        hidden_dims = check_dims("hidden_dims", hidden_dims)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid names are {sorted(ACTIVATIONS)}"
            )
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim


def cat_broadcast(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """Concatenate ``a`` and ``b`` on the last dim after broadcasting their batch dims.

    Used to append a label ``y`` of shape ``(B, C)`` to latents of shape ``(K, B, D)``.
    """
    if b is None:
        return a
    batch = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat(
        [a.expand(*batch, a.shape[-1]), b.to(a.dtype).expand(*batch, b.shape[-1])], dim=-1
    )
