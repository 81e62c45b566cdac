"""The mean of per-datum values and its standard error, as every summary here reports it."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_stderr"]


def mean_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, s / sqrt(n)) of n values, s the sample standard deviation (ddof 1); the
    standard error is None for fewer than two values. Raises on an empty sequence."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_stderr needs at least one value")
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)
