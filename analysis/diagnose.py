"""Diagnose a run's amortized guide: NUTS reference posteriors and inference gaps, saved.

What ``pyrovae diagnose`` runs. For a few held-out images (of every class, fixed seed) it
draws a reference posterior p(z | x) by NUTS (:mod:`~pyrovae.analysis.posterior`),
compares the guide with it, and splits log p(x) - ELBO(q) into the approximation and
amortization gaps (:mod:`~pyrovae.analysis.gaps`; Cremer et al. 2018). It writes
``diagnostics.json`` and one ArviZ NetCDF file per image (``posterior-NNNNN.nc``, the
test index), which ``arviz.from_netcdf`` reads back in a notebook.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyrovae.checkpoint import write_json
from pyrovae.data import Splits, fixed_binarization
from pyrovae.nets import check_positive_int
from pyrovae.train import one_hot

from .gaps import GAP_NAMES, inference_gaps
from .posterior import default_data, guide_vs_posterior, reference_posterior

__all__ = ["DiagnoseBudget", "diagnose_run"]


@dataclass(frozen=True)
class DiagnoseBudget:
    """What :func:`diagnose_run` spends.

    Attributes:
        num_data: held-out images diagnosed (about equally many of each class).
        chains, warmup, samples: NUTS chains per image, warm-up and kept draws per chain.
        gap_steps: SVI steps of the per-datum optimal guide q*.
        elbo_draws: draws per ELBO estimate of q and q*.
        ais_steps, ais_chains: the AIS budget of log p(x).
    """

    num_data: int = 20
    chains: int = 4
    warmup: int = 300
    samples: int = 500
    gap_steps: int = 500
    elbo_draws: int = 1000
    ais_steps: int = 500
    ais_chains: int = 16

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            check_positive_int(name, getattr(self, name))


def _inputs(vae: nn.Module, split: Any, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
    device = next(vae.parameters()).device
    x = split.x
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    x = x[idx].to(device)
    y = one_hot(split.y[idx].to(device), vae.y_dim) if vae.conditional else None
    return x, y


def diagnose_run(
    vae: nn.Module,
    data: Splits,
    out_dir: str | Path,
    budget: DiagnoseBudget = DiagnoseBudget(),
    split: str = "test",
    seed: int = 0,
) -> dict[str, Any]:
    """Reference posteriors, guide-vs-posterior summaries and gaps; written to ``out_dir``.

    Returns the dict written to ``out_dir/diagnostics.json``: ``{"data": [{"index",
    "label", "r_hat_max", "ess_bulk_min", "ess_tail_min", "flagged", "guide",
    "gaps": {...}}], "gaps": {name: {"mean", "stderr"}}, "flagged", "budget", ...}``. A
    flagged datum (R-hat > 1.01) keeps its entry, marked, and is left out of
    ``"coverage_90_mean"``; the gaps need no NUTS and cover every datum.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_out = getattr(data, split)
    per_class = max(1, math.ceil(budget.num_data / data.num_classes))
    idx = default_data(held_out, per_class=per_class, seed=seed)[: budget.num_data]
    x, y = _inputs(vae, held_out, idx)
    entries = []
    coverage = []
    for i, n in enumerate(idx.tolist()):
        yi = None if y is None else y[i]
        ref = reference_posterior(
            vae,
            x[i],
            yi,
            num_chains=budget.chains,
            warmup=budget.warmup,
            num_samples=budget.samples,
            seed=seed + i,
        )
        path = out / f"posterior-{n:05d}.nc"
        partial = path.with_name(f".{path.name}.part")  # whole files only: write, then rename
        ref.inference_data.to_netcdf(str(partial))
        os.replace(partial, path)
        entry = {"index": n, "label": int(held_out.y[n]), **ref.to_dict()}
        entry["guide"] = guide_vs_posterior(vae, x[i], yi, ref, seed=seed)
        if not ref.flagged:
            coverage.append(entry["guide"]["coverage_90_mean"])
        entries.append(entry)
    gaps = inference_gaps(
        vae,
        x,
        y,
        steps=budget.gap_steps,
        elbo_draws=budget.elbo_draws,
        ais_options={"num_steps": budget.ais_steps, "num_chains": budget.ais_chains},
        seed=seed,
    )
    for i, entry in enumerate(entries):
        entry["gaps"] = {name: float(getattr(gaps, name)[i]) for name in GAP_NAMES}
    result = {
        "split": split,
        "num_data": len(entries),
        "flagged": sum(e["flagged"] for e in entries),
        "coverage_90_mean": sum(coverage) / len(coverage) if coverage else None,
        "gaps": gaps.to_dict(),
        "budget": {k: getattr(budget, k) for k in budget.__dataclass_fields__},
        "seed": seed,
        "data": entries,
    }
    write_json(out / "diagnostics.json", result)
    return result
