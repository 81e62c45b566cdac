"""``pyrovae fit-sources``: fit latent sources to a run's encodings and save them with it."""

from __future__ import annotations

import argparse
from typing import Any

from pyrovae.cli.common import (
    add_checkpoint_flag,
    add_device_flags,
    load_data,
    non_negative_int,
    positive_int,
)
from pyrovae.settings import (
    SOURCE_NAMES,
    EvaluationSettings,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "fit-sources",
        help="fit latent sources to a run's encodings and save them with the run",
        description="Fit latent sources (prior, aggregated posterior, Gaussian fits, GMM, "
        "flow) to the encoder's posteriors on the training images and save each to "
        "RUN/sources/NAME.pt (tensors only, with the options it was fitted with), as "
        "`pyrovae evaluate` does; `pyrovae sample --source NAME` and "
        "pyrovae.analysis.sources.store.load_sources(RUN) read them back.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--sources",
        nargs="+",
        choices=SOURCE_NAMES,
        default=list(SOURCE_NAMES),
        metavar="NAME",
        help=f"sources to fit (default: all of {', '.join(SOURCE_NAMES)})",
    )
    p.add_argument(
        "--num-train",
        type=positive_int,
        metavar="N",
        help="fit to the first N training images (default: all 50,000)",
    )
    p.add_argument(
        "--per-class",
        action="store_true",
        help="also fit each source to each digit's encodings (RUN/sources/NAME.per-class.pt)",
    )
    p.add_argument(
        "--flow-steps",
        type=positive_int,
        default=EvaluationSettings.flow_steps,
        metavar="N",
        help=f"optimizer steps of the flow (default: {EvaluationSettings.flow_steps})",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    add_checkpoint_flag(p)
    add_device_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from pyrovae.analysis.evaluation.reuse import fitting_options
    from pyrovae.analysis.sources.store import fit_run_per_class, fit_run_sources, source_path
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    device = resolve_device(args.device)
    vae = load_run(args.run_dir, device=device, checkpoint=args.checkpoint)
    data = load_data(args.run_dir, args, device)
    names = list(dict.fromkeys(args.sources))
    options = fitting_options(EvaluationSettings(sources=tuple(names), flow_steps=args.flow_steps))
    kwargs = {"num_train": args.num_train, "seed": args.seed, "run_dir": args.run_dir}
    fit_run_sources(vae, data.train, names, options=options, **kwargs)
    for name in names:
        print(f"wrote {source_path(args.run_dir, name)}")
    if args.per_class:
        for name in names:
            fit_run_per_class(vae, data.train, name, options=options.get(name), **kwargs)
            print(f"wrote {source_path(args.run_dir, name, per_class=True)}")
