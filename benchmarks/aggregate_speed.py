"""Time the exact aggregate's log_prob, pruned against the full sum, on the draws that
``pyrovae evaluate`` scores it on.

The aggregate q(z) = 1/N sum_n q(z | x_n) is fitted to ``--num-train`` training encodings
of a trained run; the points are the draws of the importance-sampled log-likelihood
(the source-adapted defensive mixture, K = ``--num-samples``) on ``--num-test`` test
images, captured from a real estimate. Both sums score the same points in the same
rounds (interleaved, ``--repeats`` rounds, medians), and the pruned one is checked point
by point against the full float64 sum (its error bound is the source's ``tolerance``); the
largest bound on the expanded quadratic form's rounding says whether any term had to be
computed otherwise (box-centred or directly: means far apart relative to their scales).
A gradient timing (as AIS needs) uses ``--grad-points`` points spread evenly over the
images (AIS scores a few chains of many images at a time); an end-to-end
timing runs the whole estimate on the first ``--e2e-test`` images with each sum.

    python benchmarks/aggregate_speed.py --run-dir study/runs/vae-z10
    python benchmarks/aggregate_speed.py --run-dir runs/z50 --num-test 8 --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from pyrovae import load_run
from pyrovae.analysis.likelihood.loglik import estimate_source_log_likelihoods
from pyrovae.analysis.sources import AggregatePosterior
from pyrovae.analysis.sources.encodings import Encodings
from pyrovae.analysis.sources.mixture_pruning import REFINE_ABOVE
from pyrovae.data import DataNotFoundError, fixed_binarization, load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import wall_times  # noqa: E402

EVALUATE_POINTS = 10_000 * 1000
"""Points ``pyrovae evaluate`` scores with its defaults: 10,000 test images x K = 1000."""


def captured_points(vae, x, source, num_samples: int) -> list[torch.Tensor]:
    """The (K, B, D) draws a real estimate passes to ``source.log_prob``, in order."""
    seen: list[torch.Tensor] = []
    score = source.log_prob

    def spy(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.detach().clone())
        return score(z)

    source.log_prob = spy
    try:
        estimate_source_log_likelihoods(
            vae, x, {"aggregate": source}, num_samples=num_samples, seed=0, progress=False
        )
    finally:
        del source.log_prob
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, help="a trained run (diagonal guide)")
    parser.add_argument("--data-root", default=None, help="directory holding MNIST/raw")
    parser.add_argument("--num-train", type=int, default=50_000, help="components N")
    parser.add_argument("--num-test", type=int, default=32, help="test images whose draws")
    parser.add_argument("--num-samples", type=int, default=1000, help="K draws per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--grad-points", type=int, default=2048)
    parser.add_argument("--e2e-test", type=int, default=16, help="images of the end-to-end run")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        data = load_dataset("mnist", root=args.data_root, download=False)
    except DataNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    vae = load_run(args.run_dir)
    x_train = fixed_binarization(data.train.x[: args.num_train])
    x_test = fixed_binarization(data.test.x)
    enc = Encodings(vae, x_train)
    if not enc.diagonal:
        raise SystemExit(f"error: --run-dir {args.run_dir}: the guide is not a diagonal Normal")
    pruned = AggregatePosterior(enc)
    full = AggregatePosterior(enc, tolerance=0)
    batches = captured_points(vae, x_test[: args.num_test], pruned, args.num_samples)
    z = torch.cat([b.reshape(-1, enc.z_dim) for b in batches])
    m, n = z.shape[0], full.num_components
    print(
        f"run {args.run_dir}: z_dim {enc.z_dim}, N = {n} components, {m} points "
        f"({args.num_test} test images x K = {args.num_samples}), {torch.get_num_threads()} "
        f"threads, tolerance {pruned.tolerance:g}"
    )

    def score(source: AggregatePosterior) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([source.log_prob(b.double()).reshape(-1) for b in batches])

    exact, fast = score(full), score(pruned)
    err = exact - fast
    scorer = pruned.pruned_mixture()
    scorer.kept_pairs = 0
    times = wall_times(
        {"full": lambda: score(full), "pruned": lambda: score(pruned)},
        args.repeats,
        torch.device("cpu"),
    )
    kept = scorer.kept_pairs / args.repeats / (m * n)
    t_full, t_pruned = (statistics.median(times[k]) for k in ("full", "pruned"))
    print(f"full sum    median {t_full:8.2f} s  {t_full / (m * n) * 1e9:6.2f} ns per pair")
    print(f"pruned sum  median {t_pruned:8.2f} s  kept {100 * kept:.2f}% of pairs")
    print(f"speed-up (full / pruned): {t_full / t_pruned:.1f}x")
    print(
        f"error (full - pruned, nats): max {err.max().item():.2e}, min {err.min().item():.2e}"
        f", max |.| {err.abs().max().item():.2e}"
    )
    bound = scorer.rounding_bound(z.double() - scorer.centre, scorer.rows, scorer.rounding_const)
    print(
        f"bound on the expanded form's rounding over all components and draws: max "
        f"{bound.max().item():.1e} nats; {100 * (bound > REFINE_ABOVE).double().mean().item():.1f}%"
        f" of components above {REFINE_ABOVE:g} (their terms computed box-centred or directly)"
    )
    for name, t in (("full", t_full), ("pruned", t_pruned)):
        minutes = t / m * EVALUATE_POINTS / 60
        print(f"  at evaluate's defaults (10,000 images x K = 1000): {name} {minutes:.0f} min")

    # as AIS scores them: a few chains of many images at once (points spread over images)
    zg = z[:: max(1, m // args.grad_points)][: args.grad_points].double()

    def grad(source: AggregatePosterior) -> torch.Tensor:
        point = zg.clone().requires_grad_()
        (g,) = torch.autograd.grad(source.log_prob(point).sum(), point)
        return g

    g_full, g_pruned = grad(full), grad(pruned)
    gt = wall_times(
        {"full": lambda: grad(full), "pruned": lambda: grad(pruned)},
        args.repeats,
        torch.device("cpu"),
    )
    gf, gp = (statistics.median(gt[k]) for k in ("full", "pruned"))
    print(
        f"gradient ({zg.shape[0]} points): full {gf:.2f} s, pruned {gp:.2f} s, speed-up "
        f"{gf / gp:.1f}x, max |difference| {(g_full - g_pruned).abs().max().item():.2e} "
        f"(largest |gradient| {g_full.abs().max().item():.1f})"
    )

    x_e2e = x_test[: args.e2e_test]
    e2e = {}
    for name, source in (("full", full), ("pruned", pruned)):
        start = time.perf_counter()
        est = estimate_source_log_likelihoods(
            vae,
            x_e2e,
            {"aggregate": source},
            num_samples=args.num_samples,
            seed=0,
            progress=False,
        )["aggregate"]
        e2e[name] = (time.perf_counter() - start, est.per_datum)
    diff = (e2e["full"][1] - e2e["pruned"][1]).abs().max().item()
    print(
        f"end to end ({args.e2e_test} images, K = {args.num_samples}): full "
        f"{e2e['full'][0]:.1f} s, pruned {e2e['pruned'][0]:.1f} s, speed-up "
        f"{e2e['full'][0] / e2e['pruned'][0]:.1f}x, estimates differ by at most {diff:.1e}"
    )


if __name__ == "__main__":
    main()
