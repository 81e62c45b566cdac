"""A self-contained HTML report of trained runs: tables, conclusions and embedded figures.

The report answers the library's question with numbers and pictures: should new data be
drawn from the prior N(0, I) or from the aggregated posterior q(z) (or a Gaussian, mixture
or flow fitted to it)? It takes plain data, so it does not care how the numbers and
figures were produced:

- ``evaluation``: the JSON of ``pyrovae evaluate``, ``{"sources": {name: {"loglik",
  "stderr", "khat_gt_0.7", "entropy", "ambiguous", "coverage_kl", "frechet"}}, "surgery":
  {"avg_kl", "marginal_kl", "mutual_information", "active_units", "kl_per_dim", ...},
  "elbo", "loglik", "num_samples", "split"}``. Any field may be missing or None; it is
  shown as "—" and left out of the conclusions.
- ``figures``: title -> PNG file, embedded as base64 ``data:`` URIs.
- ``metrics``: the rows of ``metrics.csv``.

The page uses inline CSS only: no scripts, no fonts or images fetched from anywhere, so it
can be mailed, archived or opened offline.

Example:
    >>> run = RunReport("vae-z2", config={"z_dim": 2}, evaluation=evaluation,
    ...                 figures={"Latent space": "latent.png"})
    >>> write_report([run], "reports/")  # -> reports/report.html
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
import re
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyrovae.checkpoint import atomic_write_text

from .compare import KHAT_FLAG_FRACTION
from .diagnostics import KHAT_THRESHOLD
from .evidence import Z95, ais_difference, evidence_sentences, judge
from .inference_quality import GAP_ROWS, gap_table, inference_conclusions
from .quality import wilson_interval
from .surgery import ACTIVITY_THRESHOLD

__all__ = [
    "RunReport",
    "conclusions",
    "cross_run_conclusions",
    "render_report",
    "write_report",
    "REPORT_FILENAME",
]

REPORT_FILENAME = "report.html"
"""Name of the file :func:`write_report` writes in ``out_dir``."""

PRIOR = "prior"
"""Name of the prior among the latent sources (the reference for every difference)."""

DASH = "\u2014"
ELLIPSIS = " \u2026"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Sample-quality columns: key, superlative and comparative in sentences; lower is better.
_QUALITY = (
    ("ambiguous", "the least ambiguous samples", "fewer ambiguous samples"),
    ("entropy", "the lowest classifier entropy", "lower classifier entropy"),
    ("coverage_kl", "the most even class coverage", "more even class coverage"),
    ("frechet", "the lowest Frechet distance to test images", "lower Frechet distances"),
)
_ROUNDING = 0.005
"""Half the last digit shown (2 decimals): smaller differences are not claimed."""

ADVICE = (
    "raise K (--num-samples), train with the flow guide (--guide flow), or run AIS "
    "(pyrovae evaluate RUN_DIR --ais-num-test N)"
)
"""What to do when every log-likelihood estimate is flagged."""


@dataclass
class RunReport:
    """Everything the report shows about one trained run.

    Attributes:
        name: short label, e.g. ``"vae-z2"`` (unique within a report).
        description: a sentence or two about the run (free text).
        config: settings shown as a key/value table, e.g. ``{"model": "vae", "z_dim": 2}``;
            nested mappings (``config.json``'s ``model``/``train`` halves) are flattened
            to ``model.z_dim``.
        evaluation: the ``pyrovae evaluate`` JSON (see the module docstring).
        figures: title -> PNG path (or raw PNG bytes), shown in this order.
        metrics: training rows with ``epoch``, ``train_elbo``, ``val_elbo``, ``seconds``.
        diagnostics: the ``pyrovae diagnose`` JSON (see
            :func:`~pyrovae.analysis.diagnose.load_diagnostics`); when given, the run gets
            an "Inference quality" section with its figures (``"figure_paths"``).
    """

    name: str
    description: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, str | os.PathLike[str] | bytes] = field(default_factory=dict)
    metrics: Sequence[Mapping[str, Any]] | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"RunReport.name must be a non-empty string, got {self.name!r}")
        for attr in ("config", "evaluation", "figures", "diagnostics"):
            value = getattr(self, attr)
            if value is None:
                setattr(self, attr, {})
            elif not isinstance(value, Mapping):
                raise ValueError(
                    f"RunReport.{attr} of run {self.name!r} must be a dict, "
                    f"got {type(value).__name__}"
                )


# ----------------------------------------------------------------------------- numbers


def _num(value: Any) -> float | None:
    """``value`` as a float (infinities kept), or None when missing, NaN or not a number."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:  # also numpy and 0-d torch scalars
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _finite(value: Any) -> float | None:
    value = _num(value)
    return value if value is not None and math.isfinite(value) else None


def _fmt(value: Any, digits: int = 2) -> str:
    value = _num(value)
    return DASH if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    value = _num(value)
    return DASH if value is None else f"{100 * value:.1f}%"


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _sources(evaluation: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(k): _mapping(v) for k, v in _mapping(evaluation.get("sources")).items()}


def _khat_fraction(entry: Mapping[str, Any]) -> float | None:
    return _num(entry.get(f"khat_gt_{KHAT_THRESHOLD}", entry.get("khat_fraction")))


def _unreliable(entry: Mapping[str, Any]) -> bool:
    """Flagged by the evaluation, or more than KHAT_FLAG_FRACTION of k-hat above 0.7."""
    if isinstance(entry.get("khat_flag"), bool):
        return entry["khat_flag"]
    fraction = _khat_fraction(entry)
    return fraction is not None and fraction > KHAT_FLAG_FRACTION


def _mutual_information(surgery: Mapping[str, Any]) -> float | None:
    for key in ("mutual_information", "mutual_info"):
        if _finite(surgery.get(key)) is not None:
            return _finite(surgery.get(key))
    avg, marginal = _finite(surgery.get("avg_kl")), _finite(surgery.get("marginal_kl"))
    return None if avg is None or marginal is None else avg - marginal


def _z_dim(run: RunReport) -> int | None:
    for key in ("z_dim", "model.z_dim"):
        value = _flatten(run.config).get(key)
        if _finite(value) is not None:
            return int(value)
    surgery = _mapping(run.evaluation.get("surgery"))
    for key in ("kl_per_dim", "activity"):
        if isinstance(surgery.get(key), Sequence) and surgery[key]:
            return len(surgery[key])
    return None


def _best(values: Mapping[str, float | None], highest: bool) -> list[str]:
    """Names holding the best finite value (ties included), or [] for fewer than 2 values."""
    finite = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
    if len(finite) < 2:
        return []
    target = max(finite.values()) if highest else min(finite.values())
    return [k for k, v in finite.items() if v == target]


def _prior_difference(
    sources: Mapping[str, Mapping[str, Any]], name: str
) -> tuple[float, float | None, bool] | None:
    """log p_name(x) - log p_prior(x), its standard error, and whether that error is paired.

    A paired error (``vs_prior_stderr`` in the entry, from the shared guide draws) is used
    when present; otherwise the two standard errors are combined as if independent,
    which overstates the error of a paired comparison.
    """
    entry, prior = sources[name], sources.get(PRIOR, {})
    paired_mean, paired_se = _finite(entry.get("vs_prior")), _finite(entry.get("vs_prior_stderr"))
    if paired_mean is not None:
        return paired_mean, paired_se, paired_se is not None
    a, b = _finite(entry.get("loglik")), _finite(prior.get("loglik"))
    if a is None or b is None:
        return None
    sa, sb = _finite(entry.get("stderr")), _finite(prior.get("stderr"))
    se = None if sa is None or sb is None else math.hypot(sa, sb)
    return a - b, se, False


def _beyond(diff: float, se: float | None) -> bool:
    """Whether a difference is shown: |diff| > Z95 * se, and never below the rounding
    shown (which is also the only test when no standard error is known)."""
    return abs(diff) > max(_ROUNDING, 0.0 if se is None else Z95 * se)


def _pair(
    sources: Mapping[str, Mapping[str, Any]], a: str, b: str
) -> tuple[float, float | None, bool] | None:
    """log p_a(x) - log p_b(x), its standard error and whether that error is paired.

    Against the prior this is :func:`_prior_difference`. Between two other sources the
    covariance is not recorded: with paired differences d_a, d_b to the prior (errors
    s_a, s_b), a - b = d_a - d_b has an error of at most s_a + s_b (Cauchy-Schwarz, for
    any correlation), and sqrt(se_a^2 + se_b^2) is the error of independent estimates
    (an overstatement for estimates on the same data); the smaller of the two is used.
    """
    if b == PRIOR:
        return _prior_difference(sources, a)
    if a == PRIOR:
        out = _prior_difference(sources, b)
        return None if out is None else (-out[0], out[1], out[2])
    la, lb = _finite(sources[a].get("loglik")), _finite(sources[b].get("loglik"))
    if la is None or lb is None:
        return None
    sa, sb = _finite(sources[a].get("stderr")), _finite(sources[b].get("stderr"))
    combined = None if sa is None or sb is None else math.hypot(sa, sb)
    da, db = _prior_difference(sources, a), _prior_difference(sources, b)
    if da is not None and db is not None and da[2] and db[2]:
        bound = da[1] + db[1]
        if combined is None or bound < combined:
            return da[0] - db[0], bound, True
    return la - lb, combined, False


def _leading(sources: Mapping[str, Mapping[str, Any]]) -> tuple[list[tuple[float, str]], list[str]]:
    """Sources by held-out log-likelihood (highest first) and the leading group: the
    leader and every source whose difference to it is not shown (:func:`_beyond`)."""
    ranked = sorted(
        ((v, n) for n, e in sources.items() if (v := _finite(e.get("loglik"))) is not None),
        key=lambda t: -t[0],
    )
    if not ranked:
        return [], []
    leader = ranked[0][1]
    tied = [leader]
    for _, name in ranked[1:]:
        diff = _pair(sources, leader, name)
        if diff is None or not _beyond(diff[0], diff[1]):
            tied.append(name)
    return ranked, tied


def _listing(items: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _significance(diff: float, se: float | None, paired: bool, other: str = "the prior") -> str:
    if se is None:
        return "no standard error was recorded, so its significance is unknown"
    kind = "paired" if paired else "both errors combined"
    if not _beyond(diff, se):
        return (
            f"within {Z95} standard errors ({se:.2f}, {kind}), so not significant: "
            f"indistinguishable from {other}"
        )
    return f"more than {Z95} standard errors ({se:.2f}, {kind}), so significant"


def _flagged(entry: Mapping[str, Any]) -> bool:
    """Unreliable by k-hat, or still rising in K."""
    return _unreliable(entry) or entry.get("converged") is False


# ------------------------------------------------------------------------- conclusions


def _evidence_clause(sources: Mapping[str, Mapping[str, Any]], a: str, b: str) -> str:
    """'; it holds under AIS (...)' or '; whether it holds is undetermined: ...'."""
    verdict = judge(sources, a, b)
    if not verdict.established:
        return f"; but the comparison of {a} and {b} is undetermined: {verdict.basis}"
    if verdict.basis == "AIS":
        return (
            f"; it holds under AIS ({_signed(verdict.difference)} \u00b1 {verdict.stderr:.2f} nats)"
        )
    return f"; it rests on {verdict.basis}"


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


def _best_source(evaluation: Mapping[str, Any]) -> tuple[str, float, list[str]] | None:
    """The leading source, its log-likelihood, and the leading group it is tied with."""
    ranked, tied = _leading(_sources(evaluation))
    if not ranked:
        return None
    value, name = ranked[0]
    return name, value, tied


def _model_loglik(evaluation: Mapping[str, Any]) -> float | None:
    value = _finite(evaluation.get("loglik"))
    if value is None:
        value = _finite(_sources(evaluation).get(PRIOR, {}).get("loglik"))
    return value


def _model_loglik_se(evaluation: Mapping[str, Any]) -> float | None:
    value = _finite(evaluation.get("loglik_stderr"))
    if value is None:
        value = _finite(_sources(evaluation).get(PRIOR, {}).get("stderr"))
    return value


def _gain(evaluation: Mapping[str, Any]) -> tuple[str, float, float | None] | None:
    """The leading source of a run, its difference to the prior and that difference's
    standard error (None without a prior or a leading source other than the prior)."""
    best, sources = _best_source(evaluation), _sources(evaluation)
    if best is None or best[0] == PRIOR or PRIOR not in sources:
        return None
    diff = _prior_difference(sources, best[0])
    return None if diff is None else (best[0], diff[0], diff[1])


def _gain_text(diff: float, se: float | None, interval: bool = True) -> str:
    """'+2.50 \u00b1 1.11' (the 95% half-width), with '(no difference)' when within it."""
    text = _signed(diff) + ("" if se is None or not interval else f" \u00b1 {Z95 * se:.2f}")
    return text + ("" if _beyond(diff, se) else " (no difference)")


def _run_label(run: RunReport) -> str:
    z_dim = _z_dim(run)
    return run.name if z_dim is None or f"z{z_dim}" in run.name else f"{run.name} (z_dim {z_dim})"


_SEED_SUFFIX = re.compile(r"^(?P<config>.+)-s(?P<seed>\d+)$")


def _seed_spread_sentences(runs: Sequence[RunReport]) -> list[str]:
    """For runs named ``CONFIG-sN`` (one per seed), the spread of the numbers between seeds."""
    groups: dict[str, list[RunReport]] = {}
    for run in runs:
        match = _SEED_SUFFIX.match(run.name)
        if match:
            groups.setdefault(match["config"], []).append(run)
    sentences = []
    for config, members in groups.items():
        if len(members) < 2:
            continue
        logliks = [_model_loglik(r.evaluation) for r in members]
        gains = []
        for r in members:
            best, gain = _best_source(r.evaluation), _gain(r.evaluation)
            if gain is not None:
                gains.append(f"{gain[0]} {_gain_text(gain[1], gain[2], interval=False)}")
            elif best is not None:
                gains.append(best[0])
        finite = [v for v in logliks if v is not None]
        if len(finite) < 2:
            continue
        text = (
            f"Across {len(members)} seeds of {config}, log p(x) under the trained prior spans "
            f"{min(finite):.2f} to {max(finite):.2f} nats (a spread of "
            f"{max(finite) - min(finite):.2f})"
        )
        if gains:
            text += f"; the leading source and its gain over the prior per seed: {', '.join(gains)}"
        sentences.append(text + ".")
    return sentences


def _tied_with_leader(
    items: Sequence[tuple[str, float, float | None]],
    pair: Callable[[str, str], tuple[float, float | None] | None] | None = None,
) -> list[str]:
    """Labels of ``items`` (label, value, stderr) whose difference to the highest value is
    not shown; ``pair(a, b)`` may give a better (diff, se) for two labels, else the errors
    are combined as if independent."""
    ranked = sorted(items, key=lambda t: -t[1])
    top_label, top, top_se = ranked[0]
    tied = [top_label]
    for label, value, se in ranked[1:]:
        found = pair(top_label, label) if pair is not None else None
        if found is None:
            combined = None if top_se is None or se is None else math.hypot(top_se, se)
            found = (top - value, combined)
        if not _beyond(*found):
            tied.append(label)
    return tied


def cross_run_conclusions(runs: Sequence[RunReport]) -> list[str]:
    """Findings across runs: the best model log-likelihood, and whether one source wins them all.

    A run or source is called the best only when it beats every other beyond 1.96
    standard errors (runs: their errors combined as independent); otherwise the leaders
    are listed as tied. Log-likelihoods of runs on different data or splits are not
    comparable; the sentences assume the runs were evaluated alike.
    """
    runs = _check_runs(runs)
    sentences = []
    models = {run.name: _model_loglik(run.evaluation) for run in runs}
    known = [(r.name, models[r.name], _model_loglik_se(r.evaluation)) for r in runs]
    known = [t for t in known if t[1] is not None]
    if len(known) >= 2:
        tied = _tied_with_leader(known)
        order = sorted((v, n) for n, v, _ in known)
        worst_value, worst = order[0]
        top = models[tied[0]]
        if len(tied) == 1:
            text = (
                f"{tied[0]} has the best held-out log-likelihood under its own prior "
                f"({top:.2f} nats), {top - worst_value:.2f} nats above {worst}"
            )
        else:
            listed = _listing([f"{n} ({models[n]:.2f})" for n in tied])
            text = (
                "No run has clearly the best held-out log-likelihood under its own prior: "
                f"{listed} are tied within {Z95} standard errors"
            )
            if worst not in tied:
                text += f", all above {worst} ({worst_value:.2f})"
        sentences.append(text + ".")
    winners = {run.name: _best_source(run.evaluation) for run in runs}
    found = {name: w for name, w in winners.items() if w is not None}
    if found:
        items, runs_by_label = [], {}
        for run in runs:
            sources = _sources(run.evaluation)
            for source, entry in sources.items():
                value = _finite(entry.get("loglik"))
                if value is not None:
                    label = f"{source} in {run.name}"
                    runs_by_label[label] = (run.name, source, sources)
                    items.append((label, value, _finite(entry.get("stderr"))))

        def same_run(a: str, b: str) -> tuple[float, float | None] | None:
            (ra, sa, sources), (rb, sb, _) = runs_by_label[a], runs_by_label[b]
            diff = _pair(sources, sa, sb) if ra == rb else None
            return None if diff is None else diff[:2]

        tied = _tied_with_leader(items, same_run)
        values = {label: value for label, value, _ in items}
        if len(tied) == 1:
            sentences.append(
                f"Over all runs and sources, the highest held-out log-likelihood is "
                f"{values[tied[0]]:.2f} nats, from {tied[0]}."
            )
        else:
            listed = _listing([f"{values[t]:.2f} nats from {t}" for t in tied])
            sentences.append(
                f"Over all runs and sources, the highest held-out log-likelihoods are tied "
                f"within {Z95} standard errors: {listed}."
            )
    if len(found) >= 2:
        labels = {run.name: _run_label(run) for run in runs}
        names = {w[0] for w in found.values()}
        unclear = {n: [t for t in w[2] if t != w[0]] for n, w in found.items() if len(w[2]) > 1}
        if len(names) == 1:
            name = names.pop()
            text = f"{', '.join(labels[n] for n in found)}"
            if not unclear:
                sentences.append(f"The best source is {name} in every run ({text}).")
            else:
                where = _listing([labels[n] for n in unclear])
                ties = _listing([f"{_listing(t)} in {labels[n]}" for n, t in unclear.items()])
                sentences.append(
                    f"The leading source is {name} in every run ({text}), but it is not a "
                    f"clear best source in {where}: it is tied within {Z95} standard errors "
                    f"with {ties}."
                )
        else:
            listed = "; ".join(
                f"{labels[n]}: " + (f"{_listing(w[2])} (tied)" if len(w[2]) > 1 else w[0])
                for n, w in found.items()
            )
            sentences.append(f"The leading source differs between runs ({listed}).")
        gains = []
        for run in runs:
            gain = _gain(run.evaluation)
            if gain is not None:
                gains.append(f"{labels[run.name]} {_gain_text(gain[1], gain[2])}")
        if len(gains) >= 2:
            sentences.append(
                "Gain of the leading source over the prior, in nats (\u00b1 1.96 standard "
                f"errors): {', '.join(gains)}."
            )
    sentences += _seed_spread_sentences(runs)
    flagged, all_flagged = [], []
    for run in runs:
        sources = _sources(run.evaluation)
        names = [name for name, entry in sources.items() if _unreliable(entry)]
        if names:
            which = "every source" if len(names) == len(sources) > 1 else ", ".join(names)
            flagged.append(f"{run.name} ({which})")
        if _advice_sentences(sources):
            all_flagged.append(run.name)
    if flagged:
        sentences.append(
            f"Unreliable estimates (k-hat > {KHAT_THRESHOLD} on more than "
            f"{100 * KHAT_FLAG_FRACTION:.0f}% of data): {', '.join(flagged)}."
        )
    if all_flagged:
        sentences.append(
            f"In {_listing(all_flagged)} every source is flagged (k-hat or still rising in "
            f"K), so no comparison between its sources can be trusted; to settle it, {ADVICE}."
        )
    return sentences


# -------------------------------------------------------------------------------- HTML

_CSS = """
:root { --ink: #1d2530; --muted: #5b6573; --line: #d6dbe1; --accent: #2f5d8a;
  --flag: #fff1dc; --flag-ink: #8a4b00; --soft: #f5f7f9; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
  sans-serif; color: var(--ink); margin: 0; background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
header { border-bottom: 3px solid var(--accent); margin-bottom: 18px; padding-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 21px; margin: 36px 0 6px; padding-top: 10px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; color: var(--accent); }
.meta, .note { color: var(--muted); font-size: 13px; }
nav a { margin-right: 14px; color: var(--accent); }
ul.findings { background: var(--soft); border-left: 4px solid var(--accent);
  padding: 10px 14px 10px 32px; margin: 8px 0; }
ul.findings li { margin: 3px 0; }
ul.findings li.warn { color: var(--flag-ink); }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { font-weight: 700; }
tr.unreliable td { background: var(--flag); }
.badge { display: inline-block; font-size: 11px; padding: 0 6px; margin-left: 6px;
  border-radius: 8px; background: var(--flag-ink); color: #fff; font-weight: 600; }
table.config td:first-child { color: var(--muted); }
.cols { display: flex; flex-wrap: wrap; gap: 8px 40px; align-items: flex-start; }
.bars { display: inline-flex; align-items: flex-end; gap: 2px; height: 40px;
  border-bottom: 1px solid var(--muted); }
.bars span { display: inline-block; width: 9px; background: var(--accent); min-height: 1px; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
  gap: 18px; margin-top: 8px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
  background: #fff; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; text-align: center; }
details summary { cursor: pointer; color: var(--accent); font-size: 13px; }
""".strip()


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _config_value(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, (list, tuple)):
        return ", ".join(_config_value(v) for v in value) or DASH
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _png(data: bytes, where: str) -> tuple[str, int, int]:
    """``data`` as a data URI with its pixel width and height (checked to be a PNG)."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError(
            f"{where} is not a PNG image; save figures as PNG, e.g. fig.savefig(path, format='png')"
        )
    width, height = struct.unpack(">II", data[16:24])
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), width, height


def _read_figure(run: RunReport, title: str, source: Any) -> tuple[str, int, int]:
    where = f"figures[{title!r}] of run {run.name!r}"
    if isinstance(source, (bytes, bytearray)):
        return _png(bytes(source), where)
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            f"{where} must be a path to a PNG file (or PNG bytes), got {type(source).__name__}"
        )
    path = Path(source)
    if not path.is_file():
        raise ValueError(
            f"{where}: file {str(path)!r} does not exist; write the figure first "
            "(e.g. pyrovae.analysis.figures.save_figure) or drop it from figures"
        )
    return _png(path.read_bytes(), f"{where} ({str(path)!r})")


def _table(header: Sequence[tuple[str, bool]], rows: Sequence[str], cls: str = "") -> str:
    head = "".join(f'<th class="n">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>" for h, n in header)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cell(text: str, numeric: bool = True, best: bool = False) -> str:
    classes = " ".join(c for c, on in (("n", numeric), ("best", best)) if on)
    return f'<td class="{classes}">{_e(text)}</td>' if classes else f"<td>{_e(text)}</td>"


def _column_value(key: str, entry: Mapping[str, Any]) -> float | None:
    if key == "khat":
        return _khat_fraction(entry)
    if key == "ais":
        return _finite(_mapping(entry.get("ais")).get("loglik"))
    if key == "converged":
        return None
    return _finite(entry.get(key))


def _ais_leaders(sources: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The highest AIS estimate and those whose (paired) AIS difference to it is not shown."""
    ais = {n: _mapping(e.get("ais")) for n, e in sources.items()}
    ais = {
        n: a
        for n, a in ais.items()
        if _finite(a.get("loglik")) is not None and _finite(a.get("stderr")) is not None
    }
    if len(ais) < 2:
        return set()
    top = max(ais, key=lambda n: ais[n]["loglik"])
    return {n for n in ais if n == top or not _beyond(*ais_difference(ais[top], ais[n]))}


def _sources_html(evaluation: Mapping[str, Any]) -> str:
    sources = _sources(evaluation)
    if not sources:
        return '<p class="note">No latent sources were evaluated.</p>'
    has_prior = PRIOR in sources
    columns: list[tuple[str, str, bool, Any]] = [
        ("loglik", "log p(x) \u00b1 stderr [nats]", True, None),
        ("converged", "converged in K", False, None),
        ("ais", "AIS \u00b1 stderr [nats]", True, None),
        ("khat", f"k-hat > {KHAT_THRESHOLD}", False, _pct),
        ("entropy", "entropy [nats]", False, _fmt),
        ("ambiguous", "ambiguous", False, _pct),
        ("coverage_kl", "coverage KL [nats]", False, _fmt),
        ("frechet", "Frechet", False, _fmt),
    ]
    value = {key: {n: _column_value(key, e) for n, e in sources.items()} for key, *_ in columns}
    best = {key: set(_best(value[key], highest)) for key, _, highest, _ in columns}
    ranked, tied = _leading(sources)
    best["loglik"] = set(tied) if len(ranked) >= 2 else set()
    best["ais"] = _ais_leaders(sources)
    for key, *_ in _QUALITY:
        found = _quality_leaders(sources, key)
        best[key] = set() if found is None else set(found[0])
    header = [("source", False)] + [(label, True) for _, label, _, _ in columns]
    if has_prior:
        header.insert(2, ("vs prior [nats]", True))
    rows = []
    for name, entry in sources.items():
        flagged = _unreliable(entry)
        badge = '<span class="badge">unreliable</span>' if flagged else ""
        cells = [f"<td>{_e(name)}{badge}</td>"]
        for key, _, _, fmt in columns:
            if key == "loglik":
                loglik, se = _finite(entry.get("loglik")), _finite(entry.get("stderr"))
                text = _fmt(loglik)
                if loglik is not None and se is not None:
                    text += f" \u00b1 {se:.2f}"
                cells.append(_cell(text, best=name in best[key]))
                if has_prior:
                    diff = _prior_difference(sources, name) if name != PRIOR else None
                    cells.append(_cell(DASH if diff is None else _signed(diff[0])))
            elif key == "converged":
                converged = entry.get("converged")
                cells.append(_cell({True: "yes", False: "still rising"}.get(converged, DASH)))
            elif key == "ais":
                ais = _mapping(entry.get("ais"))
                text = _fmt(_finite(ais.get("loglik")))
                if _finite(ais.get("stderr")) is not None:
                    text += f" \u00b1 {ais['stderr']:.2f}"
                if _finite(ais.get("is_loglik")) is not None:
                    text += f" (IS {ais['is_loglik']:.2f})"
                cells.append(_cell(text if ais else DASH, best=name in best[key]))
            else:
                cells.append(_cell(fmt(value[key][name]), best=name in best[key]))
        attr = ' class="unreliable"' if flagged else ""
        rows.append(f"<tr{attr}>{''.join(cells)}</tr>")
    k = _finite(evaluation.get("num_samples"))
    context = []
    if evaluation.get("split") or _finite(evaluation.get("num_test")) is not None:
        context.append(f"On {_e(_heldout_label(evaluation))}")
    if k is not None:
        proposal = evaluation.get("proposal", "guide")
        context.append(
            f"K = {int(k)} importance samples per datum from the "
            + ("guide" if proposal == "guide" else f"{_e(proposal)} defensive mixture")
        )
    ais_entry = next((_mapping(e.get("ais")) for e in sources.values() if e.get("ais")), {})
    if ais_entry:
        context.append(
            f"AIS on {ais_entry.get('num_test')} of those images with "
            f"{ais_entry.get('steps')} steps and {ais_entry.get('chains')} chains (IS on the "
            "same images in brackets)"
        )
    note = (
        f"{'; '.join(context) + '. ' if context else ''}Best value per column in bold "
        "(highest log-likelihood, lowest otherwise), with every value indistinguishable "
        f"from it (within {Z95} standard errors, overlapping 95% intervals, or equal as "
        "shown). Converged in K: L_K rose by at most "
        "0.1 nats over the last 5x or more of draws. Rows marked unreliable have PSIS "
        f"k-hat &gt; {KHAT_THRESHOLD} on more than {100 * KHAT_FLAG_FRACTION:.0f}% of the data. "
        "Sample quality is read by an MNIST classifier: entropy and ambiguous "
        "(max probability &lt; 0.5) measure legibility, coverage KL the evenness of classes."
    )
    return _table(header, rows, "sources") + f'<p class="note">{note}</p>'


def _bars(values: Sequence[Any]) -> str:
    numbers = [_finite(v) for v in values]
    top = max((v for v in numbers if v is not None), default=0.0)
    spans = []
    for d, v in enumerate(numbers):
        height = 0.0 if v is None or top <= 0 else max(v, 0.0) / top * 100
        label = f"z{d}: {_fmt(v)} nats"
        spans.append(f'<span style="height:{height:.1f}%" title="{_e(label)}"></span>')
    listed = ", ".join(_fmt(v) for v in numbers)
    return (
        f'<span class="bars" role="img" aria-label="KL per dimension: {_e(listed)}">'
        f"{''.join(spans)}</span>"
    )


def _surgery_html(surgery: Mapping[str, Any]) -> str:
    if not surgery:
        return '<p class="note">No ELBO surgery in this evaluation.</p>'
    conditional = bool(surgery.get("conditional_prior"))
    avg = _finite(surgery.get("avg_kl"))

    def pm(key: str, stderr_key: str) -> str:
        value, se = _finite(surgery.get(key)), _finite(surgery.get(stderr_key))
        if value is None and key == "mutual_information":
            value = _mutual_information(surgery)
        if value is None:
            return DASH
        return f"{value:.2f}" + (f" \u00b1 {se:.2f}" if se else "")

    def share(value: float | None) -> str:
        return DASH if value is None or avg is None or avg <= 0 else _pct(value / avg)

    kl_per_dim = surgery.get("kl_per_dim")
    kl_dims = kl_per_dim if isinstance(kl_per_dim, Sequence) and kl_per_dim else None
    z_dim = len(kl_dims) if kl_dims else None
    if z_dim is None and isinstance(surgery.get("activity"), Sequence):
        z_dim = len(surgery["activity"]) or None
    active = _finite(surgery.get("active_units"))
    active_text = DASH if active is None else str(int(active))
    if active is not None and z_dim is not None:
        active_text += f" of {z_dim}"
    marginal = "KL(q(z|y) || p(z|y)), per class" if conditional else "KL(q(z) || p(z))"
    rows_data = [
        (
            f"ELBO {_training_label(surgery)} (surgery)",
            _fmt(surgery.get("elbo")),
            "",
            "reconstruction \u2212 average KL",
        ),
        ("reconstruction", _fmt(surgery.get("reconstruction")), "", "E_q[log p(x | z)]"),
        (
            "average KL",
            pm("avg_kl", "avg_kl_stderr"),
            "100.0%" if avg and avg > 0 else DASH,
            "1/N \u2211 KL(q(z | x_n) || p(z))",
        ),
        (
            "marginal KL",
            pm("marginal_kl", "marginal_kl_stderr"),
            share(_finite(surgery.get("marginal_kl"))),
            marginal,
        ),
        (
            "mutual information",
            pm("mutual_information", "mutual_information_stderr"),
            share(_mutual_information(surgery)),
            "I(x; z | y)" if conditional else "I(x; z)",
        ),
        ("upper bound on I", _fmt(surgery.get("mi_upper_bound")), "", "log N"),
        ("active units", active_text, "", f"dims with Cov_n E[z_d | x_n] > {ACTIVITY_THRESHOLD:g}"),
    ]
    rows = [
        f"<tr><td>{_e(q)}</td>{_cell(v)}{_cell(s)}<td>{_e(m)}</td></tr>" for q, v, s, m in rows_data
    ]
    if kl_dims:
        rows.append(
            f'<tr><td>KL per dimension</td><td colspan="2">{_bars(kl_dims)}</td>'
            f"<td>{_e(', '.join(_fmt(v) for v in kl_dims[:16]))}"
            f"{ELLIPSIS if len(kl_dims) > 16 else ''}</td></tr>"
        )
    header = [("quantity", False), ("nats", True), ("share of KL", True), ("meaning", False)]
    n = _finite(surgery.get("num_data"))
    note = "" if n is None else f'<p class="note">On N = {int(n):,} training images.</p>'
    return _table(header, rows, "surgery") + note


def _metrics_html(metrics: Sequence[Mapping[str, Any]] | None) -> str:
    rows = [m for m in metrics or [] if isinstance(m, Mapping)]
    if not rows:
        return '<p class="note">No training metrics.</p>'
    last = rows[-1]
    val = [(_finite(r.get("val_elbo")), r.get("epoch", i + 1)) for i, r in enumerate(rows)]
    val = [(v, e) for v, e in val if v is not None]
    seconds = [_finite(r.get("seconds")) for r in rows]
    known = [s for s in seconds if s is not None]
    total = sum(known) if known else None
    summary = [
        ("epochs", str(last.get("epoch", len(rows)))),
        ("training ELBO (last epoch, running average)", _fmt(last.get("train_elbo"))),
        ("validation ELBO (last epoch, validation split)", _fmt(last.get("val_elbo"))),
        (
            "best validation ELBO (validation split)",
            DASH if not val else f"{max(val)[0]:.2f} (epoch {max(val, key=lambda t: t[0])[1]})",
        ),
        ("training time", DASH if total is None else f"{total:.1f} s"),
    ]
    summary_rows = [f"<tr><td>{_e(k)}</td>{_cell(v)}</tr>" for k, v in summary]
    keys = [k for k in ("epoch", "train_elbo", "val_elbo", "kl_weight", "seconds") if k in last]
    digits = {"epoch": 0, "seconds": 1}
    detail_rows = [
        "<tr>" + "".join(_cell(_fmt(r.get(k), digits.get(k, 2))) for k in keys) + "</tr>"
        for r in rows
    ]
    detail = _table([(k, True) for k in keys], detail_rows)
    return (
        _table([("training", False), ("", True)], summary_rows, "metrics")
        + f"<details><summary>all {len(rows)} epochs</summary>{detail}</details>"
    )


def _config_html(run: RunReport) -> str:
    flat = _flatten(run.config)
    if not flat:
        return ""
    rows = [f"<tr><td>{_e(k)}</td><td>{_e(_config_value(v))}</td></tr>" for k, v in flat.items()]
    return _table([("setting", False), ("value", False)], rows, "config")


def _findings(sentences: Sequence[str]) -> str:
    if not sentences:
        return '<p class="note">Not enough numbers for conclusions.</p>'
    items = "".join(
        f'<li class="warn">{_e(s)}</li>' if "unreliable" in s.lower() else f"<li>{_e(s)}</li>"
        for s in sentences
    )
    return f'<ul class="findings">{items}</ul>'


def _anchor(index: int, name: str) -> str:
    return f"run-{index}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "run")


def _figures_html(images: Sequence[tuple[str, str, int, int]]) -> str:
    figures = "".join(
        f'<figure><img src="{uri}" width="{w}" height="{h}" alt="{_e(title)}">'
        f"<figcaption>{_e(title)}</figcaption></figure>"
        for title, uri, w, h in images
    )
    return f'<div class="figures">{figures}</div>'


def _inference_html(
    diagnostics: Mapping[str, Any], images: Sequence[tuple[str, str, int, int]]
) -> str:
    """The "Inference quality" section: conclusions, the gap table and the figures."""
    parts = [_findings(inference_conclusions(diagnostics))]
    rows = [
        f"<tr>{_cell(label, numeric=False)}{_cell(f'{mean:.2f}')}{_cell(_fmt(se))}</tr>"
        for label, mean, se in gap_table(diagnostics)
    ]
    if rows:
        parts.append(_table([("per image, nats", False), ("mean", True), ("SE", True)], rows))
    if images:
        parts.append(_figures_html(images))
    return "".join(parts)


def _diagnostics_images(run: RunReport) -> list[tuple[str, str, int, int]]:
    paths = run.diagnostics.get("figure_paths")
    if not isinstance(paths, Mapping):
        return []
    return [(str(t), *_read_figure(run, str(t), src)) for t, src in paths.items()]


def _run_html(
    index: int,
    run: RunReport,
    images: Sequence[tuple[str, str, int, int]],
    diagnostics_images: Sequence[tuple[str, str, int, int]] = (),
) -> str:
    parts = [f'<section id="{_anchor(index, run.name)}"><h2>{_e(run.name)}</h2>']
    if run.description:
        parts.append(f"<p>{_e(run.description)}</p>")
    config = _config_html(run)
    parts.append('<div class="cols">')
    if config:
        parts.append(f"<div><h3>Configuration</h3>{config}</div>")
    parts.append(f"<div><h3>Training</h3>{_metrics_html(run.metrics)}</div></div>")
    parts.append(f"<h3>Conclusions</h3>{_findings(conclusions(run.evaluation))}")
    parts.append(f"<h3>Latent sources</h3>{_sources_html(run.evaluation)}")
    parts.append(f"<h3>ELBO surgery</h3>{_surgery_html(_mapping(run.evaluation.get('surgery')))}")
    if run.diagnostics:
        parts.append(
            f"<h3>Inference quality</h3>{_inference_html(run.diagnostics, diagnostics_images)}"
        )
    if images:
        parts.append(f"<h3>Figures</h3>{_figures_html(images)}")
    parts.append("</section>")
    return "".join(parts)


def _summary_html(runs: Sequence[RunReport]) -> str:
    held_out = {_heldout_label(run.evaluation) for run in runs}
    elbo = f"ELBO, {held_out.pop()}" if len(held_out) == 1 else "ELBO, held-out images"
    header = [
        ("run", False),
        ("z_dim", True),
        (elbo, True),
        ("log p(x)", True),
        ("leading source", False),
        ("its log p(x)", True),
        ("vs prior", True),
        ("active units", True),
    ]
    model = {run.name: _model_loglik(run.evaluation) for run in runs}
    best_model = set(_best(model, highest=True))
    rows = []
    for index, run in enumerate(runs):
        evaluation = run.evaluation
        best, gain = _best_source(evaluation), _gain(evaluation)
        leader = DASH
        if best is not None:
            leader = best[0] if len(best[2]) == 1 else f"{', '.join(best[2])} (tied)"
        z_dim = _z_dim(run)
        active = _finite(_mapping(evaluation.get("surgery")).get("active_units"))
        link = f'<td><a href="#{_anchor(index, run.name)}">{_e(run.name)}</a></td>'
        rows.append(
            "<tr>"
            + link
            + _cell(DASH if z_dim is None else str(z_dim))
            + _cell(_fmt(evaluation.get("elbo")))
            + _cell(_fmt(model[run.name]), best=run.name in best_model)
            + _cell(leader, numeric=False)
            + _cell(DASH if best is None else f"{best[1]:.2f}")
            + _cell(DASH if gain is None else _gain_text(gain[1], gain[2]))
            + _cell(DASH if active is None else str(int(active)))
            + "</tr>"
        )
    return (
        "<section><h2>Summary across runs</h2>"
        f"{_findings(cross_run_conclusions(runs))}{_table(header, rows, 'summary')}"
        '<p class="note">ELBO and log p(x): on the evaluated held-out images, with the '
        "model's own prior; leading source: the latent source with the highest held-out "
        f"log-likelihood, with those within {Z95} standard errors of it as tied; vs prior: "
        "its difference to the prior \u00b1 1.96 standard errors.</p>"
        f"{_gaps_summary_html(runs)}</section>"
    )


def _gaps_summary_html(runs: Sequence[RunReport]) -> str:
    """Inference gaps of every run with (current) diagnostics, one row each."""
    rows = []
    for index, run in enumerate(runs):
        diag = run.diagnostics
        if not diag or diag.get("stale"):
            continue
        cells = {label: (mean, se) for label, mean, se in gap_table(diag)}
        values = [cells.get(label) for _, label in GAP_ROWS[3:]]
        coverage = _finite(diag.get("coverage_90_mean"))
        rows.append(
            f'<tr><td><a href="#{_anchor(index, run.name)}">{_e(run.name)}</a></td>'
            + _cell(str(diag.get("num_data", DASH)))
            + _cell(f"{diag.get('flagged', 0)} of {diag.get('num_reference', DASH)}")
            + _cell(_pct(coverage))
            + "".join(
                _cell(DASH if v is None else f"{v[0]:.2f} \u00b1 {_fmt(v[1])}") for v in values
            )
            + "</tr>"
        )
    if not rows:
        return ""
    header = [("run", False), ("images", True), ("NUTS flagged", True), ("90% coverage", True)]
    header += [("total gap", True), ("approximation gap", True), ("amortization gap", True)]
    return (
        "<h3>Inference gaps</h3>"
        + _table(header, rows, "summary")
        + '<p class="note">From <code>pyrovae diagnose</code>: per image, nats, mean \u00b1 '
        "standard error over images; 90% coverage: the share of NUTS posterior draws inside "
        "the guide's central 90% intervals (0.9 for a guide whose marginals match).</p>"
    )


def _check_runs(runs: Any) -> list[RunReport]:
    if isinstance(runs, RunReport):
        runs = [runs]
    if not isinstance(runs, Sequence) or isinstance(runs, str) or not runs:
        raise ValueError(
            f"runs must be a non-empty list of RunReport, got {runs!r}; "
            "pass e.g. [RunReport('vae-z2', evaluation=...)]"
        )
    for i, run in enumerate(runs):
        if not isinstance(run, RunReport):
            raise ValueError(
                f"runs[{i}] must be a RunReport, got {type(run).__name__}; "
                "wrap each run as RunReport(name, ...)"
            )
        _check_evaluation(run.evaluation, f"evaluation of run {run.name!r}")
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"run names must be unique, got {duplicates} more than once; rename them")
    return list(runs)


def render_report(runs: Sequence[RunReport], title: str = "pyrovae report") -> str:
    """The report as one HTML string (what :func:`write_report` writes).

    Useful in a notebook: ``IPython.display.HTML(render_report(runs))``.

    Raises:
        ValueError: for an empty ``runs``, duplicate run names, or a figure that is missing
            or not a PNG.
    """
    runs = _check_runs(runs)
    images = [
        [(str(t), *_read_figure(run, str(t), src)) for t, src in run.figures.items()]
        for run in runs
    ]
    from pyrovae import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = ""
    if len(runs) > 1:
        links = "".join(
            f'<a href="#{_anchor(i, run.name)}">{_e(run.name)}</a>' for i, run in enumerate(runs)
        )
        nav = f"<nav>{links}</nav>"
    body = "".join(
        _run_html(i, run, imgs, _diagnostics_images(run))
        for i, (run, imgs) in enumerate(zip(runs, images, strict=True))
    )
    summary = _summary_html(runs) if len(runs) > 1 else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main><header><h1>{_e(title)}</h1>"
        f'<p class="meta">Generated {_e(now)} by pyrovae {_e(__version__)}; '
        f"{len(runs)} run{'s' if len(runs) != 1 else ''}. "
        "Log-likelihoods are per datum, in nats (higher is better).</p>"
        f"{nav}</header>\n{summary}\n{body}\n</main></body></html>\n"
    )


def write_report(
    runs: Sequence[RunReport], out_dir: str | os.PathLike[str], title: str = "pyrovae report"
) -> Path:
    """Write ``out_dir/report.html`` (atomically) for ``runs``; return its path.

    Every figure is embedded, so the file is all that needs sharing. ``out_dir`` is created
    when missing. Raises ValueError as :func:`render_report` does, before writing anything.
    """
    if isinstance(out_dir, (bytes, bytearray)) or not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"out_dir must be a directory path, got {type(out_dir).__name__}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {str(out)!r} is a file; pass a directory for {REPORT_FILENAME}")
    text = render_report(runs, title)
    path = out / REPORT_FILENAME
    atomic_write_text(path, text)
    return path
