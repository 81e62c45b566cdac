"""The evaluation of a trained run: every latent source compared, planned, saved and reused.

:func:`~.evaluate.evaluate_run` fits the sources, estimates their paired held-out
log-likelihoods (:mod:`.compare`), scores samples and runs ELBO surgery; :mod:`.plan` says
what it will cost before it starts; :mod:`.reuse` keeps one evaluation per run.

Every public name of the modules here is importable from the package itself; each is
imported on first use, so the package adds no import edge between its modules.
"""

from __future__ import annotations

from pyrovae._lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_SOURCES": "pyrovae.analysis.evaluation.compare",
    "KHAT_FLAG_FRACTION": "pyrovae.analysis.evaluation.compare",
    "KSWEEP": "pyrovae.analysis.evaluation.compare",
    "KSWEEP_TOLERANCE": "pyrovae.analysis.evaluation.compare",
    "SourceComparison": "pyrovae.analysis.evaluation.compare",
    "compare_sources": "pyrovae.analysis.evaluation.compare",
    "ksweep_converged": "pyrovae.analysis.evaluation.compare",
    "ksweep_remaining": "pyrovae.analysis.evaluation.compare",
    "model_inputs": "pyrovae.analysis.evaluation.compare",
    "AISBudget": "pyrovae.analysis.evaluation.evaluate",
    "SPLITS": "pyrovae.analysis.evaluation.evaluate",
    "decode_samples": "pyrovae.analysis.evaluation.evaluate",
    "evaluate_run": "pyrovae.analysis.evaluation.evaluate",
    "format_evaluation": "pyrovae.analysis.evaluation.evaluate",
    "run_ais": "pyrovae.analysis.evaluation.evaluate",
    "BOUNDS": "pyrovae.analysis.evaluation.plan",
    "announce_evaluation": "pyrovae.analysis.evaluation.plan",
    "evaluation_steps": "pyrovae.analysis.evaluation.plan",
    "EvaluationMismatchError": "pyrovae.analysis.evaluation.reuse",
    "StaleEvaluationError": "pyrovae.analysis.evaluation.reuse",
    "ais_budget": "pyrovae.analysis.evaluation.reuse",
    "check_reusable": "pyrovae.analysis.evaluation.reuse",
    "check_weights": "pyrovae.analysis.evaluation.reuse",
    "evaluate_with": "pyrovae.analysis.evaluation.reuse",
    "fitting_options": "pyrovae.analysis.evaluation.reuse",
    "reuse_or_evaluate": "pyrovae.analysis.evaluation.reuse",
    "saved_differences": "pyrovae.analysis.evaluation.reuse",
    "sources_for": "pyrovae.analysis.evaluation.reuse",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
