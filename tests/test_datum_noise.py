"""Per-datum random numbers: Philox4x32-10 against Random123's known answers, the layout of
its counters, and the statistics of every method's numbers (the normals' moments and tails,
correlation between neighbouring streams); invariance to batches and shards is in
tests/test_sharding.py."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.analysis.likelihood.datum_noise import METHODS, DatumNoise, mix64, philox4x32

# Random123 (github.com/DEShawResearch/random123), tests/kat_vectors, the "philox4x32 10"
# lines: counter (4 words), key (2 words), output (4 words).
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def test_philox_gives_random123_known_answers(device):
    """Also as tensors on the test device, all vectors at once (one broadcast call)."""
    for counter, key, expected in KNOWN_ANSWERS:
        assert tuple(int(w) for w in philox4x32(counter, key)) == expected
    inputs = [counter + key for counter, key, _ in KNOWN_ANSWERS]
    columns = [torch.tensor([row[i] for row in inputs], device=device) for i in range(6)]
    words = philox4x32(tuple(columns[:4]), tuple(columns[4:]))
    got = torch.stack(words, -1).cpu().tolist()
    assert got == [list(expected) for _, _, expected in KNOWN_ANSWERS]


def test_philox_draws_are_the_documented_blocks():
    """Datum n's dims (2j, 2j + 1) of particle p in its u-th use are the uniforms of the block
    Philox((s_lo ^ (n >> 32), s_hi), (p, j, n mod 2^32, u)), s = mix64(seed, stream)."""
    index = torch.tensor([3, 2**32 + 3])
    noise = DatumNoise(11, index, stream=2, method="philox")
    noise.start_chunk(5)
    noise.uniform(2)  # use 1
    u = noise.uniform(4, 3)  # use 2, particles 5 to 8, dims 0 to 2
    s = mix64(11, 2)
    for p in range(4):
        for b, n in enumerate(index.tolist()):
            for d in range(3):
                key = ((s & 0xFFFFFFFF) ^ (n >> 32), s >> 32)
                words = [int(w) for w in philox4x32((5 + p, d // 2, n & 0xFFFFFFFF, 2), key)]
                high, low = words[2 * (d % 2)], words[2 * (d % 2) + 1]
                assert u[p, b, d].item() == ((high << 20) + (low >> 12) + 0.5) * 2.0**-52
    assert not torch.equal(u[:, 0], u[:, 1])  # n and n + 2^32 do not share their numbers


def test_a_gpu_draws_from_philox_and_a_cpu_from_generators():
    assert DatumNoise(0, torch.arange(3)).method == "generator"
    assert DatumNoise(0, torch.arange(3, device="meta")).method == "philox"


def normal_departures(z: torch.Tensor) -> dict[str, float]:
    """Each statistic's departure from its value under N(0, 1), in its standard errors:
    mean (1/sqrt(n)), variance (sqrt(2/n)), skewness (sqrt(6/n)), excess kurtosis
    (sqrt(24/n)), and P(|z| > 3), P(|z| > 4) against the exact tails erfc(t / sqrt(2))
    (binomial errors)."""
    z = z.double().flatten()
    n = z.numel()
    mean, var = z.mean().item(), z.var().item()
    std = (z - mean) / math.sqrt(var)
    out = {
        "mean": mean * math.sqrt(n),
        "variance": (var - 1) / math.sqrt(2 / n),
        "skewness": std.pow(3).mean().item() / math.sqrt(6 / n),
        "kurtosis": (std.pow(4).mean().item() - 3) / math.sqrt(24 / n),
    }
    for t in (3, 4):
        p = math.erfc(t / math.sqrt(2))
        out[f"P(|z|>{t})"] = ((z.abs() > t).double().mean().item() - p) / math.sqrt(p * (1 - p) / n)
    return out


@pytest.mark.parametrize("method", METHODS)
def test_normals_have_the_moments_and_tails_of_a_gaussian(method):
    """2^21 normals (512 data x 1024 particles x 4 dims): every statistic within 5 standard
    errors; the same check rejects normals made of 12 uniforms (light tails) and normals of
    variance 1.02^2."""
    z = DatumNoise(5, torch.arange(512), method=method).normal(1024, 4)
    departures = normal_departures(z)
    assert all(abs(v) < 5 for v in departures.values()), departures
    generator = torch.Generator().manual_seed(0)
    irwin_hall = torch.rand(z.numel(), 12, generator=generator, dtype=torch.float64).sum(-1) - 6
    assert abs(normal_departures(irwin_hall)["kurtosis"]) > 5
    assert abs(normal_departures(1.02 * z)["variance"]) > 5


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two equally long samples, in its standard errors
    (sqrt(m) r ~ N(0, 1) for independent samples of size m)."""
    a, b = a.double().flatten(), b.double().flatten()
    r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    return r * math.sqrt(a.numel())


@pytest.mark.parametrize("method", METHODS)
def test_neighbouring_streams_are_uncorrelated(method):
    """Uniforms, and the squares of normals (Box-Muller's pairs share a radius), of
    neighbouring data, uses, particles, dims, seeds and streams: every correlation within 5
    standard errors. A stream against a copy of itself shifted by one datum is caught."""
    index = torch.arange(257)

    def draws(seed: int = 3, stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        noise = DatumNoise(seed, index, stream=stream, method=method)
        return noise.uniform(2048, 2), noise.normal(2048, 2).square()

    (u, z2), (u_seed, _), (u_stream, _) = draws(), draws(seed=4), draws(stream=1)
    pairs = {
        "data n, n + 1": (u[:, 1:], u[:, :-1]),
        "data n, n + 1 (normals squared)": (z2[:, 1:], z2[:, :-1]),
        "uses u, u + 1": (u, z2),
        "particles p, p + 1": (u[1:], u[:-1]),
        "dims 0, 1": (u[..., 0], u[..., 1]),
        "dims 0, 1 (normals squared)": (z2[..., 0], z2[..., 1]),
        "seeds 3, 4": (u, u_seed),
        "streams 0, 1": (u, u_stream),
    }
    z = {name: correlation(a, b) for name, (a, b) in pairs.items()}
    assert all(abs(v) < 5 for v in z.values()), z
    assert correlation(u[:, 1:], u[:, :-1] * 0.9 + 0.1 * u[:, 1:]) > 5  # the check can fail
