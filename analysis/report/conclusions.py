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

from ..compare import KHAT_FLAG_FRACTION
from ..diagnostics import KHAT_THRESHOLD
from ..evidence import Z95, evidence_sentences, judge
from ..quality import wilson_interval
from ..surgery import ACTIVITY_THRESHOLD
from .numbers import (
    _QUALITY,
    ADVICE,
    PRIOR,
    _finite,
    _flagged,
    _fmt,
    _khat_fraction,
    _leading,
    _listing,
    _mapping,
    _mutual_information,
    _pair,
    _pct,
    _prior_difference,
    _signed,
    _significance,
    _sources,
    _unreliable,
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
    """'; BDMC gap 0.04 nats for gmm, none measured for prior' (each gap backs its own
    source's AIS only)."""
    measured = [f"{g:.2f} nats for {n}" for n, g in gaps.items() if g is not None]
    missing = [n for n, g in gaps.items() if g is None]
    parts = []
    if measured:
        parts.append(f"BDMC gap {_listing(measured)}")
    if missing:
        parts.append(f"no BDMC gap measured for {_listing(missing)}")
    return "; " + ", ".join(parts) if parts else ""


def _versus_prior(sources: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """'gmm +2.50 nats over the prior, <significance>' (or '... below the prior ...')."""
    diff, se, paired = _prior_difference(sources, name) or (math.nan, None, False)
    if not math.isfinite(diff):
        return f"{name}: no difference to the prior could be computed"
    where = f"{_signed(diff)} nats over" if diff >= 0 else f"{-diff:.2f} nats below"
    return f"{name} {where} the prior, {_significance(diff, se, paired)}"


def _loglik_sentence(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The leading source(s) by held-out log-likelihood, and how they compare with the prior.

    A single best source is named only when its difference to every other source is
    shown (:func:`_beyond`); otherwise the leading group is listed as tied.
    """
    ranked, tied = _leading(sources)
    if not ranked:
        return []
    best_value, best = ranked[0]
    best_se = _finite(sources[best].get("stderr"))
    value = f"{best_value:.2f}" + ("" if best_se is None else f" \u00b1 {best_se:.2f}")
    caveat = (
        " (but see the k-hat warning below)" if any(_unreliable(sources[n]) for n in tied) else ""
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
            text += f"; against the prior ({prior:.2f}): " + "; ".join(
                _versus_prior(sources, n) for n in others
            )
            text += _evidence_clause(sources, others[0], PRIOR)
        return [text + caveat + "."]
    runner_value, runner = ranked[1]
    if prior is not None and best != PRIOR:
        diff, se, paired = _prior_difference(sources, best) or (best_value, None, False)
        text = (
            f"Drawing z from {best} gives the highest held-out log-likelihood, {value} nats, "
            f"{_signed(diff)} nats over the prior ({prior:.2f}); the difference is "
            f"{_significance(diff, se, paired)}"
        )
        if runner != PRIOR:
            margin, margin_se, bound = _pair(sources, best, runner) or (0.0, None, False)
            kind = "bounded by the paired errors" if bound else "both errors combined"
            beyond = "" if margin_se is None else f", beyond {Z95} x {margin_se:.2f} ({kind})"
            text += f", and {margin:.2f} nats above the runner-up {runner}{beyond}"
        return [text + _evidence_clause(sources, best, PRIOR) + caveat + "."]
    if best == PRIOR:
        diff, se, paired = _prior_difference(sources, runner) or (runner_value, None, False)
        return [
            f"Drawing z from the prior itself gives the highest held-out log-likelihood, "
            f"{value} nats; the "
            f"best fitted source, {runner}, is {abs(diff):.2f} nats lower, "
            f"{_significance(diff, se, paired)}{_evidence_clause(sources, PRIOR, runner)}"
            f"{caveat}."
        ]
    diff, se, _ = _pair(sources, best, runner) or (best_value - runner_value, None, False)
    return [
        f"Drawing z from {best} gives the highest held-out log-likelihood, {value} nats, "
        f"{diff:.2f} nats over "
        f"the runner-up {runner} (no prior source to compare with); the difference is "
        f"{_significance(diff, se, False, runner)}{_evidence_clause(sources, best, runner)}"
        f"{caveat}."
    ]


def _quality_text(key: str, value: float | None) -> str:
    if key == "ambiguous":
        return _pct(value)
    return _fmt(value) + (" nats" if key in ("entropy", "coverage_kl") else "")


def _interval(entry: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The 95% interval of a share of samples: recorded, or Wilson's from the count."""
    if key != "ambiguous":
        return None
    low, high = _finite(entry.get("ambiguous_low")), _finite(entry.get("ambiguous_high"))
    if low is not None and high is not None:
        return low, high
    value, n = _finite(entry.get("ambiguous")), _finite(entry.get("num_quality_samples"))
    if value is None or n is None or n < 1 or not 0 <= value <= 1:
        return None
    return wilson_interval(value, int(n))


def _quality_leaders(
    sources: Mapping[str, Mapping[str, Any]], key: str
) -> tuple[list[str], str] | None:
    """The lowest value of ``key`` and every source indistinguishable from it, and why.

    Two sources are indistinguishable when their 95% intervals overlap (shares of
    ambiguous samples), or, without intervals, when they are equal as shown. None for
    fewer than two values.
    """
    values = {n: _finite(e.get(key)) for n, e in sources.items()}
    values = {n: v for n, v in values.items() if v is not None}
    if len(values) < 2:
        return None
    best = min(values, key=lambda n: values[n])
    leaders, reasons = [best], set()
    best_interval = _interval(sources[best], key)
    for name in sorted(values, key=lambda n: values[n]):
        if name == best:
            continue
        interval = _interval(sources[name], key)
        if interval is not None and best_interval is not None:
            if interval[0] <= best_interval[1]:
                leaders.append(name)
                reasons.add("their 95% intervals overlap")
        elif _quality_text(key, values[name]) == _quality_text(key, values[best]):
            leaders.append(name)
            reasons.add("equal at the precision shown")
    return leaders, " or ".join(sorted(reasons))


def _quality_sentences(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The source with the best sample quality per score, or the tie when there is none."""
    wins: dict[str, list[str]] = {}
    ties: list[str] = []
    for key, label, comparative in _QUALITY:
        found = _quality_leaders(sources, key)
        if found is None:
            continue
        leaders, reason = found
        shown = {n: _quality_text(key, _finite(sources[n].get(key))) for n in leaders}
        prior = _finite(sources.get(PRIOR, {}).get(key))
        prior_text = "" if prior is None else f"; prior {_quality_text(key, prior)}"
        if len(leaders) > 1:
            listed = _listing([f"{n} ({shown[n]})" for n in leaders])
            if PRIOR in leaders:
                ties.append(
                    f"No source gives clearly {comparative} than the prior: {listed} are "
                    f"tied ({reason})."
                )
            else:
                ties.append(
                    f"No source gives clearly {comparative}: the leading sources {listed} "
                    f"are tied ({reason}){prior_text}."
                )
            continue
        [best] = leaders
        text = f"{label} ({shown[best]}" + ("" if best == PRIOR else prior_text) + ")"
        wins.setdefault(best, []).append(text)
    sentences = [f"Drawing z from {n} gives {_listing(items)}." for n, items in wins.items()]
    return sentences + ties


def _surgery_sentences(surgery: Mapping[str, Any]) -> list[str]:
    sentences = []
    conditional = bool(surgery.get("conditional_prior"))
    marginal_name = "KL(q(z|y) || p(z|y))" if conditional else "KL(q(z) || p(z))"
    mi_name = "I(x; z | y)" if conditional else "I(x; z)"
    avg = _finite(surgery.get("avg_kl"))
    marginal = _finite(surgery.get("marginal_kl"))
    mi = _mutual_information(surgery)
    if avg is not None and marginal is not None and avg > 0:
        share = marginal / avg
        bound = _finite(surgery.get("mi_upper_bound"))
        bound_text = "" if bound is None else f", at most log N = {bound:.2f} nats"
        mi_value = avg - marginal if mi is None else mi
        sentences.append(
            f"ELBO surgery {_training_label(surgery)}: {100 * share:.0f}% of the KL term "
            f"({avg:.2f} nats) is the marginal "
            f"{marginal_name} = {marginal:.2f} nats; the rest, {mi_value:.2f} nats, is the "
            f"mutual information {mi_name}{bound_text}."
        )
        marginal_se = _finite(surgery.get("marginal_kl_stderr"))
        if marginal_se is not None and marginal_se > 0 and marginal <= Z95 * marginal_se:
            sentences.append(
                f"The marginal KL is within {Z95} standard errors ({marginal_se:.2f}) of 0: "
                "q(z) cannot be told apart from the prior at this Monte Carlo precision."
            )
    elif mi is not None:
        sentences.append(f"The mutual information {mi_name} is {mi:.2f} nats.")
    active = _finite(surgery.get("active_units"))
    if active is not None:
        z_dim = None
        for key in ("kl_per_dim", "activity"):
            if isinstance(surgery.get(key), Sequence) and surgery[key]:
                z_dim = len(surgery[key])
                break
        rule = f"(variance of the encoder mean over data above {ACTIVITY_THRESHOLD:g})"
        if z_dim is None:
            sentences.append(f"{int(active)} latent dimensions are active {rule}.")
        else:
            text = f"{int(active)} of {z_dim} latent dimensions are active {rule}"
            inactive = z_dim - int(active)
            if inactive > 0:
                text += f"; the other {inactive} carry no information about x (collapsed)"
            sentences.append(text + ".")
    return sentences


def _surgery_n_sentence(evaluation: Mapping[str, Any]) -> list[str]:
    """The split at two data-set sizes: KL(q(z) || p(z)) = avg KL - I(x; z) depends on N
    where I(x; z) is near its bound log N."""
    full, part = _mapping(evaluation.get("surgery")), _mapping(evaluation.get("surgery_subset"))
    values = [
        _finite(d.get(k))
        for d in (full, part)
        for k in ("num_data", "marginal_kl", "mutual_information", "mi_upper_bound")
    ]
    if any(v is None for v in values):
        return []
    n1, kl1, mi1, b1, n2, kl2, mi2, b2 = values
    near = max(mi1 / b1 if b1 > 0 else 0.0, mi2 / b2 if b2 > 0 else 0.0)
    verdict = (
        "I(x; z) is near log N, so this split depends on N and KL(q(z) || p(z)) is not a "
        "property of the model alone"
        if near > 0.9
        else "I(x; z) stays well below log N, so the split hardly depends on N"
    )
    return [
        f"On N = {int(n1)} training images KL(q(z) || p(z)) = {kl1:.2f} and I(x; z) = "
        f"{mi1:.2f} nats (log N = {b1:.2f}); on N = {int(n2)}, {kl2:.2f} and {mi2:.2f} "
        f"(log N = {b2:.2f}): {verdict}."
    ]


def _count(value: Any) -> str | None:
    n = _finite(value)
    return None if n is None else f"{int(n):,}"


def _heldout_label(evaluation: Mapping[str, Any]) -> str:
    """The data of the held-out numbers: '500 test images', 'the val split' or 'held-out data'."""
    split, n = evaluation.get("split"), _count(evaluation.get("num_test"))
    split = split if isinstance(split, str) and split else None
    if n is not None:
        return f"{n} {split or 'held-out'} images"
    return f"the {split} split" if split else "held-out data"


def _training_label(surgery: Mapping[str, Any]) -> str:
    """'on 50,000 training images' (or 'on the training data') for ELBO surgery."""
    n = _count(surgery.get("num_data"))
    return "on the training data" if n is None else f"on {n} training images"


def _gap_sentence(evaluation: Mapping[str, Any]) -> list[str]:
    elbo, loglik = _finite(evaluation.get("elbo")), _finite(evaluation.get("loglik"))
    if elbo is None or loglik is None:
        return []
    k = _finite(evaluation.get("num_samples"))
    draws = "" if k is None else f" with K = {int(k)} draws"
    return [
        f"The importance-sampled log p(x) on {_heldout_label(evaluation)}{draws}, "
        f"{loglik:.2f} nats, lies {loglik - elbo:.2f} nats above the ELBO ({elbo:.2f}, on the "
        "same images); the gap is the average KL(q(z|x) || p(z|x)) of the guide."
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
    named = [n if f is None else f"{n} ({100 * f:.0f}%)" for n, f in flagged.items()]
    return [
        f"The estimates for {', '.join(named[:-1])} and {named[-1]} are unreliable: PSIS "
        f"k-hat > {KHAT_THRESHOLD} for that share of the test data {limit}, so the importance "
        "weights are heavy-tailed for these sources and their log-likelihoods are probably "
        "underestimates."
    ]


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

    In order: the source with the highest held-out log-likelihood and its margin over the
    prior (significant when |d| > 1.96 standard errors), or the leading sources listed as
    tied when the leader does not beat the runner-up by that much; per sample-quality
    score the best source, or the tie (overlapping 95% intervals, or equal as shown); the
    importance-sampling gap over the ELBO on the same held-out images; ELBO surgery on
    the training data (the share of the KL term that is marginal KL(q(z) || p(z)), the
    rest being mutual information; Hoffman & Johnson, 2016); active units; one warning
    naming every source whose PSIS k-hat exceeds 0.7 on more than 10% of the data, and
    what to do when every source is flagged; the evidence behind the numbers (sources
    still rising in K, IS against AIS, the BDMC gap). A difference between two sources is
    claimed only when it holds under AIS or both importance-sampling estimates converged
    in K (:func:`~pyrovae.analysis.evidence.judge`); otherwise the sentence says
    it is undetermined. Missing numbers only drop their sentence.
    """
    evaluation = _check_evaluation(evaluation)
    sources = _sources(evaluation)
    return [
        *_loglik_sentence(sources),
        *_quality_sentences(sources),
        *_gap_sentence(evaluation),
        *_surgery_sentences(_mapping(evaluation.get("surgery"))),
        *_surgery_n_sentence(evaluation),
        *_khat_sentences(sources),
        *_advice_sentences(sources),
        *evidence_sentences(evaluation),
    ]
