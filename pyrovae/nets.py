"""Small building blocks shared by encoders, decoders and priors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "DataScaling",
    "cat_broadcast",
    "check_positive_int",
    "check_dims",
    "data_scaling",
    "eval_in_batches",
]

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


@torch.no_grad()
def eval_in_batches(
    module: nn.Module,
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int,
    out_dim: int,
) -> torch.Tensor:
    """``fn`` on the rows of ``x`` in batches of ``batch_size``, with ``module`` in eval mode
    (its mode restored after), concatenated; an (0, out_dim) tensor for no rows."""
    check_positive_int("batch_size", batch_size)
    was_training = module.training
    module.eval()
    try:
        out = [fn(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    finally:
        module.train(was_training)
    if not out:
        param = next(module.parameters())
        return torch.empty(0, out_dim, device=param.device, dtype=param.dtype)
    return torch.cat(out)


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


class DataScaling(nn.Module):
    """Per-dimension standardization u = (x - m) / s of the data, shared by encoder and decoder.

    The encoder reads u; the decoder models u and maps its distribution back to x by the
    affine map x = m + s u, whose density carries the Jacobian: log p(x) = log p_u(u) -
    sum_i log s_i. Every log-likelihood is then in the data's own units. m and s are
    buffers (saved with the weights), set once from the training data by :meth:`fit`.
    """

    def __init__(self, x_dim: int) -> None:
        super().__init__()
        check_positive_int("x_dim", x_dim)
        self.register_buffer("loc", torch.zeros(x_dim))
        self.register_buffer("scale", torch.ones(x_dim))

    FIT_CHUNK_VALUES = 2**23
    """Values per chunk of rows when :meth:`fit` reads data larger than this (64 MiB of
    float64), e.g. a memory-mapped training split: no float64 copy of it all is made."""

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> DataScaling:
        """m = the mean and s = the standard deviation of each column of ``x`` (N, x_dim); a
        column with s = 0 (constant in the training data) gets s = 1.

        Data of more than :attr:`FIT_CHUNK_VALUES` values are read in chunks of rows, in two
        passes with float64 sums: m = sum_i x_i / N, then s^2 = sum_i (x_i - m)^2 / N.
        """
        rows = max(1, self.FIT_CHUNK_VALUES // max(1, x.shape[1]))
        if x.shape[0] > rows:
            chunks = x.split(rows)
            mean = sum(c.to(torch.float64).sum(0) for c in chunks) / x.shape[0]
            var = sum((c.to(torch.float64) - mean).square().sum(0) for c in chunks) / x.shape[0]
            self.loc.copy_(mean)
            std = var.sqrt().to(self.scale.device)
            self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
            return self
        x = x.to(self.loc.device, torch.float64)
        std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.zeros_like(x[0])
        self.loc.copy_(x.mean(dim=0))
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """u = (x - m) / s."""
        return (x - self.loc) / self.scale


def data_scaling(module: nn.Module) -> DataScaling | None:
    """The :class:`DataScaling` attached to an encoder or decoder as ``scaling``, if any."""
    found = module._modules.get("scaling")
    return found if isinstance(found, DataScaling) else None
