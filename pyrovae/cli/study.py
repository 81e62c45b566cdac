"""``pyrovae study``: the prior-versus-aggregate study over latent sizes and seeds."""

from __future__ import annotations

import argparse
from typing import Any

from pyrovae.cli.common import (
    add_device_flags,
    non_negative_int,
    positive_int,
)
from pyrovae.settings import (
    FULL,
    MODEL_NAMES,
    PRIOR_NAMES,
    QUICK,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "study",
        help="train VAE and CVAE at z=2,5,10, evaluate them and write the report",
        description="The latent-space study end to end: trains a VAE and a CVAE at z = 2, 5 "
        "and 10 on MNIST (resuming an interrupted study), evaluates every latent source and "
        "writes DIR/report.html. --quick is a small-budget version (minutes) for a smoke test.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--quick", action="store_true", help="tiny budget: 1 epoch on 2,000 images")
    p.add_argument(
        "--epochs",
        type=positive_int,
        metavar="N",
        help=f"training epochs (default: {FULL.epochs}; --quick: 1)",
    )
    p.add_argument(
        "--num-samples",
        type=positive_int,
        metavar="K",
        help=f"importance samples per datum (default: {FULL.num_samples})",
    )
    p.add_argument(
        "--num-test",
        type=positive_int,
        metavar="N",
        help=f"held-out test images evaluated (default: {FULL.num_test})",
    )
    p.add_argument(
        "--num-train",
        type=positive_int,
        metavar="N",
        help="training images the latent sources are fitted to (default: all 50,000)",
    )
    p.add_argument(
        "--z-dims",
        type=positive_int,
        nargs="+",
        metavar="N",
        help="latent dimensions (default: 2 5 10)",
    )
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="models (default: vae cvae)")
    p.add_argument(
        "--priors",
        nargs="+",
        choices=PRIOR_NAMES,
        metavar="PRIOR",
        help=f"priors trained with each model, of {', '.join(PRIOR_NAMES)} (default: normal)",
    )
    p.add_argument(
        "--seeds",
        type=non_negative_int,
        nargs="+",
        metavar="N",
        help="train every configuration with each of these seeds (runs named ...-sN)",
    )
    p.add_argument(
        "--ais-num-test",
        type=positive_int,
        metavar="N",
        help="also run AIS on N of the test images of every run, and BDMC for each AIS'd "
        "source on data simulated from it (default: no AIS)",
    )
    p.add_argument("--ais-steps", type=positive_int, metavar="T", help="AIS steps (500)")
    p.add_argument("--ais-chains", type=positive_int, metavar="C", help="AIS chains (16)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--quiet", action="store_true")
    add_device_flags(p, own_data=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from pyrovae.data import load_dataset
    from pyrovae.study import run_study
    from pyrovae.train import resolve_device

    budget = QUICK if args.quick else FULL
    changes = {
        k: getattr(args, k)
        for k in (
            "epochs",
            "num_samples",
            "num_test",
            "num_train",
            "ais_num_test",
            "ais_steps",
            "ais_chains",
        )
        if getattr(args, k) is not None
    }
    for key in ("z_dims", "models", "priors", "seeds"):
        if getattr(args, key) is not None:
            changes[key] = tuple(dict.fromkeys(getattr(args, key)))  # keep order, drop repeats
    budget = replace(budget, **changes)
    device = resolve_device(args.device)
    data = load_dataset("mnist", args.data_root, device=device)
    run_study(args.out, data, budget, device, seed=args.seed, progress=not args.quiet)
