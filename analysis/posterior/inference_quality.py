"""What a run's posterior diagnostics say, in sentences and table rows (no HTML).

Numbers in, words out, from the dict of :func:`~pyrovae.analysis.posterior.diagnose.diagnose_run`
(``diagnostics.json``), so that a notebook can call it on its own and the report shows
the same text. A comparison is a finding only when it exceeds 1.96 standard errors: the
amortization and approximation gaps are compared paired, per datum,
d_n = amortization_n - approximation_n, mean(d) against its standard error
std(d) / sqrt(N). Inference Suboptimality in Variational Autoencoders (Cremer, Li &
Duvenaud, 2018), https://arxiv.org/abs/1801.03558

Example::

    from pyrovae.analysis.posterior.diagnose import load_diagnostics
    print("\\n".join(inference_conclusions(load_diagnostics("runs/vae-z10"))))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyrovae.analysis.likelihood.evidence import Z95
from pyrovae.analysis.stats import mean_stderr

__all__ = ["inference_conclusions", "gap_table", "flag_counts_text", "GAP_ROWS", "FLAG_LABELS"]

CALIBRATED = 0.9
"""The coverage of a central 90% interval of a guide whose marginals match the posterior's."""
GAP_ROWS = (
    ("log_px", "log p(x)"),
    ("elbo_amortized", "ELBO of the guide q(z | x)"),
    ("elbo_optimal", "ELBO of q*, the best of its family per image"),
    ("total_gap", "total gap log p(x) - ELBO(q)"),
    ("approximation_gap", "approximation gap log p(x) - ELBO(q*)"),
    ("amortization_gap", "amortization gap ELBO(q*) - ELBO(q)"),
)
"""Rows of :func:`gap_table`: key of ``diagnostics["gaps"]`` and its label."""


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _pm(mean: float, se: float | None) -> str:
    return f"{mean:.2f}" if se is None else f"{mean:.2f} +- {se:.2f}"


def _summary(gaps: Mapping[str, Any], name: str) -> tuple[float, float | None] | None:
    entry = gaps.get(name)
    if not isinstance(entry, Mapping) or _finite(entry.get("mean")) is None:
        return None
    return float(entry["mean"]), _finite(entry.get("stderr"))


def _paired(data: Sequence[Any], a: str, b: str) -> tuple[float, float | None, int] | None:
    """mean and standard error over data of gaps[a] - gaps[b]."""
    diffs = []
    for entry in data:
        gaps = entry.get("gaps") if isinstance(entry, Mapping) else None
        if isinstance(gaps, Mapping):
            va, vb = _finite(gaps.get(a)), _finite(gaps.get(b))
            if va is not None and vb is not None:
                diffs.append(va - vb)
    if not diffs:
        return None
    return (*mean_stderr(diffs), len(diffs))


FLAG_LABELS = {
    "r_hat": "R-hat",
    "ess_bulk": "bulk ESS",
    "ess_tail": "tail ESS",
    "divergent": "divergences",
    "not_finite": "non-finite draws or diagnostics",
}
"""How :func:`inference_conclusions` names each reason a NUTS reference is flagged for."""


def flag_counts_text(diag: Mapping[str, Any]) -> str:
    """How many NUTS references each check flagged, e.g. ``R-hat 1, tail ESS 2`` (empty
    when none was flagged or the file has no counts)."""
    counts = diag.get("flag_counts") if isinstance(diag.get("flag_counts"), Mapping) else {}
    return ", ".join(f"{FLAG_LABELS.get(k, k)} {v}" for k, v in counts.items() if v)


def _flag_rule(diag: Mapping[str, Any]) -> str:
    """The rule the references were flagged by, with the count of each reason, in brackets.

    Files written before the ESS and divergence checks flagged on R-hat alone; they are
    said to be so, so that a reference with a tiny ESS or divergences is never taken as
    checked for them."""
    thresholds = diag.get("thresholds")
    if not isinstance(thresholds, Mapping):
        return (
            "(on rank-normalized R-hat above 1.01 alone: this file predates the ESS and "
            "divergence checks, so re-run pyrovae diagnose)"
        )
    per_chain, least = thresholds.get("ess_per_chain"), _finite(thresholds.get("ess_min"))
    rule = (
        f"(rank-normalized R-hat above {thresholds.get('r_hat_max')}, bulk or tail ESS "
        f"below {least:.0f} ({per_chain} per chain), or any divergent transition"
        if least is not None
        else "(R-hat, ESS or divergences"
    )
    named = flag_counts_text(diag)
    return rule + (f"; images by reason: {named})" if named else ")")


def _nuts_sentences(diag: Mapping[str, Any]) -> list[str]:
    budget = diag.get("budget") if isinstance(diag.get("budget"), Mapping) else {}
    n_ref = diag.get("num_reference")
    if not isinstance(n_ref, int):  # older files: every datum had a reference
        n_ref = sum(1 for e in diag.get("data", []) if isinstance(e, Mapping) and "r_hat_max" in e)
    n = diag.get("num_data")
    if not n_ref:
        return [f"No NUTS reference posteriors were drawn for the {n} images (--nuts-data)."]
    flagged = int(diag.get("flagged") or 0)
    chains, warmup, samples = (budget.get(k) for k in ("chains", "warmup", "samples"))
    what = f"{chains} chains x {samples} draws after {warmup} warm-up steps" if chains else ""
    text = (
        f"NUTS reference posteriors p(z | x) for {n_ref} of {n} test images"
        + (f" ({what})" if what else "")
        + f": {flagged} flagged {_flag_rule(diag)}"
    )
    r_hat, ess = _finite(diag.get("r_hat_max")), _finite(diag.get("ess_bulk_min"))
    tail, divergent = _finite(diag.get("ess_tail_min")), diag.get("num_divergent")
    if r_hat is not None:
        text += f"; largest R-hat {r_hat:.3f}"
    if ess is not None:
        text += f", smallest bulk ESS {ess:.0f}"
    if tail is not None:
        text += f", smallest tail ESS {tail:.0f}"
    if isinstance(divergent, int) and not isinstance(divergent, bool):
        text += f", {divergent} divergent transitions in all"
    text += "."
    out = [text]
    if flagged:
        which = "The flagged image is" if flagged == 1 else f"The {flagged} flagged images are"
        out.append(
            f"{which} left out of the guide-against-posterior comparison (the gaps below "
            "need no NUTS reference and cover every image); more warm-up or draws "
            "(--warmup, --samples) may mix them."
        )
    coverage, se = _finite(diag.get("coverage_90_mean")), _finite(diag.get("coverage_90_stderr"))
    if coverage is not None:
        sentence = (
            f"The guide's central 90% intervals hold {coverage:.0%} of the posterior draws "
            f"on average over dims and images"
            + ("" if se is None else f" (standard error {se:.1%} over images)")
        )
        if se is not None and coverage < CALIBRATED - Z95 * se:
            sentence += (
                ": the guide is too narrow or misplaced, as a guide fitted by KL(q || p) tends "
                "to be."
            )
        elif se is not None and coverage > CALIBRATED + Z95 * se:
            sentence += ": the guide is wider than the posterior."
        else:
            sentence += ": consistent with 90% within its error."
        out.append(sentence)
    return out


def _gap_sentences(diag: Mapping[str, Any]) -> list[str]:
    gaps = diag.get("gaps") if isinstance(diag.get("gaps"), Mapping) else {}
    total = _summary(gaps, "total_gap")
    approx = _summary(gaps, "approximation_gap")
    amort = _summary(gaps, "amortization_gap")
    if total is None or approx is None or amort is None:
        return []
    budget = diag.get("budget") if isinstance(diag.get("budget"), Mapping) else {}
    method = gaps.get("log_px_method")
    how = (
        f"log p(x) by AIS, T = {budget.get('ais_steps')}, {budget.get('ais_chains')} chains"
        if method == "ais"
        else "log p(x) as given"
    )
    family = gaps.get("family", "the guide's")
    out = [
        f"On {gaps.get('num_data', diag.get('num_data'))} images ({how}; q* the best "
        f"{family} guide per image, {budget.get('gap_steps')} SVI steps), the gap "
        f"log p(x) - ELBO of {_pm(*total)} nats splits into an approximation gap of "
        f"{_pm(*approx)} and an amortization gap of {_pm(*amort)}."
    ]
    paired = _paired(diag.get("data", []), "amortization_gap", "approximation_gap")
    if paired is not None:
        diff, se, _ = paired
        if se is not None and diff > Z95 * se:
            out.append(
                f"Amortization dominates (by {_pm(diff, se)} nats, paired per image), as "
                "Cremer et al. (2018) found: a better encoder, not a richer guide family, "
                "would close most of the gap."
            )
        elif se is not None and diff < -Z95 * se:
            out.append(
                f"The approximation gap dominates (by {_pm(-diff, se)} nats, paired per "
                "image), unlike Cremer et al.'s (2018) finding: a richer guide family "
                "(--guide flow) would close more of the gap than a better encoder."
            )
        else:
            out.append(
                "Neither gap dominates: their paired difference, "
                f"{_pm(diff, se)} nats, is within 1.96 standard errors."
            )
    if approx[1] is not None and approx[0] < -Z95 * approx[1]:
        out.append(
            "The approximation gap is negative beyond its error, so log p(x) is "
            "underestimated: raise the AIS steps (--ais-steps)."
        )
    return out


def inference_conclusions(diagnostics: Mapping[str, Any] | None) -> list[str]:
    """Sentences on the NUTS references, the guide's coverage and the inference gaps."""
    if not diagnostics:
        return []
    if diagnostics.get("stale"):
        return [str(diagnostics["stale"])]
    return _nuts_sentences(diagnostics) + _gap_sentences(diagnostics)


def gap_table(diagnostics: Mapping[str, Any]) -> list[tuple[str, float, float | None]]:
    """``(label, mean, stderr)`` per row of :data:`GAP_ROWS` present in the diagnostics."""
    gaps = diagnostics.get("gaps") if isinstance(diagnostics.get("gaps"), Mapping) else {}
    rows = []
    for key, label in GAP_ROWS:
        summary = _summary(gaps, key)
        if summary is not None:
            rows.append((label, *summary))
    return rows
