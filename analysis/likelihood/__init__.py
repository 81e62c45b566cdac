"""Held-out log-likelihood log p_r(x) and how far to trust it.

Importance sampling with source-adapted proposals (:mod:`.loglik`, :mod:`.proposals`), annealed
importance sampling (:mod:`.annealing`, :mod:`.ais`) and bidirectional Monte Carlo
(:mod:`.bdmc`), sharded over processes (:mod:`.sharding`), PSIS k-hat (:mod:`.psis`), the
verdicts drawn from them (:mod:`.evidence`), probabilistic PCA, whose answers are exact
(:mod:`.exact`), and the label summed out of a semi-supervised M2's estimates (:mod:`.labels`).

Every public name of the modules here is importable from the package itself; each is
imported on first use, so the package adds no import edge between its modules.
"""

from __future__ import annotations

from pyrovae._lazy import lazy_exports

_EXPORTS = {
    "AISResult": "pyrovae.analysis.likelihood.ais",
    "ais_log_likelihood": "pyrovae.analysis.likelihood.ais",
    "guide_initial": "pyrovae.analysis.likelihood.ais",
    "ADAPT_MODES": "pyrovae.analysis.likelihood.annealing",
    "AnnealResult": "pyrovae.analysis.likelihood.annealing",
    "DEFAULT_PILOT_CHAINS": "pyrovae.analysis.likelihood.annealing",
    "Kernel": "pyrovae.analysis.likelihood.annealing",
    "adapt_mode": "pyrovae.analysis.likelihood.annealing",
    "anneal": "pyrovae.analysis.likelihood.annealing",
    "hmc_transition": "pyrovae.analysis.likelihood.annealing",
    "initial_draws": "pyrovae.analysis.likelihood.annealing",
    "sigmoid_schedule": "pyrovae.analysis.likelihood.annealing",
    "uses_pilot": "pyrovae.analysis.likelihood.annealing",
    "BDMCResult": "pyrovae.analysis.likelihood.bdmc",
    "DatumNoise": "pyrovae.analysis.likelihood.datum_noise",
    "METHODS": "pyrovae.analysis.likelihood.datum_noise",
    "check_datum_index": "pyrovae.analysis.likelihood.datum_noise",
    "datum_normals": "pyrovae.analysis.likelihood.datum_noise",
    "hash32": "pyrovae.analysis.likelihood.datum_noise",
    "mix64": "pyrovae.analysis.likelihood.datum_noise",
    "noise_key": "pyrovae.analysis.likelihood.datum_noise",
    "philox4x32": "pyrovae.analysis.likelihood.datum_noise",
    "AIS_AGREEMENT": "pyrovae.analysis.likelihood.evidence",
    "BDMC_TRUSTED_GAP": "pyrovae.analysis.likelihood.evidence",
    "Evidence": "pyrovae.analysis.likelihood.evidence",
    "evidence_sentences": "pyrovae.analysis.likelihood.evidence",
    "judge": "pyrovae.analysis.likelihood.evidence",
    "rising_sentence": "pyrovae.analysis.likelihood.evidence",
    "source_bdmc": "pyrovae.analysis.likelihood.evidence",
    "Z95": "pyrovae.analysis.likelihood.evidence_numbers",
    "ais_difference": "pyrovae.analysis.likelihood.evidence_numbers",
    "LinearGaussianEncoder": "pyrovae.analysis.likelihood.exact",
    "ppca_elbo": "pyrovae.analysis.likelihood.exact",
    "ppca_log_marginal": "pyrovae.analysis.likelihood.exact",
    "ppca_posterior": "pyrovae.analysis.likelihood.exact",
    "ppca_vae": "pyrovae.analysis.likelihood.exact",
    "label_rows": "pyrovae.analysis.likelihood.labels",
    "label_summed_stderr": "pyrovae.analysis.likelihood.labels",
    "summed_ais": "pyrovae.analysis.likelihood.labels",
    "summed_log_likelihood": "pyrovae.analysis.likelihood.labels",
    "summed_source_log_likelihoods": "pyrovae.analysis.likelihood.labels",
    "sums_out_labels": "pyrovae.analysis.likelihood.labels",
    "LogLikelihood": "pyrovae.analysis.likelihood.loglik",
    "PROPOSALS": "pyrovae.analysis.likelihood.loglik",
    "PerDatumEstimate": "pyrovae.analysis.likelihood.loglik",
    "SOURCE_BUDGET_BYTES": "pyrovae.analysis.likelihood.loglik",
    "default_draws_per_pass": "pyrovae.analysis.likelihood.loglik",
    "estimate_log_likelihood": "pyrovae.analysis.likelihood.loglik",
    "estimate_source_log_likelihoods": "pyrovae.analysis.likelihood.loglik",
    "iwae_bound": "pyrovae.analysis.likelihood.loglik",
    "source_cost": "pyrovae.analysis.likelihood.loglik",
    "DEFAULT_MAX_COMPONENTS": "pyrovae.analysis.likelihood.proposals",
    "DiagonalGaussian": "pyrovae.analysis.likelihood.proposals",
    "GaussianMixtureProposal": "pyrovae.analysis.likelihood.proposals",
    "LikelihoodMessage": "pyrovae.analysis.likelihood.proposals",
    "adapted_proposal": "pyrovae.analysis.likelihood.proposals",
    "diagonal_moments": "pyrovae.analysis.likelihood.proposals",
    "guide_gaussian": "pyrovae.analysis.likelihood.proposals",
    "initial_distribution": "pyrovae.analysis.likelihood.proposals",
    "likelihood_message": "pyrovae.analysis.likelihood.proposals",
    "prior_gaussian": "pyrovae.analysis.likelihood.proposals",
    "source_view": "pyrovae.analysis.likelihood.proposals",
    "uses_guide": "pyrovae.analysis.likelihood.proposals",
    "KHAT_THRESHOLD": "pyrovae.analysis.likelihood.psis",
    "MIN_PSIS_SAMPLES": "pyrovae.analysis.likelihood.psis",
    "khat_fraction": "pyrovae.analysis.likelihood.psis",
    "psis_khat": "pyrovae.analysis.likelihood.psis",
    "gather_log_likelihoods": "pyrovae.analysis.likelihood.sharding",
    "sharded_ais_log_likelihood": "pyrovae.analysis.likelihood.sharding",
    "sharded_bdmc": "pyrovae.analysis.likelihood.sharding",
    "sharded_source_log_likelihoods": "pyrovae.analysis.likelihood.sharding",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
