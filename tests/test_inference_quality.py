"""The inference-quality sentences follow from the numbers: findings only beyond 1.96 SE."""

from __future__ import annotations

import math

import pytest

from pyrovae.analysis.posterior.inference_quality import gap_table, inference_conclusions


def diagnostics(approx, amort, coverage=(0.7, 0.72, 0.68, 0.71), flagged=0):
    """A diagnostics dict with per-datum gaps and its summaries, computed here."""
    n = len(approx)

    def summary(values):
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        return {"mean": mean, "stderr": sd / math.sqrt(n)}

    total = [a + b for a, b in zip(approx, amort, strict=True)]
    cov_mean = sum(coverage) / len(coverage)
    cov_se = math.sqrt(sum((c - cov_mean) ** 2 for c in coverage) / (len(coverage) - 1)) / 2
    return {
        "num_data": n,
        "num_reference": len(coverage),
        "flagged": flagged,
        "r_hat_max": 1.004,
        "ess_bulk_min": 812.0,
        "coverage_90_mean": cov_mean,
        "coverage_90_stderr": cov_se,
        "budget": {
            "chains": 4,
            "warmup": 300,
            "samples": 500,
            "gap_steps": 500,
            "ais_steps": 500,
            "ais_chains": 16,
        },
        "gaps": {
            "family": "diagonal",
            "log_px_method": "ais",
            "num_data": n,
            "approximation_gap": summary(approx),
            "amortization_gap": summary(amort),
            "total_gap": summary(total),
            "log_px": {"mean": -90.0, "stderr": 1.0},
        },
        "data": [
            {"gaps": {"approximation_gap": a, "amortization_gap": b}}
            for a, b in zip(approx, amort, strict=True)
        ],
    }


def text(d) -> str:
    return " ".join(inference_conclusions(d))


def test_amortization_dominates_and_the_guide_is_too_narrow():
    said = text(diagnostics([1.0, 1.2, 0.9, 1.1], [3.0, 3.6, 2.8, 3.2]))
    assert "NUTS reference posteriors p(z | x) for 4 of 4 test images" in said
    assert "0 flagged" in said and "largest R-hat 1.004" in said
    assert "hold 70% of the posterior draws" in said and "too narrow or misplaced" in said
    diffs = [2.0, 2.4, 1.9, 2.1]  # amortization - approximation, per image
    se = math.sqrt(sum((d - 2.1) ** 2 for d in diffs) / 3 / 4)
    assert f"Amortization dominates (by {2.1:.2f} +- {se:.2f} nats, paired per image)" in said
    assert "Neither" not in said and "negative beyond" not in said


def test_paired_difference_decides_not_the_summaries():
    """Gaps that move together per image: unpaired errors would overlap, paired they do not."""
    approx = [0.0, 4.0, 8.0, 12.0]
    amort = [a + 0.5 + 0.01 * i for i, a in enumerate(approx)]
    said = text(diagnostics(approx, amort))
    assert "Amortization dominates" in said


def test_ties_and_the_reverse_are_said_so():
    tied = text(diagnostics([1.0, 3.0, 2.0, 2.5], [2.0, 1.5, 3.0, 2.0]))
    assert "Neither gap dominates" in tied
    reverse = text(diagnostics([3.0, 3.5, 2.8, 3.2], [1.0, 1.2, 0.9, 1.1]))
    assert "The approximation gap dominates" in reverse and "--guide flow" in reverse


def test_calibrated_coverage_flagged_images_and_a_negative_gap():
    d = diagnostics(
        [-1.0, -1.2, -0.9, -1.1], [3.0, 3.5, 2.8, 3.2], coverage=(0.88, 0.93, 0.9, 0.86), flagged=1
    )
    said = text(d)
    assert "consistent with 90% within its error" in said
    assert "The flagged image is left out" in said
    assert "negative beyond its error" in said and "--ais-steps" in said


def test_stale_and_absent():
    assert inference_conclusions(None) == []
    assert inference_conclusions({"stale": "computed for other model weights"}) == [
        "computed for other model weights"
    ]


def test_gap_table_rows():
    rows = gap_table(diagnostics([1.0, 1.2, 0.9, 1.1], [3.0, 3.5, 2.8, 3.2]))
    labels = [label for label, _, _ in rows]
    assert labels[0] == "log p(x)" and labels[-1].startswith("amortization gap")
    total = dict((label, mean) for label, mean, _ in rows)["total gap log p(x) - ELBO(q)"]
    assert total == pytest.approx(1.05 + 3.125)
