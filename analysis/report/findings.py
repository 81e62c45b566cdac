"""What the report says about the samples and the latent space: sample quality, near-copies of
training images, and ELBO surgery (how far the aggregate posterior lies from the prior)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pyrovae.analysis.likelihood.evidence import Z95
from pyrovae.analysis.quality.scores import wilson_interval
from pyrovae.analysis.report.numbers import (
    _QUALITY,
    PRIOR,
    _finite,
    _fmt,
    _listing,
    _mapping,
    _mi_outside,
    _mutual_information,
    _pct,
    data_noun,
)
from pyrovae.analysis.sources.surgery import ACTIVITY_THRESHOLD


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


_Share = tuple[float, tuple[float, float] | None]
"""A near-copy share and its 95% interval (None where the sample count is unknown)."""


def _near_copies(entry: Mapping[str, Any]) -> _Share | None:
    """A source's share of samples that are near-copies of training images, and its 95%
    (Wilson) interval from the number of samples compared (None when not measured)."""
    memo = _mapping(entry.get("memorization"))
    share, n = _finite(memo.get("near_copy_fraction")), _finite(memo.get("num_samples"))
    if share is None or not 0 <= share <= 1:
        return None
    return share, None if n is None or n < 1 else wilson_interval(share, int(n))


def _copies_more(mine: _Share | None, prior: _Share | None) -> bool:
    """Whether a source's near-copy share (:func:`_near_copies`) is clearly above the
    prior's: their 95% intervals apart."""
    if mine is None or prior is None or mine[1] is None or prior[1] is None:
        return False
    return mine[1][0] > prior[1][1]


def _copies_clause(sources: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """', but 7.6% of its samples are near-copies of training images (prior 0.5%)' where the
    share is clearly above the prior's (95% intervals apart), else ''."""
    mine, prior = _near_copies(sources.get(name, {})), _near_copies(sources.get(PRIOR, {}))
    if name == PRIOR or not _copies_more(mine, prior):
        return ""
    return (
        f", but {_pct(mine[0])} of its samples are near-copies of training {data_noun()} "
        f"(prior {_pct(prior[0])}), so part of that is copying"
    )


def _memorization_sentence(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every source's near-copy share beside the sample-quality findings (samples closer to
    the training set than 5% of test images are; about 5% for new real data)."""
    shares = {n: c for n, e in sources.items() if (c := _near_copies(e)) is not None}
    if not shares:
        return []
    memo = _mapping(next(e for n, e in sources.items() if n in shares).get("memorization"))
    quantile = _finite(memo.get("quantile"))
    q = "5%" if quantile is None else f"{100 * quantile:g}%"
    ranked = sorted(shares.items(), key=lambda t: -t[1][0])
    listed = _listing([f"{n} {_pct(c[0])}" for n, c in ranked])
    text = (
        f"Near-copies of training {data_noun()} (samples nearer to the training set than {q} "
        f"of test {data_noun()} are; about {q} for new real data): {listed}"
    )
    above = [n for n, c in shares.items() if n != PRIOR and _copies_more(c, shares.get(PRIOR))]
    if above:
        text += (
            f"; {_listing(above)} {'copies' if len(above) == 1 else 'copy'} clearly more than "
            "the prior (95% intervals apart), so their sample quality is partly memorization"
        )
    return [text + "."]


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
    sentences = [
        f"Drawing z from {n} gives {_listing(items)}{_copies_clause(sources, n)}."
        for n, items in wins.items()
    ]
    return sentences + ties + _two_sample_sentences(sources) + _memorization_sentence(sources)


def _two_sample_sentences(sources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The classifier two-sample test per source, nearest to 0.5 first, naming the sources
    whose 95% interval holds 0.5 (Lopez-Paz and Oquab, 2017), and precision/recall
    (Kynkaanniemi et al., 2019), where the evaluation measured them."""
    out = []
    c2st = {}
    for name, entry in sources.items():
        test = _mapping(_mapping(entry).get("c2st"))
        accuracy = _finite(test.get("accuracy"))
        if accuracy is not None:
            c2st[name] = (accuracy, _finite(test.get("low")), _finite(test.get("high")))
    if c2st:
        ranked = sorted(c2st.items(), key=lambda t: abs(t[1][0] - 0.5))
        listed = _listing(
            [
                f"{n} {a:.2f}" + ("" if lo is None or hi is None else f" ({lo:.2f}-{hi:.2f})")
                for n, (a, lo, hi) in ranked
            ]
        )
        alike = [
            n for n, (_, lo, hi) in ranked if lo is not None and hi is not None and lo <= 0.5 <= hi
        ]
        verdict = (
            f"indistinguishable from real data at 95%: {_listing(alike)}"
            if alike
            else "every source's samples are told from real data (no interval holds 0.5)"
        )
        out.append(
            "A classifier trained to tell samples from held-out real data reaches "
            f"{listed} (0.5: indistinguishable); {verdict}."
        )
    pr = {}
    for name, entry in sources.items():
        scores = _mapping(_mapping(entry).get("precision_recall"))
        precision, recall = _finite(scores.get("precision")), _finite(scores.get("recall"))
        if precision is not None and recall is not None:
            pr[name] = (precision, recall)
    if pr:
        listed = _listing([f"{n} {p:.2f} / {r:.2f}" for n, (p, r) in pr.items()])
        out.append(
            f"Precision / recall of samples (how many samples lie where real data do / how "
            f"much of the real data the samples cover): {listed}."
        )
    return out


def _mi_out_of_bounds(name: str, value: float, bound: float | None, data: str) -> list[str]:
    """A flag where the estimate of I(x; z) lies outside [0, log N], which no true value
    can (Hoffman & Johnson, 2016): the estimate, not the model, is then wrong."""
    if not _mi_outside(value, bound):
        return []
    if bound is not None and value > bound:
        return [
            f"The estimate {name} = {value:.2f} nats {data} exceeds its upper bound log N = "
            f"{bound:.2f} nats, which no true value can: it is unreliable (the Monte Carlo "
            "estimate of the aggregate's density is off by at least "
            f"{value - bound:.2f} nats), and so is the split of the KL term."
        ]
    return [
        f"The estimate {name} = {value:.2f} nats {data} is below 0, which no true value "
        "can: it is unreliable, and so is the split of the KL term."
    ]


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
        sentences += _mi_out_of_bounds(mi_name, mi_value, bound, _training_label(surgery))
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
    outside = [f"N = {int(n)}" for n, mi, b in ((n1, mi1, b1), (n2, mi2, b2)) if _mi_outside(mi, b)]
    if outside:
        verdict = (
            f"the estimate of I(x; z) lies outside [0, log N] at {_listing(outside)}, which no "
            "true value can, so it is unreliable and the split at these sizes is not to be "
            "trusted"
        )
    elif near > 0.9:
        verdict = (
            "I(x; z) is near log N, so this split depends on N and KL(q(z) || p(z)) is not a "
            "property of the model alone"
        )
    else:
        verdict = "I(x; z) stays well below log N, so the split hardly depends on N"
    return [
        f"On N = {int(n1)} training {data_noun()} KL(q(z) || p(z)) = {kl1:.2f} and I(x; z) = "
        f"{mi1:.2f} nats (log N = {b1:.2f}); on N = {int(n2)}, {kl2:.2f} and {mi2:.2f} "
        f"(log N = {b2:.2f}): {verdict}."
    ]


def _count(value: Any) -> str | None:
    n = _finite(value)
    return None if n is None else f"{int(n):,}"


def _training_label(surgery: Mapping[str, Any]) -> str:
    """'on 50,000 training images' (or 'on the training data') for ELBO surgery."""
    n = _count(surgery.get("num_data"))
    return "on the training data" if n is None else f"on {n} training {data_noun()}"
