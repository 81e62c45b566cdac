"""The ``pyrovae`` command line: train, sample, evaluate, report and study."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main", "build_parser"]

MODEL_FLAGS = (
    "model",
    "prior",
    "guide",
    "likelihood",
    "z_dim",
    "hidden_dims",
    "num_components",
    "num_flows",
)
TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "elbo",
    "num_particles",
    "kl_warmup",
    "clip_norm",
    "seed",
    "device",
    "jit",
    "subset",
    "dataset",
    "data_root",
)
RESUME_FLAGS = {"epochs", "device", "data_root"}


class CommandError(Exception):
    """A user error reported as one line, without a traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _add_train(sub: Any) -> None:
    from pyrovae.data import DATASETS
    from pyrovae.guides import GUIDES
    from pyrovae.models import LIKELIHOODS, PRIORS
    from pyrovae.train import ELBOS

    p = sub.add_parser(
        "train",
        help="train a VAE or CVAE with SVI and write a run directory",
        description="Train a VAE or CVAE on MNIST with SVI. Writes config.json, metrics.csv, "
        "checkpoint.pt and best.pt to --out.",
    )
    # Defaults are None so that --resume can tell which flags were given.
    p.add_argument("--dataset", choices=sorted(DATASETS), help="dataset (default: mnist)")
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="directory holding MNIST/raw/ (default: $PYROVAE_DATA or the cache)",
    )
    p.add_argument("--model", choices=["vae", "cvae"], help="model (default: vae)")
    p.add_argument("--prior", choices=sorted(PRIORS), help="prior p(z) (default: normal)")
    p.add_argument("--guide", choices=sorted(GUIDES), help="guide q(z|x) (default: diagonal)")
    p.add_argument(
        "--likelihood",
        choices=sorted(LIKELIHOODS),
        help="likelihood p(x|z) (default: bernoulli, on dynamically binarized pixels)",
    )
    p.add_argument(
        "--z-dim", type=_positive_int, metavar="N", help="latent dimension (default: 50)"
    )
    p.add_argument(
        "--hidden-dims",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="encoder hidden widths; the decoder mirrors them (default: 400 400)",
    )
    p.add_argument(
        "--num-components",
        type=_positive_int,
        metavar="K",
        help="components of the mog/vamp prior (default: 10)",
    )
    p.add_argument(
        "--num-flows",
        type=_positive_int,
        metavar="K",
        help="flow steps of a flow prior or flow guide (default: 2)",
    )
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs (default: 10)")
    p.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="batch size (default: 128)"
    )
    p.add_argument(
        "--lr", type=_positive_float, metavar="F", help="Adam learning rate (default: 1e-3)"
    )
    p.add_argument(
        "--elbo",
        choices=ELBOS,
        help="objective: trace (Trace_ELBO), meanfield (TraceMeanField_ELBO, analytic "
        "KL), iwae (importance-weighted bound) (default: meanfield)",
    )
    p.add_argument(
        "--num-particles",
        type=_positive_int,
        metavar="K",
        help="particles per datum, vectorized; K of the IWAE bound (default: 1)",
    )
    p.add_argument(
        "--kl-warmup",
        type=_non_negative_int,
        metavar="N",
        help="epochs of linear KL warm-up from 0 to 1 (default: 0)",
    )
    p.add_argument(
        "--clip-norm",
        type=_positive_float,
        metavar="F",
        help="clip the gradient norm (default: no clipping)",
    )
    p.add_argument(
        "--subset", type=_positive_int, metavar="N", help="use only the first N training examples"
    )
    p.add_argument("--seed", type=_non_negative_int, metavar="N", help="random seed (default: 0)")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        help="auto picks CUDA when present (default: auto)",
    )
    p.add_argument(
        "--jit",
        action="store_true",
        default=None,
        help="compile the ELBO with torch.jit (trace/meanfield, no warm-up)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from checkpoint.pt with its config.json; "
        "only --epochs, --device and --data-root may be given",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading when the data files are absent",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> None:
    from pyrovae.build import ModelConfig
    from pyrovae.data import load_dataset
    from pyrovae.runs import read_config, read_metrics
    from pyrovae.train import TrainConfig, resolve_device, train

    given = {k for k in MODEL_FLAGS + TRAIN_FLAGS if getattr(args, k) is not None}
    out = Path(args.out)
    if args.resume:
        extra = sorted(given - RESUME_FLAGS)
        if extra:
            flags = ", ".join("--" + k.replace("_", "-") for k in extra)
            raise CommandError(
                f"--resume takes its settings from {out / 'config.json'}; drop {flags} "
                "(only --epochs, --device and --data-root may be given)"
            )
        if not (out / "checkpoint.pt").is_file():
            raise CommandError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
        saved = read_config(out)
        model_config = saved.model
        train_kwargs = {f.name: getattr(saved.train, f.name) for f in fields(TrainConfig)}
        train_kwargs.update({k: getattr(args, k) for k in given})
    else:
        model_kwargs = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}
        model_config = ModelConfig(**model_kwargs)
        train_kwargs = {"elbo": "meanfield"}
        train_kwargs.update(
            {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
        )
    train_config = TrainConfig(**train_kwargs)
    device = resolve_device(train_config.device)
    data = load_dataset(
        train_config.dataset, train_config.data_root, device=device, download=not args.no_download
    )
    train(model_config, train_config, data, out, resume=args.resume, progress=not args.quiet)
    metrics = read_metrics(out)
    if metrics:
        last = metrics[-1]
        best = max(row["val_elbo"] for row in metrics)
        print(
            f"{out}: epoch {last['epoch']}, train ELBO {last['train_elbo']:.3f}, "
            f"val ELBO {last['val_elbo']:.3f}, best val ELBO {best:.3f}"
        )


def _add_sample(sub: Any) -> None:
    p = sub.add_parser(
        "sample",
        help="decode samples from the prior of a trained run",
        description="Decode samples drawn from the prior of a run (for a CVAE, of one digit, "
        "or rows of every digit when --label is omitted). Writes a grid for .png, an array "
        "of shape (n, 28, 28) with values in [0, 1] (the decoder's mean) for .npy.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=_positive_int, default=64, help="number of samples (default: 64)")
    p.add_argument("--label", type=_non_negative_int, metavar="D", help="digit (CVAE only)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .png or .npy")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args: argparse.Namespace) -> None:
    import pyro
    import torch

    from pyrovae.images import IMAGE_SUFFIXES, save_images
    from pyrovae.runs import load_run
    from pyrovae.train import one_hot

    if Path(args.out).suffix not in IMAGE_SUFFIXES:
        raise CommandError(f"--out must end in .png or .npy, got {args.out!r}")
    vae = load_run(args.run_dir, checkpoint=args.checkpoint)
    pyro.set_rng_seed(args.seed)
    y = None
    if vae.conditional:
        if args.label is not None and args.label >= vae.y_dim:
            raise CommandError(f"--label must be in 0..{vae.y_dim - 1}, got {args.label}")
        labels = (
            torch.full((args.n,), args.label, dtype=torch.long)
            if args.label is not None
            else torch.arange(args.n) % vae.y_dim
        )
        y = one_hot(labels, vae.y_dim)
    elif args.label is not None:
        raise CommandError(
            f"--label {args.label} was given but {args.run_dir} holds an unconditional VAE; "
            "drop --label, or train with --model cvae"
        )
    images = vae.generate(args.n, y=y)
    nrow = vae.y_dim if (vae.conditional and args.label is None) else None
    path = save_images(images, args.out, nrow=nrow)
    print(f"wrote {args.n} samples to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pyrovae",
        description="VAEs and CVAEs as Pyro model/guide pairs: train, sample and study them.",
    )
    from pyrovae import __version__

    parser.add_argument("--version", action="version", version=f"pyrovae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


COMMANDS: list[Callable[[Any], None]] = [_add_train, _add_sample]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pyrovae`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
        print(f"pyrovae {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyrovae {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
