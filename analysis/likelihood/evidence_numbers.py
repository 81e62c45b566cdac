"""The numbers of an evaluation's AIS entries, shared by the evidence levels and the figures.

Kept below both :mod:`pyrovae.analysis.likelihood.evidence` (which re-exports every name here) and
:mod:`pyrovae.analysis.figures.curves`, so that neither imports the other for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["Z95", "ais_difference"]

Z95 = 1.96
"""A difference d with standard error s is shown when ``|d| > Z95 * s`` (two-sided 95%)."""


def _num(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


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
