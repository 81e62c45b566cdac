"""``pyrovae report``: the HTML report of one or more runs (evaluating what is missing)."""

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
    settings_from,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="figures and a self-contained report.html for one or more runs",
        description="Draw the figures of each run as PNG and write one self-contained "
        "report.html. A run's evaluation.json is reused when the settings given here (the "
        "same flags as `pyrovae evaluate`) match its own; a run without one is evaluated. "
        "When they differ, or it was made with other model weights (the run was trained "
        "further, another --checkpoint), report says why and stops, unless --reevaluate.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_evaluation_flags(p)
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="evaluate again and replace evaluation.json when its settings or the model "
        "weights differ",
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    add_device_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from pyrovae.analysis.evaluation.reuse import check_reusable
    from pyrovae.runs import read_config
    from pyrovae.study import report_runs
    from pyrovae.train import resolve_device

    settings, asked = settings_from(args)
    configs = [read_config(run) for run in args.run_dirs]
    datasets = {c.train.dataset or c.train.data_fingerprint for c in configs}
    if len(datasets) > 1:
        names = sorted(str(c.train.dataset or c.train.data) for c in configs)
        raise CommandError(
            f"report compares runs on the same data, but these were trained on {names}; "
            "report each data set's runs separately"
        )
    for run in args.run_dirs:  # a mismatch is refused before data and models are loaded
        check_reusable(run, settings, asked, args.reevaluate)
    device = resolve_device(args.device)
    data = load_data(args.run_dirs[0], args, device)
    report_runs(
        [Path(r) for r in args.run_dirs],
        data,
        args.out,
        settings,
        device,
        asked=asked,
        reevaluate=args.reevaluate,
        progress=not args.quiet,
    )
