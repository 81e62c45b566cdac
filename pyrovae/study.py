"""The latent-space study end to end: train VAE and CVAE at several z, evaluate, report."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from pyrovae.analysis.cost import Step, announce, measure_rate
from pyrovae.analysis.evaluation.reuse import (
    check_reusable,
    check_weights,
    evaluate_with,
    fit_settings_of,
    fitting_options,
    reuse_or_evaluate,
)
from pyrovae.analysis.quality.classifier import ClassifierConfig, load_classifier
from pyrovae.analysis.report import write_report
from pyrovae.analysis.report.run_figures import build_run_report
from pyrovae.analysis.sources.store import fit_run_sources
from pyrovae.build import ModelConfig, build_model
from pyrovae.data import Splits, fixed_binarization
from pyrovae.objectives import make_objective
from pyrovae.runs import load_run, read_metrics
from pyrovae.settings import FULL, QUICK, EvaluationSettings, StudyBudget
from pyrovae.train import TrainConfig, make_adam, one_hot, train

__all__ = [
    "StudyBudget",
    "FULL",
    "QUICK",
    "ReportedModel",
    "run_study",
    "report_runs",
    "run_dir_name",
]


def run_dir_name(model: str, z_dim: int, prior: str = "normal", seed: int | None = None) -> str:
    """``vae-z10``, ``vae-z10-vamp``, ``cvae-z5-mog-s1``: the study's name for a run."""
    name = f"{model}-z{z_dim}" + ("" if prior == "normal" else f"-{prior}")
    return name if seed is None else f"{name}-s{seed}"


def _epoch_seconds(
    model_config: ModelConfig, train_config: TrainConfig, data: Splits, device: torch.device
) -> float:
    """Seconds of one training epoch of this configuration, from timed SVI steps of a
    fresh model on one batch (0.5 s of them or 20, after 3 untimed), on ``device``; the
    global RNG is left as it was."""
    state = torch.random.get_rng_state()
    try:
        vae = build_model(model_config).to(device)
        batch = data.train.x[: train_config.batch_size].to(device)
        x = fixed_binarization(batch) if getattr(vae.decoder, "binarize", False) else batch
        y = None
        if vae.conditional:
            y = one_hot(data.train.y[: train_config.batch_size].to(device), vae.y_dim)
        optim = make_adam(vae.parameters(), train_config.lr, device, train_config.adam_eps)
        loss = make_objective(train_config)
        with pyro.validation_enabled(False):  # training validates its first step only
            for _ in range(2):  # more warm-up than measure_rate's one call
                _svi_step(loss, vae, optim, x, y)
            step = measure_rate(
                lambda: _svi_step(loss, vae, optim, x, y), min_seconds=0.5, max_calls=20
            )
    finally:
        torch.random.set_rng_state(state)
    n = train_config.subset or len(data.train)
    # and the validation ELBO of every epoch: forward passes only, about a third of a step
    validation = len(data.val) / train_config.batch_size / 3
    return (math.ceil(n / train_config.batch_size) + validation) / step


def _svi_step(loss: Any, vae: Any, optim: torch.optim.Optimizer, x: Any, y: Any) -> float:
    optim.zero_grad()
    args = (x,) if y is None else (x, y)
    loss.differentiable_loss(vae.model, vae.guide, *args).backward()
    optim.step()
    return 1.0


def _announce_study(
    configs: list[tuple[str, ModelConfig, TrainConfig, int]],
    data: Splits,
    budget: StudyBudget,
    device: torch.device,
    progress: bool,
) -> None:
    """The study's plan on stderr: each model's training at a rate measured now, then the
    evaluations (each prints its own measured plan before it starts)."""
    if not progress:
        return
    steps = []
    for name, model_config, train_config, epochs_left in configs:
        if epochs_left <= 0:
            continue
        seconds = epochs_left * _epoch_seconds(model_config, train_config, data, device)
        steps.append(Step(f"train {name} ({epochs_left} epochs)", seconds))
    settings = budget.evaluation_settings()
    steps.append(
        Step(
            f"evaluate {len(configs)} runs ({settings.num_test or 'all'} held-out images, "
            f"K={settings.num_samples}; each prints its plan before it starts) and report",
            math.nan,
        )
    )
    announce("study", steps, "--epochs, --z-dims, --models, --num-test and --num-train bound it")


def _classifier(data: Splits, quick: bool, device: torch.device):
    if data.name != "mnist":  # the data's own classifier, two-sample test, precision/recall
        from pyrovae.analysis.quality.data_quality import data_quality

        return data_quality(data, device=device, progress=True)
    if quick:
        return load_classifier(data, device=device, config=ClassifierConfig(epochs=1), subset=5000)
    return load_classifier(data, device=device)


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


@dataclass(frozen=True)
class ReportedModel:
    """A model to report that has no run directory, e.g. a Pyro pair read by
    :func:`pyrovae.from_pyro`.

    Attributes:
        name: its name in the report (unique among the report's runs).
        vae: the model, on the report's device.
        evaluation: an earlier evaluation of these weights (``pyrovae evaluate
            --from-python``'s JSON) to show instead of evaluating again; its fingerprint
            must be that of ``vae``'s weights.
        diagnostics: ``pyrovae diagnose``'s dict for it (see
            :func:`~pyrovae.analysis.posterior.diagnose.load_diagnostics`), if any.
    """

    name: str
    vae: nn.Module
    evaluation: Mapping[str, Any] | None = None
    diagnostics: Mapping[str, Any] | None = None


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
    models: Sequence[ReportedModel] = (),
) -> Path:
    """Evaluate each run (or reuse its ``evaluation.json``), draw its figures, write the report.

    A saved evaluation is reused when its settings match ``settings`` (only the names in
    ``asked`` are compared when given); when they differ it is replaced only with
    ``reevaluate``, else :class:`~pyrovae.analysis.evaluation.reuse.EvaluationMismatchError`
    names the differences (see :func:`~pyrovae.analysis.evaluation.reuse.reuse_or_evaluate`).
    The sources for the figures are those saved with the run when they fit.
    ``models`` (:class:`ReportedModel`) follow the runs, on the same data: each is
    evaluated with ``settings`` unless it brings its own evaluation, whose sources are then
    fitted again for the figures. Returns the path of ``report.html``.
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
    for i, entry in enumerate(models, 1):
        _log(progress, f"[{i}/{len(models)}] {entry.name}")
        if entry.evaluation:
            check_weights(entry.evaluation, entry.vae, f"the evaluation given for {entry.name}")
            evaluation = dict(entry.evaluation)
            fit = fit_settings_of(evaluation, settings)
            _log(progress, "    reusing its evaluation; fitting its sources for the figures")
            sources = fit_run_sources(
                entry.vae,
                data.train,
                list(evaluation["sources"]),
                num_train=fit.num_train,
                seed=fit.seed,
                options=fitting_options(fit),
            )
        else:
            evaluation, sources = evaluate_with(
                entry.vae, data, settings, classifier, progress=progress
            )
        reports.append(
            build_run_report(
                entry.vae,
                data,
                evaluation,
                out_dir / "figures",
                sources,
                classifier,
                name=entry.name,
                diagnostics=entry.diagnostics,
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
    planned = []
    for model, prior, z_dim, run_seed in configs:
        name = run_dir_name(model, z_dim, prior, run_seed if suffix else None)
        run_dir = out_dir / "runs" / name
        done = [row["epoch"] for row in read_metrics(run_dir)] if run_dir.is_dir() else []
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
        left = budget.epochs - (done[-1] if done else 0)
        planned.append((name, run_dir, model_config, train_config, left))
    _announce_study(
        [(name, m, t, left) for name, _, m, t, left in planned],
        data,
        budget,
        torch.device(device),
        progress,
    )
    for name, run_dir, model_config, train_config, left in planned:
        run_dirs.append(run_dir)
        if left <= 0:
            _log(progress, f"[{len(run_dirs)}/{len(configs)}] {name}: already trained")
            continue
        resume = (run_dir / "checkpoint.pt").is_file()
        _log(
            progress,
            f"[{len(run_dirs)}/{len(configs)}] training {name} "
            f"({budget.epochs} epochs{', resumed' if resume else ''})",
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
