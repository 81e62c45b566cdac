"""``pyrovae sample``: decode samples from a latent source of a trained run."""

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
from pyrovae.settings import SOURCE_NAMES


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sample",
        help="decode samples from the prior or any fitted latent source of a run",
        description="Decode samples of z drawn from the prior of a run, or from any latent "
        "source fitted to its encodings (--source; fitted and saved to RUN/sources/ the first "
        "time). A CVAE decodes given --label D, or labels 0..9 cycling along each row of the "
        "grid (so each column is one digit) when --label is omitted. Writes a grid for .png, "
        "an array of shape (n, 28, 28) with values in [0, 1] (the decoder's mean) for .npy.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=positive_int, default=64, help="number of samples (default: 64)")
    p.add_argument(
        "--source",
        choices=SOURCE_NAMES,
        default="prior",
        metavar="NAME",
        help=f"where z comes from, one of {', '.join(SOURCE_NAMES)} (default: prior)",
    )
    p.add_argument(
        "--label",
        type=non_negative_int,
        metavar="D",
        help="digit: the CVAE's label; for a VAE, z from the source fitted to digit D's "
        "encodings (implies --per-class)",
    )
    p.add_argument(
        "--per-class",
        action="store_true",
        help="z of digit D from the source fitted to the encodings of digit D alone "
        "(RUN/sources/NAME.per-class.pt) instead of to all digits",
    )
    p.add_argument(
        "--num-train",
        type=positive_int,
        metavar="N",
        help="when the source must be fitted: fit it to the first N training images (default: all)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output .png or .npy")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    add_checkpoint_flag(p)
    add_device_flags(p)
    p.set_defaults(func=run)


def _sample_labels(vae: Any, args: argparse.Namespace) -> Any:
    """Integer labels of the samples (None for a VAE sampled without digits)."""
    import torch

    classes = vae.y_dim if vae.conditional else 10
    if args.label is not None and args.label >= classes:
        raise CommandError(f"--label must be in 0..{classes - 1}, got {args.label}")
    if not (vae.conditional or args.per_class or args.label is not None):
        return None
    if args.label is not None:
        return torch.full((args.n,), args.label, dtype=torch.long)
    return torch.arange(args.n) % classes


def run(args: argparse.Namespace) -> None:
    import pyro

    from pyrovae.analysis.sources.store import sample_latents, saved_or_fit
    from pyrovae.images import IMAGE_SUFFIXES, save_images
    from pyrovae.runs import load_run
    from pyrovae.train import one_hot, resolve_device

    if Path(args.out).suffix not in IMAGE_SUFFIXES:
        raise CommandError(f"--out must end in .png or .npy, got {args.out!r}")
    device = resolve_device(args.device)
    vae = load_run(args.run_dir, device=device, checkpoint=args.checkpoint)
    per_class = args.per_class or (not vae.conditional and args.label is not None)
    if not vae.conditional and per_class and args.source == "prior":
        raise CommandError(
            f"--label {args.label} was given but {args.run_dir} holds an unconditional VAE; "
            "drop --label, or train with --model cvae"
            if args.label is not None
            else "--per-class with --source prior: the prior of a VAE knows no digits; "
            "pick a fitted source, e.g. --source gmm"
        )
    labels = _sample_labels(vae, args)
    pyro.set_rng_seed(args.seed)
    y = one_hot(labels.to(device), vae.y_dim) if vae.conditional else None
    if args.source == "prior" and not per_class:
        images = vae.generate(args.n, y=y)
    else:
        source = saved_or_fit(
            args.run_dir,
            vae,
            args.source,
            lambda: load_data(args.run_dir, args, device),
            per_class=per_class,
            num_train=args.num_train,
        )
        pyro.set_rng_seed(args.seed)
        z = sample_latents(source, args.n, labels, vae)
        images = vae.generate(args.n, y=y, z=z)
    nrow = 10 if labels is not None and args.label is None else None
    path = save_images(images, args.out, nrow=nrow)
    where = f"{args.source}{' (per class)' if per_class else ''}"
    print(f"wrote {args.n} samples from {where} to {path}")
