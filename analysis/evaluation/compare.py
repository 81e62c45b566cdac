"""Compare latent sources by the held-out log-likelihood of the decoder paired with each.

For each source r fitted on the training encodings, log p_r(x) = log integral p(x | z)
r(z) dz is estimated on test data by importance sampling from one defensive mixture of
the guide and proposals adapted to every source (see :mod:`pyrovae.analysis.likelihood.loglik` and
:mod:`pyrovae.analysis.likelihood.proposals`), so every source is scored on the same draws and the
paired differences between sources have far less variance than the values themselves.
L_k at k = 1, 10, 100, 1000 (from the same draws) shows whether an estimate has stopped
rising in K; PSIS k-hat flags the data for which the weights are heavy-tailed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from pyrovae.analysis.likelihood.loglik import LogLikelihood
from pyrovae.analysis.likelihood.psis import KHAT_THRESHOLD
from pyrovae.analysis.likelihood.sharding import sharded_source_log_likelihoods
from pyrovae.analysis.sources.classes import LatentSource
from pyrovae.analysis.sources.encodings import model_inputs
from pyrovae.analysis.sources.fits import SOURCES, fit_sources
from pyrovae.data import Split
from pyrovae.distributed import DistributedContext

__all__ = [
    "DEFAULT_SOURCES",
    "KHAT_FLAG_FRACTION",
    "KSWEEP",
    "KSWEEP_TOLERANCE",
    "SourceComparison",
    "compare_sources",
    "ksweep_converged",
    "ksweep_remaining",
    "model_inputs",
]

DEFAULT_SOURCES = tuple(SOURCES)
"""Every registered source, in registry order."""
KHAT_FLAG_FRACTION = 0.1
"""A source is flagged when more than this fraction of test data has k-hat > 0.7."""
KSWEEP = (1, 10, 100, 1000)
"""Numbers of draws k at which L_k is reported besides the full K (those below K)."""
KSWEEP_TOLERANCE = 0.1
"""An estimate whose mean rose by more than this (nats) over the last 5x or more of draws
is still rising: unconverged."""


def ksweep_remaining(sweep: Mapping[int, float]) -> float | None:
    """How much L_K may still rise, by geometric extrapolation of the last three points.

    With rises d_1 = L_k2 - L_k1 and d_2 = L_K - L_k2 over equal factors of k (k1, k2 = K/10,
    K/100 ... as in :data:`KSWEEP`), a bias falling like a power of k shrinks each rise by
    rho = d_2 / d_1, and what is left is d_2 rho / (1 - rho). None where that does not
    apply (fewer than three points, unequal factors, rises that do not shrink). A rough
    guide, not a bound: heavy-tailed weights can keep rising longer.
    """
    ks = sorted(sweep)
    if len(ks) < 3:
        return None
    k1, k2, k3 = ks[-3:]
    if not math.isclose(k2 / k1, k3 / k2, rel_tol=0.01):
        return None
    d1, d2 = sweep[k2] - sweep[k1], sweep[k3] - sweep[k2]
    if not (d1 > 0 and 0 <= d2 < d1):
        return None
    rho = d2 / d1
    return d2 * rho / (1 - rho)


def ksweep_converged(sweep: Mapping[int, float], tolerance: float = KSWEEP_TOLERANCE) -> bool:
    """Whether L_K has stopped rising: L_K - L_k' <= ``tolerance`` for the largest k' <= K/5.

    ``sweep`` maps k to the mean L_k (K, the largest key, is the full estimate). If the
    bias of L_k falls like 1/k (Burda et al., 2016, for light-tailed weights), a rise of
    at most ``tolerance`` from k' to K leaves about ``tolerance`` k' / (K - k') to go.
    With no such k' (K < 5) convergence cannot be shown: False.
    """
    total = max(sweep)
    earlier = [k for k in sweep if 5 * k <= total]
    if not earlier:
        return False
    return sweep[total] - sweep[max(earlier)] <= tolerance


@dataclass
class SourceComparison:
    """Held-out log-likelihood of each latent source.

    Attributes:
        results: per-source :class:`~pyrovae.analysis.likelihood.loglik.LogLikelihood` (per-datum
            values, ELBO, k-hat).
        sources: the fitted sources, by name (e.g. to draw samples from them).
        num_samples: K, guide draws per test datum (shared by all sources).
        num_train: training data the sources were fitted to.
        num_test: test data evaluated.
    """

    results: dict[str, LogLikelihood]
    sources: dict[str, LatentSource]
    num_samples: int
    num_train: int
    num_test: int

    @property
    def flagged(self) -> list[str]:
        """Sources with more than :data:`KHAT_FLAG_FRACTION` of k-hat above 0.7."""
        return [
            name
            for name, r in self.results.items()
            if r.khat_fraction(KHAT_THRESHOLD) > KHAT_FLAG_FRACTION
        ]

    def best(self) -> str:
        """The source with the highest mean held-out log-likelihood."""
        return max(self.results, key=lambda name: self.results[name].mean)

    def difference(self, name: str, reference: str = "prior") -> tuple[float, float]:
        """Mean and standard error of log p_name(x) - log p_reference(x) over test data.

        Paired over data and draws, so far more precise than the two standard errors. The
        standard error is NaN for one datum.
        """
        diff = self.results[name].per_datum - self.results[reference].per_datum
        if diff.numel() < 2:
            return float(diff.mean()), math.nan
        return float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))

    def ksweep(self, name: str) -> dict[int, float]:
        """{k: mean L_k} for the sweep points below K (:data:`KSWEEP`) and K itself."""
        r = self.results[name]
        sweep = {k: float(v.mean()) for k, v in sorted(r.iwae.items()) if k < r.num_samples}
        sweep[r.num_samples] = r.mean
        return sweep

    @property
    def unconverged(self) -> list[str]:
        """Sources whose estimate is still rising in K (see :func:`ksweep_converged`)."""
        return [name for name in self.results if not ksweep_converged(self.ksweep(name))]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: {"loglik", "stderr", "khat_gt_0.7", "khat_flag", "elbo", "ksweep",
        "converged", "proposal"}}``, plain values.

        ``ksweep`` maps str(k) to the mean L_k, for k in :data:`KSWEEP` below K and K
        itself (all from the same draws); ``converged`` is :func:`ksweep_converged` and
        ``ksweep_remaining`` the rise still to come by :func:`ksweep_remaining`. With a
        ``"prior"`` source, every other entry also holds ``"vs_prior"`` and
        ``"vs_prior_stderr"``: the paired difference of :meth:`difference`.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, r in self.results.items():
            fraction = r.khat_fraction(KHAT_THRESHOLD)
            sweep = self.ksweep(name)
            out[name] = {
                "loglik": r.mean,
                "stderr": r.stderr,
                "khat_gt_0.7": fraction,
                "khat_flag": bool(fraction > KHAT_FLAG_FRACTION),
                "elbo": r.elbo_mean,
                "ksweep": {str(k): v for k, v in sweep.items()},
                "converged": ksweep_converged(sweep),
                "ksweep_remaining": ksweep_remaining(sweep),
                "proposal": r.proposal,
            }
            if "prior" in self.results and name != "prior":
                out[name]["vs_prior"], out[name]["vs_prior_stderr"] = self.difference(name)
        return out

    def table(self) -> str:
        """A text table, best source first, with the paired difference to the prior."""
        lines = [
            f"held-out log-likelihood, K={self.num_samples} draws, {self.num_test} test data, "
            f"sources fitted on {self.num_train} training data",
            f"{'source':<16}{'loglik':>10}{'stderr':>8}{'vs prior':>18}{'k>0.7':>8}",
        ]
        for name in sorted(self.results, key=lambda n: -self.results[n].mean):
            r = self.results[name]
            vs = ""
            if "prior" in self.results and name != "prior":
                mean, se = self.difference(name)
                vs = f"{mean:+.2f} +- {se:.2f}"
            flag = "  <- k-hat: unreliable" if name in self.flagged else ""
            if name in self.unconverged:
                flag += "  <- still rising in K"
            lines.append(
                f"{name:<16}{r.mean:>10.2f}{r.stderr:>8.2f}{vs:>18}"
                f"{r.khat_fraction(KHAT_THRESHOLD):>8.1%}{flag}"
            )
        return "\n".join(lines)


def compare_sources(
    vae: nn.Module,
    train: Split,
    test: Split,
    names: Sequence[str] = DEFAULT_SOURCES,
    *,
    num_samples: int = 1000,
    num_train: int | None = None,
    num_test: int | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    sources: Mapping[str, LatentSource] | None = None,
    draws_per_pass: int | None = None,
    proposal: str = "adapted",
    seed: int = 0,
    progress: bool = True,
    context: DistributedContext | None = None,
) -> SourceComparison:
    """Fit the sources ``names`` on ``train`` and estimate log p_r(x) on ``test``.

    For a Bernoulli decoder both splits are binarized once from the library's fixed seed
    (:func:`pyrovae.data.fixed_binarization`), so every comparison sees the same data
    (and ELBO surgery on the same training set sees the same binarization). For a CVAE
    the sources are fitted to the pooled encodings q(z | x_n, y_n) of all classes and
    log p_r(x | y) is estimated with the true label; a conditional prior is scored as
    p(z | y).

    Args:
        vae: the trained model.
        train: the training split the sources are fitted to.
        test: the held-out split.
        names: keys of :data:`~pyrovae.analysis.sources.SOURCES`.
        num_samples: K, guide draws per test datum.
        num_train: fit the sources to the first this many training data.
        num_test: evaluate this many held-out data, a fixed random subset
            (:meth:`pyrovae.data.Split.sample`), so that any size is representative.
        options: per-source fitting options, e.g. ``{"gmm": {"num_components": 20}}``.
        sources: already fitted sources to include as they are (fitted names are skipped).
        draws_per_pass, proposal: see
            :func:`~pyrovae.analysis.likelihood.loglik.estimate_source_log_likelihoods`.
        seed: seeds the fits and the draws (the global RNG is left as it was).
        progress: write a line on stderr before the sources are fitted, then show a bar
            over the test data (the results are the same either way).
        context: in a torchrun job, every rank fits the same sources and scores its shard
            of the test data; the results are gathered on every rank
            (:mod:`~pyrovae.analysis.likelihood.sharding`).
    """
    names = list(names)
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown latent sources {unknown}; valid names are {sorted(SOURCES)}")
    given = dict(sources or {})
    to_fit = [name for name in names if name not in given]
    if not to_fit and not given:
        raise ValueError("names is empty and no sources were given; nothing to compare")
    x_train, y_train = model_inputs(vae, train, num_train, random_subset=False)
    x_test, y_test = model_inputs(vae, test, num_test, random_subset=True)
    stray = sorted(set(options or {}) - set(to_fit))
    if stray:
        raise ValueError(f"options given for {stray}, which are not sources to fit ({to_fit})")
    options = {name: {"seed": seed, **(options or {}).get(name, {})} for name in to_fit}
    fitted = (
        fit_sources(to_fit, vae, x_train, y_train, options=options, progress=progress)
        if to_fit
        else {}
    )
    fitted.update(given)
    results = sharded_source_log_likelihoods(
        context,
        vae,
        x_test,
        fitted,
        y_test,
        num_samples=num_samples,
        draws_per_pass=draws_per_pass,
        proposal=proposal,
        iwae_particles=[k for k in KSWEEP if k < num_samples],
        seed=seed,
        progress=progress,
    )
    return SourceComparison(
        results=results,
        sources=fitted,
        num_samples=num_samples,
        num_train=x_train.shape[0],
        num_test=x_test.shape[0],
    )
