"""``pyrovae diagnose``: NUTS reference posteriors and the inference gaps of a run's guide."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyrovae.cli.common import (
    CommandError,
    add_checkpoint_flag,
    add_device_flags,
    load_data,
    non_negative_int,
    positive_int,
)
from pyrovae.cli.from_python import add_from_python_flags, check_target, load_pair


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose",
        help="NUTS reference posteriors and inference gaps of a run's guide",
        description="For a few test images of every class: a reference posterior p(z | x) "
        "by NUTS (R-hat and ESS; a datum whose chains did not mix is flagged), the guide "
        "against it (means, standard deviations, coverage of its 90% interval), and the "
        "approximation and amortization gaps of log p(x) - ELBO (log p(x) by AIS). Writes "
        "DIR/diagnostics.json, DIR/posterior-NNNNN.nc (ArviZ NetCDF) per image and the "
        "figures DIR/posterior.png and DIR/gaps.png; pyrovae report shows them when DIR is "
        "the default RUN_DIR/diagnostics. It first says what it will do and about how long "
        "(each step's work at rates timed on this machine in its first seconds, and the "
        "flags that shorten it), then shows each step's progress on stderr.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    add_from_python_flags(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN_DIR/diagnostics)")
    p.add_argument(
        "--num-data", type=positive_int, default=20, metavar="N", help="images (default: 20)"
    )
    p.add_argument(
        "--nuts-data",
        type=positive_int,
        metavar="M",
        help="NUTS reference posteriors for the first M of them only (default: all); the "
        "gaps need no NUTS and cover all N",
    )
    p.add_argument(
        "--chains", type=positive_int, default=4, metavar="C", help="NUTS chains (default: 4)"
    )
    p.add_argument(
        "--warmup", type=positive_int, default=300, metavar="W", help="warm-up draws (300)"
    )
    p.add_argument(
        "--samples", type=positive_int, default=500, metavar="S", help="kept draws (500)"
    )
    p.add_argument(
        "--gap-steps", type=positive_int, default=500, metavar="N", help="SVI steps of q* (500)"
    )
    p.add_argument(
        "--ais-steps", type=positive_int, default=500, metavar="T", help="AIS steps (500)"
    )
    p.add_argument(
        "--ais-chains", type=positive_int, default=16, metavar="C", help="AIS chains (16)"
    )
    p.add_argument(
        "--elbo-draws",
        type=positive_int,
        default=1000,
        metavar="K",
        help="draws per ELBO of the guide and of q* (1000)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no plan (each step's work and time, said before it starts) and no progress",
    )
    add_checkpoint_flag(p)
    add_device_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from pyrovae.analysis.posterior.diagnose import DiagnoseBudget, diagnose_run, diagnostics_dir
    from pyrovae.distributed import process_group
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    check_target(args)
    if args.nuts_data is not None and args.nuts_data > args.num_data:
        raise CommandError(
            f"--nuts-data {args.nuts_data} exceeds --num-data {args.num_data}; pass at most "
            "--num-data (or drop --nuts-data for all)"
        )
    budget = DiagnoseBudget(
        num_data=args.num_data,
        nuts_data=args.nuts_data,
        chains=args.chains,
        warmup=args.warmup,
        samples=args.samples,
        gap_steps=args.gap_steps,
        ais_steps=args.ais_steps,
        ais_chains=args.ais_chains,
        elbo_draws=args.elbo_draws,
    )
    out = args.out if args.out is not None else diagnostics_dir(args.run_dir)
    with process_group(args.device) as context:  # torchrun: NUTS, AIS and q* fits shared out
        device = resolve_device(args.device) if context is None else context.device
        if args.from_python is not None:
            vae, data = load_pair(args, device)
        else:
            vae = load_run(args.run_dir, device=device, checkpoint=args.checkpoint)
            data = load_data(args.run_dir, args, device)
        result = diagnose_run(
            vae, data, out, budget, seed=args.seed, context=context, progress=not args.quiet
        )
        if context is not None and not context.is_writer:
            return
    gaps = result["gaps"]
    parts = [
        f"{name.replace('_', ' ')} {gaps[name]['mean']:.2f} +- {gaps[name]['stderr']:.2f}"
        for name in ("total_gap", "approximation_gap", "amortization_gap")
    ]
    from pyrovae.images import image_shape_of

    what = "images" if image_shape_of(vae) is not None else "data points"
    print(
        f"{result['num_data']} {what}, {result['num_reference']} with a NUTS reference, "
        f"{result['flagged']} flagged ({_flag_counts(result)}); "
        + "; ".join(parts)
        + f" nats; wrote {Path(out) / 'diagnostics.json'}"
    )


def _flag_counts(result: dict[str, Any]) -> str:
    """How many NUTS references each check flagged, e.g. ``R-hat 1, tail ESS 2``."""
    from pyrovae.analysis.posterior.inference_quality import flag_counts_text

    return flag_counts_text(result) or "R-hat, ESS and divergences checked"
