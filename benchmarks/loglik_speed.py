"""Time the importance-sampled log-likelihood against the bare decoder passes it must make.

The estimator draws K particles for each of N data and evaluates the decoder on all N*K
draws; the decoder's forward pass plus log p(x | z) on the same chunks is the floor. The
ratio estimator / floor measures everything else (Pyro tracing, the encoder, the guide
and prior densities, logsumexp, PSIS k-hat). Target: <= 1.3. A third timing runs the
source-adapted defensive mixture (:mod:`pyrovae.analysis.likelihood.proposals`) for the prior and
four Gaussian sources fitted to 10,000 training encodings, on the same decoder budget:
its ratio is the cost of building, sampling and scoring the adapted proposals.

Peak memory is printed too: on CUDA the most allocated by each timing
(``torch.cuda.max_memory_allocated``), on CPU the process's resident set size high-water
mark (``getrusage(RUSAGE_SELF).ru_maxrss``) after the warm-up of each stage in turn (the
mark only rises, so a stage's own peak shows where it raises it).

    python benchmarks/loglik_speed.py                       # z=50, 400-400 MLP, random init
    python benchmarks/loglik_speed.py --run-dir runs/z50    # a trained model
    python benchmarks/loglik_speed.py --prior vamp --num-components 500 --num-data 16 \
        --no-adapted                                        # memory of a VampPrior model
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from pyrovae.analysis.likelihood.loglik import (
    default_draws_per_pass,
    estimate_log_likelihood,
    estimate_source_log_likelihoods,
)
from pyrovae.analysis.sources import fit_sources
from pyrovae.data import DataNotFoundError, fixed_binarization, load_dataset
from pyrovae.train import one_hot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import benchmark_model, wall_times  # noqa: E402


def decoder_floor(vae, x, y, num_samples: int, draws_per_pass: int) -> None:
    """The decoder work of the estimator alone: same draws, same chunks, z ~ N(0, I)."""
    particles = min(num_samples, draws_per_pass)
    batch = max(1, draws_per_pass // num_samples)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            xb = x[start : start + batch]
            yb = None if y is None else y[start : start + batch]
            for done in range(0, num_samples, particles):
                k = min(particles, num_samples - done)
                z = torch.randn(k, xb.shape[0], vae.z_dim, device=x.device)
                vae.decoder(z, yb).log_prob(xb)


def peak_rss_bytes() -> int:
    """The process's resident set size high-water mark (ru_maxrss: KiB on Linux, bytes on
    macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def cuda_peaks(fns: dict[str, Callable[[], object]], device: torch.device) -> dict[str, int]:
    """Bytes allocated at most by one call of each function on ``device``."""
    peaks = {}
    for name, fn in fns.items():
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        peaks[name] = torch.cuda.max_memory_allocated(device)
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run (default: random init)")
    parser.add_argument("--data-root", default=None, help="directory holding MNIST/raw")
    parser.add_argument("--num-data", type=int, default=1000)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--draws-per-pass", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--prior", default=None, help="build an untrained model with this prior (no --run-dir)"
    )
    parser.add_argument("--num-components", type=int, default=500, help="with --prior")
    parser.add_argument(
        "--no-adapted", action="store_true", help="skip fitting and timing the adapted sources"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    rss_start = peak_rss_bytes()
    if args.prior:
        from pyrovae import build_model

        torch.manual_seed(0)
        vae = build_model(
            z_dim=50, hidden_dims=[400, 400], prior=args.prior, num_components=args.num_components
        )
        vae = vae.to(device).eval()
    else:
        vae = benchmark_model(args.run_dir, device)
    try:
        data = load_dataset("mnist", root=args.data_root, download=False)
        test = data.test.sample(args.num_data)
        x, labels = test.x, test.y
        train_x, train_labels = data.train.x[:10_000], data.train.y[:10_000]
        source = "MNIST test (random subset)"
    except DataNotFoundError:
        x = torch.rand(args.num_data, vae.x_dim)
        labels = torch.randint(10, (args.num_data,))
        train_x, train_labels = torch.rand(10_000, vae.x_dim), torch.randint(10, (10_000,))
        source = "uniform noise (MNIST not found)"
    x = x.to(device)
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    y = one_hot(labels.to(device), vae.y_dim) if vae.conditional else None
    train_x = train_x.to(device)
    if getattr(vae.decoder, "binarize", False):
        train_x = fixed_binarization(train_x)
    train_y = one_hot(train_labels.to(device), vae.y_dim) if vae.conditional else None
    names = ["prior", "gaussian-loc", "gaussian-z", "gaussian-full", "gmm"]
    sources = {} if args.no_adapted else fit_sources(names, vae, train_x, train_y)
    per_pass = args.draws_per_pass or default_draws_per_pass(device)
    k, n = args.num_samples, x.shape[0]
    print(
        f"device {device} ({torch.get_num_threads()} threads), data: {source}, N={n}, K={k}, "
        f"z_dim={vae.z_dim}, draws/pass={per_pass}, {n * k:,} decoder evaluations"
    )

    def floor() -> None:
        decoder_floor(vae, x, y, k, per_pass)

    def estimator(khat: bool) -> Callable[[], object]:
        return lambda: estimate_log_likelihood(
            vae, x, y, num_samples=k, draws_per_pass=per_pass, khat=khat
        )

    def adapted() -> None:
        estimate_source_log_likelihoods(
            vae, x, sources, y, num_samples=k, draws_per_pass=per_pass, khat=False
        )

    fns = {"floor": floor, "plain": estimator(False), "khat": estimator(True), "adapted": adapted}
    if args.no_adapted:
        del fns["adapted"]
    rss = {"start": peak_rss_bytes()}  # the model and data are loaded
    for name, fn in fns.items():  # warm-up (allocator, thread pools, the ArviZ import)
        fn()
        rss[name] = peak_rss_bytes()
    times = wall_times(fns, args.repeats, device)
    median = {name: statistics.median(t) for name, t in times.items()}
    best = {name: min(t) for name, t in times.items()}
    print(f"{'':24}{'median':>8}{'ratio':>8}{'best':>8}{'ratio':>8}   ({args.repeats} repeats)")
    labels = {
        "floor": "decoder floor",
        "plain": "estimator, no k-hat",
        "khat": "estimator, PSIS k-hat",
        "adapted": "adapted, 5 sources",
    }
    for name in fns:
        print(
            f"{labels[name]:<24}{median[name]:8.2f}{median[name] / median['floor']:8.2f}"
            f"{best[name]:8.2f}{best[name] / best['floor']:8.2f}"
        )
    print("target: estimator / floor <= 1.3")
    if device.type == "cuda":
        peaks = cuda_peaks(fns, device)
        print("peak CUDA memory allocated per call (torch.cuda.max_memory_allocated):")
        for name in fns:
            print(f"  {labels[name]:<22}{gib(peaks[name]):>12}")
    print(
        f"peak resident set size (ru_maxrss): {gib(rss_start)} at start, "
        f"{gib(rss['start'])} with model and data loaded"
    )
    for name in fns:
        print(f"  after {labels[name]:<22}{gib(rss[name]):>12}")
    print(f"  at the end{'':<19}{gib(peak_rss_bytes()):>12}")


if __name__ == "__main__":
    main()
