"""The latent-space study end to end: train VAE and CVAE at several z, evaluate, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from pyrovae.analysis.classifier import ClassifierConfig, load_classifier
from pyrovae.analysis.evaluation_runs import check_reusable, reuse_or_evaluate
from pyrovae.analysis.report import write_report
from pyrovae.analysis.run_report import build_run_report
from pyrovae.build import ModelConfig
from pyrovae.data import Splits
from pyrovae.runs import load_run, read_metrics
from pyrovae.settings import FULL, QUICK, EvaluationSettings, StudyBudget
from pyrovae.train import TrainConfig, train

__all__ = ["StudyBudget", "FULL", "QUICK", "run_study", "report_runs", "run_dir_name"]


def run_dir_name(model: str, z_dim: int, prior: str = "normal", seed: int | None = None) -> str:
    """``vae-z10``, ``vae-z10-vamp``, ``cvae-z5-mog-s1``: the study's name for a run."""
    name = f"{model}-z{z_dim}" + ("" if prior == "normal" else f"-{prior}")
    return name if seed is None else f"{name}-s{seed}"


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
    settings: EvaluationSettings | None = None,
    device: torch.device | str = "cpu",
    title: str = "pyrovae report",
    *,
    asked: set[str] | None = None,
    reevaluate: bool = False,
    progress: bool = True,
    classifier: Any = None,
    quick_classifier: bool = False,
) -> Path:
    """Evaluate each run (or reuse its ``evaluation.json``), draw its figures, write the report.

    A saved evaluation is reused when its settings match ``settings`` (only the names in
    ``asked`` are compared when given); when they differ it is replaced only with
    ``reevaluate``, else :class:`~pyrovae.analysis.evaluation_runs.EvaluationMismatchError`
    names the differences (see :func:`~pyrovae.analysis.evaluation_runs.reuse_or_evaluate`).
    The sources for the figures are those saved with the run when they fit.
    Returns the path of ``report.html``.
    """
    settings = settings or EvaluationSettings()
    device = torch.device(device)
    out_dir = Path(out_dir)
    for run_dir in run_dirs:  # refuse before any work
        check_reusable(run_dir, settings, asked, reevaluate)
    if classifier is None and settings.quality:
        _log(progress, "loading the sample-quality classifier")
        classifier = _classifier(data, quick_classifier, device)
    reports = []
    for i, run_dir in enumerate(run_dirs, 1):
        run_dir = Path(run_dir)
        vae = load_run(run_dir, device=device, checkpoint=settings.checkpoint)
        start = time.perf_counter()
        _log(progress, f"[{i}/{len(run_dirs)}] {run_dir}")
        evaluation, sources = reuse_or_evaluate(
            run_dir,
            vae,
            data,
            settings,
            asked=asked,
            reevaluate=reevaluate,
            classifier=classifier,
            progress=progress,
            log=lambda message: _log(progress, message),
        )
        _log(progress, f"    {time.perf_counter() - start:.0f} s; drawing figures")
        reports.append(
            build_run_report(
                vae,
                data,
                evaluation,
                out_dir / "figures",
                sources,
                classifier,
                name=run_dir.name,
                progress=progress,
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
    return report_runs(
        run_dirs,
        data,
        out_dir,
        budget.evaluation_settings(),
        device,
        title=title,
        reevaluate=True,
        progress=progress,
        quick_classifier=budget.quick_classifier,
    )
