"""The report's conclusions: numbers in, plain-language sentences out (no HTML).

Every sentence follows from the numbers of a ``pyrovae evaluate`` JSON (or several runs of
them): a difference is a finding only beyond 1.96 standard errors (paired where the
estimator allows), a tie is said to be one, and an estimate still rising in K or flagged
by PSIS k-hat is named so. A notebook can call :func:`conclusions` and
:func:`cross_run_conclusions` on its own; the report renders the same sentences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyrovae.analysis.evaluation.compare import KHAT_FLAG_FRACTION
from pyrovae.analysis.likelihood.evidence import (
    BDMC_TRUSTED_GAP,
    Z95,
    evidence_sentences,
    judge,
    source_bdmc,
)
from pyrovae.analysis.likelihood.psis import KHAT_THRESHOLD
from pyrovae.analysis.report.findings import (
    _count,
    _quality_sentences,
    _surgery_n_sentence,
    _surgery_sentences,
)
from pyrovae.analysis.report.numbers import (
    ADVICE,
    PRIOR,
    _beyond,
    _finite,
    _flagged,
    _khat_fraction,
    _leading,
    _listing,
    _mapping,
    _pair,
    _prior_difference,
    _signed,
    _sources,
    _unreliable,
    data_noun,
)

# ------------------------------------------------------------------------- conclusions


def _evidence_clause(sources: Mapping[str, Mapping[str, Any]], a: str, b: str) -> str:
    """'; it holds under AIS (...)' or '; whether it holds is undetermined: ...'."""
    verdict = judge(sources, a, b)
    if not verdict.established:
        return f"; but the comparison of {a} and {b} is undetermined: {verdict.basis}"
    if verdict.basis == "AIS":
        return (
            f"; it holds under AIS ({_signed(verdict.difference)} \u00b1 {verdict.stderr:.2f} nats"
            f"{_bdmc_clause(verdict.bdmc_gaps)})"
        )
    return f"; it rests on {verdict.basis}"


def _bdmc_clause(gaps: Mapping[str, float | None]) -> str:
    """'; BDMC gap 0.04 nats for gmm, no BDMC gap measured for prior' (each gap backs its
    own source's AIS only)."""
    measured = [f"{g:.2f} nats for {n}" for n, g in gaps.items() if g is not None]
    missing = [n for n, g in gaps.items() if g is None]
    parts = []
    if measured:
        parts.append(f"BDMC gap {_listing(measured)}")
    if missing:
        parts.append(f"no BDMC gap measured for {_listing(missing)}")
    return "; " + ", ".join(parts) if parts else ""


def _has_ais(sources: Mapping[str, Mapping[str, Any]], name: str) -> bool:
    """Whether an AIS estimate (with its error) of ``name`` is present."""
    ais = _mapping(sources.get(name, {}).get("ais"))
    return all(_finite(ais.get(key)) is not None for key in ("loglik", "stderr"))


def _both_ais(sources: Mapping[str, Mapping[str, Any]], a: str, b: str) -> bool:
    """Whether AIS estimates (with errors) of both sources are present."""
    return _has_ais(sources, a) and _has_ais(sources, b)


def _measured(diff: float, se: float | None, paired: bool, kind: str | None = None) -> str:
    """What importance sampling alone says: 'importance sampling puts it beyond/within ...'."""
    if se is None:
        return "importance sampling recorded no standard error for it"
    kind = kind or ("paired" if paired else "both errors combined")
    where = "beyond" if _beyond(diff, se) else "within"
    return f"importance sampling puts it {where} {Z95} standard errors ({se:.2f}, {kind})"


def _verdict(
    sources: Mapping[str, Mapping[str, Any]],
    a: str,
    b: str,
    diff: float,
    se: float | None,
    paired: bool,
    other: str = "the prior",
    kind: str | None = None,
) -> str:
    """One verdict on log p_a(x) - log p_b(x), from the strongest evidence present.

    AIS on both sources decides when it is there
    (:func:`~pyrovae.analysis.likelihood.evidence.judge`);
    else importance sampling decides only where both estimates converged in K (with the
    error ``se`` given: paired, or bounded by the paired errors, where known); an
    importance-sampling difference of estimates still rising in K (or of unknown
    convergence) is undetermined whatever its size, and is never called significant.
    """
    verdict = judge(sources, a, b)
    measured = _measured(diff, se, paired, kind)
    if _both_ais(sources, a, b):
        if verdict.established:
            return "significant" + _evidence_clause(sources, a, b)
        d, d_se = verdict.difference, verdict.stderr
        if d is not None and d_se is not None and abs(d) <= Z95 * d_se:
            return f"not significant under AIS, the strongest evidence here: {verdict.basis}"
        return f"undetermined under AIS, the strongest evidence here: {verdict.basis}"
    if all(sources.get(n, {}).get("converged") is True for n in (a, b)):
        if se is not None and _beyond(diff, se):
            return f"significant: {measured}, and both estimates converged in K"
        return f"not significant: {measured}, so it is indistinguishable from {other}"
    return f"undetermined: {measured}, but {verdict.basis}"


def _versus_prior(sources: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """'gmm +2.50 nats over the prior, <verdict>' (or '... below the prior ...')."""
    diff, se, paired = _prior_difference(sources, name) or (math.nan, None, False)
    if not math.isfinite(diff):
        return f"{name}: no difference to the prior could be computed"
    where = f"{_signed(diff)} nats over" if diff >= 0 else f"{-diff:.2f} nats below"
    return f"{name} {where} the prior, {_verdict(sources, name, PRIOR, diff, se, paired)}"


def _versus_prior_all(sources: Mapping[str, Mapping[str, Any]], names: Sequence[str]) -> str:
    """Each of ``names`` against the prior, one verdict each; the importance-sampling
    differences whose verdict is undetermined for the same reason share one clause."""
    alone, grouped = [], {}
    for name in names:
        diff, se, paired = _prior_difference(sources, name) or (math.nan, None, False)
        entries = [sources.get(n, {}) for n in (name, PRIOR)]
        settled = _both_ais(sources, name, PRIOR) or all(
            e.get("converged") is True for e in entries
        )
        if settled or not math.isfinite(diff) or se is None:
            alone.append(_versus_prior(sources, name))
            continue
        rising = any(e.get("converged") is False for e in entries)
        where = "beyond" if _beyond(diff, se) else "within"
        kind = "paired" if paired else "both errors combined"
        grouped.setdefault((where, rising), []).append(
            f"{name} {_signed(diff)} \u00b1 {se:.2f} ({kind})"
        )
    for (where, rising), items in grouped.items():
        why = (
            "their estimates or the prior's are still rising in K (see above)"
            if rising
            else "convergence in K was not recorded"
        )
        each = "it" if len(items) == 1 else "each"
        alone.append(
            f"{_listing(items)} nats over the prior: undetermined, as importance sampling puts "
            f"{each} {where} {Z95} standard errors but {why} and no AIS was run"
        )
    return "; ".join(alone)


def _loglik_sentence(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The leading source(s) by held-out log-likelihood, and how they compare with the prior.

    A single best source is named only when its difference to every other source is
    shown (:func:`_beyond`); otherwise the leading group is listed as tied. Each
    comparison gets one verdict (:func:`_verdict`).
    """
    ranked, tied = _leading(sources)
    if not ranked:
        return []
    best_value, best = ranked[0]
    best_se = _finite(sources[best].get("stderr"))
    value = f"{best_value:.2f}" + ("" if best_se is None else f" \u00b1 {best_se:.2f}")
    caveat = (
        " (but see the k-hat warning above)" if any(_unreliable(sources[n]) for n in tied) else ""
    )
    if len(ranked) == 1:
        return [f"Only the source {best} has a held-out log-likelihood: {value} nats{caveat}."]
    prior = _finite(sources.get(PRIOR, {}).get("loglik"))
    if len(tied) > 1:
        listed = []
        for name in tied:
            se = _finite(sources[name].get("stderr"))
            loglik = float(sources[name]["loglik"])
            listed.append(
                f"{name} ({loglik:.2f}" + ("" if se is None else f" \u00b1 {se:.2f}") + ")"
            )
        text = (
            f"The leading sources are tied: {_listing(listed)} lie within {Z95} standard errors "
            "of the highest held-out log-likelihood, so none of them is the best"
        )
        others = [n for n in tied if n != PRIOR]
        if prior is not None and others:
            text += f"; against the prior ({prior:.2f}): " + _versus_prior_all(sources, others)
        return [text + caveat + "."]
    runner_value, runner = ranked[1]
    if prior is not None and best != PRIOR:
        diff, se, paired = _prior_difference(sources, best) or (best_value, None, False)
        text = (
            f"Drawing z from {best} gives the highest held-out log-likelihood, {value} nats, "
            f"{_signed(diff)} nats over the prior ({prior:.2f}): "
            f"{_verdict(sources, best, PRIOR, diff, se, paired)}"
        )
        if runner != PRIOR:
            margin, margin_se, bound = _pair(sources, best, runner) or (0.0, None, False)
            kind = "bounded by the paired errors" if bound else "both errors combined"
            verdict = _verdict(sources, best, runner, margin, margin_se, bound, runner, kind)
            text += f"; it lies {margin:.2f} nats above the runner-up {runner}: {verdict}"
        return [text + caveat + "."]
    if best == PRIOR:
        diff, se, paired = _prior_difference(sources, runner) or (runner_value, None, False)
        return [
            f"Drawing z from the prior itself gives the highest held-out log-likelihood, "
            f"{value} nats; the best fitted source, {runner}, is {abs(diff):.2f} nats lower: "
            f"{_verdict(sources, PRIOR, runner, -diff, se, paired, runner)}{caveat}."
        ]
    diff, se, _ = _pair(sources, best, runner) or (best_value - runner_value, None, False)
    return [
        f"Drawing z from {best} gives the highest held-out log-likelihood, {value} nats, "
        f"{diff:.2f} nats over the runner-up {runner} (no prior source to compare with): "
        f"{_verdict(sources, best, runner, diff, se, False, runner)}{caveat}."
    ]


def _heldout_label(evaluation: Mapping[str, Any]) -> str:
    """The data of the held-out numbers: '500 test images', 'the val split' or 'held-out data'."""
    split, n = evaluation.get("split"), _count(evaluation.get("num_test"))
    split = split if isinstance(split, str) and split else None
    if n is not None:
        return f"{n} {split or 'held-out'} {data_noun()}"
    return f"the {split} split" if split else "held-out data"


def _gap_sentence(evaluation: Mapping[str, Any]) -> list[str]:
    elbo, loglik = _finite(evaluation.get("elbo")), _finite(evaluation.get("loglik"))
    if elbo is None or loglik is None:
        return []
    k = _finite(evaluation.get("num_samples"))
    draws = "" if k is None else f" with K = {int(k)} draws"
    return [
        f"The importance-sampled log p(x) on {_heldout_label(evaluation)}{draws}, "
        f"{loglik:.2f} nats, lies {loglik - elbo:.2f} nats above the ELBO ({elbo:.2f}, on the "
        f"same {data_noun()}); the gap is the average KL(q(z|x) || p(z|x)) of the guide."
    ]


def _advice_sentences(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What to do when every log-likelihood estimate is unreliable or still rising in K."""
    rows = [e for e in sources.values() if _finite(e.get("loglik")) is not None]
    if not rows or not all(_flagged(e) for e in rows):
        return []
    if all(_finite(_mapping(e.get("ais")).get("loglik")) is not None for e in rows):
        todo = "compare the sources by their AIS estimates instead, or raise K (--num-samples)"
    else:
        todo = ADVICE
    return [
        "Every held-out log-likelihood estimate here is unreliable (PSIS k-hat flag) or "
        "still rising in K, so no comparison between these sources can be trusted; to "
        f"settle it, {todo}."
    ]


def _khat_sentences(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One warning naming every source whose k-hat flag is up, with its share of data."""
    flagged = {name: _khat_fraction(e) for name, e in sources.items() if _unreliable(e)}
    if not flagged:
        return []
    limit = f"(more than {100 * KHAT_FLAG_FRACTION:.0f}%)"
    if len(flagged) == 1:
        [(name, fraction)] = flagged.items()
        share = "" if fraction is None else f" for {100 * fraction:.0f}% of the test data"
        return [
            f"The estimate for {name} is unreliable: PSIS k-hat > {KHAT_THRESHOLD}{share} "
            f"{limit}, so the importance weights are heavy-tailed for this source and its "
            "log-likelihood is probably an underestimate."
        ]
    if len(flagged) == len(sources) and all(f is not None for f in flagged.values()):
        low, high = 100 * min(flagged.values()), 100 * max(flagged.values())
        span = f"{low:.0f}%" if round(low) == round(high) else f"{low:.0f}-{high:.0f}%"
        return [
            f"The estimate of every source is unreliable: PSIS k-hat > {KHAT_THRESHOLD} for "
            f"{span} of the test data {limit}, so the importance weights are heavy-tailed and "
            "the log-likelihoods are probably underestimates."
        ]
    named = [n if f is None else f"{n} ({100 * f:.0f}%)" for n, f in flagged.items()]
    return [
        f"The estimates for {', '.join(named[:-1])} and {named[-1]} are unreliable: PSIS "
        f"k-hat > {KHAT_THRESHOLD} for that share of the test data {limit}, so the importance "
        "weights are heavy-tailed for these sources and their log-likelihoods are probably "
        "underestimates."
    ]


def _ais_level(evaluation: Mapping[str, Any], names: Sequence[str]) -> str:
    """'AIS with a BDMC gap of its own below 1 nat for prior; AIS with no BDMC gap measured
    for gmm': each source's AIS is backed only by the gap measured on data simulated from
    it (:func:`~pyrovae.analysis.likelihood.evidence.source_bdmc`)."""
    gaps = {n: source_bdmc(evaluation, n) for n in names}
    checked = [n for n, r in gaps.items() if r is not None and float(r["gap"]) < BDMC_TRUSTED_GAP]
    wide = [n for n, r in gaps.items() if r is not None and n not in checked]
    missing = [n for n, r in gaps.items() if r is None]
    parts = []
    if checked:
        parts.append(
            f"AIS with a BDMC gap of its own below {BDMC_TRUSTED_GAP:g} nat for {_listing(checked)}"
        )
    if wide:
        parts.append(f"AIS whose own BDMC gap is too large to trust for {_listing(wide)}")
    if missing:
        parts.append(f"AIS with no BDMC gap measured for {_listing(missing)}")
    return "; ".join(parts)


def _evidence_level(evaluation: Mapping[str, Any]) -> list[str]:
    """The level of evidence behind the log-likelihoods, stated before any of them.

    In order of strength (DESIGN, "Trust in numbers"): AIS on the same images, importance
    sampling whose L_K stopped rising in K, importance sampling at one K. PSIS k-hat is
    named beside it, as the share of images above 0.7 over the sources.
    """
    sources = {n: e for n, e in _sources(evaluation).items() if _finite(e.get("loglik"))}
    if not sources:
        return []
    k = _finite(evaluation.get("num_samples"))
    at_k = "" if k is None else f" (K = {int(k)})"
    with_ais = [n for n in sources if _has_ais(sources, n)]
    converged = [n for n, e in sources.items() if e.get("converged") is True]
    if with_ais:
        level = _ais_level(evaluation, with_ais) + (
            "" if len(with_ais) == len(sources) else "; importance sampling for the rest"
        )
    elif converged and len(converged) == len(sources):
        level = f"importance sampling{at_k} whose L_K stopped rising in K for every source"
    elif converged:
        level = (
            f"importance sampling{at_k}, converged in K for {_listing(converged)} only; the "
            "other estimates are lower bounds still rising in K"
        )
    else:
        level = (
            f"importance sampling at one K{at_k}, no estimate shown to have converged in K and "
            "no AIS: lower bounds of unknown tightness"
        )
    fractions = [f for e in sources.values() if (f := _khat_fraction(e)) is not None]
    khat = ""
    if fractions:
        low, high = 100 * min(fractions), 100 * max(fractions)
        span = f"{low:.0f}%" if round(low) == round(high) else f"{low:.0f}-{high:.0f}%"
        flagged = [n for n, e in sources.items() if _unreliable(e)]
        if len(flagged) < len(sources):  # else the warning that follows says it
            khat = (
                f"; PSIS k-hat > {KHAT_THRESHOLD} for {span} of the {data_noun()} across the "
                "sources"
            )
    return [f"Level of evidence behind the log-likelihoods: {level}{khat}."]


def _check_evaluation(evaluation: Any, where: str = "evaluation") -> Mapping[str, Any]:
    if evaluation is None:
        return {}
    if not isinstance(evaluation, Mapping):
        raise ValueError(
            f"{where} must be a dict (the JSON of `pyrovae evaluate`), "
            f"got {type(evaluation).__name__}"
        )
    return evaluation


def conclusions(evaluation: Mapping[str, Any]) -> list[str]:
    """Plain-language findings computed from one run's ``pyrovae evaluate`` numbers.

    In order, the evidence first: the level of evidence behind the log-likelihoods (AIS,
    importance sampling converged in K, or importance sampling at one K) with the range of
    PSIS k-hat; one warning naming every source whose k-hat exceeds 0.7 on more than 10%
    of the data, and what to do when every source is flagged; the sources still rising in
    K (with a lower bound on what is left), IS against AIS, the BDMC gap. Then the source
    with the highest held-out log-likelihood and its margin over the prior, or the leading
    sources listed as tied; per sample-quality score the best source, or the tie
    (overlapping 95% intervals, or equal as shown), with the near-copies of training
    images beside them; the importance-sampling gap over the ELBO on the same held-out
    images; ELBO surgery on the training data (the share of the KL term that is marginal
    KL(q(z) || p(z)), the rest being mutual information, flagged where its estimate lies
    outside [0, log N]; Hoffman & Johnson, 2016); active units; for a semi-supervised M2,
    the test error of its classifier q(y | x). Each comparison gets one
    verdict from the strongest evidence present (:func:`_verdict`): significant only when
    it holds under AIS or both importance-sampling estimates converged in
    K (:func:`~pyrovae.analysis.likelihood.evidence.judge`), otherwise undetermined or not
    significant.
    Missing numbers only drop their sentence.
    """
    evaluation = _check_evaluation(evaluation)
    sources = _sources(evaluation)
    return [
        *_evidence_level(evaluation),
        *_khat_sentences(sources),
        *_advice_sentences(sources),
        *evidence_sentences(evaluation),
        *_loglik_sentence(sources),
        *_quality_sentences(sources),
        *_gap_sentence(evaluation),
        *_surgery_sentences(_mapping(evaluation.get("surgery"))),
        *_surgery_n_sentence(evaluation),
        *_label_error_sentence(evaluation),
    ]


def _label_error_sentence(evaluation: Mapping[str, Any]) -> list[str]:
    """A semi-supervised M2's classifier q(y | x): its test error and exact interval."""
    entry = _mapping(evaluation.get("label_error"))
    if not entry:
        return []
    low, high = entry["interval"]
    return [
        f"The classifier q(y | x) mislabels {100 * entry['error']:.2f}% of the "
        f"{entry['num_test']} held-out images ({100 * entry['level']:.0f}% interval "
        f"{100 * low:.2f}% to {100 * high:.2f}%); the log-likelihoods above sum the label out."
    ]
