"""``pyrovae train``: train a VAE, CVAE or semi-supervised M2 with SVI into a run directory,
or resume one."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from pyrovae.cli.common import (
    CommandError,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_fraction,
)
from pyrovae.settings import (
    ACTIVATION_NAMES,
    DATASET_NAMES,
    ELBO_NAMES,
    GUIDE_NAMES,
    LIKELIHOOD_NAMES,
    LR_SCHEDULE_NAMES,
    NET_NAMES,
    PRIOR_NAMES,
    TRAIN_MODEL_NAMES,
)

MODEL_FLAGS = (
    "model",
    "prior",
    "guide",
    "likelihood",
    "z_dim",
    "hidden_dims",
    "activation",
    "num_components",
    "num_flows",
    "net",
    "channels",
)


TRAIN_FLAGS = (
    "epochs",
    "batch_size",
    "lr",
    "lr_schedule",
    "adam_eps",
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
    "data",
    "label_column",
    "image_size",
    "val_fraction",
    "test_fraction",
    "split_seed",
    "labels",
    "label_seed",
    "aux_weight",
)

SEMI_SUPERVISED_FLAGS = ("labels", "label_seed", "aux_weight")
"""Flags of the semi-supervised M2 only."""

USER_DATA_FLAGS = ("label_column", "image_size", "val_fraction", "test_fraction", "split_seed")
"""How the user's own data (--data) are read and split; nothing for a built-in data set."""

RESUME_FLAGS = {"epochs", "device", "data_root", "data"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a VAE or CVAE with SVI and write a run directory",
        description="Train a VAE, CVAE or semi-supervised M2 with SVI on a built-in data set "
        "(--dataset) or your own data (--data). Writes config.json, metrics.csv, checkpoint.pt "
        "and best.pt to --out (for M2, best.pt is the epoch of best validation accuracy).",
    )
    # Defaults are None so that --resume can tell which flags were given.
    p.add_argument("--dataset", choices=sorted(DATASET_NAMES), help="dataset (default: mnist)")
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="directory holding the data set's files as torchvision keeps them (MNIST/raw/, "
        "FashionMNIST/raw/, KMNIST/raw/, EMNIST/raw/, cifar-10-batches-py/, svhn/; "
        "default: $PYROVAE_DATA or the cache)",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="your own data instead of --dataset: an .npy, .npz (x, y, x_test, y_test), .pt or "
        ".csv file, or an image folder with one subfolder per class; the kind of values is "
        "inferred and printed, the likelihood chosen from it unless --likelihood is given",
    )
    p.add_argument(
        "--label-column",
        metavar="NAME",
        help="with --data FILE.csv: the column of integer class labels (default: unlabelled)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        metavar="N",
        help="with --data FOLDER: resize every image to N x N (needed when sizes differ)",
    )
    p.add_argument(
        "--val-fraction",
        type=unit_fraction,
        metavar="F",
        help="with --data: share of the training rows for validation (default: 0.1)",
    )
    p.add_argument(
        "--test-fraction",
        type=unit_fraction,
        metavar="F",
        help="with --data: share of the rows for the test split when the data bring none "
        "(default: 0.1)",
    )
    p.add_argument(
        "--split-seed",
        type=non_negative_int,
        metavar="N",
        help="with --data: seed of the permutation that draws the splits (default: 0)",
    )
    p.add_argument(
        "--model",
        choices=TRAIN_MODEL_NAMES,
        help="model (default: vae); m2: semi-supervised, a few labels (--labels) and the "
        "rest of the training images unlabelled",
    )
    p.add_argument(
        "--labels",
        type=positive_int,
        metavar="N",
        help="with --model m2: N training images keep their label, N / classes of each "
        "(default: all)",
    )
    p.add_argument(
        "--label-seed",
        type=non_negative_int,
        metavar="N",
        help="with --model m2: seed of the draw of the labelled images (default: 0)",
    )
    p.add_argument(
        "--aux-weight",
        type=non_negative_float,
        metavar="A",
        help="with --model m2: weight of -log q(y | x) per labelled image, Kingma et al.'s "
        "alpha (default: 15 N / labels)",
    )
    p.add_argument("--prior", choices=sorted(PRIOR_NAMES), help="prior p(z) (default: normal)")
    p.add_argument("--guide", choices=sorted(GUIDE_NAMES), help="guide q(z|x) (default: diagonal)")
    p.add_argument(
        "--likelihood",
        choices=sorted(LIKELIHOOD_NAMES),
        help="likelihood p(x|z) (default: from the data: bernoulli for values in [0, 1], "
        "dynamically binarized; discretized-logistic for 8-bit integers; gaussian otherwise)",
    )
    p.add_argument("--z-dim", type=positive_int, metavar="N", help="latent dimension (default: 50)")
    p.add_argument(
        "--hidden-dims",
        type=positive_int,
        nargs="+",
        metavar="N",
        help="encoder hidden widths; the decoder mirrors them (default: 400 400)",
    )
    p.add_argument(
        "--net",
        choices=NET_NAMES,
        help="encoder and decoder networks: mlp, or conv for images (a small residual "
        "convolutional net of stride-2 convolutions, then one fully connected layer of the "
        "last --hidden-dims width; the decoder maps z linearly to its first feature map) "
        "(default: mlp)",
    )
    p.add_argument(
        "--channels",
        type=positive_int,
        nargs="+",
        metavar="N",
        help="widths of the stride-2 convolutions of --net conv, each halving the image "
        "(default: 32 64)",
    )
    p.add_argument(
        "--activation",
        choices=ACTIVATION_NAMES,
        help="hidden activation of the encoder and decoder (default: relu)",
    )
    p.add_argument(
        "--num-components",
        type=positive_int,
        metavar="K",
        help="components of the mog/vamp prior (default: 10)",
    )
    p.add_argument(
        "--num-flows",
        type=positive_int,
        metavar="K",
        help="flow steps of a flow prior or flow guide (default: 2)",
    )
    p.add_argument("--epochs", type=positive_int, metavar="N", help="epochs (default: 10)")
    p.add_argument("--batch-size", type=positive_int, metavar="N", help="batch size (default: 128)")
    p.add_argument(
        "--lr", type=positive_float, metavar="F", help="Adam learning rate (default: 1e-3)"
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULE_NAMES,
        help="constant, or burda: stage i = 0..7 lasts 3^i epochs at lr * 10^(-i/7), "
        "3280 epochs in all (Burda et al. 2016) (default: constant)",
    )
    p.add_argument(
        "--adam-eps",
        type=positive_float,
        metavar="F",
        help="Adam's epsilon (default: 1e-8; Burda et al. 2016 use 1e-4)",
    )
    p.add_argument(
        "--elbo",
        choices=ELBO_NAMES,
        help="objective: trace (Trace_ELBO), meanfield (TraceMeanField_ELBO, analytic "
        "KL), iwae (importance-weighted bound) (default: meanfield)",
    )
    p.add_argument(
        "--num-particles",
        type=positive_int,
        metavar="K",
        help="particles per datum, vectorized; K of the IWAE bound (default: 1)",
    )
    p.add_argument(
        "--kl-warmup",
        type=non_negative_int,
        metavar="N",
        help="epochs of linear KL warm-up from 0 to 1 (default: 0)",
    )
    p.add_argument(
        "--clip-norm",
        type=positive_float,
        metavar="F",
        help="clip the gradient norm (default: no clipping)",
    )
    p.add_argument(
        "--subset", type=positive_int, metavar="N", help="use only the first N training examples"
    )
    p.add_argument("--seed", type=non_negative_int, metavar="N", help="random seed (default: 0)")
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
        help="continue the run in --out from checkpoint.pt with its config.json; the "
        "original command line may be given again (flags equal to the stored settings), "
        "only --epochs, --device and --data-root may change",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading when the data files are absent",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)


def _resume_conflicts(args: argparse.Namespace, names: set[str], saved: Any) -> list[str]:
    """``--flag X differs from the stored Y`` for each given flag that a resumed run cannot
    change and whose value is not the stored one (a re-run of the original command line
    gives only equal values, and resumes)."""
    out = []
    for name in sorted(names):
        section = saved.model if name in MODEL_FLAGS else saved.train
        stored, given = getattr(section, name), getattr(args, name)
        if isinstance(stored, (list, tuple)):
            stored, given = list(stored), list(given)
        if given != stored:
            out.append(
                f"--{name.replace('_', '-')} {_flag_value(given)} differs from the "
                f"stored {_flag_value(stored)}"
            )
    return out


def _check_data_flags(args: argparse.Namespace, given: set[str]) -> None:
    """--data and --dataset exclude each other; the reading flags need --data."""
    if args.data is not None and args.dataset is not None:
        raise CommandError(
            f"--data {args.data} and --dataset {args.dataset} both name the data; give one"
        )
    if args.data is None:
        stray = [f"--{k.replace('_', '-')}" for k in USER_DATA_FLAGS if k in given]
        if stray:
            raise CommandError(
                f"{', '.join(stray)} appl{'y' if len(stray) > 1 else 'ies'} to your own data "
                "only; add --data PATH or drop the flag"
            )


def _flag_value(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def run(args: argparse.Namespace) -> None:
    from pyrovae.data import load_dataset
    from pyrovae.distributed import process_group
    from pyrovae.run_data import model_config_for, read_user_data
    from pyrovae.runs import read_config, read_metrics
    from pyrovae.train import TrainConfig, resolve_device, train

    given = {k for k in MODEL_FLAGS + TRAIN_FLAGS if getattr(args, k) is not None}
    out = Path(args.out)
    if args.resume:
        if not (out / "checkpoint.pt").is_file():
            raise CommandError(f"--resume: no checkpoint at {out / 'checkpoint.pt'}")
        saved = read_config(out)
        differ = _resume_conflicts(args, given - RESUME_FLAGS, saved)
        if differ:
            raise CommandError(
                f"--resume continues the run in {out} with the settings of its config.json, "
                f"but {'; '.join(differ)}; drop those flags (or give the stored values), or "
                "train into a new --out (only --epochs, --device and --data-root may change)"
            )
        model_config = saved.model
        train_kwargs = {f.name: getattr(saved.train, f.name) for f in fields(TrainConfig)}
        train_kwargs.update({k: getattr(args, k) for k in given & RESUME_FLAGS})
    else:
        _check_data_flags(args, given)
        stray = [f for f in SEMI_SUPERVISED_FLAGS if f in given]
        if stray and args.model != "m2":
            raise CommandError(
                f"--{stray[0].replace('_', '-')} applies to --model m2 only; drop it, or add "
                "--model m2"
            )
        model_config = None
        model_kwargs = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}
        train_kwargs = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if train_kwargs.get("data_root"):
        train_kwargs["data_root"] = str(Path(train_kwargs["data_root"]).resolve())
    if train_kwargs.get("data"):
        train_kwargs["data"] = str(Path(train_kwargs["data"]).expanduser().resolve())
    train_config = TrainConfig(**train_kwargs)
    with process_group(train_config.device) as context:
        # under torchrun each process moves only its shard to its device
        device = resolve_device(train_config.device) if context is None else "cpu"
        speaks = context is None or context.is_writer
        if train_config.data is not None:
            data: Any = read_user_data(train_config)  # the run's fingerprint when resuming
            splits = data.splits
            if speaks:
                print(data.describe())
                print(f"splits: {data.split_rule}")
        else:
            data = splits = load_dataset(
                str(train_config.dataset),
                train_config.data_root,
                device=device,
                download=not args.no_download,
            )
        if model_config is None:
            model_config, notes = model_config_for(splits, model_kwargs)
            if speaks:
                for line in notes:
                    print(line)
        train(
            model_config,
            train_config,
            data,
            out,
            resume=args.resume,
            progress=not args.quiet,
            context=context,
        )
        if context is not None and not context.is_writer:
            return
    metrics = read_metrics(out)
    if metrics:
        last = metrics[-1]
        best = max(row["val_elbo"] for row in metrics)
        accuracy = last.get("val_accuracy")
        if accuracy is not None and accuracy == accuracy:  # an M2 run: q(y | x) too
            best_accuracy = max(row["val_accuracy"] for row in metrics)
            print(
                f"{out}: epoch {last['epoch']}, val ELBO {last['val_elbo']:.3f}, val accuracy "
                f"{100 * accuracy:.2f}%, best {100 * best_accuracy:.2f}% (best.pt)"
            )
            return
        print(
            f"{out}: epoch {last['epoch']}, train ELBO {last['train_elbo']:.3f}, "
            f"val ELBO {last['val_elbo']:.3f}, best val ELBO {best:.3f}"
        )
