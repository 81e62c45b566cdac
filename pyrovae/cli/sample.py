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
from pyrovae.cli.from_python import add_from_python_flags, check_target, load_pair
from pyrovae.settings import SOURCE_NAMES

DRAWS = ("mean", "sample")  # pyrovae.export.DRAWS, without importing torch to parse


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sample",
        help="decode samples from the prior or any fitted latent source of a run (or of "
        "a Pyro pair, --from-python)",
        description="Decode samples of z drawn from the prior of a run, or from any latent "
        "source fitted to its encodings (--source; fitted and saved to RUN/sources/ the first "
        "time), in the data's own units: the decoder's mean, or a draw from p(x | z) with "
        "--draw sample. A CVAE decodes given --label K, or cycles over its classes along each "
        "row of the grid when --label is omitted (so each column is one class). --out FILE.npy "
        "writes an array (n, C, H, W) for images, (n, D) for vectors ((n, 28, 28) for the built-in "
        "28 x 28 grey data sets) and labels to FILE.labels.npy; .npz holds x and y; .csv one row "
        "per sample with a header and a label column; DIR/ an image folder of PNG files (one "
        "subfolder per class); .png a grid. 8-bit data are written as integers 0..255 (uint8). "
        "FILE.json (DIR/samples.json) records the run, source, seed and draw.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?")
    add_from_python_flags(p)
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
        metavar="K",
        help="class: the CVAE's label; for a VAE, z from the source fitted to class K's "
        "encodings (implies --per-class)",
    )
    p.add_argument(
        "--per-class",
        action="store_true",
        help="z of class K from the source fitted to the encodings of class K alone "
        "(RUN/sources/NAME.per-class.pt) instead of to all classes",
    )
    p.add_argument(
        "--num-train",
        type=positive_int,
        metavar="N",
        help="when the source must be fitted: fit it to the first N training images (default: all)",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="output: FILE.npy, FILE.npz, FILE.csv, DIR/ (an image folder) or FILE.png (a grid)",
    )
    p.add_argument(
        "--draw",
        choices=DRAWS,
        default="mean",
        help="mean: the decoder's mean E[x | z] (8-bit data rounded); sample: a draw from "
        "p(x | z) (default: mean)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: 0)")
    add_checkpoint_flag(p)
    add_device_flags(p)
    p.set_defaults(func=run)


def _labels(args: argparse.Namespace, classes: list[int], where: str) -> Any:
    """Integer labels of the samples: ``--label`` for every one, else cycling over ``classes``."""
    import torch

    if args.label is not None:
        if args.label not in classes:
            raise CommandError(
                f"--label must be in {_span(classes)}, got {args.label} ({where}); "
                "pick one of those classes"
            )
        return torch.full((args.n,), args.label, dtype=torch.long)
    return torch.tensor(classes, dtype=torch.long)[torch.arange(args.n) % len(classes)]


def _span(classes: list[int]) -> str:
    if classes == list(range(len(classes))):
        return f"0..{len(classes) - 1}"
    return ", ".join(map(str, classes))


def run(args: argparse.Namespace) -> None:
    import pyro

    from pyrovae.analysis.sources.store import fit_run_per_class, fit_run_sources, saved_or_fit
    from pyrovae.export import check_exportable, draw_samples, output_format, write_samples
    from pyrovae.images import image_shape_of, value_kind_of
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    check_target(args)
    fmt = output_format(args.out)
    device = resolve_device(args.device)
    if args.from_python is not None:
        vae, data = load_pair(args, device)
        shape, kind = image_shape_of(data), data.kind
    else:
        vae = load_run(args.run_dir, device=device, checkpoint=args.checkpoint)
        shape, kind = image_shape_of(vae), value_kind_of(vae)
    check_exportable(fmt, args.out, shape, kind)
    what, fix = (
        (f"{args.run_dir} holds an unconditional VAE", "train with --model cvae")
        if args.run_dir
        else ("the pair is an unconditional VAE", "give a CVAE pair, model(x, y)")
    )
    per_class = args.per_class or (not vae.conditional and args.label is not None)
    if not vae.conditional and per_class and args.source == "prior":
        raise CommandError(
            f"--label {args.label} was given but {what}; drop --label, or {fix}"
            if args.label is not None
            else "--per-class with --source prior: the prior of a VAE knows no digits or other "
            "classes; pick a fitted source, e.g. --source gmm"
        )
    labels, classes = None, list(range(vae.y_dim))
    if vae.conditional:
        labels = _labels(args, classes, f"the CVAE has {vae.y_dim} classes")
    source = None
    if args.from_python is not None and per_class:  # no run directory to save a fit to
        source = fit_run_per_class(vae, data.train, args.source, num_train=args.num_train)
    elif args.from_python is not None and args.source != "prior":
        source = fit_run_sources(vae, data.train, [args.source], num_train=args.num_train)
        source = source[args.source]
    elif args.source != "prior" or per_class:
        source = saved_or_fit(
            args.run_dir,
            vae,
            args.source,
            lambda: load_data(args.run_dir, args, device),
            per_class=per_class,
            num_train=args.num_train,
        )
    if per_class and not vae.conditional:
        classes = sorted(source)
        labels = _labels(args, classes, f"the classes of the per-class {args.source}")
    pyro.set_rng_seed(args.seed)
    x = draw_samples(vae, args.n, source=source, labels=labels, draw=args.draw)
    cycling = labels is not None and args.label is None
    num_classes = max(classes) + 1 if labels is not None else None
    if labels is None:
        rule = None
    elif args.label is not None:
        rule = f"--label {args.label}: every sample"
    else:
        rule = (
            f"cycling: sample i has class i mod {len(classes)}"
            if classes == list(range(len(classes)))
            else f"cycling over classes {_span(classes)} in turn"
        )
    record = {
        "source": args.source,
        "per_class": per_class,
        "seed": args.seed,
        "label_rule": rule,
        "num_train": args.num_train,
    }
    if args.from_python is not None:
        params = str(Path(args.params).resolve()) if args.params else None
        record.update(from_python=args.from_python, params=params, dataset=data.name)
    paths = write_samples(
        x,
        args.out,
        vae=vae,
        labels=labels,
        draw=args.draw,
        num_classes=num_classes,
        record=record,
        nrow=len(classes) if cycling else None,
        image_shape=shape,
        kind=kind,
    )
    where = f"{args.source}{' (per class)' if per_class else ''}"
    print(f"wrote {args.n} samples ({args.draw}) from {where} to {paths[0]}; record {paths[-1]}")
