"""Random numbers that belong to a datum: one generator per (seed, datum, use).

An estimate made in passes draws its noise from one generator in pass order, so datum n's
draws depend on which data share its pass and on how its K draws are split into chunks.
Here the numbers of datum n for its u-th use in a pass (the guide's draws, the choice of
a mixture component, the momenta of an HMC step, ...) are the first draws of a generator
seeded with H(seed, n, u), H a 64-bit integer mixer (splitmix64's finalizer; Steele,
Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014): rows
0, ..., K - 1 for its K particles (or chains), of which a chunk keeps its own. The same
datum, use and seed give the same numbers in any batch, chunk or process, so the
per-datum results of :func:`~pyrovae.analysis.loglik.estimate_source_log_likelihoods`
and :func:`~pyrovae.analysis.ais.ais_log_likelihood` do not depend on the pass size or
on how the data are sharded over processes. (The numbers differ between CPU and CUDA,
whose generators differ.) Uses are numbered in the order an estimator asks, which is the
same in every pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributions.normal as _normal

__all__ = ["DatumNoise", "check_datum_index", "datum_normals", "mix64"]

_MASK64 = (1 << 64) - 1


def mix64(*keys: int) -> int:
    """H(k1, k2, ...): splitmix64's finalizer chained over the keys (Python ints)."""
    h = 0x9E3779B97F4A7C15
    for key in keys:
        h = (h ^ (key & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h


def check_datum_index(datum_index: torch.Tensor, num_data: int) -> None:
    """Refuse anything but int64 indices of shape (num_data,), one per row of the data."""
    if (
        not isinstance(datum_index, torch.Tensor)
        or tuple(datum_index.shape) != (num_data,)
        or datum_index.dtype != torch.int64
    ):
        got = (
            f"{datum_index.dtype} of shape {tuple(datum_index.shape)}"
            if isinstance(datum_index, torch.Tensor)
            else type(datum_index).__name__
        )
        raise ValueError(
            f"datum_index must be int64 of shape ({num_data},), one index per row of x; got {got}"
        )


class DatumNoise:
    """Uniforms and normals for the data ``index`` (their positions in the whole data set)
    of one pass: particles ``offset, ..., offset + k - 1`` of ``total`` per datum.

    Args:
        seed: the estimate's seed.
        index: (B,) int64 global datum indices.
        total: particles per datum over all chunks (None: those of each request).
        stream: separate estimates with the same seed and data.
    """

    def __init__(
        self, seed: int, index: torch.Tensor, total: int | None = None, stream: int = 0
    ) -> None:
        self.seed = mix64(int(seed), int(stream))
        self.index = index.to(torch.int64)
        self._data = [int(i) for i in self.index.tolist()]
        self.total = total
        self.offset = 0
        self._role = 0

    @property
    def batch(self) -> int:
        return len(self._data)

    def next_role(self) -> int:
        """The number of the next use of the noise in this pass."""
        self._role += 1
        return self._role

    def start_chunk(self, offset: int) -> None:
        """A new chunk of particles from ``offset``: uses are counted again from the start."""
        self.offset = offset
        self._role = 0

    def _draw(
        self,
        kind: str,
        particles: int,
        dims: int,
        device: torch.device | None,
        at: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        role = self.next_role()
        device = torch.device(device or self.index.device)
        stop = self.offset + particles
        rows = max(stop, self.total or 0)
        fill = torch.randn if kind == "normal" else torch.rand
        generator = torch.Generator(device=device)
        out = torch.empty(particles, self.batch, dims, dtype=torch.float64, device=device)
        for b, datum in enumerate(self._data):
            generator.manual_seed(mix64(self.seed, datum, role))
            draws = fill(rows, dims, generator=generator, device=device, dtype=torch.float64)
            out[:, b] = draws[self.offset : stop]
        return out if at is None else out[at]

    def uniform(
        self,
        particles: int,
        dims: int = 1,
        device: torch.device | None = None,
        at: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(particles, B, dims) float64 uniforms in [0, 1), a new use; with ``at``
        (particle, datum position) index tensors, only those: (len, dims)."""
        return self._draw("uniform", particles, dims, device, at)

    def normal(
        self,
        particles: int,
        dims: int,
        device: torch.device | None = None,
        at: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(particles, B, dims) float64 standard normals, a new use; with ``at`` only those
        (particle, datum) pairs: (len, dims)."""
        return self._draw("normal", particles, dims, device, at)


@contextmanager
def datum_normals(noise: DatumNoise) -> Iterator[DatumNoise]:
    """Inside the block, every standard-normal draw of shape (..., B, D) made by torch's
    ``Normal.rsample`` (so a Pyro guide's draws, also a flow's base draws) comes from
    ``noise``, the leading dims numbering the particles; other shapes pass through."""
    original = _normal._standard_normal

    def draw(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        if len(shape) >= 2 and shape[-2] == noise.batch:
            lead = math.prod(shape[:-2])
            values = noise.normal(lead, shape[-1], torch.device(device))
            return values.to(dtype).reshape(shape)
        return original(shape, dtype=dtype, device=device)

    _normal._standard_normal = draw
    try:
        yield noise
    finally:
        _normal._standard_normal = original
