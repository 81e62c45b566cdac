"""Latent encodings of a data set as ``arviz.InferenceData``, for ArviZ's plots and summaries.

The guide's draws z ~ q(z | x_n) become the ``posterior`` group, variable ``"z"`` with dims
``("chain", "draw", "datum", "latent")``; class labels ride along as a ``label``
coordinate on ``datum``, so a class is one selection away::

    idata = to_inference_data(vae, x[:100], labels=y[:100])
    az.summary(idata, coords={"datum": [0, 1]}, kind="stats")
    az.plot_pair(idata, coords={"datum": [0]})
    idata.posterior.sel(datum=idata.posterior.label == 9)

The draws of the guide are independent, so "chains" are only a way to split them; with
one chain ``az.summary`` cannot compute r_hat (and ArviZ logs a shape message): use
``kind="stats"`` or ``num_chains >= 2``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from pyrovae.nets import check_positive_int

__all__ = ["to_inference_data"]

_DRAW_PLATE = "_pyrovae_draws"


def _arviz() -> Any:
    try:
        import arviz as az
    except ImportError as err:  # arviz is a dependency, but keep the hint for slim installs
        raise ImportError(
            "to_inference_data needs ArviZ; install it with `pip install arviz`"
        ) from err
    return az


@torch.no_grad()
def _guide_draws(
    vae: Any, x: torch.Tensor, y: torch.Tensor | None, num_draws: int, site: str, batch_size: int
) -> torch.Tensor:
    """Run ``vae.guide`` under a plate of ``num_draws`` at dim -2; (num_draws, N, z_dim)."""
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        yb = None if y is None else y[start : start + batch_size]
        with pyro.plate(_DRAW_PLATE, num_draws, dim=-2):
            trace = poutine.trace(vae.guide).get_trace(xb, yb)
        if site not in trace.nodes:
            sites = [n for n, s in trace.nodes.items() if s["type"] == "sample"]
            raise ValueError(f"the guide has no sample site {site!r}; its sites are {sites}")
        z = trace.nodes[site]["value"]
        expected = (num_draws, xb.shape[0], vae.z_dim)
        if tuple(z.shape) != expected:
            raise ValueError(
                f"guide site {site!r} has shape {tuple(z.shape)}, expected {expected}; the "
                "guide must sample z inside pyro.plate('data', N) with event dim 1"
            )
        out.append(z.detach().cpu())
    return torch.cat(out, dim=1)


def to_inference_data(
    vae: Any,
    x: torch.Tensor,
    labels: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    num_draws: int = 100,
    num_chains: int = 1,
    seed: int | None = 0,
    batch_size: int = 1000,
) -> Any:
    """Draws from the guide q(z | x_n) for every row of ``x``, as ``arviz.InferenceData``.

    Args:
        vae: a VAE or CVAE (any model whose ``guide(x, y)`` samples ``"z"`` in the data
            plate works; the encoder's ``encode`` adds ``constant_data``).
        x: data of shape (N, x_dim).
        labels: optional integer classes (N,), stored as the ``label`` coordinate.
        y: one-hot labels (N, y_dim) for a CVAE (the guide's input), else None.
        num_draws: draws per chain and datum.
        num_chains: number of chains (independent draws split into blocks).
        seed: seeds the draws (the global RNG is restored after); None uses it as is.
        batch_size: data per guide call (memory: num_chains * num_draws * batch_size *
            z_dim floats).

    Returns:
        ``InferenceData`` with group ``posterior`` (``z``: chain, draw, datum, latent) and
        group ``constant_data`` (``encoder_loc``, ``encoder_scale``: datum, latent), the
        diagonal Normal part of the encoder (for a flow guide, the part before the flow).
        Coordinates: ``datum`` = 0..N-1, ``latent`` = 0..z_dim-1, and ``label`` on datum
        when ``labels`` is given.
    """
    az = _arviz()
    for attr in ("guide", "encoder", "z_dim", "x_dim"):
        if not hasattr(vae, attr):
            raise ValueError(
                f"vae must be a pyrovae VAE or CVAE (missing attribute {attr!r}); "
                "build one with pyrovae.build_model or load it with pyrovae.load_run"
            )
    check_positive_int("num_draws", num_draws)
    check_positive_int("num_chains", num_chains)
    check_positive_int("batch_size", batch_size)
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != vae.x_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a tensor of shape (N, {vae.x_dim}), got {shape}; "
            "flatten images with x.reshape(len(x), -1)"
        )
    n = x.shape[0]
    if n == 0:
        raise ValueError("x is empty; pass at least one datum")
    if getattr(vae, "conditional", False):
        if y is None or not isinstance(y, torch.Tensor) or tuple(y.shape) != (n, vae.y_dim):
            shape = None if y is None else tuple(getattr(y, "shape", ()))
            raise ValueError(
                f"a CVAE needs y: one-hot labels of shape ({n}, {vae.y_dim}), got {shape}; "
                f"make them with pyrovae.train.one_hot(labels, {vae.y_dim})"
            )
    elif y is not None:
        raise ValueError("y was given but the model is an unconditional VAE; drop y")
    label_values = None
    if labels is not None:
        if not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n,):
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels)
            raise ValueError(f"labels must be integer classes of shape ({n},), got {shape}")
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"labels must be integer classes, got dtype {labels.dtype}; "
                "for one-hot labels pass labels.argmax(-1)"
            )
        label_values = labels.detach().cpu().numpy().astype(np.int64)

    param = next(iter(vae.parameters()), None)
    if param is not None:
        x = x.to(param.device, param.dtype)
        y = None if y is None else y.to(param.device, param.dtype)
    total = num_chains * num_draws
    if seed is None:
        z = _guide_draws(vae, x, y, total, "z", batch_size)
    else:
        devices = [param.device] if param is not None and param.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            z = _guide_draws(vae, x, y, total, "z", batch_size)
    z_np = z.double().numpy().reshape(num_chains, num_draws, n, vae.z_dim)

    constant: dict[str, np.ndarray] | None = None
    if hasattr(vae.encoder, "encode"):
        locs, scales = [], []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                xb = x[start : start + batch_size]
                yb = None if y is None else y[start : start + batch_size]
                loc, scale, _ = vae.encoder.encode(xb, yb)
                locs.append(loc.double().cpu())
                scales.append(scale.double().cpu())
        constant = {
            "encoder_loc": torch.cat(locs).numpy(),
            "encoder_scale": torch.cat(scales).numpy(),
        }

    coords = {"datum": np.arange(n), "latent": np.arange(vae.z_dim)}
    dims = {
        "z": ["datum", "latent"],
        "encoder_loc": ["datum", "latent"],
        "encoder_scale": ["datum", "latent"],
    }
    idata = az.from_dict(
        posterior={"z": z_np},
        constant_data=constant,
        coords=coords,
        dims=dims,
    )
    idata.posterior.attrs.update(
        {"inference_library": "pyro", "source": "pyrovae guide q(z | x)", "site": "z"}
    )
    if label_values is not None:
        for group in ("posterior", "constant_data"):
            if group in idata.groups():
                setattr(
                    idata,
                    group,
                    getattr(idata, group).assign_coords(label=("datum", label_values)),
                )
    return idata
