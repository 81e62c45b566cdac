"""The evidence behind a comparison: AIS first, then converged importance sampling."""

from __future__ import annotations

import pytest

from pyrovae.analysis.figures import plot_ksweep
from pyrovae.analysis.likelihood.evidence import (
    Z95,
    ais_difference,
    evidence_sentences,
    judge,
    source_bdmc,
)
from pyrovae.analysis.report import conclusions


def _entry(loglik, converged=True, vs_prior=None, ais=None, stderr=0.4):
    entry = {"loglik": loglik, "stderr": stderr, "converged": converged}
    entry["ksweep"] = {"1": loglik - 5.0, "10": loglik - 1.0, "100": loglik - 0.05}
    entry["ksweep"]["1000"] = loglik
    if vs_prior is not None:
        entry["vs_prior"], entry["vs_prior_stderr"] = vs_prior
    if ais is not None:
        entry["ais"] = {
            "loglik": ais[0],
            "stderr": ais[1],
            "is_loglik": loglik,
            "num_test": 200,
            "steps": 500,
            "chains": 16,
        }
    return entry


def test_converged_importance_sampling_decides_a_paired_difference():
    sources = {"prior": _entry(-100.0), "gmm": _entry(-99.0, vs_prior=(1.0, 0.1))}
    verdict = judge(sources, "gmm")
    assert verdict.established and verdict.basis == "converged importance sampling"
    assert (verdict.difference, verdict.stderr) == (1.0, 0.1)
    sources["gmm"]["vs_prior"] = 0.15  # within 2 paired standard errors
    assert not judge(sources, "gmm").established


def test_the_threshold_is_1_96_standard_errors():
    sources = {"prior": _entry(-100.0), "gmm": _entry(-99.8, vs_prior=(0.198, 0.1))}
    assert Z95 == 1.96 and judge(sources, "gmm").established  # 1.98 standard errors
    sources["gmm"]["vs_prior"] = 0.19
    verdict = judge(sources, "gmm")
    assert not verdict.established and "within 1.96 standard errors" in verdict.basis


def test_ais_difference_pairs_images_when_it_can():
    a = {"loglik": -99.5, "stderr": 5.0, "per_datum": [-89.6, -109.4, -99.5]}
    b = {"loglik": -100.0, "stderr": 5.0, "per_datum": [-90.0, -110.0, -100.0]}
    diff, se = ais_difference(a, b)
    assert diff == pytest.approx(0.5) and se == pytest.approx(0.1 / 3**0.5)
    del b["per_datum"]
    diff, se = ais_difference(a, b)
    assert diff == pytest.approx(0.5) and se == pytest.approx(5.0 * 2**0.5)


def test_a_rising_estimate_leaves_the_comparison_undetermined():
    sources = {"prior": _entry(-100.0), "aggregate": _entry(-96.0, converged=False)}
    verdict = judge(sources, "aggregate")
    assert not verdict.established
    assert "aggregate is still rising in K" in verdict.basis
    legacy = {"prior": {"loglik": -100.0, "stderr": 0.1}, "gmm": {"loglik": -90.0, "stderr": 0.1}}
    assert "not recorded" in judge(legacy, "gmm").basis


def test_ais_overrides_importance_sampling():
    # IS is still rising for both, but AIS separates them by far more than 2 standard errors
    sources = {
        "prior": _entry(-100.0, converged=False, ais=(-99.0, 0.3)),
        "gmm": _entry(-99.0, converged=False, ais=(-97.0, 0.3)),
    }
    verdict = judge(sources, "gmm")
    assert verdict.established and verdict.basis == "AIS"
    assert verdict.difference == pytest.approx(2.0)
    sources["gmm"]["ais"]["loglik"] = -98.8  # 0.2 apart, SE 0.42: no difference shown
    assert not judge(sources, "gmm").established
    # paired image by image, a small but steady difference is shown even with a large
    # spread between images
    sources["prior"]["ais"].update(loglik=-100.0, stderr=5.0, per_datum=[-90.0, -110.0, -100.0])
    sources["gmm"]["ais"].update(loglik=-99.5, stderr=5.0, per_datum=[-89.6, -109.4, -99.5])
    verdict = judge(sources, "gmm")
    assert verdict.established and verdict.difference == pytest.approx(0.5)
    assert verdict.stderr == pytest.approx(0.1 / 3**0.5)


def test_report_sentence_says_undetermined_when_evidence_is_missing():
    sources = {
        "prior": _entry(-100.0),
        "aggregate": _entry(-97.0, converged=False, vs_prior=(3.0, 0.2)),
    }
    best = next(s for s in conclusions({"sources": sources}) if "highest held-out" in s)
    # one verdict: a difference of estimates still rising in K is never called significant
    assert "from aggregate gives" in best and "significant" not in best
    assert "undetermined: importance sampling puts it beyond 1.96 standard errors" in best
    assert "but the estimate for aggregate is still rising in K" in best
    sources["aggregate"]["converged"] = True
    best = next(s for s in conclusions({"sources": sources}) if "highest held-out" in s)
    assert "undetermined" not in best and "significant: importance sampling" in best
    assert "both estimates converged in K" in best


def _bdmc(source, gap, initial="guide"):
    return {"source": source, "initial": initial, "lower": -88.4, "upper": -88.4 + gap}


def test_evidence_sentences_report_ais_agreement_and_bdmc():
    sources = {
        "prior": _entry(-100.0, ais=(-99.6, 0.3)),
        "gaussian-loc": _entry(-104.0, converged=False, ais=(-101.0, 0.3)),
    }
    sources["prior"]["ais"]["minus_is"] = {"mean": 0.4, "stderr": 0.05}
    evaluation = {"sources": sources}
    run = {**_bdmc("prior", 0.3), "gap": 0.3, "gap_stderr": 0.02, "steps": 500, "num_data": 100}
    sources["prior"]["ais"]["bdmc"] = run
    sources["gaussian-loc"]["ksweep_remaining"] = 0.42
    sentences = evidence_sentences(evaluation)
    rising = next(s for s in sentences if s.startswith("Still rising in K"))
    assert "gaussian-loc (+0.05 from K = 100 to 1000; about 0.42 to go by geometric" in rising
    # an extrapolation below the 1/K floor of the last rise would claim convergence
    sources["gaussian-loc"]["ksweep"]["1000"] += 4.0  # rise 4.05: floor 4.05 / 9 = 0.45
    rising = next(s for s in evidence_sentences(evaluation) if s.startswith("Still rising"))
    assert "about 0.42" not in rising and "at least 0.45 to go at the 1/K rate" in rising
    ais = next(s for s in sentences if s.startswith("AIS (500 steps, 16 chains, 200 images)"))
    assert "within 1 nat for prior (AIS - IS +0.40 \u00b1 0.05)" in ais
    assert "gaussian-loc (IS -104.00, AIS -101.00)" in ais and "paired image by image" in ais
    # the gap is the prior's: it backs the prior's AIS and no other source's
    bdmc = [s for s in sentences if s.startswith("BDMC")]
    assert len(bdmc) == 1 and bdmc[0].startswith("BDMC for prior, on 100 data simulated from prior")
    assert "a gap of 0.30 \u00b1 0.02 nats, small enough to trust the AIS of prior" in bdmc[0]
    assert sentences[-1].startswith("No BDMC gap was measured for gaussian-loc: its AIS is")
    run["gap"] = 2.5
    assert any("too large to trust the AIS of prior" in s for s in evidence_sentences(evaluation))
    # an old file: one top-level gap, simulated from the prior and run from the guide
    del sources["prior"]["ais"]["bdmc"]
    evaluation["bdmc"] = {"lower": -88.4, "upper": -88.1, "gap": 0.3, "steps": 500, "num_data": 9}
    sentences = evidence_sentences(evaluation)
    bdmc = [s for s in sentences if s.startswith("BDMC")]
    assert len(bdmc) == 1
    assert bdmc[0].startswith("BDMC for prior, on 9 data simulated from prior with forward AIS")
    assert "from the guide" in bdmc[0] and "a gap of 0.30 nats" in bdmc[0]
    assert "No BDMC gap was measured for gaussian-loc" in sentences[-1]
    assert source_bdmc(evaluation, "gaussian-loc") is None
    assert evidence_sentences({}) == []


def test_ais_verdict_uses_each_sources_own_bdmc_gap():
    sources = {
        "prior": _entry(-100.0, converged=False, ais=(-99.0, 0.1)),
        "gmm": _entry(-99.0, converged=False, ais=(-97.0, 0.1)),
    }
    verdict = judge(sources, "gmm")  # AIS 2 nats apart, SE 0.14: shown, but unchecked
    assert verdict.established and verdict.bdmc_gaps == {"gmm": None, "prior": None}
    sentence = next(s for s in conclusions({"sources": sources}) if "highest held-out" in s)
    assert "holds under AIS" in sentence and "no BDMC gap measured for gmm and prior" in sentence
    sources["gmm"]["ais"]["bdmc"] = {**_bdmc("gmm", 0.05), "gap": 0.05}
    sources["prior"]["ais"]["bdmc"] = {**_bdmc("prior", 0.04), "gap": 0.04}
    verdict = judge(sources, "gmm")
    assert verdict.established and verdict.bdmc_gaps == {"gmm": 0.05, "prior": 0.04}
    sentence = next(s for s in conclusions({"sources": sources}) if "highest held-out" in s)
    assert "BDMC gap 0.05 nats for gmm and 0.04 nats for prior" in sentence
    # the prior (the lower one) may lie below its log p(x) by up to its gap: a difference
    # it could explain is not shown
    sources["prior"]["ais"]["bdmc"]["gap"] = 1.9
    verdict = judge(sources, "gmm")
    assert not verdict.established and "BDMC gap of prior" in verdict.basis
    # a gap too large to trust AIS leaves the comparison undetermined
    sources["prior"]["ais"]["bdmc"]["gap"] = 0.04
    sources["gmm"]["ais"]["bdmc"]["gap"] = 1.5
    verdict = judge(sources, "gmm")
    assert not verdict.established and "BDMC gap of gmm (1.50 nats) is too large" in verdict.basis


def test_ksweep_figure():
    sources = {
        "prior": _entry(-100.0, ais=(-99.6, 0.3)),
        "aggregate": _entry(-96.0, converged=False),
    }
    fig = plot_ksweep(sources)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["prior", "aggregate  (still rising)"]
    with pytest.raises(ValueError, match="ksweep"):
        plot_ksweep({"prior": {"loglik": -1.0}})
