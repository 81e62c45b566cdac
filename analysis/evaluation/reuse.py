"""One evaluation per run, reused: evaluate with settings, keep the fitted sources, reuse
``evaluation.json`` when its settings match what is asked and it was made with the same
model weights, and never overwrite it unasked.

``evaluation.json`` records the fingerprint of the weights it was made with
(:func:`~pyrovae.analysis.sources.store.model_fingerprint`, as the saved sources and the
diagnostics do). An evaluation of other weights (the run was trained further, another
``--checkpoint``), or one with no fingerprint (written by an older pyrovae: its weights
are unknown), is never reused or shown: it is refused with the reason and the command
that replaces it, as a settings mismatch is.

``pyrovae evaluate``, ``pyrovae report`` and the study all go through :func:`evaluate_with`
(and :func:`reuse_or_evaluate`), so an evaluation written by one is recognised by the
others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from pyrovae.analysis.evaluation.evaluate import AISBudget, evaluate_run
from pyrovae.analysis.quality.classifier import MNISTClassifier
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.store import (
    StaleSourceError,
    fit_record,
    fit_run_sources,
    load_sources,
    model_fingerprint,
    save_sources,
    saved_source_names,
)
from pyrovae.checkpoint import read_json, write_json
from pyrovae.data import Splits
from pyrovae.distributed import DistributedContext
from pyrovae.settings import AGGREGATE_COMPONENTS, EvaluationSettings

__all__ = [
    "EvaluationMismatchError",
    "StaleEvaluationError",
    "ais_budget",
    "check_reusable",
    "check_weights",
    "saved_differences",
    "fitting_options",
    "evaluate_with",
    "reuse_or_evaluate",
    "sources_for",
]


class EvaluationMismatchError(ValueError):
    """A saved evaluation was made with other settings than those asked for."""


class StaleEvaluationError(EvaluationMismatchError):
    """A saved evaluation was made with other model weights than those loaded (or records
    no fingerprint of its weights, so they are unknown)."""


def ais_budget(settings: EvaluationSettings) -> AISBudget | None:
    """The AIS part of ``settings`` (None when AIS is off)."""
    if settings.ais_num_test is None:
        return None
    return AISBudget(
        num_test=settings.ais_num_test,
        steps=settings.ais_steps,
        chains=settings.ais_chains,
        leapfrog_steps=settings.ais_leapfrog,
        sources=settings.ais_sources,
        bdmc_num_data=settings.bdmc_num_data,
    )


def fitting_options(settings: EvaluationSettings) -> dict[str, dict[str, Any]]:
    """Per-source fitting options that the settings decide (the flow's optimizer steps, and
    the aggregate's cap on a flow guide's encodings where it is not the default)."""
    options = {"flow": {"num_steps": settings.flow_steps}} if "flow" in settings.sources else {}
    cap = settings.aggregate_components
    if "aggregate" in settings.sources and cap != AGGREGATE_COMPONENTS:
        options["aggregate"] = {"flow_components": None if cap == "all" else cap}
    return options


def evaluate_with(
    vae: nn.Module,
    data: Splits,
    settings: EvaluationSettings,
    classifier: MNISTClassifier | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    context: DistributedContext | None = None,
) -> tuple[dict[str, Any], dict[str, LatentSource]]:
    """:func:`~pyrovae.analysis.evaluation.evaluate.evaluate_run` with ``settings``.

    The evaluation carries ``settings.to_dict()`` under ``"settings"``; with ``run_dir``
    the fitted sources are saved to ``run_dir/sources/`` (see
    :mod:`~pyrovae.analysis.sources.store`). Returns the evaluation and the sources. In a
    torchrun job (``context``) rank 0 alone finishes and saves; the other ranks return
    ``({}, sources)`` once their share of the log-likelihoods is gathered.
    """
    if settings.quality and classifier is None and (context is None or context.is_writer):
        raise ValueError("settings ask for sample quality but no classifier was given")
    options = fitting_options(settings)
    evaluation, comparison = evaluate_run(
        vae,
        data,
        sources=settings.sources,
        num_samples=settings.num_samples,
        split=settings.split,
        num_test=settings.num_test,
        num_train=settings.num_train,
        classifier=classifier if settings.quality else None,
        num_quality_samples=settings.num_quality_samples,
        options=options,
        proposal=settings.proposal,
        ais=ais_budget(settings),
        seed=settings.seed,
        progress=progress,
        context=context,
    )
    if context is not None and not context.is_writer:
        return {}, dict(comparison.sources)
    evaluation["settings"] = settings.to_dict()
    if run_dir is not None:
        record = fit_record(vae, comparison.num_train, settings.seed, per_class=False)
        opts = {n: {"seed": settings.seed, **options.get(n, {})} for n in comparison.sources}
        save_sources(run_dir, comparison.sources, vae, record, opts)
    return evaluation, dict(comparison.sources)


def sources_for(
    run_dir: str | Path,
    vae: nn.Module,
    data: Splits,
    names: list[str],
    settings: EvaluationSettings,
    log: Callable[[str], None] = print,
) -> dict[str, LatentSource]:
    """The sources ``names`` of a run: loaded from ``run_dir/sources/`` when saved for these
    weights and these fitting settings, else fitted (and saved) as an evaluation would."""
    saved = set(saved_source_names(run_dir))
    out: dict[str, LatentSource] = {}
    num_train = min(settings.num_train or len(data.train), len(data.train))
    options = fitting_options(settings)
    for name in (n for n in names if n in saved):
        try:
            source = load_sources(run_dir, vae, [name])[name]
        except StaleSourceError as err:
            log(f"    {err}; refitting")
            continue
        record = getattr(source, "fitted_with", {})
        expected = {"seed": settings.seed, **options.get(name, {})}
        if record.get("num_train") == num_train and record.get("options") == expected:
            out[name] = source
    missing = [name for name in names if name not in out]
    if missing:
        log(f"    fitting {', '.join(missing)} (not saved with the run yet)")
        out.update(
            fit_run_sources(
                vae,
                data.train,
                missing,
                num_train=settings.num_train,
                seed=settings.seed,
                options={k: v for k, v in options.items() if k in missing},
                run_dir=run_dir,
            )
        )
    return {name: out[name] for name in names}


def fit_settings_of(
    evaluation: Mapping[str, Any], settings: EvaluationSettings
) -> EvaluationSettings:
    """The settings that fitted a saved evaluation's sources (its sources, training data,
    seed and fitting options; ``settings`` fill in what an older file does not record),
    to fit them again, or to check saved ones, for its figures."""
    stored = evaluation.get("settings") or {}
    return EvaluationSettings(
        sources=tuple(evaluation["sources"]),
        num_train=stored.get("num_train"),
        seed=stored.get("seed", settings.seed),
        flow_steps=stored.get("flow_steps", settings.flow_steps),
        aggregate_components=stored.get("aggregate_components") or AGGREGATE_COMPONENTS,
    )


def saved_differences(
    run_dir: str | Path, settings: EvaluationSettings, asked: set[str] | None = None
) -> list[str] | None:
    """How ``run_dir/evaluation.json``'s settings differ from ``settings`` (only the names in
    ``asked`` when given): ``[]`` when they match, None when there is no such file."""
    path = Path(run_dir) / "evaluation.json"
    if not path.is_file():
        return None
    return settings.differences(read_json(path).get("settings"), asked)


def _stale_reason(evaluation: Any, vae: nn.Module) -> str | None:
    """Why ``evaluation`` is not of ``vae``'s weights, or None when its fingerprint matches."""
    recorded = evaluation.get("fingerprint") if isinstance(evaluation, dict) else None
    if not isinstance(recorded, str):
        return (
            "records no fingerprint of the model weights it was made with (an older pyrovae "
            "wrote it), so they are unknown"
        )
    if recorded != model_fingerprint(vae):
        weights = getattr(vae, "checkpoint_name", None) or "the loaded weights"
        return (
            f"was made with other model weights than {weights} (the run was trained further, "
            "or another --checkpoint was evaluated)"
        )
    return None


def _stale(run_dir: str | Path, reason: str) -> StaleEvaluationError:
    return StaleEvaluationError(
        f"{Path(run_dir) / 'evaluation.json'} {reason}; pass --reevaluate to evaluate these "
        f"weights and replace it (or run `pyrovae evaluate {run_dir}` with these settings)"
    )


def check_weights(evaluation: Any, vae: nn.Module, where: str | Path = "the evaluation") -> None:
    """Raise :class:`StaleEvaluationError` unless ``evaluation`` records the fingerprint of
    ``vae``'s weights (an evaluation of other, or unknown, weights is never shown)."""
    reason = _stale_reason(evaluation, vae)
    if reason is not None:
        raise StaleEvaluationError(
            f"{where} {reason}; evaluate these weights (pyrovae evaluate RUN, or "
            "pyrovae.analysis.evaluation.evaluate.evaluate_run) before reporting on them"
        )


def check_reusable(
    run_dir: str | Path,
    settings: EvaluationSettings,
    asked: set[str] | None = None,
    reevaluate: bool = False,
    vae: nn.Module | None = None,
) -> None:
    """Raise :class:`EvaluationMismatchError` when a saved evaluation differs from what is
    asked, or :class:`StaleEvaluationError` when it was made with other (or unknown) model
    weights, and ``reevaluate`` is off (before any work is done).

    ``vae`` is the model to be evaluated; by default the run's ``settings.checkpoint`` is
    loaded on the CPU to read its weights' fingerprint.
    """
    diffs = saved_differences(run_dir, settings, asked)
    if diffs is None or reevaluate:
        return
    if diffs:
        raise _mismatch(run_dir, diffs)
    if vae is None:
        from pyrovae.runs import load_run

        vae = load_run(run_dir, checkpoint=settings.checkpoint)
    reason = _stale_reason(read_json(Path(run_dir) / "evaluation.json"), vae)
    if reason is not None:
        raise _stale(run_dir, reason)


def _mismatch(run_dir: str | Path, diffs: list[str]) -> EvaluationMismatchError:
    return EvaluationMismatchError(
        f"{Path(run_dir) / 'evaluation.json'} was made with other settings "
        f"({'; '.join(diffs)}); pass --reevaluate to replace it, or ask for its settings"
    )


def reuse_or_evaluate(
    run_dir: str | Path,
    vae: nn.Module,
    data: Splits,
    settings: EvaluationSettings,
    *,
    asked: set[str] | None = None,
    reevaluate: bool = False,
    classifier: MNISTClassifier | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], dict[str, LatentSource]]:
    """``run_dir/evaluation.json`` when its settings match and it was made with ``vae``'s
    weights, else a new evaluation.

    Args:
        asked: the settings the caller asked for explicitly (None: all of them); only
            these are compared with the saved ones.
        reevaluate: evaluate again (and replace the file) when the saved settings or
            weights differ; without it a difference raises
            :class:`EvaluationMismatchError` naming each setting with both values, and an
            evaluation of other (or unknown) weights :class:`StaleEvaluationError`.

    Returns the evaluation and its sources (loaded from the run, or fitted for figures).
    """
    path = Path(run_dir) / "evaluation.json"
    diffs = saved_differences(run_dir, settings, asked)
    if diffs and not reevaluate:
        raise _mismatch(run_dir, diffs)
    if diffs == []:
        saved = read_json(path)
        reason = _stale_reason(saved, vae)
        if reason is None:
            log("    reusing evaluation.json (its settings and weights match what was asked)")
            fit = fit_settings_of(saved, settings)
            return saved, sources_for(run_dir, vae, data, list(saved["sources"]), fit, log)
        if not reevaluate:
            raise _stale(run_dir, reason)
        diffs = [f"it {reason}"]
    if diffs:
        log(f"    replacing {path}: {'; '.join(diffs)}")
    else:
        log(f"    evaluating {run_dir} (no evaluation.json yet)")
    evaluation, sources = evaluate_with(vae, data, settings, classifier, run_dir, progress)
    write_json(path, evaluation)
    log(f"    wrote {path}")
    return evaluation, sources
