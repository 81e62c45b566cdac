"""Evaluate a trained run: every latent source's log-likelihood and samples, ELBO surgery.

This is what ``pyrovae evaluate`` runs; the result is a plain JSON-ready dict::

    {"sources": {NAME: {"loglik", "stderr", "khat_gt_0.7", "entropy", "ambiguous",
                        "coverage_kl", "frechet", ...}},
     "surgery": {...}, "elbo": .., "loglik": .., ...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pyrovae.build import lookup
from pyrovae.data import Split, Splits, fixed_binarization
from pyrovae.nets import check_positive_int
from pyrovae.train import one_hot

from .classifier import MNISTClassifier
from .compare import DEFAULT_SOURCES, SourceComparison, compare_sources
from .quality import feature_stats, sample_quality
from .sources import SOURCES, LatentSource, PriorSource
from .surgery import elbo_surgery

__all__ = ["SPLITS", "evaluate_run", "decode_samples", "format_evaluation"]

SPLITS = ("test", "val")


def _labels_for(vae: nn.Module, n: int, device: torch.device) -> torch.Tensor | None:
    """One-hot labels cycling through the classes (CVAE), else None."""
    if not vae.conditional:
        return None
    return one_hot(torch.arange(n, device=device) % vae.y_dim, vae.y_dim)


@torch.no_grad()
def decode_samples(vae: nn.Module, source: LatentSource, n: int) -> torch.Tensor:
    """Decoder means of ``n`` draws from ``source``, shape (n, x_dim), values in [0, 1].

    For a CVAE the labels cycle through the classes, so the samples cover every digit; a
    conditional prior is sampled given those labels.
    """
    device = next(vae.parameters()).device
    y = _labels_for(vae, n, device)
    if isinstance(source, PriorSource) and source.conditional:
        z = source.sample(n, y=y)
    else:
        z = source.sample(n)
    return vae.decoder.mean(z.to(device), y).clamp(0.0, 1.0)


def evaluate_run(
    vae: nn.Module,
    data: Splits,
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    num_samples: int = 1000,
    split: str = "test",
    num_test: int | None = None,
    num_train: int | None = None,
    classifier: MNISTClassifier | None = None,
    num_quality_samples: int = 1000,
    surgery: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
) -> tuple[dict[str, Any], SourceComparison]:
    """Compare latent sources on held-out data and run ELBO surgery on the training set.

    Args:
        vae: a trained model (e.g. :func:`pyrovae.load_run`).
        data: the dataset splits; sources are fitted on ``data.train``.
        sources: names in :data:`~pyrovae.analysis.sources.SOURCES`; ``"prior"`` is always
            evaluated too (it is the model's own log-likelihood).
        num_samples: K, importance samples per held-out datum (shared by all sources).
        split: ``"test"`` or ``"val"``.
        num_test, num_train: use only the first this many data of each split.
        classifier: scores decoded samples (:func:`~pyrovae.analysis.classifier.load_classifier`);
            None skips sample quality.
        num_quality_samples: samples decoded from each source for the classifier.
        surgery: run ELBO surgery on the (first ``num_train``) training data.
        options: per-source fitting options, e.g. ``{"flow": {"num_steps": 100}}``.
        seed: seeds the fitting, the importance draws and the samples.

    Returns:
        The JSON-ready evaluation dict and the :class:`SourceComparison` (with the fitted
        sources, e.g. for figures).
    """
    lookup(dict.fromkeys(SPLITS), split, "split")
    for name in sources:
        lookup(SOURCES, name, "latent source")
    check_positive_int("num_quality_samples", num_quality_samples)
    names = list(dict.fromkeys(["prior", *sources]))
    held_out: Split = getattr(data, split)
    comparison = compare_sources(
        vae,
        data.train,
        held_out,
        names,
        num_samples=num_samples,
        num_train=num_train,
        num_test=num_test,
        seed=seed,
    )
    per_source = comparison.to_dict()
    result: dict[str, Any] = {
        "split": split,
        "num_samples": comparison.num_samples,
        "num_test": comparison.num_test,
        "num_train": comparison.num_train,
        "loglik": per_source["prior"]["loglik"],
        "loglik_stderr": per_source["prior"]["stderr"],
        "elbo": per_source["prior"]["elbo"],
        "best_source": comparison.best(),
        "unreliable_sources": comparison.flagged,
        "conditional": bool(vae.conditional),
        "sources": per_source,
    }
    if vae.conditional:
        result["note"] = (
            "CVAE: sources are fitted to the pooled encodings q(z | x_n, y_n) of all classes "
            "and log p_r(x | y) uses the true label; samples cycle through the labels"
        )
    if classifier is not None:
        torch.manual_seed(seed)
        reference = feature_stats(classifier, held_out.x[:num_test].to(_device(classifier)))
        for name, source in comparison.sources.items():
            images = decode_samples(vae, source, num_quality_samples)
            quality = sample_quality(classifier, images.to(_device(classifier)), reference)
            per_source[name].update(quality.to_dict())
        result["classifier_accuracy"] = classifier.metadata.get("test_accuracy")
    if surgery:
        train = data.train.subset(num_train) if num_train else data.train
        device = next(vae.parameters()).device
        x = train.x.to(device)
        if getattr(vae.decoder, "binarize", False):
            x = fixed_binarization(x)
        y = one_hot(train.y.to(device), vae.y_dim) if vae.conditional else None
        result["surgery"] = elbo_surgery(vae, x, y, seed=seed).to_dict()
    return result, comparison


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_evaluation(evaluation: dict[str, Any]) -> str:
    """A text table of an evaluation dict, best log-likelihood first."""
    sources = evaluation["sources"]
    lines = [
        f"held-out log p(x) on {evaluation.get('num_test')} {evaluation.get('split')} data, "
        f"K={evaluation.get('num_samples')} importance samples "
        f"(sources fitted on {evaluation.get('num_train')} training data)",
        f"{'source':<14}{'loglik':>9}{'stderr':>8}{'vs prior':>16}{'k>0.7':>7}"
        f"{'entropy':>9}{'ambig.':>8}{'cov.KL':>8}{'Frechet':>9}",
    ]
    for name in sorted(sources, key=lambda n: -sources[n]["loglik"]):
        s = sources[name]
        vs = f"{s['vs_prior']:+.2f}+-{s['vs_prior_stderr']:.2f}" if "vs_prior" in s else ""
        flag = "  <- k-hat: unreliable" if s.get("khat_flag") else ""
        lines.append(
            f"{name:<14}{s['loglik']:>9.2f}{s['stderr']:>8.2f}{vs:>16}{s['khat_gt_0.7']:>7.1%}"
            f"{_fmt(s.get('entropy'), '.3f'):>9}{_fmt(s.get('ambiguous'), '.1%'):>8}"
            f"{_fmt(s.get('coverage_kl'), '.3f'):>8}{_fmt(s.get('frechet'), '.2f'):>9}{flag}"
        )
    lines.append(
        f"ELBO {evaluation['elbo']:.2f}, log p(x) {evaluation['loglik']:.2f} "
        f"+- {evaluation['loglik_stderr']:.2f} (prior)"
    )
    surgery = evaluation.get("surgery")
    if surgery:
        lines.append(
            f"ELBO surgery: avg KL {surgery['avg_kl']:.2f} = mutual information "
            f"{surgery['mutual_information']:.2f} + KL(q(z)||p(z)) {surgery['marginal_kl']:.2f} "
            f"(log N = {surgery['mi_upper_bound']:.2f}); active units "
            f"{surgery['active_units']}/{len(surgery['activity'])}"
        )
    return "\n".join(lines)
