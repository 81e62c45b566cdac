"""Held-out log p(x) of the semi-supervised M2, the label summed out exactly.

M2 (:class:`~pyrovae.models.M2`) is p(y) p(z) p(x | y, z) over C classes, so

    p(x) = sum_y p(x, y) = sum_y p(y) int p(x | y, z) p(z) dz.

Every estimator of the CVAE's log p(x, y) (importance sampling with q(z | x, y) or another
proposal, AIS from q(z | x, y)) is run on each datum once per label, the model's site
``"y"`` observed (so log p(y) is in the weights), and the C estimates p_hat(x, y = c) are
added: p_hat(x) = sum_c p_hat(x, c) is unbiased when each p_hat(x, c) is, and
log p_hat(x) is a stochastic lower bound of log p(x). No draw of the label is made: the
sum is exact, as the enumeration of the label in M2's own objective. With the label
proposal q(y | x) and weights divided by it, the estimate would be the same sum.

The weights are returned per datum as C K values log w_ck + log C (label c, draw k, in
that order), so that log 1/(C K) sum_ck of them is log p_hat(x); draws of different labels
are not exchangeable (each label has its own K), so a standard error is computed per label
and combined (:func:`label_summed_stderr`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pyrovae.analysis.likelihood.psis import psis_khat
from pyrovae.analysis.sources.encodings import check_data

__all__ = [
    "label_rows",
    "label_summed_stderr",
    "sums_out_labels",
    "summed_ais",
    "summed_log_likelihood",
    "summed_source_log_likelihoods",
]


def sums_out_labels(vae: nn.Module, y: torch.Tensor | None) -> bool:
    """True when an estimate for ``vae`` must sum the label out: an M2 given no labels."""
    return y is None and bool(getattr(vae, "semi_supervised", False))


def label_rows(
    x: torch.Tensor, num_classes: int, datum_index: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every datum once per label: x (B, D) -> (B C, D) with row b C + c holding datum b and
    label c, its one-hot labels (B C, C), and the rows' indices for per-datum random
    numbers (datum n, label c -> n C + c), when ``datum_index`` is given."""
    rows = x.repeat_interleave(num_classes, 0)
    labels = torch.arange(num_classes, device=x.device).repeat(x.shape[0])
    y = F.one_hot(labels, num_classes).to(x.dtype)
    index = None
    if datum_index is not None:
        index = (datum_index.repeat_interleave(num_classes) * num_classes) + labels.to(
            datum_index.device
        )
    return rows, y, index


def _by_label(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B C, ...) rows of :func:`label_rows` -> (B, C, ...)."""
    return values.reshape(-1, num_classes, *values.shape[1:])


def label_summed_stderr(log_weights: torch.Tensor) -> torch.Tensor:
    """Delta-method standard error of log p_hat(x) = log sum_c 1/K sum_k w_ck per datum,
    from log weights (B, C, K) of independent draws per label:
    sqrt(sum_c Var(w_c.) / K) / p_hat(x) (NaN for K = 1)."""
    top = log_weights.amax(dim=(1, 2), keepdim=True)
    w = (log_weights - top).exp()
    k = w.shape[-1]
    total = w.mean(-1).sum(-1)
    variance = (w.var(-1) / k).sum(-1) if k > 1 else torch.full_like(total, math.nan)
    return variance.sqrt() / total


def summed_log_likelihood(
    result: Any,
    num_classes: int,
    log_q_y: torch.Tensor | None,
    iwae_bound: Callable[[torch.Tensor, int], torch.Tensor],
    iwae_particles: Sequence[int] = (),
    khat: bool = True,
) -> Any:
    """A :class:`~pyrovae.analysis.likelihood.loglik.LogLikelihood` of the rows of
    :func:`label_rows` (log p_hat(x, c), its draws kept) as one of log p_hat(x).

    ``per_datum`` is log sum_c p_hat(x, c); ``elbo``, with q(y | x) (``log_q_y``, (B, C)),
    is M2's unlabelled bound sum_c q(c | x) (ELBO(x, c) - log q(c | x)) (without it, the
    log-mean over labels of the labelled bounds, a looser bound); ``iwae[k]``, for each k of
    ``iwae_particles``, sums the labels of the estimates with k draws per label
    (``iwae_bound``, that of :func:`~pyrovae.analysis.likelihood.loglik.iwae_bound`, on each
    label's draws); with ``khat``, PSIS k-hat is over the C K weights (the per-label rows'
    own k-hat and L_k need not be computed first).
    """
    lw = _by_label(result.log_weights, num_classes)  # (B, C, K)
    flat = (lw + math.log(num_classes)).flatten(1)  # (B, C K), label by label
    per_label = _by_label(result.per_datum, num_classes)  # (B, C): log p_hat(x, c)
    elbo = _by_label(result.elbo, num_classes)
    if log_q_y is not None:
        q = log_q_y.double().cpu()
        bound = (q.exp() * (elbo - q)).sum(-1)
    else:
        bound = torch.logsumexp(elbo, -1) - math.log(num_classes)
    iwae = {}
    for k in iwae_particles:
        per_row = torch.stack([iwae_bound(lw[:, c], k) for c in range(num_classes)], -1)
        iwae[k] = torch.logsumexp(per_row, -1)
    return replace(
        result,
        per_datum=torch.logsumexp(per_label, -1),
        elbo=bound,
        khat=psis_khat(flat) if khat else None,
        log_weights=flat,
        iwae=iwae,
    )


def summed_ais(result: Any, num_classes: int) -> Any:
    """An :class:`~pyrovae.analysis.likelihood.ais_chains.AISResult` of the rows of
    :func:`label_rows` (log Z_hat(x, c)) as one of log p_hat(x) = log sum_c Z_hat(x, c),
    with the chain error combined over labels; ``log_weights`` (B, C chains) hold
    log w + log C, label by label."""
    lw = _by_label(result.log_weights, num_classes)  # (B, C, chains)
    per_label = _by_label(result.per_datum, num_classes)
    return replace(
        result,
        per_datum=torch.logsumexp(per_label, -1),
        per_datum_stderr=label_summed_stderr(lw),
        log_weights=(lw + math.log(num_classes)).flatten(1),
    )


def summed_source_log_likelihoods(
    estimate: Callable[..., dict[str, Any]],
    iwae_bound: Callable[[torch.Tensor, int], torch.Tensor],
    vae: nn.Module,
    x: torch.Tensor,
    sources: Mapping[str, Any],
    *,
    keep_log_weights: bool,
    datum_index: torch.Tensor | None,
    khat: bool = True,
    iwae_particles: Sequence[int] = (),
    **options: Any,
) -> dict[str, Any]:
    """``estimate`` (:func:`~pyrovae.analysis.likelihood.loglik.estimate_source_log_likelihoods`,
    which calls this for an M2 given no labels) of an M2's log p_r(x): every datum once per
    label (:func:`label_rows`), the C estimates of p_r(x, y) added
    (:func:`summed_log_likelihood`)."""
    classes = vae.y_dim
    check_data(vae, x, torch.zeros(x.shape[0], classes, device=x.device))
    if datum_index is None:
        datum_index = torch.arange(x.shape[0], device=x.device)
    rows, labels, index = label_rows(x, classes, datum_index)
    # k-hat and L_k are of the label-summed weights: not asked of each label's rows
    results = estimate(
        vae,
        rows,
        sources,
        labels,
        keep_log_weights=True,
        datum_index=index,
        khat=False,
        iwae_particles=(),
        **options,
    )
    with torch.no_grad():
        log_q_y = torch.cat([F.log_softmax(vae.classifier(part), -1) for part in x.split(4096)])
    out = {}
    for name, result in results.items():
        summed = summed_log_likelihood(result, classes, log_q_y, iwae_bound, iwae_particles, khat)
        out[name] = summed if keep_log_weights else replace(summed, log_weights=None)
    return out
