"""Importance-sampled and AIS log-likelihoods, and BDMC, sharded over a torchrun job.

Rank r of W scores the held-out data i with i mod W = r, each keyed by its index i
(:mod:`pyrovae.analysis.likelihood.datum_noise`), so it makes the draws a single process makes for
datum i; the per-datum results are then gathered on every rank in the original order.
The estimates therefore equal those of one process up to the rounding of the networks'
matrix products in batches of other sizes (about 1e-7 nats).

With fewer data than processes, a rank that holds none computes datum 0 as a stand-in and
drops it before the gather, so that every rank takes part in the same collective calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from pyrovae.analysis.likelihood.ais import AISResult, ais_log_likelihood
from pyrovae.analysis.likelihood.bdmc import BDMCResult, bdmc
from pyrovae.analysis.likelihood.loglik import LogLikelihood, estimate_source_log_likelihoods
from pyrovae.distributed import DistributedContext, member_rows

__all__ = [
    "gather_log_likelihoods",
    "sharded_ais_log_likelihood",
    "sharded_bdmc",
    "sharded_source_log_likelihoods",
]

_FIELDS = ("per_datum", "elbo", "khat", "log_weights")


def sharded_source_log_likelihoods(
    context: DistributedContext | None,
    vae: torch.nn.Module,
    x: torch.Tensor,
    sources: Mapping[str, Any],
    y: torch.Tensor | None = None,
    **kwargs: Any,
) -> dict[str, LogLikelihood]:
    """:func:`~pyrovae.analysis.likelihood.loglik.estimate_source_log_likelihoods` on this rank's
    shard of ``x`` (every rank passes all of ``x``), gathered: the same on every rank.
    ``context=None`` is a job of this process alone (the estimate of all of ``x``)."""
    if context is None:
        return estimate_source_log_likelihoods(vae, x, sources, y, **kwargs)
    rows, x_mine, y_mine = _shard(context, x, y, kwargs)
    local = estimate_source_log_likelihoods(vae, x_mine, sources, y_mine, **kwargs)
    return gather_log_likelihoods(context, local, rows.cpu(), x.shape[0])


def _shard(
    context: DistributedContext, x: torch.Tensor, y: torch.Tensor | None, kwargs: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """This rank's rows (i with i mod W = rank) and the data it computes; sets
    ``kwargs["datum_index"]`` (see :func:`_my_rows`)."""
    rows, computed = _my_rows(context, x.shape[0], kwargs, "datum_index", kwargs.get("seed"))
    computed = computed.to(x.device)
    kwargs["datum_index"] = computed
    return rows.to(x.device), x[computed], None if y is None else y[computed]


def _my_rows(
    context: DistributedContext, total: int, kwargs: dict, key: str, seed: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's indices i mod W = rank of ``total`` data (CPU), and the indices it
    computes, which the sharding passes as ``kwargs[key]`` (refused from the caller): the
    same, or datum 0 as a stand-in when it holds none. Turns off the progress of the other
    ranks. ``seed`` (the estimate's) must be an integer: with None each process would draw
    its own numbers (BDMC would simulate other data on each)."""
    if key in kwargs:
        raise ValueError(f"{key} is set by the sharding; do not pass it")
    if seed is None:
        raise ValueError(
            "seed=None in an estimate sharded over processes: every process must draw from "
            "the same seed; pass an integer seed"
        )
    if not context.is_writer:
        kwargs["progress"] = False
    rows = member_rows(torch.arange(total), context.rank, context.world_size)
    return rows, rows if rows.numel() else torch.zeros(1, dtype=torch.int64)


def gather_log_likelihoods(
    context: DistributedContext,
    local: Mapping[str, LogLikelihood],
    rows: torch.Tensor,
    total: int,
) -> dict[str, LogLikelihood]:
    """Every rank's results for its ``rows`` of ``total`` data (the first rows of
    ``local``: a stand-in's are dropped), assembled in data order."""
    n = rows.numel()
    mine = {
        name: {
            "rows": rows,
            **{f: None if getattr(r, f) is None else getattr(r, f)[:n] for f in _FIELDS},
            "iwae": {k: v[:n] for k, v in r.iwae.items()},
            "num_samples": r.num_samples,
            "proposal": r.proposal,
        }
        for name, r in local.items()
    }
    parts = context.all_gather(mine)
    out = {}
    for name, first in local.items():
        shards = [p[name] for p in parts]
        values = {f: _assemble([s[f] for s in shards], shards, total) for f in _FIELDS}
        iwae = {k: _assemble([s["iwae"][k] for s in shards], shards, total) for k in first.iwae}
        out[name] = LogLikelihood(
            num_samples=first.num_samples, iwae=iwae, proposal=first.proposal, **values
        )
    return out


def _assemble(
    pieces: list[torch.Tensor | None], shards: list[dict[str, Any]], total: int
) -> torch.Tensor | None:
    """The rows of every shard put back in place (None when the field is absent)."""
    if any(p is None for p in pieces):
        return None
    full = pieces[0].new_empty((total, *pieces[0].shape[1:]))
    for shard, piece in zip(shards, pieces, strict=True):
        full[shard["rows"]] = piece
    return full


def sharded_ais_log_likelihood(
    context: DistributedContext | None,
    vae: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    source: Any = None,
    **kwargs: Any,
) -> AISResult:
    """:func:`~pyrovae.analysis.likelihood.ais.ais_log_likelihood` on this rank's shard of ``x``,
    each
    datum's noise keyed by its index, gathered: the same on every rank. ``context=None``
    is a job of this process alone (all of ``x``, each datum keyed by its row)."""
    if context is None:
        index = torch.arange(x.shape[0], device=x.device)
        return ais_log_likelihood(vae, x, y, source, datum_index=index, **kwargs)
    rows, x_mine, y_mine = _shard(context, x, y, kwargs)
    local = ais_log_likelihood(vae, x_mine, y_mine, source, **kwargs)
    return _gather_ais(context, rows.cpu(), local, x.shape[0])


def sharded_bdmc(
    context: DistributedContext | None,
    vae: torch.nn.Module,
    source: Any = None,
    **kwargs: Any,
) -> BDMCResult:
    """:func:`~pyrovae.analysis.likelihood.bdmc.bdmc` with the chains of simulated datum i run by
    rank
    i mod W (every rank simulates all data, seeded alike), gathered: the same on every rank
    and the same as in one process. ``context=None`` is a job of this process alone."""
    if context is None:
        return bdmc(vae, source, **kwargs)
    num_data = kwargs.get("num_data", 100)
    rows, computed = _my_rows(context, num_data, kwargs, "rows", kwargs.get("seed", 0))
    local = bdmc(vae, source, rows=computed, **kwargs)
    forward = _gather_ais(context, rows, local.forward, num_data)
    reverse = _gather_ais(context, rows, local.reverse, num_data)
    return BDMCResult(
        lower_per_datum=forward.per_datum,
        upper_per_datum=-reverse.per_datum,
        x=local.x,
        y=local.y,
        z=local.z,
        forward=forward,
        reverse=reverse,
        num_steps=local.num_steps,
        num_chains=local.num_chains,
        num_data=num_data,
    )


def _gather_ais(
    context: DistributedContext, rows: torch.Tensor, local: AISResult, total: int
) -> AISResult:
    """Every rank's AIS result for its ``rows`` of ``total`` data (the first rows of
    ``local``: a stand-in's are dropped), in data order."""
    mine = {
        "rows": rows,
        "log_weights": local.log_weights[: rows.numel()],
        "acceptance": local.acceptance,
    }
    parts = context.all_gather(mine)
    log_weights = _assemble([p["log_weights"] for p in parts], parts, total)
    assert log_weights is not None
    sizes = [p["rows"].numel() for p in parts]  # every datum has the same transitions
    acceptance = sum(p["acceptance"] * n for p, n in zip(parts, sizes, strict=True)) / total
    return AISResult.from_log_weights(
        log_weights, acceptance, local.num_steps, local.num_chains, local.leapfrog_steps
    )
