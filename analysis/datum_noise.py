"""Random numbers that belong to a datum: counter-based draws keyed by what they are for.

An estimate made in passes draws its noise from one generator in pass order, so datum n's
draws depend on which data share its pass and on how K is split into chunks. Here every
number is a hash of its key instead,

    u = H(seed, datum, role, particle, dim, lane),

with H a chain of 32-bit integer mixers (the "lowbias32" finalizer; C. Wellons, "Prospecting
for hash functions", 2018) computed in int64 tensor arithmetic that never overflows. Two
32-bit words give a 53-bit uniform in (0, 1); Box-Muller turns two uniforms into a standard
normal. The same key gives the same number in any batch, chunk, process or device, so the
per-datum results of :func:`~pyrovae.analysis.loglik.estimate_source_log_likelihoods`
do not depend on ``draws_per_pass`` or on how the data are sharded over processes. The
counter-based idea is that of Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"
(SC 2011).

A *role* names one use of the noise within a pass (the guide's draws, the choice of a
mixture component, ...): :class:`DatumNoise` numbers them in the order an estimator asks,
which is the same for every pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributions.normal as _normal

__all__ = ["DatumNoise", "datum_normals", "hash32"]

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for x in [0, 2^32) without int64 overflow (16-bit halves of c)."""
    low = x * (c & 0xFFFF)
    high = ((x * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def hash32(x: torch.Tensor) -> torch.Tensor:
    """The lowbias32 mixer on int64 tensors holding values in [0, 2^32)."""
    x = x & _MASK32
    x = ((x ^ (x >> 16)) * 0x7FEB352D) & _MASK32  # < 2^63: the constant is below 2^31
    x = _mul32(x ^ (x >> 15), 0x846CA68B)
    return x ^ (x >> 16)


def _chain(*keys: torch.Tensor | int) -> torch.Tensor:
    """H(k1, k2, ...) = hash(... hash(hash(k1) ^ k2) ...), broadcast over the keys."""
    out = None
    for key in keys:
        key = torch.as_tensor(key, dtype=torch.int64) if isinstance(key, int) else key
        out = hash32(key) if out is None else hash32(out ^ (key & _MASK32))
    assert out is not None
    return out


def _uniform(key: torch.Tensor) -> torch.Tensor:
    """A float64 uniform in (0, 1) from two words: (a 2^21 + b / 2^11 + 1/2) / 2^53."""
    a = hash32(key ^ 0x2545F491)
    b = hash32(a ^ 0x9E3779B9) >> 11
    return ((a * 2**21 + b).double() + 0.5) * 2.0**-53


def _normal_pairs(key: torch.Tensor) -> torch.Tensor:
    """Two standard normals per key (Box-Muller: r cos t, r sin t), stacked last."""
    radius = torch.sqrt(-2.0 * torch.log(_uniform(key)))
    angle = (hash32(key ^ 0x68E31DA4).double() + 0.5) * (2 * math.pi * 2.0**-32)
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1)


class DatumNoise:
    """Uniforms and normals for the data ``index`` (their positions in the whole data set)
    of one pass, the particles ``offset, offset + 1, ...`` of each.

    Args:
        seed: the estimate's seed (an int; 0 <= seed < 2^32).
        index: (B,) int64 global datum indices.
        offset: the first particle's number (set per chunk of particles).
        stream: separate estimates with the same seed and data (0 keeps ``seed`` as is).
    """

    def __init__(self, seed: int, index: torch.Tensor, offset: int = 0, stream: int = 0) -> None:
        seed = int(seed) & _MASK32
        self.seed = int(_chain(seed, stream)) if stream else seed
        self.index = index.to(torch.int64)
        self.offset = offset
        self._role = 0

    @property
    def batch(self) -> int:
        return int(self.index.numel())

    def next_role(self) -> int:
        """The number of the next use of the noise in this pass."""
        self._role += 1
        return self._role

    def start_chunk(self, offset: int) -> None:
        """A new chunk of particles from ``offset``: roles are counted again from the start."""
        self.offset = offset
        self._role = 0

    def _keys(
        self,
        role: int,
        particles: int,
        dims: int,
        device: torch.device,
        at: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(particles, B, dims) keys of (seed, datum, role, particle, dim), or (n, dims) at
        the (particle, datum position) pairs ``at``."""
        index = self.index.to(device)
        dim = torch.arange(dims, device=device)
        if at is None:
            particle = torch.arange(self.offset, self.offset + particles, device=device)
            datum, particle, dim = index.view(1, -1, 1), particle.view(-1, 1, 1), dim.view(1, 1, -1)
        else:
            datum, particle = index[at[1]].view(-1, 1), (at[0] + self.offset).view(-1, 1)
        return _chain(self.seed, datum, role, particle, dim)

    def uniform(
        self,
        particles: int,
        dims: int = 1,
        device: torch.device | None = None,
        at: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(particles, B, dims) float64 uniforms in (0, 1), a new role; with ``at``
        (particle, datum position) index tensors, only those: (len, dims)."""
        keys = self._keys(self.next_role(), particles, dims, device or self.index.device, at)
        return _uniform(keys)

    def normal(
        self,
        particles: int,
        dims: int,
        device: torch.device | None = None,
        at: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """(particles, B, dims) float64 standard normals, a new role (two per key, Box-Muller);
        with ``at`` only those pairs: (len, dims)."""
        half = (dims + 1) // 2
        keys = self._keys(self.next_role(), particles, half, device or self.index.device, at)
        pairs = _normal_pairs(keys)
        return pairs.flatten(-2)[..., :dims]


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
