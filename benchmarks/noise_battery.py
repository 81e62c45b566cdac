"""A statistical battery on the per-datum random numbers of every method of
:mod:`pyrovae.analysis.likelihood.datum_noise`, and their speed on this machine.

The numbers are drawn as an estimate draws them: ``DatumNoise(seed, arange(B)).uniform(K,
D)`` for B data, K particles and D dims; a datum's stream is its K particles (one dim).
Each test prints its statistic and a p-value under the hypothesis of independent U(0, 1)
(or N(0, 1)) numbers, flagged as TestU01 does: "suspicious" outside [1e-3, 1 - 1e-3],
"FAIL" outside [1e-10, 1 - 1e-10] (L'Ecuyer & Simard, "TestU01: A C library for empirical
testing of random number generators", ACM TOMS 2007). The exit status is 1 when a test
fails.

Uniforms: chi-square of 4096 equal bins; the serial test (non-overlapping pairs of
neighbouring particles in a 64 x 64 grid); autocorrelation of a stream at lags 1..8;
correlation between the streams of neighbouring data (n, n + 1), uses, dims, seeds and
estimate streams, and between data n and n XOR 2^b (keys one bit apart); the runs up and
down of each stream (Wald & Wolfowitz); the gap test for visits to [0, 1/10) (Knuth, TAOCP
vol. 2, 3.3.2); the frequency of each of the 53 bits; birthday spacings of the top 32 bits
(Marsaglia); Kolmogorov-Smirnov. Normals: mean, variance, skewness and kurtosis against
their standard errors; the frequencies beyond 3, 4 and 5 sigma against the exact Gaussian
tails erfc(t / sqrt 2); Kolmogorov-Smirnov against Phi; neighbouring data's correlation,
also of the squares (Box-Muller's pairs share a radius).

    python benchmarks/noise_battery.py                      # all methods, 2^22 numbers a test
    python benchmarks/noise_battery.py --methods philox --data 256 --particles 4096
    python benchmarks/noise_battery.py --no-battery                   # the speed only
    python benchmarks/noise_battery.py --methods philox --dieharder 0 3 4 8 15 100 101

``--dieharder N ...`` also runs those tests of dieharder (R. G. Brown's suite of the
Diehard, NIST STS and RGB tests; Debian's ``dieharder`` package) on each method's numbers,
fed as the top 32 bits of the uniforms in the estimator's layout (1024 particles,
particle-major over blocks of ``--data`` neighbouring data, 2 dims), ``--psamples``
p-values per test (dieharder's default is 100; fewer run faster with less power); a WEAK
result is rerun with more p-values until it passes or fails (dieharder's ``-Y 1``).
Feeding from Python limits it to a few million words a second, so a test takes 10 s to a
few minutes.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats

from pyrovae.analysis.likelihood.datum_noise import METHODS, DatumNoise

Result = tuple[str, str, float, bool]
"""(test, statistic, p-value, whether a p-value near 1 is suspicious too: a chi-square's
upper tail, where too good a fit is as suspicious as too bad a one)."""


def two_sided(z: float) -> float:
    """P(|N(0, 1)| >= |z|)."""
    return float(math.erfc(abs(z) / math.sqrt(2)))


def chi2_p(chi2: float, df: int) -> float:
    """P(chi2_df >= chi2)."""
    return float(stats.chi2.sf(chi2, df))


def corr_test(name: str, a: np.ndarray, b: np.ndarray) -> Result:
    """Pearson correlation; sqrt(m) r ~ N(0, 1) for independent samples of size m."""
    a, b = a.ravel(), b.ravel()
    r = float(np.corrcoef(a, b)[0, 1])
    z = r * math.sqrt(a.size)
    return name, f"r = {r:+.2e} (z = {z:+.2f})", two_sided(z), False


def uniform_tests(draw: Callable[..., np.ndarray], data: int, particles: int) -> list[Result]:
    """The battery on uniforms; ``draw(seed=, stream=, index=, uses=, particles=)`` gives
    the (uses, K, B, 2) uniforms of consecutive uses (the streams of other seeds, estimate
    streams and data are compared on their first K / 8 particles)."""
    u_all = draw(uses=2)
    u, u_next = u_all[0], u_all[1]  # (K, B, 2), its next use
    flat = u.ravel()
    n = flat.size
    out: list[Result] = []

    counts = np.bincount((flat * 4096).astype(np.int64), minlength=4096)
    chi2 = float(((counts - n / 4096) ** 2).sum() / (n / 4096))
    out.append(("uniformity, 4096 bins", f"chi2 = {chi2:.0f} (df 4095)", chi2_p(chi2, 4095), True))

    pairs = u[: particles // 2 * 2, :, 0].reshape(particles // 2, 2, -1)
    cells = (pairs[:, 0] * 64).astype(np.int64) * 64 + (pairs[:, 1] * 64).astype(np.int64)
    counts = np.bincount(cells.ravel(), minlength=4096)
    m = cells.size
    chi2 = float(((counts - m / 4096) ** 2).sum() / (m / 4096))
    out.append(("serial pairs, 64 x 64", f"chi2 = {chi2:.0f} (df 4095)", chi2_p(chi2, 4095), True))

    stream = u[..., 0]  # (K, B): B streams of K particles
    for lag in range(1, 9):
        out.append(corr_test(f"autocorrelation, lag {lag}", stream[lag:], stream[:-lag]))

    out.append(corr_test("data n, n + 1", u[:, 1:], u[:, :-1]))
    out.append(corr_test("uses u, u + 1", u, u_next))
    out.append(corr_test("dims 0, 1", u[..., 0], u[..., 1]))
    few = particles // 8
    out.append(corr_test("seeds s, s + 1", u[:few], draw(seed=1, particles=few)[0]))
    out.append(corr_test("estimate streams 0, 1", u[:few], draw(stream=1, particles=few)[0]))
    for bit in (0, 7, 16, 31, 32):
        index = torch.arange(data) ^ (1 << bit)
        other = draw(index=index, particles=few)[0]
        out.append(corr_test(f"data n, n ^ 2^{bit}", u[:few], other))

    # runs up and down of each stream: mean (2m - 1) / 3, variance (16 m - 29) / 90
    up = np.diff(stream, axis=0) > 0
    runs = 1 + (up[1:] != up[:-1]).sum(0)
    k = stream.shape[0]
    z = float(runs.sum() - stream.shape[1] * (2 * k - 1) / 3)
    z /= math.sqrt(stream.shape[1] * (16 * k - 29) / 90)
    out.append(("runs up and down", f"z = {z:+.2f}", two_sided(z), False))

    # gap test: gaps between visits to [0, 0.1) are geometric, P(gap = g) = 0.1 * 0.9^g
    hits = stream.T < 0.1
    gaps = []
    for row in hits:
        where = np.flatnonzero(row)
        gaps.append(np.diff(where) - 1)
    g = np.concatenate(gaps)
    top = 40
    counts = np.bincount(np.minimum(g, top), minlength=top + 1)
    expected = 0.1 * 0.9 ** np.arange(top + 1) * g.size
    expected[top] = 0.9**top * g.size
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    out.append(("gap test, [0, 0.1)", f"chi2 = {chi2:.1f} (df {top})", chi2_p(chi2, top), True))

    # the first 52 bits of each uniform, floor(u 2^52): each one with probability 1/2
    words = np.floor(flat * 2.0**52).astype(np.uint64)
    chi2 = 0.0
    for b in range(52):
        ones = int(((words >> np.uint64(b)) & np.uint64(1)).sum())
        chi2 += (2 * ones - n) ** 2 / n
    out.append(("bit frequencies, 52 bits", f"chi2 = {chi2:.1f} (df 52)", chi2_p(chi2, 52), True))

    # birthday spacings: m = 1024 birthdays in 2^32 days, lambda = m^3 / (4 * 2^32)
    days = np.floor(flat * 2.0**32).astype(np.int64)
    groups = days[: days.size // 1024 * 1024].reshape(-1, 1024)
    spacings = np.diff(np.sort(groups, axis=1), axis=1)
    spacings.sort(axis=1)
    repeats = int((np.diff(spacings, axis=1) == 0).sum())
    lam = groups.shape[0] * 1024**3 / (4 * 2.0**32)
    p = float(2 * min(stats.poisson.cdf(repeats, lam), stats.poisson.sf(repeats - 1, lam)))
    out.append(
        ("birthday spacings, 2^32 days", f"{repeats} (expected {lam:.0f})", min(p, 1), False)
    )

    sample = flat[:: max(1, n // 1_000_000)]
    ks = stats.kstest(sample, "uniform")
    out.append(("Kolmogorov-Smirnov", f"D = {ks.statistic:.2e}", float(ks.pvalue), True))
    return out


def normal_tests(z_all: np.ndarray) -> list[Result]:
    """The battery on normals: (K, B, D)."""
    z = z_all.ravel()
    n = z.size
    mean, var = float(z.mean()), float(z.var())
    std = (z - mean) / math.sqrt(var)
    out: list[Result] = []
    for name, value, se in (
        ("mean", mean, math.sqrt(1 / n)),
        ("variance", var - 1, math.sqrt(2 / n)),
        ("skewness", float((std**3).mean()), math.sqrt(6 / n)),
        ("excess kurtosis", float((std**4).mean()) - 3, math.sqrt(24 / n)),
    ):
        out.append(
            (
                f"normals: {name}",
                f"{value:+.2e} (z = {value / se:+.2f})",
                two_sided(value / se),
                False,
            )
        )
    for t in (3, 4, 5):
        p = math.erfc(t / math.sqrt(2))
        count = int((np.abs(z) > t).sum())
        pv = 2 * min(stats.binom.cdf(count, n, p), stats.binom.sf(count - 1, n, p))
        stat = f"{count} (expected {n * p:.1f})"
        out.append((f"normals: P(|z| > {t})", stat, float(min(pv, 1)), False))
    ks = stats.kstest(z[:: max(1, n // 1_000_000)], "norm")
    out.append(("normals: Kolmogorov-Smirnov", f"D = {ks.statistic:.2e}", float(ks.pvalue), True))
    out.append(corr_test("normals: data n, n + 1", z_all[:, 1:], z_all[:, :-1]))
    out.append(corr_test("normals squared: dims 0, 1", z_all[..., 0] ** 2, z_all[..., 1] ** 2))
    out.append(corr_test("normals squared: data n, n + 1", z_all[:, 1:] ** 2, z_all[:, :-1] ** 2))
    return out


def flag(p: float, upper: bool) -> str:
    """TestU01's marks: p below 1e-10 (or, for ``upper``, above 1 - 1e-10) fails, below 1e-3
    (above 1 - 1e-3) is suspicious."""
    q = min(p, 1 - p) if upper else p
    return "FAIL" if q < 1e-10 else "suspicious" if q < 1e-3 else ""


def battery(method: str, data: int, particles: int) -> list[Result]:
    def draw(
        seed: int = 0,
        stream: int = 0,
        index: torch.Tensor | None = None,
        uses: int = 1,
        particles: int = particles,
    ) -> np.ndarray:
        index = torch.arange(data) if index is None else index
        noise = DatumNoise(seed, index, stream=stream, method=method)
        return np.stack([noise.uniform(particles, 2).numpy() for _ in range(uses)])

    normals = DatumNoise(2, torch.arange(data), method=method).normal(particles, 2).numpy()
    return uniform_tests(draw, data, particles) + normal_tests(normals)


def speed(
    methods: list[str], data: int, particles: int, dims: int, repeats: int
) -> dict[str, float]:
    """Median wall time of ``normal(particles, dims)`` for ``data`` data, methods taking turns."""
    times: dict[str, list[float]] = {m: [] for m in methods}
    for _ in range(repeats):
        for m in methods:
            start = time.perf_counter()
            DatumNoise(0, torch.arange(data), method=m).normal(particles, dims)
            times[m].append(time.perf_counter() - start)
    return {m: statistics.median(t) for m, t in times.items()}


def dieharder(method: str, test: int, data: int, psamples: int) -> list[str]:
    """dieharder's result lines for test ``-d test`` on the method's uniforms, top 32 bits
    (``-g 200``: raw words from stdin): particles 0, ..., 1023 of data 0, ..., data - 1,
    then of the next ``data`` data, and so on (particle-major within each block)."""
    command = ["dieharder", "-g", "200", "-d", str(test), "-p", str(psamples), "-Y", "1"]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=False)
    assert proc.stdin is not None and proc.stdout is not None
    first = 0
    try:
        while proc.poll() is None:
            noise = DatumNoise(0, torch.arange(first, first + data), method=method)
            u = noise.uniform(1024, 2).numpy()
            proc.stdin.write(np.floor(u * 2.0**32).astype("<u4").tobytes())
            first += data
    except BrokenPipeError:
        pass
    out = proc.stdout.read().decode()
    proc.wait()
    return [
        line for line in out.splitlines() if line.rstrip().endswith(("PASSED", "WEAK", "FAILED"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--data", type=int, default=256, help="B data (streams)")
    parser.add_argument("--particles", type=int, default=8192, help="K particles per stream")
    parser.add_argument(
        "--speed-shape",
        type=int,
        nargs=3,
        default=[100, 1000, 20],
        metavar=("B", "K", "D"),
        help="normals timed: B data, K particles, D dims",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--no-battery", action="store_true", help="skip the battery")
    parser.add_argument("--dieharder", type=int, nargs="+", metavar="N", help="dieharder tests")
    parser.add_argument("--psamples", type=int, default=20, help="dieharder's p-values a test")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(
        f"torch {torch.__version__}, 1 thread; numbers per test: {args.data} data x "
        f"{args.particles} particles x 2 dims = {args.data * args.particles * 2:,}"
    )
    failed = False
    if not args.no_battery:
        for method in args.methods:
            start = time.perf_counter()
            results = battery(method, args.data, args.particles)
            print(f"\n== {method} ({time.perf_counter() - start:.0f} s)")
            for name, stat, p, upper in results:
                mark = flag(p, upper)
                failed |= mark == "FAIL"
                print(f"{name:<34} {stat:<34} p = {p:.3g} {mark}")
            flagged = sum(1 for *_, p, upper in results if flag(p, upper))
            print(f"{len(results)} tests, {flagged} flagged")
    if args.dieharder:
        if shutil.which("dieharder") is None:
            sys.exit("dieharder not found: apt-get install dieharder (Debian), or omit --dieharder")
        for method in args.methods:
            print(f"\n== dieharder on {method}, {args.psamples} p-values a test")
            for test in args.dieharder:
                start = time.perf_counter()
                lines = dieharder(method, test, args.data, args.psamples)
                failed |= any(line.rstrip().endswith("FAILED") for line in lines)
                for line in lines:
                    print(line)
                print(f"   (-d {test}: {time.perf_counter() - start:.0f} s)")
    b, k, d = args.speed_shape
    medians = speed(args.methods, b, k, d, args.repeats)
    print(f"\n== speed on the CPU: normal({k}, {d}) for {b} data, median of {args.repeats} runs")
    for m, t in medians.items():
        print(f"{m:<10} {t:.3f} s  {b * k * d / t / 1e6:.1f} M normals/s")
    if "philox" in medians and "hash" in medians:
        print(f"philox / hash time: {medians['philox'] / medians['hash']:.2f}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
