"""Is every source's importance-sampling log-likelihood right? IS against AIS, and BDMC.

For a trained run: fits the latent sources on the training encodings, estimates log p_r(x)
by importance sampling (the adapted defensive mixture, K draws) on a fixed random subset
of test images, and by AIS on the same images; prints per source the IS and AIS values,
their difference, whether IS converged in K, and the verdict against the target
"|IS - AIS| <= 1 nat, or labelled unconverged". With ``--bdmc-num-data`` it also runs
BDMC for every AIS'd source, on data simulated from that source with forward AIS from the
start its AIS used (its adapted proposal; the guide for the prior), and prints each gap
(target: below 1 nat); a gap backs that source's AIS only. ``--bdmc-only`` runs BDMC for
``--bdmc-source`` alone, from that same start.

    python benchmarks/loglik_evidence.py --run-dir runs/vae-z50 --data-root ../shared/data \\
        --num-samples 5000 --num-test 200 --ais-steps 500 --ais-chains 16
    python benchmarks/loglik_evidence.py --run-dir runs/vae-z10 --data-root ../shared/data \\
        --bdmc-only --bdmc-num-data 100 --ais-steps 500 --bdmc-source aggregate
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pyrovae import load_dataset, load_run
from pyrovae.analysis.evaluation.compare import model_inputs
from pyrovae.analysis.evaluation.evaluate import AISBudget, evaluate_run
from pyrovae.analysis.likelihood.ais import bdmc
from pyrovae.analysis.likelihood.evidence import AIS_AGREEMENT, BDMC_TRUSTED_GAP
from pyrovae.analysis.likelihood.proposals import initial_distribution
from pyrovae.analysis.sources import SOURCES, fit_source
from pyrovae.train import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--data-root", default=None, help="directory holding MNIST/raw")
    parser.add_argument("--num-samples", type=int, default=5000, help="K, IS draws per datum")
    parser.add_argument("--num-test", type=int, default=200, help="test images (random subset)")
    parser.add_argument("--num-train", type=int, default=None, help="fit sources on first N")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument(
        "--ais-sources", nargs="+", default=None, help="AIS for these only (default: all)"
    )
    parser.add_argument("--proposal", default="adapted", choices=["adapted", "separate", "guide"])
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--ais-chains", type=int, default=16)
    parser.add_argument("--ais-leapfrog", type=int, default=10)
    parser.add_argument(
        "--bdmc-num-data", type=int, default=0, help="BDMC data per AIS'd source (0: skip)"
    )
    parser.add_argument("--bdmc-only", action="store_true", help="run BDMC alone")
    parser.add_argument(
        "--bdmc-source",
        default="prior",
        choices=list(SOURCES),
        help="simulate z from this source (fitted to the training encodings) for BDMC",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    device = resolve_device(args.device)
    vae = load_run(args.run_dir, device=device)
    budget = (
        f"K={args.num_samples}, {args.num_test} test images, AIS T={args.ais_steps}, "
        f"{args.ais_chains} chains, {args.ais_leapfrog} leapfrog steps, seed {args.seed}, "
        f"{device}"
    )
    out: dict = {"run": args.run_dir, "budget": budget}
    if not args.bdmc_only:
        data = load_dataset("mnist", root=args.data_root, device=device)
        start = time.perf_counter()
        evaluation, _ = evaluate_run(
            vae,
            data,
            sources=args.sources,
            num_samples=args.num_samples,
            num_test=args.num_test,
            num_train=args.num_train,
            surgery=False,
            proposal=args.proposal,
            ais=AISBudget(
                num_test=args.num_test,
                steps=args.ais_steps,
                chains=args.ais_chains,
                leapfrog_steps=args.ais_leapfrog,
                sources=tuple(args.ais_sources) if args.ais_sources else None,
                bdmc_num_data=args.bdmc_num_data,
            ),
            seed=args.seed,
        )
        seconds = time.perf_counter() - start
        print(f"{args.run_dir}: {budget}; {seconds:.0f} s")
        print(
            f"{'source':<14}{'IS':>9}{'+-':>6}{'AIS':>9}{'+-':>6}{'AIS-IS':>8}{'+-':>6}"
            f"{'BDMC gap':>9}{'converged':>11}  verdict"
        )
        rows = {}
        for name, entry in evaluation["sources"].items():
            ais = entry.get("ais")
            if ais is None:
                continue
            diff = ais["is_loglik"] - ais["loglik"]
            paired = ais["minus_is"]  # AIS - IS paired over the same images
            gap = ais.get("bdmc", {}).get("gap")
            if abs(diff) <= AIS_AGREEMENT:
                verdict = f"ok: within {AIS_AGREEMENT:g} nat of AIS"
            elif not entry["converged"]:
                verdict = "ok: labelled unconverged"
            else:
                verdict = "FAIL: converged in K yet off AIS"
            rows[name] = {**ais, "converged": entry["converged"], "verdict": verdict}
            print(
                f"{name:<14}{ais['is_loglik']:>9.2f}{ais['is_stderr']:>6.2f}"
                f"{ais['loglik']:>9.2f}{ais['stderr']:>6.2f}{paired['mean']:>8.2f}"
                f"{paired['stderr'] or float('nan'):>6.2f}"
                f"{'-' if gap is None else format(gap, '.3f'):>9}"
                f"{str(entry['converged']):>11}  {verdict}"
            )
        out["sources"] = rows
        out["ksweep"] = {n: e["ksweep"] for n, e in evaluation["sources"].items()}
        out["seconds"] = seconds
    if args.bdmc_num_data and args.bdmc_only:
        source = None
        if args.bdmc_source != "prior":
            train = load_dataset("mnist", root=args.data_root, device=device).train
            x_train, _ = model_inputs(vae, train, args.num_train, random_subset=False)
            source = fit_source(args.bdmc_source, vae, x_train, seed=args.seed)
        start = time.perf_counter()
        sandwich = bdmc(
            vae,
            source,
            initial=initial_distribution(vae, source, seed=args.seed),  # the start of its AIS
            num_data=args.bdmc_num_data,
            num_steps=args.ais_steps,
            num_chains=args.ais_chains,
            leapfrog_steps=args.ais_leapfrog,
            seed=args.seed,
        )
        result = sandwich.to_dict()
        seconds = time.perf_counter() - start
        ok = "ok" if result["gap"] < BDMC_TRUSTED_GAP else "FAIL"
        print(
            f"BDMC ({args.bdmc_source}, from the start its AIS uses) on "
            f"{args.bdmc_num_data} data simulated from it, "
            f"T={args.ais_steps}, "
            f"{args.ais_chains} chains: lower {result['lower']:.3f}, upper {result['upper']:.3f}, "
            f"gap {result['gap']:.3f} nats ({ok}: target < {BDMC_TRUSTED_GAP:g}); {seconds:.0f} s"
        )
        start_label = "guide" if source is None else f"adapted proposal of {args.bdmc_source}"
        out["bdmc"] = {**result, "source": args.bdmc_source, "initial": start_label}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
