"""Sample quality of any data: what the evaluation scores where the MNIST classifier cannot.

For data other than MNIST and Fashion-MNIST (:data:`MNIST_DATASETS`, whose label-based scores
and memorization check are computed as before from the MNIST-format classifier, :mod:`.scores`,
and which get the two-sample test and precision and recall in that classifier's features
from :func:`mnist_quality` and :func:`two_sample_scores`), every source's samples get (the
evaluation draws them from p(x | z), samples of the model's own p(x), and compares them with
held-out data as the model sees them: binarized for a Bernoulli likelihood)

- ``"c2st"``: the classifier two-sample test against held-out real rows (accuracy, its exact
  interval, the p-value of "indistinguishable"; :mod:`.two_sample`);
- ``"precision_recall"``: k-NN precision and recall (k = 3) in the feature space named in
  ``"space"`` (:mod:`.precision_recall`): the penultimate layer of the data's own classifier
  where the data are labelled, else the standardized data (randomly projected above 256
  values);
- ``"memorization"``: nearest-training-row distances (:mod:`.memorization`) in data units for
  images and in standardized values for vectors, whose values may have unrelated units;
- where the data are labelled (``num_classes >= 2``): the label-based scores of
  :func:`~pyrovae.analysis.quality.scores.sample_quality` (``entropy``, ``ambiguous``,
  ``coverage_kl``, ``frechet``) from a classifier trained on the training split and cached
  by the data's fingerprint (:mod:`.data_classifier`), whose test accuracy is reported.

:func:`data_quality` builds the :class:`DataQuality` that holds these choices once per data
set; :func:`score_samples` scores one set of samples with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from pyrovae.analysis.progress import progress_iter
from pyrovae.analysis.quality.classifier import MNISTClassifier
from pyrovae.analysis.quality.data_classifier import (
    DataClassifier,
    DataClassifierConfig,
    load_data_classifier,
)
from pyrovae.analysis.quality.memorization import memorization
from pyrovae.analysis.quality.precision_recall import (
    FeatureSpace,
    precision_recall,
    standardized_space,
)
from pyrovae.analysis.quality.scores import FeatureStats, feature_stats, sample_quality
from pyrovae.analysis.quality.two_sample import classifier_two_sample_test
from pyrovae.data import Splits

__all__ = [
    "MNIST_DATASETS",
    "DataQuality",
    "data_quality",
    "mnist_quality",
    "sample_range",
    "score_samples",
    "score_sources",
    "two_sample_scores",
    "uses_mnist_classifier",
]

MNIST_DATASETS = ("mnist", "fashion-mnist")
"""Data sets scored by the MNIST-format classifier of :mod:`.classifier` (unchanged)."""
C2ST_METHOD = (
    "MLP with one hidden layer of 128 ReLU units on standardized inputs, trained on half of "
    "each set; accuracy on the other half with its exact (Clopper-Pearson) interval"
)


def uses_mnist_classifier(data: Splits) -> bool:
    """True for MNIST and Fashion-MNIST, whose samples the MNIST classifier scores."""
    return data.name in MNIST_DATASETS


def sample_range(kind: str | None) -> tuple[float, float] | None:
    """The range decoded means are clamped to for a kind of data: (0, 1) for ``"binary"`` and
    ``"unit"``, (0, 255) for ``"8-bit"``, None (no clamp) for ``"real"`` or unknown."""
    return {"binary": (0.0, 1.0), "unit": (0.0, 1.0), "8-bit": (0.0, 255.0)}.get(kind or "")


@dataclass(frozen=True)
class DataQuality:
    """How samples of one data set are scored (see the module docstring).

    Attributes:
        classifier: the data's classifier (labelled data; the MNIST-format one for MNIST and
            Fashion-MNIST), else None.
        features: the feature space of precision and recall.
        distances: the space of the memorization check.
        clamp: the range decoded means are clamped to (:func:`sample_range`), or None.
        k: the neighbour setting the k-NN radii of precision and recall.
    """

    classifier: DataClassifier | MNISTClassifier | None
    features: FeatureSpace
    distances: FeatureSpace
    clamp: tuple[float, float] | None
    k: int = 3

    def describe(self) -> dict[str, Any]:
        """The evaluation's top-level ``"sample_quality"`` entry: what was computed, where."""
        net = self.classifier
        return {
            "scorer": "mnist" if isinstance(net, MNISTClassifier) else "data",
            "feature_space": self.features.name,
            "memorization_space": self.distances.name,
            "k": self.k,
            "c2st": C2ST_METHOD,
            "classifier": None
            if net is None
            else {
                "arch": getattr(net, "arch", "cnn"),
                "num_classes": net.num_classes,
                "test_accuracy": net.metadata.get("test_accuracy"),
                "num_test": net.metadata.get("num_test"),
                "cache": net.metadata.get("cache"),
            },
        }


def data_quality(
    data: Splits,
    *,
    fingerprint: str | None = None,
    classifier: DataClassifier | None = None,
    device: torch.device | str = "cpu",
    retrain: bool = False,
    config: DataClassifierConfig | None = None,
    progress: bool = False,
    k: int = 3,
) -> DataQuality:
    """The :class:`DataQuality` of ``data``: for labelled data (``num_classes >= 2``) its
    classifier (``classifier``, or :func:`~.data_classifier.load_data_classifier` with
    ``fingerprint``, ``device``, ``retrain``, ``config`` and ``progress``), whose features are
    precision and recall's space; for unlabelled data the standardized data are."""
    if not isinstance(data, Splits):
        raise ValueError(f"data must be pyrovae.data.Splits, got {type(data).__name__}")
    train_x = data.train.x.detach().cpu()
    if classifier is None and data.num_classes >= 2:
        classifier = load_data_classifier(
            data, fingerprint, device=device, retrain=retrain, config=config, progress=progress
        )
    if classifier is not None:
        net = classifier
        features = FeatureSpace(
            f"penultimate layer ({net.feature_dim} units) of the {net.arch} classifier trained "
            f"on the training split",
            lambda x: net.features(x.to(net.mean.device)).double().cpu(),
        )
    else:
        features = standardized_space(train_x)
    if data.image_shape is not None:
        distances = FeatureSpace("data units", lambda x: x.detach().cpu())
    else:
        distances = standardized_space(train_x, max_dim=math.inf)  # type: ignore[arg-type]
    return DataQuality(classifier, features, distances, sample_range(data.kind), k)


def mnist_quality(classifier: MNISTClassifier, k: int = 3) -> DataQuality:
    """The :class:`DataQuality` of MNIST and Fashion-MNIST: their classifier's penultimate
    layer is the feature space of precision and recall, pixels in [0, 1] that of the
    memorization check."""
    device = next(classifier.parameters()).device
    features = FeatureSpace(
        f"penultimate layer ({classifier.feature_dim} units) of the MNIST-format classifier",
        lambda x: classifier.features(x.to(device)).double().cpu(),
    )
    pixels = FeatureSpace("data units", lambda x: x.detach().cpu())
    return DataQuality(classifier, features, pixels, (0.0, 1.0), k)


def two_sample_scores(
    quality: DataQuality, samples: torch.Tensor, real: torch.Tensor, seed: int = 0
) -> dict[str, Any]:
    """``{"c2st", "precision_recall"}`` of generated rows ``samples`` against ``real`` rows:
    the two-sample test on the rows themselves, precision and recall in ``quality.features``,
    both on the first n = min(len(real), len(samples)) rows of each (equal sizes: chance is
    1/2 for the test, and the k-NN balls of both sets are of one scale)."""
    n = min(len(real), len(samples))
    samples, real = samples.detach()[:n], real.detach()[:n]
    return {
        "c2st": classifier_two_sample_test(real.cpu(), samples.cpu(), seed=seed).to_dict(),
        "precision_recall": precision_recall(
            quality.features(real), quality.features(samples), quality.k, quality.features.name
        ).to_dict(),
    }


def score_samples(
    quality: DataQuality,
    samples: torch.Tensor,
    real: torch.Tensor,
    train: torch.Tensor,
    reference: torch.Tensor | FeatureStats | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores of generated rows ``samples`` (S, D) against held-out ``real`` rows (R, D).

    Returns ``{"c2st", "precision_recall", "memorization"}`` (dicts), plus, with a
    classifier, the label-based scores of :meth:`~.scores.SampleQuality.to_dict` against
    ``reference`` (real rows or their :func:`~.scores.feature_stats`; default ``real``).
    ``train`` holds the training rows of the memorization check (its test rows are the
    first 1000 of ``real``).
    """
    samples, real = samples.detach(), real.detach()
    out = two_sample_scores(quality, samples, real, seed)
    to = quality.distances
    copies = memorization(to(samples).float(), to(train).float(), to(real[:1000]).float())
    out["memorization"] = copies.to_dict()
    net = quality.classifier
    if net is not None:
        device = next(net.parameters()).device
        ref = real if reference is None else reference
        if not isinstance(ref, FeatureStats):
            ref = feature_stats(net, ref.to(device))
        out.update(sample_quality(net, samples.to(device), ref).to_dict())
    return out


def score_sources(
    quality: DataQuality,
    sources: Iterable[tuple[str, Any]],
    decode: Callable[[Any, int], torch.Tensor],
    real: torch.Tensor,
    train: torch.Tensor,
    num_samples: int,
    seed: int = 0,
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Decode ``num_samples`` rows from each ``(name, source)`` with ``decode(source, n)``
    (clamped to ``quality.clamp``) and score them against the first ``num_samples`` of
    ``real`` (:func:`score_samples`; the label-based Frechet reference is all of ``real``).

    Returns the per-source scores and the top-level entries ``{"sample_quality": ...}``
    (:meth:`DataQuality.describe`) and, with a classifier, ``"classifier_accuracy"``.
    """
    reference = None
    if quality.classifier is not None:
        device = next(quality.classifier.parameters()).device
        reference = feature_stats(quality.classifier, real.to(device))
    per_source: dict[str, dict[str, Any]] = {}
    items = progress_iter(sources, "sample quality and memorization", "source", progress)
    with items:
        for name, source in items:
            samples = decode(source, num_samples)
            if quality.clamp is not None:
                samples = samples.clamp(*quality.clamp)
            per_source[name] = score_samples(
                quality, samples, real[:num_samples], train, reference, seed
            )
    top: dict[str, Any] = {"sample_quality": quality.describe()}
    if quality.classifier is not None:
        top["classifier_accuracy"] = quality.classifier.metadata.get("test_accuracy")
    return per_source, top
