"""Conclusions across runs: which model and latent source lead, and how seeds spread."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pyrovae.analysis.evaluation.compare import KHAT_FLAG_FRACTION
from pyrovae.analysis.likelihood.evidence import Z95
from pyrovae.analysis.likelihood.psis import KHAT_THRESHOLD
from pyrovae.analysis.report.conclusions import _advice_sentences, _check_evaluation
from pyrovae.analysis.report.numbers import (
    ADVICE,
    PRIOR,
    _beyond,
    _finite,
    _leading,
    _listing,
    _pair,
    _prior_difference,
    _signed,
    _sources,
    _unreliable,
    _z_dim,
)
from pyrovae.analysis.report.run import RunReport


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
