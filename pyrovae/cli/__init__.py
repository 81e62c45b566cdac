"""The ``pyrovae`` command line: train, sample, fit-sources, evaluate, report, diagnose, study.

Each command is a module here with its arguments beside it: ``add_parser(sub)`` declares
them and ``run(args)`` runs the command; :mod:`.common` holds what they share.

Parsing needs only :mod:`pyrovae.settings` (no torch), so a bad flag is answered at once;
torch, Pyro and the library are imported by the command that runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyrovae.cli import diagnose, evaluate, fit_sources, report, sample, study, train
from pyrovae.cli.common import CommandError, Parser

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyrovae",
        description="VAEs and CVAEs as Pyro model/guide pairs: train, sample and study them.",
    )
    from pyrovae import __version__

    parser.add_argument("--version", action="version", version=f"pyrovae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS: list[Callable[[Any], None]] = [
    train.add_parser,
    sample.add_parser,
    fit_sources.add_parser,
    evaluate.add_parser,
    report.add_parser,
    diagnose.add_parser,
    study.add_parser,
]


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command leaves behind and how to go on."""
    if args.command == "train":
        out = Path(args.out)
        if (out / "checkpoint.pt").is_file():
            return (
                f"interrupted; {out / 'checkpoint.pt'} holds the last finished epoch: continue "
                f"with `pyrovae train --out {out} --resume` (add --epochs N to change the "
                "total)"
            )
        return "interrupted before the first epoch finished; nothing to resume"
    if args.command == "study":
        return (
            "interrupted; run the same command again to continue (finished runs are kept, "
            "an unfinished one resumes from its checkpoint)"
        )
    return "interrupted; files are written whole or not at all, so nothing was left half-done"


def _rank_label() -> str:
    """`` (rank 1 of 2)`` in a process of a torchrun job (read from its environment)."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world == "1":
        return ""
    return f" (rank {os.environ.get('RANK', '?')} of {world})"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyrovae`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from pyrovae.data import DataNotFoundError
        from pyrovae.train import NonFiniteLossError

        try:
            args.func(args)
        except (
            CommandError,
            ValueError,
            FileNotFoundError,
            FileExistsError,
            DataNotFoundError,
            NonFiniteLossError,
        ) as err:
            print(f"pyrovae {args.command}{_rank_label()}: error: {err}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print(f"pyrovae {args.command}: {_interrupted(args)}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
