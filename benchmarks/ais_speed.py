"""Time AIS against the bare decoder forward and backward passes it must make.

AIS with T steps, C chains and L leapfrog steps evaluates log p(x | z) and its gradient in
z (T - 1) L + 1 times on all C x B chains of a batch of B data. The floor is the decoder
alone on the same shapes, as often: the log-likelihood of the decoder's distribution at
z requiring grad, plus ``torch.autograd.grad`` with respect to z. The ratio AIS / floor
measures everything else (Pyro tracing, the prior and initial densities and their
gradients, leapfrog arithmetic, Metropolis tests, step-size adaptation). Target: <= 1.3.

    python benchmarks/ais_speed.py                        # z=50, 400-400 MLP, random init
    python benchmarks/ais_speed.py --run-dir runs/z50     # a trained model
    python benchmarks/ais_speed.py --device cuda --num-data 4096 --num-steps 200
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

import torch

from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.loglik import default_draws_per_pass
from pyrovae.data import DataNotFoundError, fixed_binarization, load_dataset
from pyrovae.train import one_hot

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import benchmark_model, wall_times  # noqa: E402

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def decoder_floor(vae, x, y, num_chains: int, batch_size: int, passes: int) -> None:
    """The decoder work of AIS alone: ``passes`` forward and backward passes per batch."""
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        yb = None if y is None else y[start : start + batch_size]
        z = torch.randn(num_chains, xb.shape[0], vae.z_dim, device=x.device)
        z.requires_grad_(True)
        with torch.enable_grad():
            for _ in range(passes):
                log_lik = vae.decoder(z, yb).log_prob(xb).sum()
                torch.autograd.grad(log_lik, z)


def load_data(vae, args: argparse.Namespace, device: torch.device):
    try:
        test = load_dataset("mnist", root=args.data_root, download=False).test
        x, labels = test.x[: args.num_data], test.y[: args.num_data]
        source = "MNIST test"
    except DataNotFoundError:
        x = torch.rand(args.num_data, vae.x_dim)
        labels = torch.randint(10, (args.num_data,))
        source = "uniform noise (MNIST not found)"
    x = x.to(device)
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    y = one_hot(labels.to(device), vae.y_dim) if vae.conditional else None
    return x, y, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default=None, help="a trained run (default: random init)")
    parser.add_argument(
        "--data-root", default=str(DEFAULT_DATA_ROOT), help="directory holding MNIST/raw"
    )
    parser.add_argument("--num-data", type=int, default=64)
    parser.add_argument("--num-chains", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=50, help="T, annealing steps")
    parser.add_argument("--leapfrog-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="data per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    vae = benchmark_model(args.run_dir, device)
    x, y, source = load_data(vae, args, device)
    n, c, t, lf = x.shape[0], args.num_chains, args.num_steps, args.leapfrog_steps
    batch = args.batch_size or max(1, default_draws_per_pass(device) // c)
    passes = (t - 1) * lf + 1
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(
        f"device {device} ({torch.get_num_threads()} threads), data: {source}, N={n}, C={c}, "
        f"T={t}, L={lf}, z_dim={vae.z_dim}, batch={min(batch, n)} data x {c} chains, "
        f"{passes} decoder forward+backward passes per batch "
        f"({passes * n * c:,} chain evaluations)"
    )

    def floor() -> None:
        decoder_floor(vae, x, y, c, batch, passes)

    def ais() -> None:
        ais_log_likelihood(
            vae, x, y, num_steps=t, num_chains=c, leapfrog_steps=lf, batch_size=batch, seed=0
        )

    floor()  # warm-up (allocator, thread pools)
    ais()
    times = wall_times({"floor": floor, "ais": ais}, args.repeats, device)
    median = {name: statistics.median(v) for name, v in times.items()}
    best = {name: min(v) for name, v in times.items()}
    print(f"{'':24}{'median':>8}{'ratio':>8}{'best':>8}{'ratio':>8}   ({args.repeats} repeats)")
    for name, label in [("floor", "decoder floor"), ("ais", "ais_log_likelihood")]:
        print(
            f"{label:<24}{median[name]:8.2f}{median[name] / median['floor']:8.2f}"
            f"{best[name]:8.2f}{best[name] / best['floor']:8.2f}"
        )
    per_pass = 1e3 * median["ais"] / (passes * -(-n // batch))
    print(f"AIS: {per_pass:.1f} ms per pass of {min(batch, n) * c:,} chains")
    print("target: ais / floor <= 1.3")


if __name__ == "__main__":
    main()
