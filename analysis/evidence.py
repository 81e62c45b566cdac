"""What stands behind a log-likelihood comparison: AIS, convergence in K, or nothing yet.

The report may say "source A beats source B" only with evidence. In order of strength:

1. **AIS** (annealed importance sampling) estimates of both sources on the same images,
   whose difference exceeds twice its standard error (paired image by image); the BDMC
   gap says how far AIS at that number of steps can be from log p(x) on data like these.
2. **Converged importance sampling**: the estimates of both sources have stopped rising
   in K (:func:`~pyrovae.analysis.compare.ksweep_converged`) and their paired difference
   exceeds 1.96 standard errors.
3. Otherwise the comparison is **undetermined**: an importance-sampling estimate that is
   still rising in K is a lower bound whose bias may be larger than the difference.

Sandwiching the marginal likelihood using bidirectional Monte Carlo (Grosse et al., 2015),
https://arxiv.org/abs/1511.02543
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AIS_AGREEMENT",
    "BDMC_TRUSTED_GAP",
    "Z95",
    "Evidence",
    "ais_difference",
    "judge",
    "evidence_sentences",
]

AIS_AGREEMENT = 1.0
"""IS and AIS means within this many nats count as agreeing."""
BDMC_TRUSTED_GAP = 1.0
"""A BDMC gap (nats) below which AIS at that number of steps is trusted."""
Z95 = 1.96
"""A difference d with standard error s is shown when |d| > Z95 * s (two-sided 95%)."""


@dataclass(frozen=True)
class Evidence:
    """The verdict on log p_a(x) - log p_b(x).

    Attributes:
        established: the sign of the difference is shown (by AIS or converged IS).
        difference: the difference the verdict rests on (nats per datum).
        stderr: its standard error (None when unknown).
        basis: ``"AIS"``, ``"converged importance sampling"``, or why it is undetermined.
    """

    established: bool
    difference: float | None
    stderr: float | None
    basis: str


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _entry(sources: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    entry = sources.get(name)
    return entry if isinstance(entry, Mapping) else {}


def _ais(entry: Mapping[str, Any]) -> tuple[float, float] | None:
    ais = entry.get("ais")
    if not isinstance(ais, Mapping):
        return None
    value, se = _num(ais.get("loglik")), _num(ais.get("stderr"))
    return None if value is None or se is None else (value, se)


def ais_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[float, float]:
    """AIS mean difference of two ``"ais"`` entries and its standard error.

    Paired image by image when both hold ``per_datum`` lists of the same length n > 1:
    d_i = a_i - b_i, mean(d) and sd(d) / sqrt(n). Otherwise
    loglik_a - loglik_b with sqrt(stderr_a^2 + stderr_b^2), as if independent.
    """
    pa, pb = a.get("per_datum"), b.get("per_datum")
    if isinstance(pa, list) and isinstance(pb, list) and len(pa) == len(pb) > 1:
        diffs = np.asarray(pa, dtype=float) - np.asarray(pb, dtype=float)
        if np.isfinite(diffs).all():
            return float(diffs.mean()), float(diffs.std(ddof=1) / math.sqrt(len(diffs)))
    return float(a["loglik"]) - float(b["loglik"]), math.hypot(
        float(a["stderr"]), float(b["stderr"])
    )


def _is_difference(sources: Mapping[str, Any], a: str, b: str) -> tuple[float, float | None]:
    ea, eb = _entry(sources, a), _entry(sources, b)
    if b == "prior" and _num(ea.get("vs_prior")) is not None:
        return float(ea["vs_prior"]), _num(ea.get("vs_prior_stderr"))
    la, lb = _num(ea.get("loglik")), _num(eb.get("loglik"))
    if la is None or lb is None:
        return math.nan, None
    sa, sb = _num(ea.get("stderr")), _num(eb.get("stderr"))
    return la - lb, None if sa is None or sb is None else math.hypot(sa, sb)


def judge(sources: Mapping[str, Any], a: str, b: str = "prior") -> Evidence:
    """Whether ``a`` differs from ``b`` in held-out log-likelihood, and on what evidence.

    ``sources`` is the ``"sources"`` dict of an evaluation (see
    :func:`~pyrovae.analysis.evaluate.evaluate_run`). AIS on both sources decides when it
    is there; otherwise importance sampling decides only if both estimates converged in K.
    """
    ea, eb = _entry(sources, a), _entry(sources, b)
    ais_a, ais_b = _ais(ea), _ais(eb)
    if ais_a is not None and ais_b is not None:
        diff, se = ais_difference(ea["ais"], eb["ais"])
        if abs(diff) > Z95 * se:
            return Evidence(True, diff, se, "AIS")
        return Evidence(False, diff, se, f"under AIS the difference is within {Z95} x {se:.2f}")
    diff, se = _is_difference(sources, a, b)
    rising = [n for n, e in ((a, ea), (b, eb)) if e.get("converged") is False]
    unknown = [n for n, e in ((a, ea), (b, eb)) if "converged" not in e]
    if rising:
        subject = (
            f"the estimate for {rising[0]} is"
            if len(rising) == 1
            else f"the estimates for {' and '.join(rising)} are"
        )
        return Evidence(False, diff, se, f"{subject} still rising in K and no AIS was run")
    if unknown:
        return Evidence(False, diff, se, "convergence in K was not recorded and no AIS was run")
    if se is not None and math.isfinite(diff) and abs(diff) > Z95 * se:
        return Evidence(True, diff, se, "converged importance sampling")
    return Evidence(False, diff, se, f"importance sampling puts it within {Z95} standard errors")


def evidence_sentences(evaluation: Mapping[str, Any]) -> list[str]:
    """Plain-language findings on the evidence: IS against AIS, convergence in K, BDMC."""
    sources = evaluation.get("sources")
    if not isinstance(sources, Mapping):
        return []
    out = []
    entries = {n: e for n, e in sources.items() if isinstance(e, Mapping)}
    rising = [n for n, e in entries.items() if e.get("converged") is False]
    if rising:
        named = []
        for name in rising:
            left = _num(entries[name].get("ksweep_remaining"))
            named.append(name if left is None else f"{name} (about {left:.2f} nats to go)")
        out.append(
            f"Still rising in K (L_K grew by more than 0.1 nats over the last 5x or more of "
            f"draws, so these are lower bounds that have not converged; what is left is a "
            f"geometric extrapolation of the last rises): {', '.join(named)}."
        )
    agree, disagree = [], []
    ais_meta: Mapping[str, Any] = {}
    for name, entry in entries.items():
        ais = entry.get("ais")
        if not isinstance(ais, Mapping):
            continue
        ais_meta = ais
        value, is_value = _num(ais.get("loglik")), _num(ais.get("is_loglik"))
        if value is None or is_value is None:
            continue
        if abs(value - is_value) <= AIS_AGREEMENT:
            agree.append(name)
        else:
            disagree.append(f"{name} (IS {is_value:.2f}, AIS {value:.2f})")
    if agree or disagree:
        budget = (
            f"AIS ({ais_meta.get('steps')} steps, {ais_meta.get('chains')} chains, "
            f"{ais_meta.get('num_test')} images)"
        )
        parts = []
        if agree:
            parts.append(
                f"agrees with importance sampling within {AIS_AGREEMENT:g} nat for "
                f"{', '.join(agree)}"
            )
        if disagree:
            parts.append(f"differs by more for {', '.join(disagree)}")
        out.append(f"{budget} {'; it '.join(parts)}.")
    bdmc = evaluation.get("bdmc")
    if isinstance(bdmc, Mapping) and _num(bdmc.get("gap")) is not None:
        gap = float(bdmc["gap"])
        verdict = (
            "small enough to trust AIS at this number of steps"
            if gap < BDMC_TRUSTED_GAP
            else "too large to trust AIS at this number of steps: raise it"
        )
        out.append(
            f"BDMC on {bdmc.get('num_data')} data simulated from the model brackets log p(x) "
            f"between {_num(bdmc.get('lower')):.2f} and {_num(bdmc.get('upper')):.2f} nats "
            f"at {bdmc.get('steps')} steps: a gap of {gap:.2f} nats, {verdict}."
        )
    return out


def __getattr__(name: str):  # plot_ksweep moved to the figures package; still importable here
    if name == "plot_ksweep":
        from .figures.curves import plot_ksweep

        return plot_ksweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
