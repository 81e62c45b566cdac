"""The cost of reading a model through from_pyro: estimators on pyrovae's own class against the
same model through ``pyrovae.from_pyro(vae.model, vae.guide, x)``, in the same run.

The VAE of the core configuration (z=50, hidden 400 400, random weights, or ``--run-dir``)
is scored both ways, the two taking turns in every round, on N held-out-sized binary rows:
importance sampling at K draws per datum (``estimate_log_likelihood``, PSIS k-hat on), AIS
(``ais_log_likelihood``, T steps, C chains) and the exact aggregate, a full Gaussian and a
mixture fitted to the encodings of 20 N training rows (``fit_sources``). Printed: the
median wall time of each and the ratio through / direct (target <= 1.2), and whether the
two gave identical numbers with the same seed (they must).

    python benchmarks/from_pyro_cost.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from pyrovae import from_pyro
from pyrovae.analysis import ais_log_likelihood, estimate_log_likelihood, fit_sources

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import benchmark_model, wall_times  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", help="a trained run (default: random weights)")
    p.add_argument("--num-data", type=int, default=200)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--ais-steps", type=int, default=50)
    p.add_argument("--ais-chains", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    own = benchmark_model(args.run_dir, device).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.rand(args.num_data, own.x_dim, generator=gen)).to(device)
    through = from_pyro(own.model, own.guide, x[:8])
    small = x[: max(2, args.num_data // 10)]
    train = torch.bernoulli(torch.rand(20 * args.num_data, own.x_dim, generator=gen)).to(device)

    def estimate(vae):
        return estimate_log_likelihood(vae, x, num_samples=args.num_samples, seed=0, progress=False)

    def ais(vae):
        return ais_log_likelihood(
            vae, small, num_steps=args.ais_steps, num_chains=args.ais_chains, seed=0
        )

    def sources(vae):
        return fit_sources(["aggregate", "gaussian-full", "gmm"], vae, train, progress=False)

    same_is = torch.equal(estimate(own).per_datum, estimate(through).per_datum)
    same_ais = torch.allclose(ais(own).per_datum, ais(through).per_datum)
    print(
        f"device {device}, threads {torch.get_num_threads()}, N={args.num_data}, "
        f"K={args.num_samples}, AIS on {len(small)} rows T={args.ais_steps} "
        f"C={args.ais_chains}, {args.repeats} rounds; identical numbers: IS {same_is}, "
        f"AIS {same_ais}"
    )
    for name, fn in (("importance sampling", estimate), ("AIS", ais), ("source fits", sources)):
        times = wall_times(
            {"direct": lambda f=fn: f(own), "through": lambda f=fn: f(through)},
            args.repeats,
            device,
        )
        direct, wrapped = statistics.median(times["direct"]), statistics.median(times["through"])
        print(
            f"{name:>20}: direct {direct:.2f} s, through from_pyro {wrapped:.2f} s, "
            f"ratio {wrapped / direct:.3f} (target <= 1.2)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
