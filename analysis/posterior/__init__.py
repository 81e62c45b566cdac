"""Posterior diagnostics: is the amortized guide q(z | x) any good?

NUTS reference posteriors (:mod:`.nuts`), the inference gap split into approximation and
amortization parts (:mod:`.gaps`), the saved diagnosis of a run (:mod:`.diagnose`), ArviZ
export (:mod:`.inference_data`) and what it all says (:mod:`.inference_quality`).

Every public name of the modules here is importable from the package itself; each is
imported on first use, so the package adds no import edge between its modules.
"""

from __future__ import annotations

from pyrovae._lazy import lazy_exports

_EXPORTS = {
    "DIAGNOSTICS_DIRNAME": "pyrovae.analysis.posterior.diagnose",
    "DIAGNOSTICS_FILENAME": "pyrovae.analysis.posterior.diagnose",
    "DiagnoseBudget": "pyrovae.analysis.posterior.diagnose",
    "diagnose_plan": "pyrovae.analysis.posterior.diagnose",
    "diagnose_run": "pyrovae.analysis.posterior.diagnose",
    "diagnosed_indices": "pyrovae.analysis.posterior.diagnose",
    "diagnostics_dir": "pyrovae.analysis.posterior.diagnose",
    "load_diagnostics": "pyrovae.analysis.posterior.diagnose",
    "FAMILIES": "pyrovae.analysis.posterior.gaps",
    "GapResult": "pyrovae.analysis.posterior.gaps",
    "elbo_draw_timer": "pyrovae.analysis.posterior.gaps",
    "inference_gaps": "pyrovae.analysis.posterior.gaps",
    "optimal_local_guide": "pyrovae.analysis.posterior.gaps",
    "svi_step_timer": "pyrovae.analysis.posterior.gaps",
    "to_inference_data": "pyrovae.analysis.posterior.inference_data",
    "FLAG_LABELS": "pyrovae.analysis.posterior.inference_quality",
    "GAP_ROWS": "pyrovae.analysis.posterior.inference_quality",
    "flag_counts_text": "pyrovae.analysis.posterior.inference_quality",
    "gap_table": "pyrovae.analysis.posterior.inference_quality",
    "inference_conclusions": "pyrovae.analysis.posterior.inference_quality",
    "OptimalGuide": "pyrovae.analysis.posterior.local_guides",
    "guide_elbo": "pyrovae.analysis.posterior.local_guides",
    "ESS_PER_CHAIN": "pyrovae.analysis.posterior.nuts",
    "FLAG_REASONS": "pyrovae.analysis.posterior.nuts",
    "MAX_DIVERGENT": "pyrovae.analysis.posterior.nuts",
    "NutsLength": "pyrovae.analysis.posterior.nuts",
    "RHAT_THRESHOLD": "pyrovae.analysis.posterior.nuts",
    "ReferencePosterior": "pyrovae.analysis.posterior.nuts",
    "UNADAPTED_WARMUP": "pyrovae.analysis.posterior.nuts",
    "default_data": "pyrovae.analysis.posterior.nuts",
    "ess_threshold": "pyrovae.analysis.posterior.nuts",
    "flag_reasons": "pyrovae.analysis.posterior.nuts",
    "gradient_timer": "pyrovae.analysis.posterior.nuts",
    "guide_vs_posterior": "pyrovae.analysis.posterior.nuts",
    "nuts_length": "pyrovae.analysis.posterior.nuts",
    "reference_posterior": "pyrovae.analysis.posterior.nuts",
    "reference_posteriors": "pyrovae.analysis.posterior.nuts",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
