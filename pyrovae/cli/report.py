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
from pyrovae.cli.from_python import add_from_python_flags, load_pair


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
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_from_python_flags(p, beside_runs=True)
    p.add_argument(
        "--name",
        metavar="NAME",
        help="with --from-python: the pair's name in the report (default: FILE-FUNC)",
    )
    p.add_argument(
        "--evaluation",
        metavar="FILE.json",
        help="with --from-python: show this evaluation of the pair (pyrovae evaluate "
        "--from-python ... --out FILE.json) instead of evaluating it again; its settings "
        "and weights must match",
    )
    p.add_argument(
        "--diagnostics",
        metavar="DIR",
        help="with --from-python: the pair's diagnostics (pyrovae diagnose --from-python "
        "... --out DIR), shown as its inference-quality section",
    )
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

    check_pair_flags(args)
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
    saved = saved_evaluation(args, settings, asked)
    device = resolve_device(args.device)
    data = load_data(args.run_dirs[0], args, device) if args.run_dirs else None
    models = []
    if args.from_python is not None:
        pair, data = pair_entry(args, device, data, saved)
        models.append(pair)
    report_runs(
        [Path(r) for r in args.run_dirs],
        data,
        args.out,
        settings,
        device,
        asked=asked,
        reevaluate=args.reevaluate,
        progress=not args.quiet,
        models=models,
    )


def check_pair_flags(args: argparse.Namespace) -> None:
    """RUN_DIRs, --from-python or both; the pair's own flags need --from-python; a pair
    beside runs is read on their data (no --dataset)."""
    pair_flags = ("params", "dataset", "name", "evaluation", "diagnostics")
    if args.from_python is None:
        if not args.run_dirs:
            raise CommandError("give one or more RUN_DIRs, or --from-python FILE.py:FUNC")
        stray = [f for f in pair_flags if getattr(args, f) is not None]
        if stray:
            raise CommandError(
                f"--{stray[0]} applies to --from-python only; drop it (a run directory knows "
                "its weights, data and evaluation)"
            )
    elif args.run_dirs and args.dataset is not None:
        raise CommandError(
            f"--dataset {args.dataset}: a pair reported beside runs is read on the runs' data; "
            "drop --dataset (or report the pair alone)"
        )
    if args.evaluation is not None and not Path(args.evaluation).is_file():
        raise CommandError(f"--evaluation {args.evaluation!r} is not a file")
    if args.diagnostics is not None and not (Path(args.diagnostics) / "diagnostics.json").is_file():
        raise CommandError(
            f"--diagnostics {args.diagnostics!r} holds no diagnostics.json; give the --out "
            "directory of pyrovae diagnose --from-python"
        )


def saved_evaluation(
    args: argparse.Namespace, settings: Any, asked: set[str]
) -> dict[str, Any] | None:
    """``--evaluation FILE``, read and checked against the settings asked (before any work),
    or None; with ``--reevaluate`` the pair is evaluated again instead."""
    from pyrovae.checkpoint import read_json

    if args.evaluation is None or args.reevaluate:
        return None
    try:
        saved = read_json(Path(args.evaluation))
    except ValueError as err:
        raise CommandError(f"--evaluation {args.evaluation}: {err}") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("sources"), dict):
        raise CommandError(
            f"--evaluation {args.evaluation} is not an evaluation (pyrovae evaluate's JSON)"
        )
    diffs = settings.differences(saved.get("settings"), asked)
    if diffs:
        raise CommandError(
            f"--evaluation {args.evaluation} was made with other settings ({'; '.join(diffs)}); "
            "ask for its settings, or pass --reevaluate to evaluate the pair again"
        )
    return saved


def pair_entry(
    args: argparse.Namespace, device: Any, data: Any, saved: dict[str, Any] | None
) -> tuple[Any, Any]:
    """The pair as a :class:`~pyrovae.study.ReportedModel`, and the data it is read on."""
    from pyrovae.analysis.evaluation.reuse import StaleEvaluationError, check_weights
    from pyrovae.analysis.posterior.diagnose import load_diagnostics
    from pyrovae.study import ReportedModel

    vae, data = load_pair(args, device, data)
    if saved is not None:
        try:
            check_weights(saved, vae, f"--evaluation {args.evaluation}")
        except StaleEvaluationError as err:
            raise CommandError(str(err)) from None
    diagnostics = None
    if args.diagnostics is not None:
        diagnostics = load_diagnostics(None, vae, directory=args.diagnostics)
    file, _, func = args.from_python.rpartition(":")
    name = args.name or f"{Path(file).stem}-{func}"
    if name in {Path(r).name for r in args.run_dirs}:
        raise CommandError(
            f"the pair's name {name!r} is a run's name too; pass --name with another one"
        )
    return ReportedModel(name, vae, saved, diagnostics), data
