"""The latent-space study end to end: train VAE and CVAE at several z, evaluate, report."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pyrovae.analysis.classifier import ClassifierConfig, load_classifier
from pyrovae.analysis.evaluate import AISBudget, evaluate_run
from pyrovae.analysis.report import write_report
from pyrovae.analysis.run_report import build_run_report
from pyrovae.analysis.sources import fit_sources
from pyrovae.build import ModelConfig
from pyrovae.checkpoint import read_json, write_json
from pyrovae.data import Splits, fixed_binarization
from pyrovae.runs import load_run, read_metrics
from pyrovae.train import TrainConfig, one_hot, train

__all__ = ["StudyBudget", "FULL", "QUICK", "run_study", "report_runs", "run_dir_name"]


@dataclass(frozen=True)
class StudyBudget:
    """How much training and evaluation each model of the study gets.

    Attributes:
        epochs: training epochs of every model.
        subset: training examples used (None: all 50,000).
        hidden_dims: encoder widths (the decoder mirrors them).
        num_samples: K, importance samples per held-out datum.
        num_test: held-out test images evaluated (None: all 10,000). The exact aggregated
            posterior costs num_samples x num_test x (training images) Gaussian densities,
            about 6 ns each on two CPU cores: some 10 minutes a model for the defaults.
        num_train: training images the latent sources are fitted to (None: all).
        num_quality_samples: decoded samples per source scored by the classifier.
        quick_classifier: train a small throw-away classifier on 5,000 images instead of
            the cached full one (for smoke tests only; its accuracy is reported).
        flow_steps: optimizer steps of the flow fitted to the latent codes.
        z_dims: latent dimensions of the study.
        models: ``"vae"`` and/or ``"cvae"``.
        priors: priors trained with each model (keys of ``pyrovae.models.PRIORS``), so that
            priors learned in training and sources fitted afterwards meet on the same
            test images.
        seeds: training seeds of each configuration (None: the ``seed`` of
            :func:`run_study`); with several, the report states the spread between them.
        ais_num_test: also run AIS (and BDMC) on this many of the test images (None: no AIS).
        ais_steps, ais_chains: the AIS budget (see
            :class:`~pyrovae.analysis.evaluate.AISBudget`).
    """

    epochs: int = 30
    subset: int | None = None
    hidden_dims: tuple[int, ...] = (400, 400)
    num_samples: int = 1000
    num_test: int | None = 2000
    num_train: int | None = None
    num_quality_samples: int = 1000
    quick_classifier: bool = False
    flow_steps: int = 400
    z_dims: tuple[int, ...] = (2, 5, 10)
    models: tuple[str, ...] = ("vae", "cvae")
    priors: tuple[str, ...] = ("normal",)
    seeds: tuple[int, ...] | None = None
    ais_num_test: int | None = None
    ais_steps: int = 500
    ais_chains: int = 16


FULL = StudyBudget()
QUICK = StudyBudget(
    epochs=1,
    subset=2000,
    hidden_dims=(128,),
    num_samples=20,
    num_test=200,
    num_train=2000,
    num_quality_samples=100,
    quick_classifier=True,
)


EVALUATION_SETTINGS = (
    "num_samples",
    "num_test",
    "num_train",
    "num_quality_samples",
    "flow_steps",
    "ais_num_test",
    "ais_steps",
    "ais_chains",
)


def run_dir_name(model: str, z_dim: int, prior: str = "normal", seed: int | None = None) -> str:
    """``vae-z10``, ``vae-z10-vamp``, ``cvae-z5-mog-s1``: the study's name for a run."""
    name = f"{model}-z{z_dim}" + ("" if prior == "normal" else f"-{prior}")
    return name if seed is None else f"{name}-s{seed}"


def _ais_budget(budget: StudyBudget) -> AISBudget | None:
    if budget.ais_num_test is None:
        return None
    return AISBudget(num_test=budget.ais_num_test, steps=budget.ais_steps, chains=budget.ais_chains)


def _fit_for_figures(vae, data: Splits, names: list[str], budget: StudyBudget) -> dict:
    """Refit the sources of a saved evaluation (for the sample grids only)."""
    device = next(vae.parameters()).device
    num_train = budget.num_train
    train_split = data.train.subset(num_train) if num_train else data.train
    x = train_split.x.to(device)
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    y = one_hot(train_split.y.to(device), vae.y_dim) if vae.conditional else None
    options = {"flow": {"num_steps": budget.flow_steps}} if "flow" in names else None
    return fit_sources(names, vae, x, y, options)


def _classifier(data: Splits, quick: bool, device: torch.device):
    if quick:
        return load_classifier(data, device=device, config=ClassifierConfig(epochs=1), subset=5000)
    return load_classifier(data, device=device)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def report_runs(
    run_dirs: list[Path],
    data: Splits,
    out_dir: str | Path,
    budget: StudyBudget = FULL,
    device: torch.device | str = "cpu",
    title: str = "pyrovae report",
    reuse: bool = True,
    progress: bool = True,
    classifier: Any = None,
) -> Path:
    """Evaluate each run (or reuse its ``evaluation.json``), draw its figures, write the report.

    Returns the path of ``report.html``.
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    if classifier is None:
        _log(progress, "loading the sample-quality classifier (trained once, then cached)")
        classifier = _classifier(data, budget.quick_classifier, device)
    reports = []
    for i, run_dir in enumerate(run_dirs, 1):
        run_dir = Path(run_dir)
        vae = load_run(run_dir, device=device)
        saved = run_dir / "evaluation.json"
        settings = {k: v for k, v in asdict(budget).items() if k in EVALUATION_SETTINGS}
        start = time.perf_counter()
        if reuse and saved.is_file() and read_json(saved).get("settings") == settings:
            _log(progress, f"[{i}/{len(run_dirs)}] {run_dir}: reusing evaluation.json")
            evaluation = read_json(saved)
            sources = _fit_for_figures(vae, data, list(evaluation["sources"]), budget)
        else:
            _log(progress, f"[{i}/{len(run_dirs)}] evaluating {run_dir}")
            evaluation, comparison = evaluate_run(
                vae,
                data,
                num_samples=budget.num_samples,
                num_test=budget.num_test,
                num_train=budget.num_train,
                classifier=classifier,
                num_quality_samples=budget.num_quality_samples,
                options={"flow": {"num_steps": budget.flow_steps}},
                ais=_ais_budget(budget),
            )
            evaluation["settings"] = settings
            write_json(saved, evaluation)
            sources = comparison.sources
        _log(progress, f"    {time.perf_counter() - start:.0f} s; drawing figures")
        reports.append(
            build_run_report(
                vae, data, evaluation, out_dir / "figures", sources, classifier, name=run_dir.name
            )
        )
    path = write_report(reports, out_dir, title=title)
    _log(progress, f"wrote {path}")
    return path


def run_study(
    out_dir: str | Path,
    data: Splits,
    budget: StudyBudget = FULL,
    device: torch.device | str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Train (or resume) every model of the study under ``out_dir/runs``, then report.

    An interrupted study continues where it stopped: finished runs are kept, a run with a
    checkpoint is resumed.
    """
    out_dir = Path(out_dir)
    run_dirs = []
    seeds = budget.seeds if budget.seeds is not None else (seed,)
    suffix = len(seeds) > 1 or seeds[0] != seed  # keep the plain names of a one-seed study
    configs = [
        (model, prior, z_dim, run_seed)
        for model in budget.models
        for prior in budget.priors
        for z_dim in budget.z_dims
        for run_seed in seeds
    ]
    for model, prior, z_dim, run_seed in configs:
        name = run_dir_name(model, z_dim, prior, run_seed if suffix else None)
        run_dir = out_dir / "runs" / name
        run_dirs.append(run_dir)
        done = [row["epoch"] for row in read_metrics(run_dir)] if run_dir.is_dir() else []
        if done and done[-1] >= budget.epochs:
            _log(progress, f"[{len(run_dirs)}/{len(configs)}] {name}: already trained")
            continue
        resume = (run_dir / "checkpoint.pt").is_file()
        _log(
            progress,
            f"[{len(run_dirs)}/{len(configs)}] training {name} "
            f"({budget.epochs} epochs{', resumed' if resume else ''})",
        )
        model_config = ModelConfig(
            model=model, z_dim=z_dim, prior=prior, hidden_dims=list(budget.hidden_dims)
        )
        train_config = TrainConfig(
            epochs=budget.epochs,
            subset=budget.subset,
            seed=run_seed,
            device=str(device),
            elbo="meanfield",
            dataset=data.name,
        )
        train(model_config, train_config, data, run_dir, resume=resume, progress=progress)
    title = f"pyrovae latent-space study ({budget.epochs} epochs)"
    return report_runs(run_dirs, data, out_dir, budget, device, title=title, progress=progress)
