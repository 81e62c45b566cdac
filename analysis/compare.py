"""Compare latent sources by the held-out log-likelihood of the decoder paired with each.

For each source r fitted on the training encodings, log p_r(x) = log E_q(z|x)[p(x | z)
r(z) / q(z | x)] is estimated on test data with the same guide draws for every source
(see :mod:`pyrovae.analysis.loglik`), so the differences between sources have far less
variance than the values themselves. PSIS k-hat flags the sources for which the guide is
a poor proposal (k-hat > 0.7 on many data).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from pyrovae.data import Split, fixed_binarization
from pyrovae.nets import check_positive_int
from pyrovae.train import one_hot

from .diagnostics import KHAT_THRESHOLD
from .loglik import LogLikelihood, estimate_source_log_likelihoods
from .sources import SOURCES, LatentSource, fit_sources

__all__ = ["DEFAULT_SOURCES", "KHAT_FLAG_FRACTION", "SourceComparison", "compare_sources"]

DEFAULT_SOURCES = tuple(SOURCES)
"""Every registered source, in registry order."""
KHAT_FLAG_FRACTION = 0.1
"""A source is flagged when more than this fraction of test data has k-hat > 0.7."""


@dataclass
class SourceComparison:
    """Held-out log-likelihood of each latent source.

    Attributes:
        results: per-source :class:`~pyrovae.analysis.loglik.LogLikelihood` (per-datum
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

        Paired over data and draws, so far more precise than the two standard errors.
        """
        diff = self.results[name].per_datum - self.results[reference].per_datum
        return float(diff.mean()), float(diff.std() / math.sqrt(diff.numel()))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{name: {"loglik", "stderr", "khat_gt_0.7", "khat_flag", "elbo"}}``, plain values.

        With a ``"prior"`` source, every other entry also holds ``"vs_prior"`` and
        ``"vs_prior_stderr"``: the paired difference of :meth:`difference`.
        """
        out: dict[str, dict[str, Any]] = {}
        for name, r in self.results.items():
            fraction = r.khat_fraction(KHAT_THRESHOLD)
            out[name] = {
                "loglik": r.mean,
                "stderr": r.stderr,
                "khat_gt_0.7": fraction,
                "khat_flag": bool(fraction > KHAT_FLAG_FRACTION),
                "elbo": r.elbo_mean,
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
            flag = "  <- unreliable" if name in self.flagged else ""
            lines.append(
                f"{name:<16}{r.mean:>10.2f}{r.stderr:>8.2f}{vs:>18}"
                f"{r.khat_fraction(KHAT_THRESHOLD):>8.1%}{flag}"
            )
        return "\n".join(lines)


def _inputs(vae: nn.Module, split: Split, limit: int | None) -> tuple:
    if not isinstance(split, Split):
        raise ValueError(
            f"expected a pyrovae.data.Split (x, y), got {type(split).__name__}; "
            "pass e.g. load_dataset('mnist').test"
        )
    if limit is not None:
        split = split.subset(check_positive_int("num_train/num_test", limit))
    split = split.to(next(vae.parameters()).device)
    x = split.x
    if getattr(vae.decoder, "binarize", False):
        x = fixed_binarization(x)
    y = one_hot(split.y, vae.y_dim) if vae.conditional else None
    return x, y


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
        num_train, num_test: use only the first this many of each split.
        options: per-source fitting options, e.g. ``{"gmm": {"num_components": 20}}``.
        sources: already fitted sources to include as they are (fitted names are skipped).
        draws_per_pass, proposal: see
            :func:`~pyrovae.analysis.loglik.estimate_source_log_likelihoods`.
        seed: seeds the fits and the draws (the global RNG is left as it was).
    """
    names = list(names)
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(f"unknown latent sources {unknown}; valid names are {sorted(SOURCES)}")
    given = dict(sources or {})
    to_fit = [name for name in names if name not in given]
    if not to_fit and not given:
        raise ValueError("names is empty and no sources were given; nothing to compare")
    x_train, y_train = _inputs(vae, train, num_train)
    x_test, y_test = _inputs(vae, test, num_test)
    stray = sorted(set(options or {}) - set(to_fit))
    if stray:
        raise ValueError(f"options given for {stray}, which are not sources to fit ({to_fit})")
    options = {name: {"seed": seed, **(options or {}).get(name, {})} for name in to_fit}
    fitted = fit_sources(to_fit, vae, x_train, y_train, options=options) if to_fit else {}
    fitted.update(given)
    results = estimate_source_log_likelihoods(
        vae,
        x_test,
        fitted,
        y_test,
        num_samples=num_samples,
        draws_per_pass=draws_per_pass,
        proposal=proposal,
        seed=seed,
    )
    return SourceComparison(
        results=results,
        sources=fitted,
        num_samples=num_samples,
        num_train=x_train.shape[0],
        num_test=x_test.shape[0],
    )
