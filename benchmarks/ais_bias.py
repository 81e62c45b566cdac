"""Bias and cost of AIS's step-size adaptation modes against the exact log p(x) of PPCA.

Forward AIS weights are unbiased for p(x) (E[w] = p(x), so log 1/C sum_c w_c is a
stochastic lower bound by Jensen's inequality) only when the step size of every transition
does not depend on the estimate's own chains. ``adapt="pilot"`` (the default) adapts on
pilot chains that share no random numbers with them; ``"pooled"`` (the default before)
adapts on the mean acceptance of the datum's own chains, ``"per_chain"`` on each chain's
own; ``fixed`` keeps the initial step size (``adapt_rate=0``). For each mode this prints
the mean error of the per-datum estimates against the exact log p(x) with its standard
error over the data, the mean acceptance, and the CPU time of the process (one thread, so
that other work on a shared machine counts little) as a ratio to ``pooled`` measured in
the same run: after a warm-up, the least of ``--repeats`` runs interleaved over the modes,
whose estimates are the same in every repeat.

The model is the one of ``tests/test_ais.py``: probabilistic PCA with 6 latent dims (3 of
them ignored by the decoder), 8 observed dims, noise sd 0.5, and a guide widened 1.5x and
shifted by 0.3 from the exact posterior, so that annealing has work to do.

    python benchmarks/ais_bias.py                            # T=100, 8 chains, 1,024 data
    python benchmarks/ais_bias.py --num-steps 200 --pilot-chains 2 4 8
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time

import torch

from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.exact import ppca_log_marginal, ppca_vae

X_DIM, Z_DIM, ACTIVE, NOISE = 8, 6, 3, 0.5
WIDEN, SHIFT = 1.5, 0.3


def problem(num_data: int, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The PPCA model with an inexact guide, and data simulated from it."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(X_DIM, ACTIVE, generator=generator))
    w = torch.zeros(X_DIM, Z_DIM)
    w[:, :ACTIVE] = q * torch.tensor([2.0, 1.5, 1.0])
    b = torch.randn(X_DIM, generator=generator)
    vae = ppca_vae(w, b, NOISE, widen=WIDEN, shift=SHIFT)
    z = torch.randn(num_data, Z_DIM, generator=generator)
    x = z @ w.T + b + NOISE * torch.randn(num_data, X_DIM, generator=generator)
    return vae, x


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-data", type=int, default=1024)
    parser.add_argument("--num-steps", type=int, default=100)
    parser.add_argument("--num-chains", type=int, default=8)
    parser.add_argument("--leapfrog-steps", type=int, default=10)
    parser.add_argument("--pilot-chains", type=int, nargs="+", default=[4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per mode (the min)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vae, x = problem(args.num_data, args.seed)
    truth = ppca_log_marginal(vae, x).double()
    common = dict(
        num_steps=args.num_steps,
        num_chains=args.num_chains,
        leapfrog_steps=args.leapfrog_steps,
        batch_size=args.num_data,
        seed=args.seed + 1,
        progress=False,
    )
    modes: list[tuple[str, dict]] = [("pooled (old default)", {"adapt": "pooled"})]
    modes += [(f"pilot, P={p}", {"adapt": "pilot", "pilot_chains": p}) for p in args.pilot_chains]
    modes += [("per_chain", {"adapt": "per_chain"}), ("fixed (adapt_rate=0)", {"adapt_rate": 0.0})]
    print(f"$ python {shlex.join(sys.argv)}")
    print(
        f"PPCA z={Z_DIM} x={X_DIM}, guide widened {WIDEN}x and shifted {SHIFT}: "
        f"{args.num_data} data, T={args.num_steps}, C={args.num_chains}, "
        f"L={args.leapfrog_steps}, torch {torch.__version__}, 1 thread"
    )
    ais_log_likelihood(vae, x[:64], **{**common, "num_steps": 5})  # warm-up
    header = f"{'mode':24s} {'error (nats)':>14s} {'in s.e.':>8s} {'accept':>7s} {'CPU':>8s} ratio"
    results, seconds = {}, {name: math.inf for name, _ in modes}
    for _ in range(args.repeats):  # interleaved, so that a slower spell hits every mode
        for name, options in modes:
            start = time.process_time()
            results[name] = ais_log_likelihood(vae, x, **common, **options)
            seconds[name] = min(seconds[name], time.process_time() - start)
    print(header)
    reference = seconds[modes[0][0]]
    for name, _ in modes:
        result = results[name]
        err = result.per_datum - truth
        mean, se = float(err.mean()), float(err.std()) / math.sqrt(err.numel())
        print(
            f"{name:24s} {mean:+7.3f} +- {se:.3f} {mean / se:+8.1f} {result.acceptance:7.2f} "
            f"{seconds[name]:7.1f}s {seconds[name] / reference:5.2f}"
        )


if __name__ == "__main__":
    main()
