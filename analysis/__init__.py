"""Analysis of trained models, in one import: ``import pyrovae.analysis as pa``.

Every name a notebook needs is here, imported on first use (PEP 562), so importing this
package costs nothing until a name is used. The modules are grouped by the question they
answer:

=================================== ==========================================================
subpackage                          answers
=================================== ==========================================================
:mod:`~pyrovae.analysis.evaluation`  the evaluation of a run: every source compared, planned, saved
:mod:`~pyrovae.analysis.likelihood`  held-out log p_r(x) by IS, AIS and BDMC; how far to trust it
:mod:`~pyrovae.analysis.sources`     latent sources fitted to q(z | x_n), saved, ELBO surgery
:mod:`~pyrovae.analysis.posterior`   posterior diagnostics: NUTS references, inference gaps
:mod:`~pyrovae.analysis.quality`     sample quality: classifier scores, memorization
:mod:`~pyrovae.analysis.figures`     every figure, as a matplotlib ``Figure``
:mod:`~pyrovae.analysis.report`      the HTML report of one or more runs
=================================== ==========================================================

The module paths of the flat layout this replaced (``pyrovae.analysis.loglik``,
``pyrovae.analysis.source_store``, ...) still import, with a ``DeprecationWarning`` naming
the new path; they will be removed in the next release.
"""

from __future__ import annotations

from pyrovae._lazy import lazy_exports
from pyrovae.analysis._moved import install_moved_finder

_EV = "pyrovae.analysis.evaluation"
_LI = "pyrovae.analysis.likelihood"
_SO = "pyrovae.analysis.sources"
_PO = "pyrovae.analysis.posterior"
_QU = "pyrovae.analysis.quality"
_RE = "pyrovae.analysis.report"

_EXPORTS = {
    # the evaluation of a run, and the comparison of sources inside it
    "evaluate_run": f"{_EV}.evaluate",
    "AISBudget": f"{_EV}.evaluate",
    "format_evaluation": f"{_EV}.evaluate",
    "compare_sources": f"{_EV}.compare",
    "SourceComparison": f"{_EV}.compare",
    "DEFAULT_SOURCES": f"{_EV}.compare",
    # latent sources: fit, keep, load; ELBO surgery
    "SOURCES": f"{_SO}.fits",
    "fit_source": f"{_SO}.fits",
    "fit_sources": f"{_SO}.fits",
    "fit_per_class": f"{_SO}.fits",
    "LatentSource": f"{_SO}.classes",
    "PriorSource": f"{_SO}.classes",
    "AggregatePosterior": f"{_SO}.classes",
    "GaussianSource": f"{_SO}.classes",
    "MixtureSource": f"{_SO}.classes",
    "FlowSource": f"{_SO}.classes",
    "Encodings": f"{_SO}.encodings",
    "load_source": f"{_SO}.store",
    "load_sources": f"{_SO}.store",
    "save_source": f"{_SO}.store",
    "save_sources": f"{_SO}.store",
    "saved_source_names": f"{_SO}.store",
    "source_path": f"{_SO}.store",
    "elbo_surgery": f"{_SO}.surgery",
    "ElboSurgery": f"{_SO}.surgery",
    # held-out log-likelihood, and how far to trust it
    "estimate_log_likelihood": f"{_LI}.loglik",
    "estimate_source_log_likelihoods": f"{_LI}.loglik",
    "iwae_bound": f"{_LI}.loglik",
    "LogLikelihood": f"{_LI}.loglik",
    "ais_log_likelihood": f"{_LI}.ais",
    "AISResult": f"{_LI}.ais_chains",
    "bdmc": f"{_LI}.bdmc",
    "BDMCResult": f"{_LI}.bdmc",
    "psis_khat": f"{_LI}.psis",
    "ppca_vae": f"{_LI}.exact",
    "ppca_log_marginal": f"{_LI}.exact",
    "ppca_posterior": f"{_LI}.exact",
    # posterior diagnostics
    "diagnose_run": f"{_PO}.diagnose",
    "DiagnoseBudget": f"{_PO}.diagnose",
    "load_diagnostics": f"{_PO}.diagnose",
    "reference_posterior": f"{_PO}.nuts",
    "reference_posteriors": f"{_PO}.nuts",
    "inference_gaps": f"{_PO}.gaps",
    "to_inference_data": f"{_PO}.inference_data",
    "inference_conclusions": f"{_PO}.inference_quality",
    "gap_table": f"{_PO}.inference_quality",
    # sample quality
    "sample_quality": f"{_QU}.scores",
    "load_classifier": f"{_QU}.classifier",
    "memorization": f"{_QU}.memorization",
    "nearest_distances": f"{_QU}.memorization",
    "label_error": f"{_QU}.label_classifier",
    # the report
    "RunReport": f"{_RE}.run",
    "render_report": f"{_RE}.render",
    "write_report": f"{_RE}.render",
    "build_run_report": f"{_RE}.run_figures",
    "run_figures": f"{_RE}.run_figures",
    # shared
    "mean_stderr": "pyrovae.analysis.stats",
    # the subpackages themselves
    "evaluation": f"{_EV}",
    "likelihood": f"{_LI}",
    "sources": f"{_SO}",
    "posterior": f"{_PO}",
    "quality": f"{_QU}",
    "figures": "pyrovae.analysis.figures",
    "report": f"{_RE}",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
install_moved_finder()
