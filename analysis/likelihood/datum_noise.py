"""Random numbers that belong to a datum: one generator per (seed, datum, use).

An estimate made in passes draws its noise from one generator in pass order, so datum n's
draws depend on which data share its pass and on how its K draws are split into chunks.
Here the numbers of datum n for its u-th use in a pass (the guide's draws, the choice of
a mixture component, the momenta of an HMC step, ...) are the first draws of a generator
seeded with H(seed, n, u), H a 64-bit integer mixer (splitmix64's finalizer; Steele,
Lea & Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014): rows
0, ..., K - 1 for its K particles (or chains), of which a chunk keeps its own. The same
datum, use and seed give the same numbers in any batch, chunk or process, so the
per-datum results of :func:`~pyrovae.analysis.likelihood.loglik.estimate_source_log_likelihoods`
and :func:`~pyrovae.analysis.likelihood.ais.ais_log_likelihood` do not depend on the pass size or
on how the data are sharded over processes. Uses are numbered in the order an estimator
asks, which is the same in every pass. torch's CPU generator (MT19937) keeps only the low
32 bits of its seed, so two (datum, use) pairs of an estimate share their numbers with
probability 2^-32: about (N U)^2 / 2^33 such pairs for N data and U uses (5 for
N = 10,000 and U = 20); each datum's own numbers keep their distribution.

For B data that is B generator calls per use: cheap on a CPU, but on a GPU each is a
kernel launch. There (``method="philox"``, the default on CUDA) every number comes from the
counter-based generator Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
1, 2, 3", SC 2011; the generator of cuRAND and of torch's CUDA kernels), computed for all
draws at once in int64 arithmetic that never overflows: the block of four 32-bit words
Philox(key, counter) with key = (s_lo XOR (n >> 32), s_hi), s = H(seed, stream), and
counter = (particle, j, n mod 2^32, u) gives the pair of dims (2j, 2j + 1) of particle p of
datum n in its u-th use: two uniforms of 52 bits (words 0, 1 and 2, 3), or two normals from
them by Box-Muller. Checked against Random123's known-answer vectors, and by the battery of
``benchmarks/noise_battery.py`` (uniformity, serial and cross-stream correlation, runs,
gaps, bits, the normals' moments and tails). ``method="hash"`` is the earlier GPU method,
kept to reproduce earlier runs: a hash of (seed, n, u, particle, dim) by the lowbias32
mixer (C. Wellons, "Prospecting for hash functions", 2018) chained over the key in two
32-bit lanes, Box-Muller for normals; it reads only the low 32 bits of n (data n and
n + 2^32 share their numbers) and its uniform (k + 1/2) / 2^53 rounds to 1 for the
largest k. The methods give different (equally valid) numbers, so CPU and CUDA runs
differ as they would with torch's own generators.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributions.normal as _normal

__all__ = [
    "METHODS",
    "DatumNoise",
    "check_datum_index",
    "datum_normals",
    "hash32",
    "mix64",
    "noise_key",
    "philox4x32",
]

_MASK64 = (1 << 64) - 1
_MASK32 = 0xFFFFFFFF
METHODS = ("generator", "philox", "hash")
DEFAULT_METHOD: str | None = None
"""The method every DatumNoise uses when given none; None: by device (see DatumNoise)."""


def noise_key(seed: int | None) -> int:
    """The key of an estimate's per-datum noise: its seed, or with ``seed=None`` one drawn
    from torch's global generator (so that unseeded estimates differ from run to run)."""
    return seed if seed is not None else int(torch.randint(2**31, ()))


def mix64(*keys: int) -> int:
    """H(k1, k2, ...): splitmix64's finalizer chained over the keys (Python ints)."""
    h = 0x9E3779B97F4A7C15
    for key in keys:
        h = (h ^ (key & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h


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


_LANE_B = 0x5BD1E995
"""XORed into the seed words of the second lane, so that the lanes' states are unrelated."""


def _chain2(seed: int, *keys: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two 32-bit lanes (a, b) of H(seed, k1, k2, ...): :func:`_chain` over the keys
    from the seed's low and high words, the second lane's seed words marked apart."""
    low, high = seed & _MASK32, seed >> 32
    return _chain(low, high, *keys), _chain(high ^ _LANE_B, low ^ _LANE_B, *keys)


def _hashed_uniform(lanes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A float64 uniform in (0, 1) from the two lanes' words a and b:
    (a 2^21 + b / 2^11 + 1/2) / 2^53."""
    a, b = hash32(lanes[0] ^ 0x2545F491), hash32(lanes[1] ^ 0x9E3779B9) >> 11
    return ((a * 2**21 + b).double() + 0.5) * 2.0**-53


def _box_muller(u: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Two standard normals (r cos t, r sin t), r = sqrt(-2 log u), from a uniform u in
    (0, 1) and an angle t uniform in (0, 2 pi), stacked last (Box & Muller, 1958)."""
    radius = torch.sqrt(-2.0 * torch.log(u))
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1)


def _hashed_normal_pairs(lanes: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Two standard normals per key by Box-Muller; the angle from a word of both lanes."""
    word = hash32(lanes[0] ^ hash32(lanes[1] ^ 0x68E31DA4))
    return _box_muller(_hashed_uniform(lanes), (word.double() + 0.5) * (2 * math.pi * 2.0**-32))


_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
"""Philox4x32's multipliers (Salmon et al. 2011)."""
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
"""Philox4x32's key increments (the golden ratio and sqrt(3) - 1, as 32-bit fractions)."""
_Word = torch.Tensor | int


def _mulhilo(c: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit words of c * x for c, x in [0, 2^32), in int64 without overflow: x in
    16-bit halves, c x = (c x_hi) 2^16 + c x_lo, each product below 2^48."""
    p_lo = c * (x & 0xFFFF)
    mid = c * (x >> 16) + (p_lo >> 16)  # c x = mid 2^16 + (p_lo mod 2^16)
    return mid >> 16, ((mid & 0xFFFF) << 16) | (p_lo & 0xFFFF)


def philox4x32(
    counter: tuple[_Word, _Word, _Word, _Word],
    key: tuple[_Word, _Word],
    rounds: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32-R (R = 10 by default) of a 128-bit counter under a 64-bit key, broadcast
    over int64 tensors (or ints) holding 32-bit words; the four output words as int64.

    Each round: (hi_0, lo_0) = M_0 c_0, (hi_1, lo_1) = M_1 c_2 and
    c <- (hi_1 ^ c_1 ^ k_0, lo_1, hi_0 ^ c_3 ^ k_1, lo_0); the key gains (W_0, W_1) mod 2^32
    between rounds ("Parallel random numbers: as easy as 1, 2, 3", Salmon et al., SC 2011).
    """
    c0, c1, c2, c3 = (torch.as_tensor(word, dtype=torch.int64) & _MASK32 for word in counter)
    k0, k1 = (torch.as_tensor(word, dtype=torch.int64) & _MASK32 for word in key)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def _uniform52(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """A float64 uniform in (0, 1) from two 32-bit words: (k + 1/2) / 2^52 with k = high 2^20 +
    low / 2^12, exact in float64 (k + 1/2 has 53 significant bits), symmetric about 1/2."""
    return ((high * 2**20 + (low >> 12)).double() + 0.5) * 2.0**-52


def _philox_pairs(words: tuple[torch.Tensor, ...], kind: str) -> torch.Tensor:
    """Two uniforms (words 0, 1 and 2, 3) per block of Philox output, or two normals from
    them by Box-Muller (t = 2 pi u_2), stacked last."""
    u1, u2 = _uniform52(words[0], words[1]), _uniform52(words[2], words[3])
    if kind == "uniform":
        return torch.stack([u1, u2], -1)
    return _box_muller(u1, (2 * math.pi) * u2)


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
        method: ``"generator"`` (one generator per datum and use), ``"philox"`` (every
            number from Philox4x32-10 of its key, all at once) or ``"hash"`` (the earlier
            GPU method); None: generators on the CPU, Philox on a GPU.
    """

    def __init__(
        self,
        seed: int,
        index: torch.Tensor,
        total: int | None = None,
        stream: int = 0,
        method: str | None = None,
    ) -> None:
        method = method or DEFAULT_METHOD
        if method is None:
            method = "generator" if index.device.type == "cpu" else "philox"
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        self.method = method
        self.seed = mix64(int(seed), int(stream))
        self.index = index.to(torch.int64)
        # the generator method seeds on the host; Philox and the hash need no round trip
        self._data = self.index.tolist() if method == "generator" else []
        self.total = total
        self.offset = 0
        self._role = 0

    @property
    def batch(self) -> int:
        return int(self.index.numel())

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
        if self.method == "philox":
            return self._philox(kind, role, particles, dims, device, at)
        if self.method == "hash":
            return self._hashed(kind, role, particles, dims, device, at)
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

    def _grid(
        self,
        particles: int,
        width: int,
        device: torch.device,
        at: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(datum, particle, column) index tensors that broadcast to the draws' shape:
        (particles, B, width), or with ``at`` (len(at[0]), width)."""
        index = self.index.to(device)
        column = torch.arange(width, device=device)
        if at is None:
            particle = torch.arange(self.offset, self.offset + particles, device=device)
            return index.view(1, -1, 1), particle.view(-1, 1, 1), column.view(1, 1, -1)
        return index[at[1]].view(-1, 1), (at[0] + self.offset).view(-1, 1), column

    def _philox(
        self,
        kind: str,
        role: int,
        particles: int,
        dims: int,
        device: torch.device,
        at: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The draws as Philox4x32-10 blocks: key (s_lo ^ (n >> 32), s_hi), counter
        (particle, j, n mod 2^32, role) for dims 2j and 2j + 1."""
        datum, particle, block = self._grid(particles, (dims + 1) // 2, device, at)
        key = ((self.seed & _MASK32) ^ (datum >> 32), self.seed >> 32)
        words = philox4x32((particle, block, datum, role), key)
        return _philox_pairs(words, kind).flatten(-2)[..., :dims].contiguous()

    def _hashed(
        self,
        kind: str,
        role: int,
        particles: int,
        dims: int,
        device: torch.device,
        at: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The draws as hashes of (seed, datum, role, particle, dim), all at once."""
        width = (dims + 1) // 2 if kind == "normal" else dims  # Box-Muller makes pairs
        datum, particle, dim = self._grid(particles, width, device, at)
        lanes = _chain2(self.seed, datum, role, particle, dim)
        if kind == "uniform":
            return _hashed_uniform(lanes)
        return _hashed_normal_pairs(lanes).flatten(-2)[..., :dims]

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
