"""Diagnose a run's amortized guide: NUTS reference posteriors and inference gaps, saved.

What ``pyrovae diagnose`` runs. For a few held-out images (of every class, fixed seed) it
draws a reference posterior p(z | x) by NUTS (:mod:`~pyrovae.analysis.posterior.nuts`),
compares the guide with it, and splits log p(x) - ELBO(q) into the approximation and
amortization gaps (:mod:`~pyrovae.analysis.posterior.gaps`; Cremer et al. 2018). It writes
``diagnostics.json``, one ArviZ NetCDF file per image (``posterior-NNNNN.nc``, the
test index), which ``arviz.from_netcdf`` reads back in a notebook, and two figures
(``posterior.png``: posterior against guide for the first few images; ``gaps.png``). By
default all of it goes to ``RUN/diagnostics/``, where ``pyrovae report`` finds it; the
file records a fingerprint of the model weights, so diagnostics of other weights are
never shown as this model's.

Before the long steps it says its plan (:func:`diagnose_plan`, :mod:`~pyrovae.analysis.cost`):
the NUTS gradients (images x chains x iterations x gradients per iteration, counted on a
short pilot chain), the AIS gradients, the q* SVI steps and the ELBO draws, each at a
rate timed on this machine in a few seconds, with the flags that bound them; then each
step shows its progress (:mod:`~pyrovae.analysis.progress`).
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyrovae.analysis.cost import Step, announce, measure_rate
from pyrovae.analysis.figures import plot_gaps, plot_posteriors, save_figure
from pyrovae.analysis.likelihood.ais import ais_log_likelihood
from pyrovae.analysis.likelihood.annealing import DEFAULT_PILOT_CHAINS
from pyrovae.analysis.likelihood.datum_noise import mix64
from pyrovae.analysis.likelihood.loglik import plural
from pyrovae.analysis.likelihood.sharding import sharded_ais_log_likelihood
from pyrovae.analysis.posterior.gaps import (
    GAP_NAMES,
    SELECT_DRAWS,
    GapResult,
    elbo_draw_timer,
    inference_gaps,
    svi_step_timer,
)
from pyrovae.analysis.posterior.nuts import (
    ESS_PER_CHAIN,
    FLAG_REASONS,
    MAX_DIVERGENT,
    RHAT_THRESHOLD,
    default_data,
    ess_threshold,
    gradient_timer,
    guide_vs_posterior,
    nuts_length,
    reference_posterior,
)
from pyrovae.analysis.progress import progress_bar
from pyrovae.analysis.sources.helpers import is_diagonal_normal
from pyrovae.analysis.sources.store import model_fingerprint
from pyrovae.analysis.stats import mean_stderr
from pyrovae.checkpoint import read_json, write_json
from pyrovae.data import Splits, fixed_binarization
from pyrovae.distributed import DistributedContext
from pyrovae.nets import check_positive_int
from pyrovae.train import one_hot

__all__ = [
    "DIAGNOSTICS_DIRNAME",
    "DIAGNOSTICS_FILENAME",
    "DiagnoseBudget",
    "diagnose_plan",
    "diagnose_run",
    "diagnosed_indices",
    "diagnostics_dir",
    "load_diagnostics",
]

DIAGNOSTICS_DIRNAME = "diagnostics"
"""Where in a run directory ``pyrovae diagnose`` writes by default (and the report looks)."""
DIAGNOSTICS_FILENAME = "diagnostics.json"
POSTERIOR_PANELS = 6
"""Images drawn in ``posterior.png`` (the first of those with a NUTS reference)."""
GAP_GROUP = 8
"""Images per fit of q* (positions 8g to 8g + 7 form group g, its fit and ELBO draws seeded
by (seed, g)): the groups do not depend on the number of processes, so a torchrun job
that gives group g to rank g mod W computes what one process computes."""
_GAP_KEY = 0x6A70
"""Tags the groups' seeds, so they differ from the NUTS seeds (seed + position)."""
_GAP_FIELDS = (
    "log_px",
    "elbo_amortized",
    "elbo_optimal",
    "elbo_amortized_stderr",
    "elbo_optimal_stderr",
)
PILOT_WARMUP = 40
PILOT_SAMPLES = 10
"""The short NUTS chain that counts gradients per iteration before the plan is said."""
AIS_PROBE_STEPS = 4
"""AIS steps of each timed call that measures AIS's rate on the real batch."""
ELBO_PROBE_DRAWS = 64
"""ELBO draws per datum of each timed call that measures their rate."""
MEASURING = (
    "pyrovae diagnose: timing this machine for the plan (a short NUTS chain on the first "
    "image, a few AIS and SVI steps)"
)
BOUNDS = (
    "shorten it with --nuts-data, --chains, --warmup, --samples (NUTS), --gap-steps, "
    "--elbo-draws (q* fits), --ais-steps, --ais-chains (AIS) or --num-data (all)"
)
"""The flags (DiagnoseBudget's fields of the same names) that bound the work."""
FIGURES = {
    "posterior.png": "Posterior p(z | x) by NUTS against the guide q(z | x)",
    "gaps.png": "Inference gaps per image and coverage of the guide's intervals",
}


@dataclass(frozen=True)
class DiagnoseBudget:
    """What :func:`diagnose_run` spends.

    Attributes:
        num_data: held-out images diagnosed (about equally many of each class).
        nuts_data: how many of them (the first, one per class in turn) also get a NUTS
            reference posterior; None: all. The gaps need no NUTS, so a cheap gap table
            over many images can go with a few reference posteriors.
        chains, warmup, samples: NUTS chains per image, warm-up and kept draws per chain.
        gap_steps: SVI steps of the per-datum optimal guide q*.
        elbo_draws: draws per ELBO estimate of q and q*.
        ais_steps, ais_chains: the AIS budget of log p(x).
    """

    num_data: int = 20
    nuts_data: int | None = None
    chains: int = 4
    warmup: int = 300
    samples: int = 500
    gap_steps: int = 500
    elbo_draws: int = 1000
    ais_steps: int = 500
    ais_chains: int = 16

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if name == "nuts_data" and self.nuts_data is None:
                continue
            check_positive_int(name, getattr(self, name))
        if self.nuts_data is not None and self.nuts_data > self.num_data:
            raise ValueError(
                f"nuts_data ({self.nuts_data}) exceeds num_data ({self.num_data}); "
                "pass at most num_data, or None for all"
            )


def diagnostics_dir(run_dir: str | Path) -> Path:
    """``RUN/diagnostics``: the default output of ``pyrovae diagnose RUN``."""
    return Path(run_dir) / DIAGNOSTICS_DIRNAME


def diagnosed_indices(split: Any, num_data: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    """The ``num_data`` images of ``split`` that :func:`diagnose_run` takes: about equally
    many of each class, drawn with ``seed`` (:func:`~pyrovae.analysis.posterior.nuts.default_data`),
    the classes in turn, so that any prefix is balanced too."""
    check_positive_int("num_data", num_data)
    chosen = default_data(split, per_class=max(1, math.ceil(num_data / num_classes)), seed=seed)
    labels = split.y.detach().cpu()
    groups = [chosen[labels[chosen] == c] for c in torch.unique(labels[chosen]).tolist()]
    order = [g[i] for i in range(max(len(g) for g in groups)) for g in groups if i < len(g)]
    return torch.stack(order)[:num_data]


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
    figures: bool = True,
    context: DistributedContext | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Reference posteriors, guide-vs-posterior summaries and gaps; written to ``out_dir``.

    The images: ``num_data`` of ``split``, drawn per class with ``seed`` and interleaved
    over the classes; the first ``nuts_data`` of them get a NUTS reference.

    Returns the dict written to ``out_dir/diagnostics.json``: ``{"data": [{"index",
    "label", "reference", "gaps": {...}} and, where ``reference``, "r_hat_max",
    "ess_bulk_min", "ess_tail_min", "num_divergent", "flagged", "flag_reasons",
    "guide"}], "gaps": {name: {"mean", "stderr"}}, "flagged", "flag_counts",
    "thresholds", "coverage_excluded", "num_reference", "budget", "fingerprint",
    "figures", ...}``. A reference is flagged
    (:func:`~pyrovae.analysis.posterior.nuts.flag_reasons`)
    when R-hat > 1.01, bulk or tail ESS < 100 per chain, or any transition diverged
    (``"thresholds"`` states them, ``"flag_counts"`` counts each reason). A flagged datum
    keeps its entry, marked with its reasons, and is left out of ``"coverage_90_mean"``
    (``"coverage_excluded"`` of them); the gaps need no NUTS and cover every datum.

    The gaps take log p(x) from AIS (every image with its own random numbers) and fit q*
    to groups of :data:`GAP_GROUP` images, each group seeded by (seed, group).

    In a torchrun job (``context``) the work is sharded: rank r runs the NUTS references
    of the images at positions i with i mod W = r (each seeded with ``seed + i``, as in
    one process) and writes their NetCDF files, the AIS of the images i mod W = r and the
    q* fits of the groups g mod W = r; rank 0 gathers everything, draws the figures and
    writes ``diagnostics.json`` (what one process writes); the other ranks return {}.

    With ``progress`` (on rank 0 of a job) the plan (:func:`diagnose_plan`: each step's
    work and time at rates measured now, and the flags that bound it) goes to stderr
    first, then the progress of NUTS, AIS and the q* fits; the results are the same
    without.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    held_out = getattr(data, split)
    idx = diagnosed_indices(held_out, budget.num_data, data.num_classes, seed)
    x, y = _inputs(vae, held_out, idx)
    num_reference = budget.num_data if budget.nuts_data is None else budget.nuts_data
    entries = [{"index": n, "label": int(held_out.y[n]), "reference": False} for n in idx.tolist()]
    rank, world = (0, 1) if context is None else (context.rank, context.world_size)
    show = progress and (context is None or context.is_writer)
    if show:
        print(MEASURING, file=sys.stderr, flush=True)
        announce("pyrovae diagnose", _steps(vae, x, y, budget, seed, world), BOUNDS)
    positions = range(rank, min(num_reference, len(entries)), world)
    per_image = budget.chains * (budget.warmup + budget.samples)
    mine = {}  # position: (summary, guide summary, reference if it may be drawn)
    for k, i in enumerate(positions):
        yi = None if y is None else y[i]
        desc = f"NUTS p(z | x), image {k + 1}/{len(positions)} (#{entries[i]['index']})"
        with progress_bar(per_image, desc, "iteration", show) as bar:
            ref = reference_posterior(
                vae,
                x[i],
                yi,
                num_chains=budget.chains,
                warmup=budget.warmup,
                num_samples=budget.samples,
                seed=seed + i,
                on_iteration=bar.update,
            )
        path = out / f"posterior-{entries[i]['index']:05d}.nc"
        partial = path.with_name(f".{path.name}.part")  # whole files only: write, then rename
        ref.inference_data.to_netcdf(str(partial))
        os.replace(partial, path)
        summary = guide_vs_posterior(vae, x[i], yi, ref, seed=seed)
        mine[i] = (ref.to_dict(), summary, ref if i < POSTERIOR_PANELS else None)
    if context is not None:
        parts = context.all_gather(mine)
        mine = {i: item for part in parts for i, item in part.items()}
    gaps = _gaps(vae, x, y, budget, seed, context, show)
    if context is not None and not context.is_writer:
        return {}
    keep = {f"posterior-{entries[i]['index']:05d}.nc" for i in mine}
    for stale in out.glob("posterior-*.nc"):  # of an earlier run on other images
        if stale.name not in keep:
            stale.unlink()
    coverage = []
    drawn: list[tuple[int, Any, dict[str, Any]]] = []  # (row, reference, summary) to draw
    for i in sorted(mine):
        ref_summary, summary, ref = mine[i]
        entries[i].update(ref_summary, reference=True, guide=summary)
        if not ref_summary["flagged"]:
            coverage.append(summary["coverage_90_mean"])
        if ref is not None and len(drawn) < POSTERIOR_PANELS:
            drawn.append((i, ref, summary))
    for i, entry in enumerate(entries):
        entry["gaps"] = {name: float(getattr(gaps, name)[i]) for name in GAP_NAMES}
    references = [e for e in entries if e["reference"]]
    flagged = sum(e["flagged"] for e in references)
    result = {
        "split": split,
        "num_data": len(entries),
        "num_reference": len(references),
        "flagged": flagged,
        "flag_counts": {
            reason: sum(reason in e["flag_reasons"] for e in references) for reason in FLAG_REASONS
        },
        "thresholds": {
            "r_hat_max": RHAT_THRESHOLD,
            "ess_per_chain": ESS_PER_CHAIN,
            "ess_min": ess_threshold(budget.chains),
            "max_divergent": MAX_DIVERGENT,
        },
        "coverage_excluded": flagged,
        "r_hat_max": max((e["r_hat_max"] for e in references), default=None),
        "ess_bulk_min": min((e["ess_bulk_min"] for e in references), default=None),
        "ess_tail_min": min((e["ess_tail_min"] for e in references), default=None),
        "num_divergent": sum(e["num_divergent"] for e in references),
        "coverage_90_mean": sum(coverage) / len(coverage) if coverage else None,
        "coverage_90_stderr": mean_stderr(coverage)[1] if coverage else None,
        "gaps": gaps.to_dict(),
        "budget": {k: getattr(budget, k) for k in budget.__dataclass_fields__},
        "seed": seed,
        "z_dim": vae.z_dim,
        "fingerprint": model_fingerprint(vae),
        "figures": [],
        "data": entries,
    }
    if figures:
        result["figures"] = _draw(vae, x, y, entries, drawn, result, out)
    write_json(out / DIAGNOSTICS_FILENAME, result)
    return result


def _gaps(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    budget: DiagnoseBudget,
    seed: int,
    context: DistributedContext | None,
    progress: bool = False,
) -> GapResult:
    """The inference gaps of every image: log p(x) by AIS with each image's own random
    numbers (sharded like ``evaluate``'s AIS), q* fitted per group of :data:`GAP_GROUP`
    images (group g on rank g mod W), gathered in image order."""
    log_px = sharded_ais_log_likelihood(
        context,
        vae,
        x,
        y,
        num_steps=budget.ais_steps,
        num_chains=budget.ais_chains,
        seed=seed,
        progress=progress,
    )
    rank, world = (0, 1) if context is None else (context.rank, context.world_size)
    starts = range(0, x.shape[0], GAP_GROUP)
    groups = range(rank, len(starts), world)
    desc = f"q* fits of {plural(x.shape[0], 'image')} in {plural(len(starts), 'group')}"
    bar = progress_bar(len(groups) * budget.gap_steps, desc, "SVI step", progress)
    mine = {}
    for g in groups:
        rows = slice(starts[g], starts[g] + GAP_GROUP)
        part = inference_gaps(
            vae,
            x[rows],
            None if y is None else y[rows],
            log_px=log_px.per_datum[rows],
            steps=budget.gap_steps,
            elbo_draws=budget.elbo_draws,
            seed=mix64(seed, _GAP_KEY, g) % 2**31,
            on_step=bar.update,
        )
        mine[g] = {"family": part.family, **{f: getattr(part, f) for f in _GAP_FIELDS}}
    bar.close()
    if context is not None:
        mine = {g: part for shard in context.all_gather(mine) for g, part in shard.items()}
    ordered = [mine[g] for g in range(len(starts))]
    values = {f: torch.cat([part[f] for part in ordered]) for f in _GAP_FIELDS}
    return GapResult(family=ordered[0]["family"], log_px_method="ais", **values)


def _share(count: int, world: int) -> int:
    """Items of ``count`` dealt round-robin to ``world`` ranks that rank 0 gets."""
    return len(range(0, count, world))


def _steps(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    budget: DiagnoseBudget,
    seed: int,
    world: int = 1,
) -> list[Step]:
    """The plan of :func:`diagnose_run` on ``x`` (every image, rank 0's share of a job of
    ``world`` processes), each step's units counted from the budget and its rate measured
    now on the first image(s):

    - NUTS: images x chains x (warm-up x G_w + samples x G_s) gradients of log p(x, z),
      G_w and G_s counted on a short pilot chain (:func:`~.posterior.nuts_length`), at the
      gradient rate of that chain (its tree building included);
    - AIS: images x (chains + pilot chains) x ((T - 1) L + 1) gradients, at the rate of a
      timed AIS run of a few steps on all the images (the real batch);
    - q* fits: groups x ``gap_steps`` SVI steps, at the rate of timed ELBO gradients of the
      first group (:func:`~.gaps.svi_step_timer`);
    - ELBOs: images x 2 (``elbo_draws`` + the start-or-fit choice's draws) draws.
    """
    num_reference = budget.num_data if budget.nuts_data is None else budget.nuts_data
    x0, y0 = x[0], None if y is None else y[0]
    steps = []
    nuts_images = _share(num_reference, world)
    if nuts_images:
        length = nuts_length(
            vae,
            x0,
            y0,
            warmup=min(budget.warmup, PILOT_WARMUP),
            num_samples=min(budget.samples, PILOT_SAMPLES),
            seed=seed,
        )
        gradients = nuts_images * budget.chains * length.gradients(budget.warmup, budget.samples)
        rate = length.rate
        if not math.isfinite(rate):  # a pilot of one iteration: timed gradients instead
            rate = measure_rate(gradient_timer(vae, x0, y0))
        what = (
            f"NUTS p(z | x) of {plural(nuts_images, 'image')} x {budget.chains} chains x "
            f"({budget.warmup} warm-up + {budget.samples}) iterations, "
            f"~{length.sample:.0f} gradients per draw"
        )
        steps.append(Step(what, gradients / rate, gradients, "gradients"))
    ais_images = _share(x.shape[0], world)
    leapfrog = inspect.signature(ais_log_likelihood).parameters["leapfrog_steps"].default

    def ais_gradients(num_steps: int) -> float:
        return (
            ais_images
            * (budget.ais_chains + DEFAULT_PILOT_CHAINS)
            * ((num_steps - 1) * leapfrog + 1)
        )

    def ais_probe() -> float:
        probe = min(budget.ais_steps, AIS_PROBE_STEPS)
        ais_log_likelihood(
            vae,
            x[:ais_images],
            None if y is None else y[:ais_images],
            num_steps=probe,
            num_chains=budget.ais_chains,
            seed=seed,
            progress=False,
        )
        return ais_gradients(probe)

    units = ais_gradients(budget.ais_steps)
    what = (
        f"AIS log p(x) of {plural(ais_images, 'image')} x {budget.ais_chains} chains x "
        f"{budget.ais_steps} steps x {leapfrog} leapfrog"
    )
    steps.append(Step(what, units / measure_rate(ais_probe), units, "gradients"))
    group = slice(0, GAP_GROUP)
    xg, yg = x[group], None if y is None else y[group]
    with torch.no_grad():
        q = vae.encoder(xg[:1], None if yg is None else yg[:1])
    family = "diagonal" if is_diagonal_normal(q) else "flow"
    groups = _share(math.ceil(x.shape[0] / GAP_GROUP), world)
    units = groups * budget.gap_steps
    rate = measure_rate(svi_step_timer(vae, xg, yg, family))
    what = f"q* fits ({family}) of {plural(groups, 'group')} of up to {GAP_GROUP} images"
    steps.append(Step(f"{what} x {budget.gap_steps} steps", units / rate, units, "SVI steps"))
    images = min(x.shape[0], groups * GAP_GROUP)
    units = images * 2 * (budget.elbo_draws + SELECT_DRAWS)
    rate = measure_rate(elbo_draw_timer(vae, xg, yg, min(budget.elbo_draws, ELBO_PROBE_DRAWS)))
    what = f"ELBO of q and q* on {plural(images, 'image')} x {budget.elbo_draws} draws"
    steps.append(Step(what, units / rate, units, "draws"))
    return steps


def diagnose_plan(
    vae: nn.Module,
    data: Splits,
    budget: DiagnoseBudget = DiagnoseBudget(),
    split: str = "test",
    seed: int = 0,
    world: int = 1,
) -> list[Step]:
    """What :func:`diagnose_run` with these arguments is about to do, as
    :class:`~pyrovae.analysis.cost.Step` s whose seconds come from rates measured now (a
    few seconds: a short NUTS pilot chain and timed gradients; the global RNG is left as
    it was). ``world``: processes of a torchrun job (rank 0's share)."""
    held_out = getattr(data, split)
    idx = diagnosed_indices(held_out, budget.num_data, data.num_classes, seed)
    x, y = _inputs(vae, held_out, idx)
    return _steps(vae, x, y, budget, seed, world)


def _draw(
    vae: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None,
    entries: list[dict[str, Any]],
    drawn: list[tuple[int, Any, dict[str, Any]]],
    result: dict[str, Any],
    out: Path,
) -> list[list[str]]:
    """Write ``posterior.png`` (when NUTS ran) and ``gaps.png``; ``[title, file name]`` pairs
    in display order (a list, since the JSON file's keys are sorted)."""
    written = []
    if drawn:
        rows = [i for i, _, _ in drawn]
        fig = plot_posteriors(
            vae,
            x[rows],
            None if y is None else y[rows],
            [ref for _, ref, _ in drawn],
            [summary for _, _, summary in drawn],
            indices=[entries[i]["index"] for i in rows],
            labels=[entries[i]["label"] for i in rows],
        )
        save_figure(fig, out / "posterior.png")
        written.append([FIGURES["posterior.png"], "posterior.png"])
    save_figure(plot_gaps(result), out / "gaps.png")
    written.append([FIGURES["gaps.png"], "gaps.png"])
    return written


def load_diagnostics(
    run_dir: str | Path, vae: nn.Module | None = None, directory: str | Path | None = None
) -> dict[str, Any] | None:
    """A run's ``diagnostics.json`` (from ``directory``, default ``RUN/diagnostics``), or None
    when there is none. With ``vae``, diagnostics of other weights (a fingerprint that
    differs) come back as ``{"stale": reason, "directory": ...}`` instead of numbers.
    Figure names are resolved to paths in ``"figure_paths"`` (title -> Path), existing ones only.
    """
    folder = Path(directory) if directory is not None else diagnostics_dir(run_dir)
    path = folder / DIAGNOSTICS_FILENAME
    if not path.is_file():
        return None
    result = read_json(path)
    if not isinstance(result, dict):
        raise ValueError(f"{path}: not a diagnostics file (expected a JSON object)")
    if vae is not None and result.get("fingerprint") != model_fingerprint(vae):
        return {
            "stale": f"{path} was computed for other model weights (trained further, or "
            "another --checkpoint); re-run pyrovae diagnose",
            "directory": str(folder),
        }
    figures = result.get("figures") if isinstance(result.get("figures"), list) else []
    result["figure_paths"] = {
        str(pair[0]): folder / str(pair[1])
        for pair in figures
        if isinstance(pair, list) and len(pair) == 2 and (folder / str(pair[1])).is_file()
    }
    result["directory"] = str(folder)
    return result
