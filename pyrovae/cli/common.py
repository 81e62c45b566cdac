"""What every command shares: the one-line error, the parser, argument types, device and
checkpoint flags, and loading the run's data set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from pyrovae.settings import CHECKPOINT_NAMES


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def unit_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}")
    return value


def add_device_flags(p: argparse.ArgumentParser, own_data: bool = True) -> None:
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="directory holding the data set's files as torchvision keeps them (MNIST/raw/, "
        "FashionMNIST/raw/, KMNIST/raw/, EMNIST/raw/, cifar-10-batches-py/, svhn/; "
        "default: the run's, $PYROVAE_DATA or the cache)",
    )
    if own_data:
        p.add_argument(
            "--data",
            metavar="PATH",
            help="where the run's own data are now, if they moved (their fingerprint must "
            "match the run's; default: where the run read them)",
        )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto picks CUDA when present (default: auto)",
    )


def add_checkpoint_flag(p: argparse.ArgumentParser, default: str | None = "best") -> None:
    p.add_argument(
        "--checkpoint",
        choices=CHECKPOINT_NAMES,
        default=default,
        help="weights to load: best (best validation ELBO) or last (default: best)",
    )


def load_data(run_dir: str, args: argparse.Namespace, device: Any) -> Any:
    """The run's splits: its built-in data set (``--data-root``, else where it was read) or
    its own data (``--data``, else where it was read; the fingerprint must match)."""
    from pyrovae.run_data import open_data
    from pyrovae.runs import read_config

    config = read_config(run_dir)
    path = getattr(args, "data", None)
    if config.train.data is not None or path is not None:
        return open_data(config.train, device, path=path)
    root = args.data_root
    stored = config.train.data_root
    if root is None and stored is not None:
        if Path(stored).is_dir():
            root = stored
        else:  # the run was trained elsewhere: say so, then look where a run without one would
            print(
                f"the data root stored in {Path(run_dir) / 'config.json'} ({stored}) does not "
                "exist here; looking in $PYROVAE_DATA and the cache (or pass --data-root DIR)",
                file=sys.stderr,
            )
    return open_data(config.train, device, root=root)


def count_or_all(text: str) -> int | str:
    """A positive count, or ``"all"``."""
    return "all" if text == "all" else positive_int(text)
