"""The ``pyrovae`` command line: train, sample, fit-sources, evaluate, report and study.

Parsing needs only :mod:`pyrovae.settings` (no torch), so a bad flag is answered at once;
torch, Pyro and the library are imported by the command that runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from pyrovae.settings import (
    ACTIVATION_NAMES,
    CHECKPOINT_NAMES,
    DATASET_NAMES,
    ELBO_NAMES,
    FULL,
    GUIDE_NAMES,
    LIKELIHOOD_NAMES,
    LR_SCHEDULE_NAMES,
    MODEL_NAMES,
    PRIOR_NAMES,
    PROPOSAL_NAMES,
    QUICK,
    SOURCE_NAMES,
    SPLIT_NAMES,
    EvaluationSettings,
)

__all__ = ["main", "build_parser"]

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
    p = sub.add_parser(
        "train",
        help="train a VAE or CVAE with SVI and write a run directory",
        description="Train a VAE or CVAE on MNIST with SVI. Writes config.json, metrics.csv, "
        "checkpoint.pt and best.pt to --out.",
    )
    # Defaults are None so that --resume can tell which flags were given.
    p.add_argument("--dataset", choices=sorted(DATASET_NAMES), help="dataset (default: mnist)")
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="directory holding MNIST/raw/ (default: $PYROVAE_DATA or the cache)",
    )
    p.add_argument("--model", choices=MODEL_NAMES, help="model (default: vae)")
    p.add_argument("--prior", choices=sorted(PRIOR_NAMES), help="prior p(z) (default: normal)")
    p.add_argument("--guide", choices=sorted(GUIDE_NAMES), help="guide q(z|x) (default: diagonal)")
    p.add_argument(
        "--likelihood",
        choices=sorted(LIKELIHOOD_NAMES),
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
        "--activation",
        choices=ACTIVATION_NAMES,
        help="hidden activation of the encoder and decoder (default: relu)",
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
        "--lr-schedule",
        choices=LR_SCHEDULE_NAMES,
        help="constant, or burda: stage i = 0..7 lasts 3^i epochs at lr * 10^(-i/7), "
        "3280 epochs in all (Burda et al. 2016) (default: constant)",
    )
    p.add_argument(
        "--adam-eps",
        type=_positive_float,
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
    p.set_defaults(func=_cmd_train)


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


def _flag_value(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def _cmd_train(args: argparse.Namespace) -> None:
    from pyrovae.build import ModelConfig
    from pyrovae.data import load_dataset
    from pyrovae.distributed import process_group
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
        model_kwargs = {k: getattr(args, k) for k in MODEL_FLAGS if getattr(args, k) is not None}
        model_config = ModelConfig(**model_kwargs)
        train_kwargs = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    if train_kwargs.get("data_root"):
        train_kwargs["data_root"] = str(Path(train_kwargs["data_root"]).resolve())
    train_config = TrainConfig(**train_kwargs)
    with process_group(train_config.device) as context:
        # under torchrun each process moves only its shard to its device
        device = resolve_device(train_config.device) if context is None else "cpu"
        data = load_dataset(
            train_config.dataset,
            train_config.data_root,
            device=device,
            download=not args.no_download,
        )
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
        print(
            f"{out}: epoch {last['epoch']}, train ELBO {last['train_elbo']:.3f}, "
            f"val ELBO {last['val_elbo']:.3f}, best val ELBO {best:.3f}"
        )


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="directory holding MNIST/raw/ (default: the run's, $PYROVAE_DATA or the cache)",
    )
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto picks CUDA when present (default: auto)",
    )


def _add_checkpoint_flag(p: argparse.ArgumentParser, default: str | None = "best") -> None:
    p.add_argument(
        "--checkpoint",
        choices=CHECKPOINT_NAMES,
        default=default,
        help="weights to load: best (best validation ELBO) or last (default: best)",
    )


def _add_sample(sub: Any) -> None:
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
    p.add_argument("--n", type=_positive_int, default=64, help="number of samples (default: 64)")
    p.add_argument(
        "--source",
        choices=SOURCE_NAMES,
        default="prior",
        metavar="NAME",
        help=f"where z comes from, one of {', '.join(SOURCE_NAMES)} (default: prior)",
    )
    p.add_argument(
        "--label",
        type=_non_negative_int,
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
        type=_positive_int,
        metavar="N",
        help="when the source must be fitted: fit it to the first N training images (default: all)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output .png or .npy")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    _add_checkpoint_flag(p)
    _add_device_flags(p)
    p.set_defaults(func=_cmd_sample)


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


def _cmd_sample(args: argparse.Namespace) -> None:
    import pyro

    from pyrovae.analysis.source_store import sample_latents, saved_or_fit
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
            lambda: _load_data(args.run_dir, args, device),
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


def _load_data(run_dir: str, args: argparse.Namespace, device: Any) -> Any:
    from pyrovae.data import load_dataset
    from pyrovae.runs import read_config

    config = read_config(run_dir)
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
    return load_dataset(config.train.dataset, root, device)


def _add_fit_sources(sub: Any) -> None:
    p = sub.add_parser(
        "fit-sources",
        help="fit latent sources to a run's encodings and save them with the run",
        description="Fit latent sources (prior, aggregated posterior, Gaussian fits, GMM, "
        "flow) to the encoder's posteriors on the training images and save each to "
        "RUN/sources/NAME.pt (tensors only, with the options it was fitted with), as "
        "`pyrovae evaluate` does; `pyrovae sample --source NAME` and "
        "pyrovae.analysis.source_store.load_sources(RUN) read them back.",
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
        type=_positive_int,
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
        type=_positive_int,
        default=EvaluationSettings.flow_steps,
        metavar="N",
        help=f"optimizer steps of the flow (default: {EvaluationSettings.flow_steps})",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    _add_checkpoint_flag(p)
    _add_device_flags(p)
    p.set_defaults(func=_cmd_fit_sources)


def _cmd_fit_sources(args: argparse.Namespace) -> None:
    from pyrovae.analysis.evaluation_runs import fitting_options
    from pyrovae.analysis.source_store import fit_run_per_class, fit_run_sources, source_path
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    device = resolve_device(args.device)
    vae = load_run(args.run_dir, device=device, checkpoint=args.checkpoint)
    data = _load_data(args.run_dir, args, device)
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


_DEFAULTS = EvaluationSettings()


def _add_evaluation_flags(p: argparse.ArgumentParser) -> None:
    """The settings of an evaluation (:class:`pyrovae.settings.EvaluationSettings`).

    Every default is None here, so that ``report`` can tell which were asked for; the
    defaults shown are those of the settings."""
    d = _DEFAULTS
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        metavar="K",
        help=f"importance samples per held-out datum (default: {d.num_samples})",
    )
    p.add_argument(
        "--sources",
        nargs="+",
        choices=SOURCE_NAMES,
        metavar="NAME",
        help=f"latent sources (default: all of {', '.join(SOURCE_NAMES)})",
    )
    p.add_argument("--split", choices=SPLIT_NAMES, help="held-out split (default: test)")
    p.add_argument(
        "--num-test",
        type=_count_or_all,
        metavar="N|all",
        help=f"evaluate N held-out images, a fixed random subset (default: {d.num_test}; "
        "'all' for every one)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        default=None,
        help="every held-out image and every training encoding (--num-test all --num-train "
        "all): the full budget, whose cost is printed before it starts",
    )
    p.add_argument(
        "--proposal",
        choices=PROPOSAL_NAMES,
        help="importance proposal: a defensive mixture of the guide and a proposal adapted "
        "to each source, shared by all sources (adapted, default), one such mixture per "
        "source (separate), or the guide alone (guide)",
    )
    p.add_argument(
        "--ais-num-test",
        type=_positive_int,
        metavar="N",
        help="also run AIS for every source on the first N of the held-out images, and for "
        "each such source BDMC on data simulated from it (default: no AIS)",
    )
    p.add_argument(
        "--ais-steps",
        type=_positive_int,
        metavar="T",
        help=f"AIS intermediate distributions (default: {d.ais_steps})",
    )
    p.add_argument(
        "--ais-chains",
        type=_positive_int,
        metavar="C",
        help=f"AIS chains per image (default: {d.ais_chains})",
    )
    p.add_argument(
        "--ais-leapfrog",
        type=_positive_int,
        metavar="L",
        help=f"leapfrog steps per HMC transition of AIS (default: {d.ais_leapfrog})",
    )
    p.add_argument(
        "--ais-sources",
        nargs="+",
        choices=SOURCE_NAMES,
        metavar="NAME",
        help="run AIS for these sources only (default: every evaluated source; the exact "
        "aggregate costs a density over all training encodings per leapfrog step)",
    )
    p.add_argument(
        "--bdmc-num-data",
        type=_non_negative_int,
        metavar="N",
        help="data simulated from each AIS'd source for its own BDMC gap (forward AIS from "
        "the start its AIS used), with --ais-num-test; costs about twice that source's AIS "
        f"on N images (default: {d.bdmc_num_data}; 0 skips BDMC)",
    )
    p.add_argument(
        "--num-train",
        type=_count_or_all,
        metavar="N|all",
        help=f"fit the sources to the first N training images (default: {d.num_train}; "
        "'all' for all 50,000)",
    )
    p.add_argument(
        "--flow-steps",
        type=_positive_int,
        metavar="N",
        help=f"optimizer steps of the flow source (default: {d.flow_steps})",
    )
    p.add_argument(
        "--aggregate-components",
        type=_count_or_all,
        metavar="N|all",
        help="training encodings in the 'aggregate' source of a guide that is not a diagonal "
        "Normal (the flow guide: each draw costs a pass of its networks per encoding), a "
        "seeded random subset; 'all' sums all of them, exactly and slowly (default: "
        f"{d.aggregate_components}; a diagonal guide always uses all)",
    )
    p.add_argument(
        "--num-quality-samples",
        type=_positive_int,
        metavar="N",
        help=f"decoded samples per source scored by the classifier (default: "
        f"{d.num_quality_samples})",
    )
    p.add_argument(
        "--no-quality",
        dest="quality",
        action="store_false",
        default=None,
        help="skip the classifier-based sample-quality scores",
    )
    p.add_argument("--seed", type=_non_negative_int, help="random seed (default: 0)")
    _add_checkpoint_flag(p, default=None)


def _count_or_all(text: str) -> int | str:
    """A positive count, or ``"all"``."""
    return "all" if text == "all" else _positive_int(text)


def _settings(args: argparse.Namespace) -> tuple[EvaluationSettings, set[str]]:
    """The evaluation settings of the flags, and the names of those given."""
    if getattr(args, "full", None):
        for key, flag in (("num_test", "--num-test"), ("num_train", "--num-train")):
            if getattr(args, key, None) not in (None, "all"):
                raise CommandError(
                    f"--full asks for every image, but {flag} {getattr(args, key)} asks for "
                    f"fewer; drop one of them"
                )
            setattr(args, key, "all")
    asked = {f for f in _DEFAULTS.to_dict() if getattr(args, f, None) is not None}
    kwargs: dict[str, Any] = {f: getattr(args, f) for f in asked}
    for key in ("num_test", "num_train"):
        if kwargs.get(key) == "all":
            kwargs[key] = None
    for key in ("sources", "ais_sources"):
        if key in kwargs:
            kwargs[key] = tuple(dict.fromkeys(kwargs[key]))
    if args.ais_num_test is None:
        ais_only = sorted(asked & {"ais_steps", "ais_chains", "ais_leapfrog", "ais_sources"})
        if ais_only:
            flags = ", ".join("--" + k.replace("_", "-") for k in ais_only)
            raise CommandError(f"{flags} need --ais-num-test N")
    settings = EvaluationSettings(**kwargs)
    if settings.ais_sources is not None:
        missing = sorted(set(settings.ais_sources) - set(settings.sources))
        if missing:
            raise CommandError(
                f"--ais-sources names {missing}, which --sources does not evaluate; add them "
                "to --sources or drop them"
            )
    return settings, asked


def _add_evaluate(sub: Any) -> None:
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
    p.add_argument("run_dir", metavar="RUN_DIR")
    _add_evaluation_flags(p)
    p.add_argument(
        "--out",
        metavar="FILE.json",
        help="where to write the JSON (default: RUN_DIR/evaluation.json)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_device_flags(p)
    p.set_defaults(func=_cmd_evaluate)


def _classifier_for(data: Any, settings: EvaluationSettings, device: Any) -> Any:
    if not settings.quality:
        return None
    from pyrovae.analysis.classifier import load_classifier

    if data.name != "mnist":
        raise CommandError(
            f"sample quality needs the MNIST classifier, but the run uses {data.name}; "
            "pass --no-quality"
        )
    return load_classifier(data, device=device, progress=True)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from pyrovae.analysis.evaluate import format_evaluation
    from pyrovae.analysis.evaluation_runs import evaluate_with
    from pyrovae.checkpoint import write_json
    from pyrovae.distributed import process_group
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    if out.suffix != ".json":
        raise CommandError(f"--out must end in .json, got {str(out)!r}")
    settings, _ = _settings(args)
    with process_group(args.device) as context:
        device = resolve_device(args.device) if context is None else context.device
        vae = load_run(args.run_dir, device=device, checkpoint=settings.checkpoint)
        data = _load_data(args.run_dir, args, device)
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
        classifier = _classifier_for(data, settings, device) if writer else None
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
    print(
        f"{'replaced' if replaced else 'wrote'} {out}; sources saved to "
        f"{Path(args.run_dir) / 'sources'}"
    )


def _add_report(sub: Any) -> None:
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
    _add_evaluation_flags(p)
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="evaluate again and replace evaluation.json when its settings or the model "
        "weights differ",
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    _add_device_flags(p)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> None:
    from pyrovae.analysis.evaluation_runs import check_reusable
    from pyrovae.runs import read_config
    from pyrovae.study import report_runs
    from pyrovae.train import resolve_device

    settings, asked = _settings(args)
    configs = [read_config(run) for run in args.run_dirs]
    datasets = {c.train.dataset for c in configs}
    if settings.quality and datasets != {"mnist"}:
        raise CommandError(
            f"report needs MNIST runs (for the classifier), got {sorted(datasets)}; "
            "pass --no-quality"
        )
    for run in args.run_dirs:  # a mismatch is refused before data and models are loaded
        check_reusable(run, settings, asked, args.reevaluate)
    device = resolve_device(args.device)
    data = _load_data(args.run_dirs[0], args, device)
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


def _add_diagnose(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose",
        help="NUTS reference posteriors and inference gaps of a run's guide",
        description="For a few test images of every class: a reference posterior p(z | x) "
        "by NUTS (R-hat and ESS; a datum whose chains did not mix is flagged), the guide "
        "against it (means, standard deviations, coverage of its 90% interval), and the "
        "approximation and amortization gaps of log p(x) - ELBO (log p(x) by AIS). Writes "
        "DIR/diagnostics.json, DIR/posterior-NNNNN.nc (ArviZ NetCDF) per image and the "
        "figures DIR/posterior.png and DIR/gaps.png; pyrovae report shows them when DIR is "
        "the default RUN_DIR/diagnostics. It first says what it will do and about how long "
        "(each step's work at rates timed on this machine in its first seconds, and the "
        "flags that shorten it), then shows each step's progress on stderr.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN_DIR/diagnostics)")
    p.add_argument(
        "--num-data", type=_positive_int, default=20, metavar="N", help="images (default: 20)"
    )
    p.add_argument(
        "--nuts-data",
        type=_positive_int,
        metavar="M",
        help="NUTS reference posteriors for the first M of them only (default: all); the "
        "gaps need no NUTS and cover all N",
    )
    p.add_argument(
        "--chains", type=_positive_int, default=4, metavar="C", help="NUTS chains (default: 4)"
    )
    p.add_argument(
        "--warmup", type=_positive_int, default=300, metavar="W", help="warm-up draws (300)"
    )
    p.add_argument(
        "--samples", type=_positive_int, default=500, metavar="S", help="kept draws (500)"
    )
    p.add_argument(
        "--gap-steps", type=_positive_int, default=500, metavar="N", help="SVI steps of q* (500)"
    )
    p.add_argument(
        "--ais-steps", type=_positive_int, default=500, metavar="T", help="AIS steps (500)"
    )
    p.add_argument(
        "--ais-chains", type=_positive_int, default=16, metavar="C", help="AIS chains (16)"
    )
    p.add_argument(
        "--elbo-draws",
        type=_positive_int,
        default=1000,
        metavar="K",
        help="draws per ELBO of the guide and of q* (1000)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no plan (each step's work and time, said before it starts) and no progress",
    )
    _add_checkpoint_flag(p)
    _add_device_flags(p)
    p.set_defaults(func=_cmd_diagnose)


def _cmd_diagnose(args: argparse.Namespace) -> None:
    from pyrovae.analysis.diagnose import DiagnoseBudget, diagnose_run, diagnostics_dir
    from pyrovae.distributed import process_group
    from pyrovae.runs import load_run
    from pyrovae.train import resolve_device

    if args.nuts_data is not None and args.nuts_data > args.num_data:
        raise CommandError(
            f"--nuts-data {args.nuts_data} exceeds --num-data {args.num_data}; pass at most "
            "--num-data (or drop --nuts-data for all)"
        )
    budget = DiagnoseBudget(
        num_data=args.num_data,
        nuts_data=args.nuts_data,
        chains=args.chains,
        warmup=args.warmup,
        samples=args.samples,
        gap_steps=args.gap_steps,
        ais_steps=args.ais_steps,
        ais_chains=args.ais_chains,
        elbo_draws=args.elbo_draws,
    )
    out = args.out if args.out is not None else diagnostics_dir(args.run_dir)
    with process_group(args.device) as context:  # torchrun: NUTS, AIS and q* fits shared out
        device = resolve_device(args.device) if context is None else context.device
        vae = load_run(args.run_dir, device=device, checkpoint=args.checkpoint)
        data = _load_data(args.run_dir, args, device)
        result = diagnose_run(
            vae, data, out, budget, seed=args.seed, context=context, progress=not args.quiet
        )
        if context is not None and not context.is_writer:
            return
    gaps = result["gaps"]
    parts = [
        f"{name.replace('_', ' ')} {gaps[name]['mean']:.2f} +- {gaps[name]['stderr']:.2f}"
        for name in ("total_gap", "approximation_gap", "amortization_gap")
    ]
    print(
        f"{result['num_data']} images, {result['num_reference']} with a NUTS reference, "
        f"{result['flagged']} flagged ({_flag_counts(result)}); "
        + "; ".join(parts)
        + f" nats; wrote {Path(out) / 'diagnostics.json'}"
    )


def _flag_counts(result: dict[str, Any]) -> str:
    """How many NUTS references each check flagged, e.g. ``R-hat 1, tail ESS 2``."""
    from pyrovae.analysis.inference_quality import flag_counts_text

    return flag_counts_text(result) or "R-hat, ESS and divergences checked"


def _add_study(sub: Any) -> None:
    p = sub.add_parser(
        "study",
        help="train VAE and CVAE at z=2,5,10, evaluate them and write the report",
        description="The latent-space study end to end: trains a VAE and a CVAE at z = 2, 5 "
        "and 10 on MNIST (resuming an interrupted study), evaluates every latent source and "
        "writes DIR/report.html. --quick is a small-budget version (minutes) for a smoke test.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--quick", action="store_true", help="tiny budget: 1 epoch on 2,000 images")
    p.add_argument(
        "--epochs",
        type=_positive_int,
        metavar="N",
        help=f"training epochs (default: {FULL.epochs}; --quick: 1)",
    )
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        metavar="K",
        help=f"importance samples per datum (default: {FULL.num_samples})",
    )
    p.add_argument(
        "--num-test",
        type=_positive_int,
        metavar="N",
        help=f"held-out test images evaluated (default: {FULL.num_test})",
    )
    p.add_argument(
        "--num-train",
        type=_positive_int,
        metavar="N",
        help="training images the latent sources are fitted to (default: all 50,000)",
    )
    p.add_argument(
        "--z-dims",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="latent dimensions (default: 2 5 10)",
    )
    p.add_argument("--models", nargs="+", choices=MODEL_NAMES, help="models (default: vae cvae)")
    p.add_argument(
        "--priors",
        nargs="+",
        choices=PRIOR_NAMES,
        metavar="PRIOR",
        help=f"priors trained with each model, of {', '.join(PRIOR_NAMES)} (default: normal)",
    )
    p.add_argument(
        "--seeds",
        type=_non_negative_int,
        nargs="+",
        metavar="N",
        help="train every configuration with each of these seeds (runs named ...-sN)",
    )
    p.add_argument(
        "--ais-num-test",
        type=_positive_int,
        metavar="N",
        help="also run AIS on N of the test images of every run, and BDMC for each AIS'd "
        "source on data simulated from it (default: no AIS)",
    )
    p.add_argument("--ais-steps", type=_positive_int, metavar="T", help="AIS steps (500)")
    p.add_argument("--ais-chains", type=_positive_int, metavar="C", help="AIS chains (16)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--quiet", action="store_true")
    _add_device_flags(p)
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from pyrovae.data import load_dataset
    from pyrovae.study import run_study
    from pyrovae.train import resolve_device

    budget = QUICK if args.quick else FULL
    changes = {
        k: getattr(args, k)
        for k in (
            "epochs",
            "num_samples",
            "num_test",
            "num_train",
            "ais_num_test",
            "ais_steps",
            "ais_chains",
        )
        if getattr(args, k) is not None
    }
    for key in ("z_dims", "models", "priors", "seeds"):
        if getattr(args, key) is not None:
            changes[key] = tuple(dict.fromkeys(getattr(args, key)))  # keep order, drop repeats
    budget = replace(budget, **changes)
    device = resolve_device(args.device)
    data = load_dataset("mnist", args.data_root, device=device)
    run_study(args.out, data, budget, device, seed=args.seed, progress=not args.quiet)


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


COMMANDS: list[Callable[[Any], None]] = [
    _add_train,
    _add_sample,
    _add_fit_sources,
    _add_evaluate,
    _add_report,
    _add_diagnose,
    _add_study,
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
