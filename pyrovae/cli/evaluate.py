"""``pyrovae evaluate``: every latent source's held-out log-likelihood, samples and surgery."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pyrovae.cli.common import (
    CommandError,
    add_device_flags,
    load_data,
)
from pyrovae.cli.evaluation_flags import (
    add_evaluation_flags,
    classifier_for,
    settings_from,
)
from pyrovae.cli.from_python import add_from_python_flags, check_target, load_pair


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="held-out log-likelihood and sample quality of every latent source",
        description="Fit latent sources (prior, aggregated posterior, Gaussian fits, GMM, flow) "
        "on the training set, estimate the held-out log-likelihood of the decoder paired with "
        "each (importance sampling from proposals adapted to each source, L_K at K = 1, 10, "
        "100, 1000 and K, PSIS k-hat; optionally AIS and BDMC), score decoded samples "
        "with an MNIST classifier, and run ELBO surgery. Prints a table, writes JSON and "
        "saves the fitted sources to RUN_DIR/sources/.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    add_from_python_flags(p)
    add_evaluation_flags(p)
    p.add_argument(
        "--out",
        metavar="FILE.json",
        help="where to write the JSON (default: RUN_DIR/evaluation.json)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from pyrovae.analysis.evaluation.evaluate import format_evaluation
    from pyrovae.analysis.evaluation.reuse import evaluate_with
    from pyrovae.checkpoint import write_json
    from pyrovae.distributed import process_group
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    check_target(args)
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    if out.suffix != ".json":
        raise CommandError(f"--out must end in .json, got {str(out)!r}")
    settings, _ = settings_from(args)
    with process_group(args.device) as context:
        device = resolve_device(args.device) if context is None else context.device
        if args.from_python is not None:
            vae, data = load_pair(args, device)
        else:
            vae = load_run(args.run_dir, device=device, checkpoint=settings.checkpoint)
            data = load_data(args.run_dir, args, device)
        if settings.ais_num_test:
            size = len(getattr(data, settings.split))
            held_out = min(settings.num_test or size, size)
            if settings.ais_num_test > held_out:
                raise CommandError(
                    f"--ais-num-test {settings.ais_num_test} exceeds the {held_out} held-out "
                    "images evaluated; lower it or raise --num-test"
                )
        writer = context is None or context.is_writer
        # under torchrun the other ranks only score their share of the held-out images
        classifier = classifier_for(data, settings, device) if writer else None
        evaluation, _ = evaluate_with(
            vae,
            data,
            settings,
            classifier,
            run_dir=args.run_dir if writer else None,
            progress=not args.quiet,
            context=context,
        )
        if not writer:
            return
    print(format_evaluation(evaluation))
    replaced = out.is_file()
    write_json(out, evaluation)
    saved = f"; sources saved to {Path(args.run_dir) / 'sources'}" if args.run_dir else ""
    print(f"{'replaced' if replaced else 'wrote'} {out}{saved}")
