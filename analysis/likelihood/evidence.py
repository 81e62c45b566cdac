"""What stands behind a log-likelihood comparison: AIS, convergence in K, or nothing yet.

The report may say "source A beats source B" only with evidence. In order of strength:

1. **AIS** (annealed importance sampling) estimates of both sources on the same images,
   whose difference exceeds 1.96 standard errors (paired image by image). Each source's
   own BDMC gap (measured on data simulated from that source, from the start its AIS
   used) says how far its AIS can lie below log p_r(x) on data like these: a gap above
   :data:`BDMC_TRUSTED_GAP`, or a difference that the gaps could explain, leaves the
   comparison undetermined; a source without a gap has AIS unchecked, and the verdict
   says so (:attr:`Evidence.bdmc_gaps`).
2. **Converged importance sampling**: the estimates of both sources have stopped rising
   in K (:func:`~pyrovae.analysis.evaluation.compare.ksweep_converged`) and their paired difference
   exceeds 1.96 standard errors.
3. Otherwise the comparison is **undetermined**: an importance-sampling estimate that is
   still rising in K is a lower bound whose bias may be larger than the difference.

Sandwiching the marginal likelihood using bidirectional Monte Carlo (Grosse et al., 2015),
https://arxiv.org/abs/1511.02543
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyrovae.analysis.likelihood.evidence_numbers import Z95, _ais, _num, ais_difference

__all__ = [
    "AIS_AGREEMENT",
    "BDMC_TRUSTED_GAP",
    "Z95",
    "Evidence",
    "ais_difference",
    "judge",
    "source_bdmc",
    "evidence_sentences",
    "rising_sentence",
]

AIS_AGREEMENT = 1.0
"""IS and AIS means within this many nats count as agreeing."""
BDMC_TRUSTED_GAP = 1.0
"""A BDMC gap (nats) below which AIS at that number of steps is trusted."""


@dataclass(frozen=True)
class Evidence:
    """The verdict on log p_a(x) - log p_b(x).

    Attributes:
        established: the sign of the difference is shown (by AIS or converged IS).
        difference: the difference the verdict rests on (nats per datum).
        stderr: its standard error (None when unknown).
        basis: ``"AIS"``, ``"converged importance sampling"``, or why it is undetermined.
        bdmc_gaps: under AIS, each of the two sources' own BDMC gap (nats; None where no
            BDMC was run for it, so its AIS is unchecked); empty otherwise.
    """

    established: bool
    difference: float | None
    stderr: float | None
    basis: str
    bdmc_gaps: Mapping[str, float | None] = field(default_factory=dict)


def _entry(sources: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    entry = sources.get(name)
    return entry if isinstance(entry, Mapping) else {}


def _own_bdmc(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    ais = entry.get("ais")
    run = ais.get("bdmc") if isinstance(ais, Mapping) else None
    return run if isinstance(run, Mapping) and _num(run.get("gap")) is not None else None


def source_bdmc(evaluation: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """The BDMC run that backs the AIS of source ``name``, or None where none was measured.

    ``sources[name]["ais"]["bdmc"]``: data simulated from that source, forward AIS from its
    own initial distribution. A file written before per-source BDMC holds one top-level
    ``"bdmc"``: data simulated from the model's prior, forward AIS from the guide, which is
    the prior's own start; it backs the prior alone and is returned for ``"prior"`` only.
    """
    sources = evaluation.get("sources")
    entry = sources.get(name) if isinstance(sources, Mapping) else None
    own = _own_bdmc(entry) if isinstance(entry, Mapping) else None
    if own is not None or name != "prior":
        return own
    legacy = evaluation.get("bdmc")
    if isinstance(legacy, Mapping) and _num(legacy.get("gap")) is not None:
        if legacy.get("source", "prior") == "prior":
            return {"source": "prior", "initial": "guide", **legacy}
    return None


def _gap(entry: Mapping[str, Any]) -> float | None:
    run = _own_bdmc(entry)
    return None if run is None else float(run["gap"])


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
    :func:`~pyrovae.analysis.evaluation.evaluate.evaluate_run`). AIS on both sources decides when it
    is there, with each source's own BDMC gap g (``sources[name]["ais"]["bdmc"]``): AIS
    lies below log p_r(x) by about g at most (Grosse et al., 2015), so a difference is
    shown when ``|d| > 1.96 se + g`` of the lower source, and no gap may reach
    :data:`BDMC_TRUSTED_GAP`; a source without a gap counts as g = 0 and is named in
    ``bdmc_gaps``. Otherwise importance sampling decides only if both estimates converged
    in K.
    """
    ea, eb = _entry(sources, a), _entry(sources, b)
    ais_a, ais_b = _ais(ea), _ais(eb)
    if ais_a is not None and ais_b is not None:
        diff, se = ais_difference(ea["ais"], eb["ais"])
        gaps = {a: _gap(ea), b: _gap(eb)}
        if not abs(diff) > Z95 * se:
            return Evidence(
                False, diff, se, f"under AIS the difference is within {Z95} x {se:.2f}", gaps
            )
        wide = [
            f"{n} ({g:.2f} nats)"
            for n, g in gaps.items()
            if g is not None and g >= BDMC_TRUSTED_GAP
        ]
        if wide:
            return Evidence(
                False,
                diff,
                se,
                f"the BDMC gap of {' and '.join(wide)} is too large to trust AIS at this "
                "number of steps",
                gaps,
            )
        # AIS lies below log p_r(x) by about its BDMC gap at most: the lower source may
        # be underestimated by up to its gap
        lower = b if diff > 0 else a
        slack = gaps[lower] or 0.0
        if abs(diff) <= Z95 * se + slack:
            return Evidence(
                False,
                diff,
                se,
                f"under AIS the difference is within {Z95} x {se:.2f} plus the BDMC gap of "
                f"{lower} ({slack:.2f} nats)",
                gaps,
            )
        return Evidence(True, diff, se, "AIS", gaps)
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


def rising_sentence(sources: Mapping[str, Any]) -> list[str]:
    """The sources whose L_K still rises in K, with what the sweep says is left.

    If the bias of L_K falls no faster than 1/K (its asymptotic rate for light-tailed
    weights; Burda et al., 2016, https://arxiv.org/abs/1509.00519), the last rise
    d = L_K - L_k' leaves at least d k' / (K - k') to go. A geometric extrapolation of the
    last rises (``ksweep_remaining``) is shown only where it is not below that floor: a
    smaller one would claim a convergence that the sweep contradicts.
    """
    named = []
    for name, entry in sources.items():
        if not isinstance(entry, Mapping) or entry.get("converged") is not False:
            continue
        sweep = {}
        ksweep = entry.get("ksweep")
        for key, value in (ksweep if isinstance(ksweep, Mapping) else {}).items():
            try:
                k, v = int(key), _num(value)
            except (TypeError, ValueError):
                continue
            if v is not None and k > 0:
                sweep[k] = v
        if len(sweep) < 2:
            named.append(name)
            continue
        k_last, k_prev = sorted(sweep)[-1], sorted(sweep)[-2]
        rise = sweep[k_last] - sweep[k_prev]
        text = f"{name} (+{rise:.2f} from K = {k_prev} to {k_last}; " if rise >= 0 else name
        if rise >= 0:
            floor = rise * k_prev / (k_last - k_prev)
            geometric = _num(entry.get("ksweep_remaining"))
            if geometric is not None and geometric > floor:
                text += f"about {geometric:.2f} to go by geometric extrapolation, "
            text += f"at least {floor:.2f} to go at the 1/K rate)"
        else:
            text = f"{name} (L_K fell over the last step: Monte Carlo noise exceeds the rise)"
        named.append(text)
    if not named:
        return []
    return [
        "Still rising in K, so these estimates are lower bounds that have not converged (L_K "
        f"grew by more than 0.1 nats over the last 5x or more of draws): {'; '.join(named)} "
        "(nats; at the 1/K rate: if the remaining bias falls as 1/K, its asymptotic rate)."
    ]


def evidence_sentences(evaluation: Mapping[str, Any]) -> list[str]:
    """Plain-language findings on the evidence: IS against AIS, convergence in K, BDMC."""
    sources = evaluation.get("sources")
    if not isinstance(sources, Mapping):
        return []
    out = []
    entries = {n: e for n, e in sources.items() if isinstance(e, Mapping)}
    out.extend(rising_sentence(entries))
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
        paired = ais.get("minus_is")
        paired = paired if isinstance(paired, Mapping) else {}
        d, d_se = _num(paired.get("mean")), _num(paired.get("stderr"))
        shown = (
            ""
            if d is None
            else f"AIS - IS {d:+.2f}" + ("" if d_se is None else f" \u00b1 {d_se:.2f}")
        )
        if abs(value - is_value) <= AIS_AGREEMENT:
            agree.append(name if not shown else f"{name} ({shown})")
        else:
            disagree.append(
                f"{name} (IS {is_value:.2f}, AIS {value:.2f}" + (f"; {shown})" if shown else ")")
            )
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
        note = (
            " (AIS - IS paired image by image on the same images, \u00b1 its standard error)"
            if any("AIS - IS" in p for p in agree + disagree)
            else ""
        )
        out.append(f"{budget} {'; it '.join(parts)}{note}.")
    unchecked = []
    for name, entry in entries.items():
        run = source_bdmc(evaluation, name)
        if run is None:
            if isinstance(entry.get("ais"), Mapping):
                unchecked.append(name)
            continue
        gap = float(run["gap"])
        gap_se = _num(run.get("gap_stderr"))
        verdict = (
            f"small enough to trust the AIS of {name} at this number of steps"
            if gap < BDMC_TRUSTED_GAP
            else f"too large to trust the AIS of {name} at this number of steps: raise it"
        )
        start = run.get("initial") or "guide"
        out.append(
            f"BDMC for {name}, on {run.get('num_data')} data simulated from {name} with "
            f"forward AIS from the {start}, brackets log p(x) between "
            f"{_num(run.get('lower')):.2f} and {_num(run.get('upper')):.2f} nats at "
            f"{run.get('steps')} steps: a gap of {gap:.2f}"
            + ("" if gap_se is None else f" \u00b1 {gap_se:.2f}")
            + f" nats, {verdict}."
        )
    if unchecked:
        out.append(
            f"No BDMC gap was measured for {', '.join(unchecked)}: "
            f"{'its AIS is' if len(unchecked) == 1 else 'their AIS estimates are'} an "
            "unchecked stochastic lower bound."
        )
    return out


def __getattr__(name: str):  # plot_ksweep moved to the figures package; deprecated here
    if name == "plot_ksweep":
        import importlib
        import warnings

        warnings.warn(
            "plot_ksweep moved to pyrovae.analysis.figures; import it from there: the old "
            "name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module("pyrovae.analysis.figures.curves").plot_ksweep
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
