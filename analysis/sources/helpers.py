"""Small helpers below the latent sources and the modules they use (encodings, flow pairs).

A seeded block of torch's RNG, a block on one CPU thread, and the diagonal-Normal test; all
are re-exported from :mod:`pyrovae.analysis.sources`, where they lived first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pyro.distributions as dist
import torch

__all__ = ["is_diagonal_normal", "one_cpu_thread", "seeded"]


@contextmanager
def seeded(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Run the block with torch's RNG seeded by ``seed``, restoring the global RNG after.

    ``seed=None`` leaves the global RNG alone and uses it.
    """
    if seed is None:
        yield
        return
    device = torch.device(device or "cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the block on one intra-op CPU thread (restored after; no effect on a GPU).

    The fitting loops below run thousands of small tensor operations; spreading each over
    several threads gains little and costs a synchronization per operation, which becomes
    ruinous (tens of times slower) when the cores are shared with other processes.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def is_diagonal_normal(q: dist.Distribution) -> bool:
    """True for ``Normal(loc, scale).to_event(1)``: a diagonal Gaussian over vectors."""
    return (
        isinstance(q, torch.distributions.Independent)
        and type(q.base_dist) in (dist.Normal, torch.distributions.Normal)
        and q.reinterpreted_batch_ndims == 1
    )
