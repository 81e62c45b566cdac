"""Evaluate a trained run: every latent source's log-likelihood and samples, ELBO surgery.

This is what ``pyrovae evaluate`` runs; the result is a plain JSON-ready dict::

    {"sources": {NAME: {"loglik", "stderr", "khat_gt_0.7", "ksweep": {"1": .., "10": ..},
                        "converged", "ais": {...}, "entropy", "ambiguous", ...}},
     "surgery": {...}, "elbo": .., "loglik": .., "fingerprint": SHA-256 of the weights, ...}

With sample quality, every source also holds ``"c2st"`` (the classifier two-sample test:
``accuracy``, ``low``, ``high``, ``p_value``, ...), ``"precision_recall"`` (``precision``,
``recall``, ``k``, ``space``, ...) and ``"memorization"``, and the top level
``"sample_quality"`` says how they were computed
(:mod:`~pyrovae.analysis.quality.data_quality`); the classifier scores (``"entropy"``, ...)
and ``"classifier_accuracy"`` are there for MNIST, Fashion-MNIST and other labelled data.
Sample quality of data other than MNIST is of draws x ~ p(x | z) (MNIST's: decoder means).

``"data"`` says what the numbers are of (``name``, ``kind``, ``image_shape``, ``x_dim``,
``num_classes``); for 8-bit data every source also holds ``"bits_per_dim"`` and
``"bits_per_dim_stderr"``, -log p(x) / (D log 2).

The held-out images are a fixed random subset of the split (:meth:`pyrovae.data.Split.sample`);
the AIS images are the first ``ais_num_test`` of them, so IS and AIS are compared on the
same images.

The prior's importance-sampled estimate (the headline ``"loglik"``) comes from draws of
its own proposal (``"prior_draws": "own"``; files without the key may have shared them),
so it is the same whichever other sources are requested; the other sources share one
adapted mixture (:mod:`pyrovae.analysis.evaluation.compare`).

Each AIS'd source's ``"ais"`` entry holds::

    {"loglik", "stderr",          # AIS mean over the images, spread over images / sqrt(n)
     "is_loglik", "is_stderr",    # importance sampling on the same images
     "minus_is": {"mean", "stderr"},     # AIS - IS, paired image by image
     "minus_prior": {"mean", "stderr"},  # AIS - the prior's AIS, paired (when the prior ran)
     "per_datum", "num_test", "steps", "chains", "acceptance", ...,
     "bdmc": {"source", "initial", "lower", "upper", "gap", "gap_stderr", "num_data",
              "steps", "chains"}}

``stderr`` is the spread of log p(x) over the images, not the error of comparing two
estimates on the same images: compare with the paired ``minus_*`` instead. ``"bdmc"`` is
this source's own sandwich (Grosse et al., 2015, https://arxiv.org/abs/1511.02543): data
simulated from that source (z ~ r, x ~ p(x | z); for a CVAE the labels cycle through the
classes and z ~ r(z) or r(z | y) as the source is conditional), forward AIS from the same
initial distribution (``"initial"``: ``"guide"`` or ``"adapted proposal of NAME"``) and the
same schedule and chains as the source's AIS. Its gap backs that source's AIS alone.
Files written before the per-source BDMC hold one top-level ``"bdmc"`` instead: the
prior's, from the guide (:func:`~pyrovae.analysis.likelihood.evidence.source_bdmc` reads both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pyrovae.analysis.evaluation.compare import (
    DEFAULT_SOURCES,
    KSWEEP,
    SourceComparison,
    compare_sources,
    model_inputs,
)
from pyrovae.analysis.evaluation.plan import announce_evaluation
from pyrovae.analysis.likelihood.evidence import source_bdmc
from pyrovae.analysis.likelihood.proposals import initial_distribution, uses_guide
from pyrovae.analysis.likelihood.sharding import (
    sharded_ais_log_likelihood,
    sharded_bdmc,
    sharded_source_log_likelihoods,
)
from pyrovae.analysis.progress import progress_bar, progress_iter
from pyrovae.analysis.quality.classifier import MNISTClassifier
from pyrovae.analysis.quality.data_classifier import DataClassifier
from pyrovae.analysis.quality.data_quality import (
    DataQuality,
    data_quality,
    mnist_quality,
    score_sources,
    two_sample_scores,
    uses_mnist_classifier,
)
from pyrovae.analysis.quality.label_classifier import format_label_error, label_error
from pyrovae.analysis.quality.memorization import memorization
from pyrovae.analysis.quality.scores import feature_stats, sample_quality
from pyrovae.analysis.sources.classes import LatentSource, PriorSource
from pyrovae.analysis.sources.fits import SOURCES
from pyrovae.analysis.sources.store import model_fingerprint
from pyrovae.analysis.sources.surgery import elbo_surgery
from pyrovae.analysis.stats import mean_stderr
from pyrovae.build import lookup
from pyrovae.data import Split, Splits, fixed_binarization
from pyrovae.distributed import DistributedContext
from pyrovae.models.discretized import bits_per_dim
from pyrovae.nets import check_positive_int
from pyrovae.train import one_hot

__all__ = [
    "SPLITS",
    "AISBudget",
    "evaluate_run",
    "run_ais",
    "decode_samples",
    "format_evaluation",
]

SPLITS = ("test", "val")
SURGERY_SUBSET_FACTOR = 10
M2_NOTE = (
    "M2: held-out log p(x) sums the label out exactly; sources are fitted to the pooled "
    "encodings q(z | x_n, y_n) with the training labels; samples cycle through the labels"
)
"""ELBO surgery is repeated on the first 1/10 of the training data (see evaluate_run)."""
MEMORIZATION_TEST = 1000
"""Held-out images whose nearest-training-image distances are the memorization reference."""


@dataclass(frozen=True)
class AISBudget:
    """What AIS spends in :func:`evaluate_run`.

    Attributes:
        num_test: held-out images given to AIS (the first of the importance-sampling ones).
        steps: T, intermediate distributions of the annealing path.
        chains: C, independent chains per image.
        leapfrog_steps: leapfrog steps per HMC transition.
        sources: the sources run through AIS (None: every evaluated source).
        bdmc_num_data: data simulated from each AIS'd source for its BDMC gap (0: skip
            BDMC); every source costs about twice its AIS on this many images.
    """

    num_test: int
    steps: int = 500
    chains: int = 16
    leapfrog_steps: int = 10
    sources: tuple[str, ...] | None = None
    bdmc_num_data: int = 100

    def __post_init__(self) -> None:
        for name in ("num_test", "steps", "chains", "leapfrog_steps"):
            check_positive_int(f"ais {name}", getattr(self, name))
        if not (isinstance(self.bdmc_num_data, int) and self.bdmc_num_data >= 0):
            raise ValueError(f"bdmc_num_data must be an integer >= 0, got {self.bdmc_num_data!r}")


def _labels_for(vae: nn.Module, n: int, device: torch.device) -> torch.Tensor | None:
    """One-hot labels cycling through the classes (CVAE), else None."""
    if not vae.conditional:
        return None
    return one_hot(torch.arange(n, device=device) % vae.y_dim, vae.y_dim)


@torch.no_grad()
def decode_samples(
    vae: nn.Module,
    source: LatentSource,
    n: int,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    draw: bool = False,
) -> torch.Tensor:
    """Decoder means of ``n`` draws from ``source``, shape (n, x_dim), in the data's units,
    clamped to ``clamp`` (default [0, 1], MNIST's pixels; None: not clamped). With
    ``draw``, draws x ~ p(x | z) instead of means: samples of the model's p(x) itself.

    For a CVAE the labels cycle through the classes, so the samples cover every digit; a
    conditional prior is sampled given those labels.
    """
    device = next(vae.parameters()).device
    y = _labels_for(vae, n, device)
    if isinstance(source, PriorSource) and source.conditional:
        z = source.sample(n, y=y)
    else:
        z = source.sample(n)
    z = z.to(device)
    mean = vae.decoder(z, y).sample() if draw else vae.decoder.mean(z, y)
    return mean if clamp is None else mean.clamp(*clamp)


def _data_entry(data: Splits) -> dict[str, Any]:
    """What the evaluation's numbers are of: the data's name, kind of values and shape."""
    shape = data.image_shape
    return {
        "name": data.name,
        "kind": data.kind,
        "image_shape": list(shape) if shape is not None else None,
        "x_dim": int(data.train.x.shape[1]),
        "num_classes": int(data.num_classes),
    }


def evaluate_run(
    vae: nn.Module,
    data: Splits,
    *,
    sources: Sequence[str] = DEFAULT_SOURCES,
    num_samples: int = 1000,
    split: str = "test",
    num_test: int | None = None,
    num_train: int | None = None,
    classifier: MNISTClassifier | DataClassifier | DataQuality | None = None,
    num_quality_samples: int = 1000,
    surgery: bool = True,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    proposal: str = "adapted",
    ais: AISBudget | None = None,
    seed: int = 0,
    progress: bool = True,
    context: DistributedContext | None = None,
) -> tuple[dict[str, Any], SourceComparison]:
    """Compare latent sources on held-out data and run ELBO surgery on the training set.

    Args:
        vae: a trained model (e.g. :func:`pyrovae.load_run`).
        data: the dataset splits; sources are fitted on ``data.train``.
        sources: names in :data:`~pyrovae.analysis.sources.SOURCES`; ``"prior"`` is always
            evaluated too (it is the model's own log-likelihood).
        num_samples: K, importance samples per held-out datum (shared by all sources).
        split: ``"test"`` or ``"val"``.
        num_test: evaluate this many held-out data, a fixed random subset of the split.
        num_train: fit the sources to the first this many training data.
        classifier: scores decoded samples
            (:func:`~pyrovae.analysis.quality.classifier.load_classifier`);
            None skips sample quality and the memorization check (the distance of each
            sample to its nearest training image against that of held-out images,
            :func:`~pyrovae.analysis.quality.memorization.memorization`). For data other
            than MNIST and Fashion-MNIST any other value turns on the scores of
            :mod:`~pyrovae.analysis.quality.data_quality` (two-sample test, precision and
            recall, memorization, and the data's own classifier where labelled): pass
            :func:`~pyrovae.analysis.quality.data_quality.data_quality` (data) or its
            classifier; an MNIST classifier given for such data is not used.
        num_quality_samples: samples decoded from each source for the classifier.
        surgery: run ELBO surgery on the (first ``num_train``) training data, and again on
            the first tenth of them (``"surgery_subset"``): where I(x; z) is near log N,
            the split into I(x; z) and KL(q(z) || p(z)) depends on N.
        options: per-source fitting options, e.g. ``{"flow": {"num_steps": 100}}``.
        proposal: importance proposal (see
            :func:`~pyrovae.analysis.likelihood.loglik.estimate_source_log_likelihoods`).
        ais: also estimate every source's log-likelihood by AIS on the first
            ``ais.num_test`` held-out images, and each such source's BDMC gap on data
            simulated from it (:class:`AISBudget`, :func:`run_ais`); None skips both.
        seed: seeds the fitting, the importance draws and the samples.
        progress: first write the plan on stderr (each step's work and its time at rates
            measured here in a few seconds, :mod:`~pyrovae.analysis.evaluation.plan`), then
            show progress while sources are fitted and scored, and during AIS and BDMC
            (the results are the same either way).
        context: in a torchrun job, the importance-sampled and AIS log-likelihoods are
            sharded over the ranks (:mod:`~pyrovae.analysis.likelihood.sharding`: the same per-datum
            values as one process), and so is BDMC; sample quality and ELBO surgery then run
            on rank 0 alone, and the other ranks return ``({}, comparison)``.

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
    if progress and (context is None or context.is_writer):
        announce_evaluation(
            vae,
            data,
            sources=names,
            num_samples=num_samples,
            split=split,
            num_test=num_test,
            num_train=num_train,
            quality=classifier is not None,
            num_quality_samples=num_quality_samples,
            surgery=surgery,
            options=options,
            proposal=proposal,
            ais=ais,
            seed=seed,
        )
    comparison = compare_sources(
        vae,
        data.train,
        held_out,
        names,
        num_samples=num_samples,
        num_train=num_train,
        num_test=num_test,
        options=options,
        proposal=proposal,
        seed=seed,
        progress=progress,
        context=context,
    )
    if proposal == "adapted" and len(comparison.results) > 1:
        _prior_on_its_own_draws(vae, comparison, held_out, num_test, seed, progress, context)
    if context is not None and not context.is_writer:
        if ais is not None:  # this rank's share of the AIS runs, then rank 0 goes on alone
            run_ais(vae, data, comparison, ais, split=split, seed=seed, context=context)
        return {}, comparison
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
        "unconverged_sources": comparison.unconverged,
        "proposal": proposal,
        "prior_draws": "own",  # the prior's estimate shares no draws with other sources
        "conditional": bool(vae.conditional),
        "sources": per_source,
        # the weights evaluated: a saved evaluation of other weights is never reused or shown
        "fingerprint": model_fingerprint(vae),
        "data": _data_entry(data),
    }
    if data.kind == "8-bit":  # natural images' unit: -log p(x) / (D log 2)
        dims = int(data.train.x.shape[1])
        for entry in per_source.values():
            entry["bits_per_dim"] = bits_per_dim(entry["loglik"], dims)
            entry["bits_per_dim_stderr"] = entry["stderr"] / (dims * math.log(2))
    if getattr(vae, "semi_supervised", False):  # M2: log p(x), and its classifier's error
        result["note"] = M2_NOTE
        result["label_error"] = label_error(vae, held_out)
    elif vae.conditional:
        result["note"] = (
            "CVAE: sources are fitted to the pooled encodings q(z | x_n, y_n) of all classes "
            "and log p_r(x | y) uses the true label; samples cycle through the labels"
        )
    if ais is not None:  # before sample quality: other ranks of a torchrun job wait for it
        annealed = run_ais(
            vae, data, comparison, ais, split=split, seed=seed, progress=progress, context=context
        )
        for name, entry in annealed["ais"].items():
            per_source[name]["ais"] = entry
    if classifier is not None and not uses_mnist_classifier(data):
        if not isinstance(classifier, DataQuality):
            own = classifier if isinstance(classifier, DataClassifier) else None
            classifier = data_quality(data, classifier=own, device=held_out.x.device)
        torch.manual_seed(seed)
        # draws of the model's p(x), against held-out data as the model sees them
        # (binarized for a Bernoulli likelihood): decoder means are smoother than any data
        real = held_out.sample(num_test).x if num_test else held_out.x
        if getattr(vae.decoder, "binarize", False):
            real = fixed_binarization(real)
        scores, top = score_sources(
            classifier,
            comparison.sources.items(),
            lambda source, n: decode_samples(vae, source, n, clamp=None, draw=True),
            real,
            data.train.subset(num_train).x if num_train else data.train.x,
            num_quality_samples,
            seed=seed,
            progress=progress,
        )
        for name, entry in scores.items():
            per_source[name].update(entry)
        result.update(top)
    elif classifier is not None:
        torch.manual_seed(seed)
        real = held_out.sample(num_test).x if num_test else held_out.x
        reference = feature_stats(classifier, real.to(_device(classifier)))
        train_images = data.train.subset(num_train).x if num_train else data.train.x
        real = real[:MEMORIZATION_TEST]
        scorer = mnist_quality(classifier)
        bar = progress_iter(
            comparison.sources.items(), "sample quality and memorization", "source", progress
        )
        with bar:
            for name, source in bar:
                images = decode_samples(vae, source, num_quality_samples)
                quality = sample_quality(classifier, images.to(_device(classifier)), reference)
                per_source[name].update(quality.to_dict())
                copies = memorization(
                    images, train_images.to(images.device), real.to(images.device)
                )
                per_source[name]["memorization"] = copies.to_dict()
                per_source[name].update(
                    two_sample_scores(scorer, images, real[:num_quality_samples], seed)
                )
        result["classifier_accuracy"] = classifier.metadata.get("test_accuracy")
        result["sample_quality"] = scorer.describe()
    if surgery:
        train = data.train.subset(num_train) if num_train else data.train
        device = next(vae.parameters()).device
        x = train.x.to(device)
        if getattr(vae.decoder, "binarize", False):
            x = fixed_binarization(x)
        y = one_hot(train.y.to(device), vae.y_dim) if vae.conditional else None
        with progress_bar(1, f"ELBO surgery on {len(x)} training images", "split", progress) as bar:
            result["surgery"] = elbo_surgery(vae, x, y, seed=seed).to_dict()
            bar.update()
        # where I(x; z) is near its bound log N, KL(q(z) || p(z)) = avg KL - I depends on
        # N itself: repeat the split on a tenth of the data to show how much
        small = len(x) // SURGERY_SUBSET_FACTOR
        if small >= 2:
            part = elbo_surgery(vae, x[:small], None if y is None else y[:small], seed=seed)
            keys = ("num_data", "avg_kl", "marginal_kl", "mutual_information", "mi_upper_bound")
            result["surgery_subset"] = {key: getattr(part, key) for key in keys}
    return result, comparison


def _prior_on_its_own_draws(
    vae: nn.Module,
    comparison: SourceComparison,
    held_out: Split,
    num_test: int | None,
    seed: int,
    progress: bool,
    context: DistributedContext | None,
) -> None:
    """Replace the prior's estimate in ``comparison`` by one from draws of its own proposal.

    The ``"adapted"`` mixture shares one set of draws among the sources, so its draws (and
    the prior's estimate, while L_K is still rising) depend on which other sources were
    requested; the model's headline log p(x) must not. The prior is estimated again from
    its own adapted mixture (the guide alone, the plain IWAE bound L_K; Burda et al., 2016,
    https://arxiv.org/abs/1509.00519), as with ``sources=["prior"]``: one more decoder pass
    per draw. The other sources' ``vs_prior`` are then paired over images, not draws.
    """
    x, y = model_inputs(vae, held_out, num_test, random_subset=True)
    num_samples = comparison.num_samples
    own = sharded_source_log_likelihoods(
        context,
        vae,
        x,
        {"prior": comparison.sources["prior"]},
        y,
        num_samples=num_samples,
        proposal="adapted",
        iwae_particles=[k for k in KSWEEP if k < num_samples],
        seed=seed,
        progress=progress,
    )
    comparison.results["prior"] = own["prior"]


def run_ais(
    vae: nn.Module,
    data: Splits,
    comparison: SourceComparison,
    budget: AISBudget,
    *,
    split: str = "test",
    seed: int = 0,
    progress: bool = True,
    context: DistributedContext | None = None,
) -> dict[str, Any]:
    """AIS for the sources of ``comparison`` on its first ``budget.num_test`` images, and
    each one's BDMC.

    Returns ``{"ais": {name: entry}}`` with the entries of the module docstring.
    ``is_loglik`` is the importance-sampling estimate on the same images, ``minus_is`` and
    ``minus_prior`` the paired differences (:func:`paired_difference`), and ``per_datum``
    lets any two sources be compared image by image. Each source starts from its adapted
    proposal (:func:`~pyrovae.analysis.likelihood.proposals.initial_distribution`); with
    ``budget.bdmc_num_data``, BDMC runs on data simulated from that source with that same
    start and schedule (``entry["bdmc"]``), so each gap bounds the error of that source's
    AIS. ``progress`` shows a bar on stderr over the annealing steps of each run (the
    results are the same either way). Every image's noise is keyed by its index
    (``datum_index``), so in a torchrun job (``context``) the images, and BDMC's simulated
    data, are sharded over the ranks with the results of one process.
    """
    if budget.num_test > comparison.num_test:
        raise ValueError(
            f"ais num_test={budget.num_test} exceeds the {comparison.num_test} held-out images "
            "that importance sampling evaluated; lower it or raise num_test"
        )
    names = list(budget.sources) if budget.sources is not None else list(comparison.sources)
    unknown = sorted(set(names) - set(comparison.sources))
    if unknown:
        raise ValueError(
            f"AIS sources {unknown} were not evaluated; choose from {sorted(comparison.sources)}"
        )
    x, y = model_inputs(vae, getattr(data, split), budget.num_test, random_subset=True)
    out: dict[str, Any] = {"ais": {}}
    per_image: dict[str, torch.Tensor] = {}
    for name in names:
        source = comparison.sources[name]
        # one start and schedule for the source's AIS and for its BDMC, so that the gap
        # bounds the error of this very chain
        chain: dict[str, Any] = {
            "initial": initial_distribution(vae, source, seed=seed),
            "num_steps": budget.steps,
            "num_chains": budget.chains,
            "leapfrog_steps": budget.leapfrog_steps,
            "seed": seed,
            "progress": progress,
        }
        result = sharded_ais_log_likelihood(context, vae, x, y, source, **chain)
        is_part = comparison.results[name].per_datum[: budget.num_test]
        per_image[name] = result.per_datum
        entry = result.to_dict()
        entry.update(
            is_loglik=float(is_part.mean()),
            is_stderr=_stderr(is_part),
            minus_is=paired_difference(result.per_datum, is_part),
            num_test=budget.num_test,
            steps=budget.steps,
            chains=budget.chains,
            per_datum=result.per_datum.tolist(),
        )
        if budget.bdmc_num_data:  # this source's own sandwich: its data, its start
            sandwich = sharded_bdmc(context, vae, source, num_data=budget.bdmc_num_data, **chain)
            entry["bdmc"] = {
                "source": name,
                "initial": initial_label(vae, source, name),
                **sandwich.to_dict(),
            }
        out["ais"][name] = entry
    if "prior" in per_image:
        for name, entry in out["ais"].items():
            if name != "prior":
                entry["minus_prior"] = paired_difference(per_image[name], per_image["prior"])
    return out


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, float | None]:
    """``{"mean", "stderr"}`` of d_i = a_i - b_i over the images: mean(d) and sd(d) / sqrt(n)
    (ddof 1; stderr None for one image). Paired, so the spread of log p(x) between images,
    which the two estimates share, cancels."""
    if a.shape != b.shape:
        raise ValueError(
            f"paired values must have one shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    mean, stderr = mean_stderr((a.double().cpu() - b.double().cpu()).tolist())
    return {"mean": mean, "stderr": stderr}


def initial_label(vae: nn.Module, source: LatentSource | None, name: str) -> str:
    """Where AIS (and BDMC's forward chains) of ``source`` start: see
    :func:`~pyrovae.analysis.likelihood.proposals.initial_distribution`."""
    if uses_guide(vae, source):
        return "guide"
    return f"adapted proposal of {name}"


def _stderr(values: torch.Tensor) -> float | None:
    return mean_stderr(values.tolist())[1] if values.numel() else None


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
        f"({evaluation.get('proposal', 'guide')} proposal; sources fitted on "
        f"{evaluation.get('num_train')} training data)",
        f"{'source':<14}{'loglik':>9}{'stderr':>8}{'vs prior':>16}{'k>0.7':>7}{'conv.':>6}"
        f"{'AIS':>9}{'IS same':>9}{'entropy':>9}{'ambig.':>8}{'cov.KL':>8}{'Frechet':>9}"
        f"{'copies':>8}",
    ]
    for name in sorted(sources, key=lambda n: -sources[n]["loglik"]):
        s = sources[name]
        vs = f"{s['vs_prior']:+.2f}+-{s['vs_prior_stderr']:.2f}" if "vs_prior" in s else ""
        flag = "  <- k-hat: unreliable" if s.get("khat_flag") else ""
        converged = {True: "yes", False: "no"}.get(s.get("converged"), "-")
        ais = s.get("ais") or {}
        copies = (s.get("memorization") or {}).get("near_copy_fraction")
        lines.append(
            f"{name:<14}{s['loglik']:>9.2f}{s['stderr']:>8.2f}{vs:>16}{s['khat_gt_0.7']:>7.1%}"
            f"{converged:>6}{_fmt(ais.get('loglik'), '.2f'):>9}"
            f"{_fmt(ais.get('is_loglik'), '.2f'):>9}"
            f"{_fmt(s.get('entropy'), '.3f'):>9}{_fmt(s.get('ambiguous'), '.1%'):>8}"
            f"{_fmt(s.get('coverage_kl'), '.3f'):>8}{_fmt(s.get('frechet'), '.2f'):>9}"
            f"{_fmt(copies, '.1%'):>8}{flag}"
        )
    bits = [
        f"{name} {s['bits_per_dim']:.3f} +- {s['bits_per_dim_stderr']:.3f}"
        for name, s in sources.items()
        if "bits_per_dim" in s
    ]
    if bits:
        lines.append("bits per dimension (8-bit values; lower is better): " + "; ".join(bits))
    for name, s in sources.items():
        c2st, pr = s.get("c2st"), s.get("precision_recall")
        if c2st and pr:
            lines.append(
                f"{name}: two-sample test accuracy {c2st['accuracy']:.3f} "
                f"[{c2st['low']:.3f}, {c2st['high']:.3f}] (0.5: indistinguishable, p = "
                f"{c2st['p_value']:.2g}); precision {pr['precision']:.3f}, recall "
                f"{pr['recall']:.3f} (k={pr['k']}, {pr['space']})"
            )
    lines.append(
        f"ELBO {evaluation['elbo']:.2f}, log p(x) {evaluation['loglik']:.2f} "
        f"+- {evaluation['loglik_stderr']:.2f} (prior"
        + (
            ", on draws of its own proposal: the same whichever other sources are evaluated"
            if evaluation.get("prior_draws") == "own"
            else ""
        )
        + ")"
    )
    sweep = {name: s["ksweep"] for name, s in sources.items() if s.get("ksweep")}
    if sweep:
        ks = sorted({int(k) for v in sweep.values() for k in v})
        lines.append("L_K by K: " + " ".join(f"{k:>9}" for k in ks))
        for name, values in sweep.items():
            row = " ".join(f"{_fmt(values.get(str(k)), '9.2f'):>9}" for k in ks)
            lines.append(f"  {name:<13}   {row}")
    ais_run = next((s["ais"] for s in sources.values() if s.get("ais")), None)
    if ais_run:
        lines.append(
            f"AIS: {ais_run['num_test']} images, T={ais_run['steps']}, "
            f"{ais_run['chains']} chains; 'IS same' is importance sampling on those images"
        )
    paired = []
    for name, s in sources.items():
        ais = s.get("ais") or {}
        for key, label in (("minus_is", "AIS - IS"), ("minus_prior", "AIS - prior's AIS")):
            d = ais.get(key) or {}
            if d.get("mean") is not None:
                paired.append(f"{name} {label} {d['mean']:+.2f} +- {_fmt(d.get('stderr'), '.2f')}")
    if paired:
        lines.append("paired over the same images: " + "; ".join(paired))
    for name in sources:
        run = source_bdmc(evaluation, name)
        if run:
            lines.append(
                f"BDMC for {name} on {run.get('num_data')} data simulated from it, "
                f"T={run.get('steps')}, from the {run.get('initial', 'guide')}: lower "
                f"{run['lower']:.2f}, upper {run['upper']:.2f}, gap {run['gap']:.2f}"
                f" +- {_fmt(run.get('gap_stderr'), '.2f')} nats (backs {name}'s AIS only)"
            )
    if evaluation.get("label_error"):
        lines.append(format_label_error(evaluation["label_error"]))
    surgery = evaluation.get("surgery")
    if surgery:
        lines.append(
            f"ELBO surgery: avg KL {surgery['avg_kl']:.2f} = mutual information "
            f"{surgery['mutual_information']:.2f} + KL(q(z)||p(z)) {surgery['marginal_kl']:.2f} "
            f"(log N = {surgery['mi_upper_bound']:.2f}); active units "
            f"{surgery['active_units']}/{len(surgery['activity'])}"
        )
    return "\n".join(lines)
