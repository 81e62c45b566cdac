"""Pareto-smoothed importance sampling (PSIS) diagnostics for importance weights.

The shape k of a generalized Pareto distribution fitted to the largest weights tells
whether an importance-sampling estimate can be trusted: k < 0.5 is good, 0.5 <= k <= 0.7
is usable, k > 0.7 means the variance of the weights is effectively infinite and the
estimate of log p(x) is unreliable for that datum. Pareto Smoothed Importance Sampling
(Vehtari et al., 2024), https://arxiv.org/abs/1507.02646.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["KHAT_THRESHOLD", "MIN_PSIS_SAMPLES", "psis_khat", "khat_fraction"]

KHAT_THRESHOLD = 0.7
# ArviZ fits the Pareto tail to the ceil(min(K / 5, 3 sqrt(K))) largest weights and
# needs more than 4 of them; below 21 draws it has no tail to fit.
MIN_PSIS_SAMPLES = 21


def _arviz_psislw() -> Callable[..., Any]:
    """Import ``arviz.psislw`` without the once-a-day FutureWarning ArviZ prints on import."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
        )
        from arviz import psislw
    return psislw


def psis_khat(log_weights: torch.Tensor | np.ndarray) -> torch.Tensor:
    """PSIS k-hat of each row of ``log_weights`` (shape (B, K)), as a float64 tensor (B,).

    Uses ``arviz.psislw`` with ``reff=1`` (independent draws). Special cases, so that
    no row silently reads as "reliable" or "unreliable" by accident:

    - fewer than :data:`MIN_PSIS_SAMPLES` draws per row: k-hat cannot be estimated, NaN;
    - a row whose weights are all equal (the guide is the exact posterior): there is no
      tail at all, -inf;
    - a row with no finite weight: NaN.

    Raises:
        ValueError: if ``log_weights`` is not 2-D or holds NaN or +inf.
    """
    lw = torch.as_tensor(log_weights).detach().to("cpu", torch.float64).numpy()
    if lw.ndim != 2:
        raise ValueError(
            f"log_weights must have shape (batch, num_samples), got {lw.shape}; "
            "transpose the (num_samples, batch) output of importance_terms"
        )
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError(
            "log_weights holds NaN or +inf; check the model and guide densities "
            "(a likelihood evaluated outside its support gives NaN)"
        )
    khat = np.full(lw.shape[0], np.nan)
    if lw.shape[1] < MIN_PSIS_SAMPLES:
        return torch.from_numpy(khat)
    finite = np.isfinite(lw).any(axis=1)
    constant = finite & (lw.max(axis=1) == lw.min(axis=1))
    khat[constant] = -np.inf
    todo = finite & ~constant
    if todo.any():
        psislw = _arviz_psislw()
        # Degenerate tails (ties, under/overflow in the Pareto fit) make NumPy warn while
        # ArviZ returns inf for them, which is the answer we want: silence only those.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            _, k = psislw(lw[todo], reff=1.0)
        khat[todo] = np.asarray(k, dtype=np.float64)
    return torch.from_numpy(khat)


def khat_fraction(khat: torch.Tensor, threshold: float = KHAT_THRESHOLD) -> float:
    """Fraction of data whose k-hat exceeds ``threshold`` (NaN entries are left out).

    Returns NaN when no entry is defined (e.g. fewer than 21 importance samples).
    """
    khat = torch.as_tensor(khat)
    defined = ~torch.isnan(khat)
    count = int(defined.sum())
    if count == 0:
        return math.nan
    return float((khat[defined] > threshold).sum()) / count
