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
    if train_kwargs.get("data_root"):
        train_kwargs["data_root"] = str(Path(train_kwargs["data_root"]).resolve())
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


def _add_data_flags(p: argparse.ArgumentParser) -> None:
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


def _add_evaluate(sub: Any) -> None:
    from pyrovae.analysis.evaluate import SPLITS
    from pyrovae.analysis.sources import SOURCES

    p = sub.add_parser(
        "evaluate",
        help="held-out log-likelihood and sample quality of every latent source",
        description="Fit latent sources (prior, aggregated posterior, Gaussian fits, GMM, flow) "
        "on the training set, estimate the held-out log-likelihood of the decoder paired with "
        "each (importance sampling from proposals adapted to each source, L_K at K = 1, 10, "
        "100, 1000 and K, PSIS k-hat; optionally AIS and BDMC), score decoded samples "
        "with an MNIST classifier, and run ELBO surgery. Prints a table and writes JSON.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        default=1000,
        metavar="K",
        help="importance samples per held-out datum (default: 1000)",
    )
    p.add_argument(
        "--sources",
        nargs="+",
        choices=list(SOURCES),
        default=list(SOURCES),
        metavar="NAME",
        help=f"latent sources (default: all of {', '.join(SOURCES)})",
    )
    p.add_argument("--split", choices=SPLITS, default="test", help="held-out split (default: test)")
    p.add_argument(
        "--num-test",
        type=_positive_int,
        metavar="N",
        help="evaluate N held-out images, a fixed random subset (default: all)",
    )
    p.add_argument(
        "--proposal",
        choices=["adapted", "separate", "guide"],
        default="adapted",
        help="importance proposal: a defensive mixture of the guide and a proposal adapted "
        "to each source, shared by all sources (adapted, default), one such mixture per "
        "source (separate), or the guide alone (guide)",
    )
    p.add_argument(
        "--ais-num-test",
        type=_positive_int,
        metavar="N",
        help="also run AIS for every source on the first N of the held-out images, and BDMC "
        "on data simulated from the model (default: no AIS)",
    )
    p.add_argument(
        "--ais-steps",
        type=_positive_int,
        default=500,
        metavar="T",
        help="AIS intermediate distributions (default: 500)",
    )
    p.add_argument(
        "--ais-chains",
        type=_positive_int,
        default=16,
        metavar="C",
        help="AIS chains per image (default: 16)",
    )
    p.add_argument(
        "--ais-leapfrog",
        type=_positive_int,
        default=10,
        metavar="L",
        help="leapfrog steps per HMC transition of AIS (default: 10)",
    )
    p.add_argument(
        "--ais-sources",
        nargs="+",
        choices=list(SOURCES),
        metavar="NAME",
        help="run AIS for these sources only (default: every evaluated source; the exact "
        "aggregate costs a density over all training encodings per leapfrog step)",
    )
    p.add_argument(
        "--bdmc-num-data",
        type=_non_negative_int,
        default=100,
        metavar="N",
        help="data simulated from the model for the BDMC gap, with --ais-num-test "
        "(default: 100; 0 skips BDMC)",
    )
    p.add_argument(
        "--num-train",
        type=_positive_int,
        metavar="N",
        help="fit the sources to the first N training images (default: all 50,000)",
    )
    p.add_argument(
        "--num-quality-samples",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="decoded samples per source scored by the classifier (default: 1000)",
    )
    p.add_argument(
        "--no-quality", action="store_true", help="skip the classifier-based sample-quality scores"
    )
    p.add_argument(
        "--out",
        metavar="FILE.json",
        help="where to write the JSON (default: RUN_DIR/evaluation.json)",
    )
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    _add_data_flags(p)
    p.set_defaults(func=_cmd_evaluate)


def _load_for_analysis(run_dir: str, args: argparse.Namespace, checkpoint: str = "best"):
    from pyrovae.data import load_dataset
    from pyrovae.runs import load_run, read_config
    from pyrovae.train import resolve_device

    device = resolve_device(args.device)
    config = read_config(run_dir)
    vae = load_run(run_dir, device=device, checkpoint=checkpoint)
    root = args.data_root or config.train.data_root
    data = load_dataset(config.train.dataset, root, device=device)
    return vae, data, device


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from pyrovae.analysis.classifier import load_classifier
    from pyrovae.analysis.evaluate import AISBudget, evaluate_run, format_evaluation
    from pyrovae.checkpoint import write_json

    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    if out.suffix != ".json":
        raise CommandError(f"--out must end in .json, got {str(out)!r}")
    vae, data, device = _load_for_analysis(args.run_dir, args, args.checkpoint)
    classifier = None
    if not args.no_quality:
        if data.name != "mnist":
            raise CommandError(
                f"sample quality needs the MNIST classifier, but the run uses {data.name}; "
                "pass --no-quality"
            )
        classifier = load_classifier(data, device=device, progress=True)
    ais = None
    if args.ais_num_test:
        held_out = args.num_test or len(getattr(data, args.split))
        if args.ais_num_test > held_out:
            raise CommandError(
                f"--ais-num-test {args.ais_num_test} exceeds the {held_out} held-out images "
                "evaluated; lower it or raise --num-test"
            )
        missing = sorted(set(args.ais_sources or ()) - {"prior", *args.sources})
        if missing:
            raise CommandError(
                f"--ais-sources names {missing}, which --sources does not evaluate; add them "
                "to --sources or drop them"
            )
        ais = AISBudget(
            num_test=args.ais_num_test,
            steps=args.ais_steps,
            chains=args.ais_chains,
            leapfrog_steps=args.ais_leapfrog,
            sources=tuple(args.ais_sources) if args.ais_sources else None,
            bdmc_num_data=args.bdmc_num_data,
        )
    elif args.ais_sources:
        raise CommandError("--ais-sources needs --ais-num-test N")
    evaluation, _ = evaluate_run(
        vae,
        data,
        sources=args.sources,
        num_samples=args.num_samples,
        split=args.split,
        num_test=args.num_test,
        num_train=args.num_train,
        classifier=classifier,
        num_quality_samples=args.num_quality_samples,
        proposal=args.proposal,
        ais=ais,
        seed=args.seed,
    )
    evaluation["settings"] = {
        "num_samples": args.num_samples,
        "num_test": args.num_test,
        "num_train": args.num_train,
        "num_quality_samples": args.num_quality_samples,
        "proposal": args.proposal,
        "ais_num_test": args.ais_num_test,
        "ais_steps": args.ais_steps if ais else None,
        "ais_chains": args.ais_chains if ais else None,
        "ais_leapfrog": args.ais_leapfrog if ais else None,
    }
    print(format_evaluation(evaluation))
    write_json(out, evaluation)
    print(f"wrote {out}")


def _budget_flags(p: argparse.ArgumentParser, defaults: Any) -> None:
    p.add_argument(
        "--num-samples",
        type=_positive_int,
        default=defaults.num_samples,
        metavar="K",
        help=f"importance samples per datum (default: {defaults.num_samples})",
    )
    p.add_argument(
        "--num-test",
        type=_positive_int,
        default=defaults.num_test,
        metavar="N",
        help=f"held-out test images evaluated (default: {defaults.num_test})",
    )


def _add_report(sub: Any) -> None:
    from pyrovae.study import FULL

    p = sub.add_parser(
        "report",
        help="figures and a self-contained report.html for one or more runs",
        description="Evaluate each run (or reuse its evaluation.json when made with the same "
        "settings), draw the figures as PNG and write one self-contained report.html.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _budget_flags(p, FULL)
    p.add_argument(
        "--no-reuse", action="store_true", help="evaluate again even when evaluation.json exists"
    )
    _add_data_flags(p)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from pyrovae.runs import read_config
    from pyrovae.study import FULL, report_runs

    configs = [read_config(run) for run in args.run_dirs]
    datasets = {c.train.dataset for c in configs}
    if datasets != {"mnist"}:
        raise CommandError(f"report needs MNIST runs (for the classifier), got {sorted(datasets)}")
    _, data, device = _load_for_analysis(args.run_dirs[0], args)
    budget = replace(FULL, num_samples=args.num_samples, num_test=args.num_test)
    report_runs(
        [Path(r) for r in args.run_dirs], data, args.out, budget, device, reuse=not args.no_reuse
    )


def _add_study(sub: Any) -> None:
    from pyrovae.models import PRIORS
    from pyrovae.study import FULL

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
        "--z-dims",
        type=_positive_int,
        nargs="+",
        metavar="N",
        help="latent dimensions (default: 2 5 10)",
    )
    p.add_argument(
        "--models", nargs="+", choices=["vae", "cvae"], help="models (default: vae cvae)"
    )
    p.add_argument(
        "--priors",
        nargs="+",
        choices=list(PRIORS),
        metavar="PRIOR",
        help=f"priors trained with each model, of {', '.join(PRIORS)} (default: normal)",
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
        help="also run AIS and BDMC on N of the test images of every run (default: no AIS)",
    )
    p.add_argument("--ais-steps", type=_positive_int, metavar="T", help="AIS steps (500)")
    p.add_argument("--ais-chains", type=_positive_int, metavar="C", help="AIS chains (16)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--quiet", action="store_true")
    _add_data_flags(p)
    p.set_defaults(func=_cmd_study)


def _cmd_study(args: argparse.Namespace) -> None:
    from dataclasses import replace

    from pyrovae.data import load_dataset
    from pyrovae.study import FULL, QUICK, run_study
    from pyrovae.train import resolve_device

    budget = QUICK if args.quick else FULL
    changes = {
        k: getattr(args, k)
        for k in ("epochs", "num_samples", "num_test", "ais_num_test", "ais_steps", "ais_chains")
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
    _add_evaluate,
    _add_report,
    _add_study,
]


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
