"""Sample quality read by an MNIST classifier: legibility, class coverage, Frechet distance.

The same scores come from the classifier of any labelled data
(:class:`~pyrovae.analysis.quality.data_classifier.DataClassifier`, K classes): read 10 below
as K (a uniform prediction then has entropy log K, and coverage_kl is at most log K).

For generated images x_1..x_N and the classifier's probabilities p_i = p(class | x_i):

- entropy: (1/N) sum_i H(p_i), H(p) = -sum_c p_c log p_c, in nats (0 for a sure
  classification, log 10 = 2.303 for a uniform one). Lower is more legible.
- ambiguous: fraction of samples with max_c p_ic < 0.5, with its 95% Wilson score
  interval (a binomial proportion of N samples; Wilson, 1927): two sources whose
  difference is within binomial error are not different.
- coverage_kl: KL(h || U) = sum_c h_c log(10 h_c), where h is the histogram of the
  *hard* labels argmax_c p_ic and U is uniform over the 10 classes. 0 when every class is
  generated equally often, log 10 when a single class is. Hard labels are used so that
  blurry samples spread over several classes cannot pass for good coverage (their
  blurriness shows up in ``entropy`` and ``ambiguous`` instead). MNIST's own test set
  scores about 0.002 (its classes are not exactly balanced).
- frechet: the Frechet distance between Gaussians fitted to classifier features of the
  samples and of reference images,
  ||m_1 - m_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) (the FID of Heusel et al., 2017,
  https://arxiv.org/abs/1706.08500, with the MNIST classifier's penultimate layer). Like
  FID it is biased upwards for small N: compare sources at equal N.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from pyrovae.analysis.quality.classifier import MNISTClassifier
from pyrovae.analysis.quality.data_classifier import DataClassifier

__all__ = [
    "AMBIGUOUS_THRESHOLD",
    "MAX_ENTROPY",
    "FeatureStats",
    "SampleQuality",
    "class_histogram",
    "coverage_kl",
    "feature_stats",
    "frechet_distance",
    "gaussian_frechet_distance",
    "predictive_entropy",
    "sample_quality",
    "wilson_interval",
]

AMBIGUOUS_THRESHOLD = 0.5
#: Entropy of a uniform prediction over the 10 classes, log 10 nats: the worst score.
MAX_ENTROPY = math.log(MNISTClassifier.num_classes)


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of classifier features, shape (d,) and (d, d), float64.

    Compute those of the reference images once with :func:`feature_stats` and pass them to
    :func:`sample_quality` for every source.
    """

    mean: torch.Tensor
    cov: torch.Tensor
    num_samples: int


@dataclass(frozen=True)
class SampleQuality:
    """Classifier-based scores of one set of generated images (see the module docstring).

    Attributes:
        entropy: mean predictive entropy of the classifier, nats (lower: more legible).
        ambiguous: fraction of samples whose top class probability is below 0.5.
        coverage_kl: KL(hard-label histogram || uniform over classes), nats (lower: the
            classes are covered more evenly).
        frechet: Frechet distance between the Gaussian fits of classifier features of the
            samples and of the reference images (lower: closer to real data).
        class_fractions: the hard-label histogram h, one fraction per class.
        num_samples: how many samples were scored.
        num_reference: how many reference images define the reference statistics.
    """

    entropy: float
    ambiguous: float
    coverage_kl: float
    frechet: float
    class_fractions: tuple[float, ...]
    num_samples: int
    num_reference: int

    def to_dict(self) -> dict[str, float]:
        """The four scalar scores, the 95% interval of ``ambiguous`` (``ambiguous_low``,
        ``ambiguous_high``) and ``num_quality_samples``, ready to merge into a per-source
        results dict."""
        d = asdict(self)
        out = {k: float(d[k]) for k in ("entropy", "ambiguous", "coverage_kl", "frechet")}
        out["ambiguous_low"], out["ambiguous_high"] = wilson_interval(
            self.ambiguous, self.num_samples
        )
        out["num_quality_samples"] = self.num_samples
        return out


def wilson_interval(fraction: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``fraction`` of ``n`` trials
    (95% for z = 1.96): (c - h, c + h) with c = (p + z^2/2n) / (1 + z^2/n) and
    h = z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2/n)."""
    if not 0 <= fraction <= 1 or n < 1:
        raise ValueError(f"need 0 <= fraction <= 1 and n >= 1, got {fraction!r} and {n!r}")
    denom = 1 + z * z / n
    centre = (fraction + z * z / (2 * n)) / denom
    half = z * math.sqrt(fraction * (1 - fraction) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _check_probs(probs: torch.Tensor, name: str = "probs") -> torch.Tensor:
    if not isinstance(probs, torch.Tensor) or probs.dim() != 2 or probs.shape[0] == 0:
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise ValueError(
            f"{name} must be a non-empty tensor of shape (N, num_classes), got {shape}"
        )
    sums = probs.sum(-1)
    if (probs < 0).any() or not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        raise ValueError(
            f"{name} must hold probabilities (non-negative rows summing to 1); "
            "apply torch.softmax to logits first"
        )
    return probs.double()


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p_i) = -sum_c p_ic log p_ic for each row, nats, with 0 log 0 = 0; shape (N,)."""
    p = _check_probs(probs)
    return -torch.xlogy(p, p).sum(-1)


def class_histogram(probs: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose argmax is each class, shape (num_classes,), float64."""
    p = _check_probs(probs)
    counts = torch.bincount(p.argmax(-1), minlength=p.shape[-1]).double()
    return counts / p.shape[0]


def coverage_kl(probs: torch.Tensor) -> float:
    """KL(h || uniform) = sum_c h_c log(C h_c) of the hard-label histogram h, nats."""
    h = class_histogram(probs)
    return torch.xlogy(h, h * h.numel()).sum().item()


def _check_features(features: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"{name} must be a tensor of shape (N, d), got {shape}")
    if features.shape[0] < 2:
        raise ValueError(
            f"{name} needs at least 2 rows to estimate a covariance, got {features.shape[0]}; "
            "score more samples"
        )
    if not torch.isfinite(features).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return features.double()


def _moments(features: torch.Tensor, name: str) -> FeatureStats:
    f = _check_features(features, name)
    mean = f.mean(0)
    centred = f - mean
    cov = centred.T @ centred / (f.shape[0] - 1)
    return FeatureStats(mean, cov, f.shape[0])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix by eigen-decomposition."""
    sym = 0.5 * (matrix + matrix.T)
    evals, evecs = torch.linalg.eigh(sym)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def gaussian_frechet_distance(
    mean1: torch.Tensor, cov1: torch.Tensor, mean2: torch.Tensor, cov2: torch.Tensor
) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mean1, cov1) and N(mean2, cov2).

    d^2 = ||m_1 - m_2||^2 + Tr(S_1) + Tr(S_2) - 2 Tr((S_1 S_2)^{1/2}). The last trace is
    computed as Tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2}): S_1 S_2 has the same eigenvalues as
    this symmetric PSD matrix, so two symmetric eigen-decompositions suffice (no complex
    square roots; tiny negative eigenvalues from round-off are clamped to zero).
    """
    m1, m2 = mean1.double(), mean2.double()
    s1, s2 = cov1.double(), cov2.double()
    d = m1.shape[-1]
    for name, m in (("mean1", m1), ("mean2", m2)):
        if m.shape != (d,):
            raise ValueError(f"{name} must have shape ({d},), got {tuple(m.shape)}")
    for name, s in (("cov1", s1), ("cov2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}), got {tuple(s.shape)}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    evals = torch.linalg.eigvalsh(0.5 * (middle + middle.T)).clamp_min(0)
    value = (m1 - m2).square().sum() + s1.trace() + s2.trace() - 2 * evals.sqrt().sum()
    # Round-off can leave a tiny negative number for identical distributions.
    return max(value.item(), 0.0)


def frechet_distance(
    features1: torch.Tensor | FeatureStats, features2: torch.Tensor | FeatureStats
) -> float:
    """Frechet distance between Gaussian fits of two feature sets (rows are samples).

    Either argument may be precomputed :class:`FeatureStats`.
    """
    a = features1 if isinstance(features1, FeatureStats) else _moments(features1, "features1")
    b = features2 if isinstance(features2, FeatureStats) else _moments(features2, "features2")
    if a.mean.shape != b.mean.shape:
        raise ValueError(
            f"feature dimensions differ: {a.mean.shape[0]} and {b.mean.shape[0]}; "
            "use the same classifier for both sets"
        )
    return gaussian_frechet_distance(a.mean, a.cov, b.mean, b.cov)


def feature_stats(classifier: MNISTClassifier | DataClassifier, x: torch.Tensor) -> FeatureStats:
    """Mean and covariance of ``classifier.features(x)`` for rows ``x`` (N, 784 for MNIST)."""
    return _moments(classifier.features(x), "classifier features of x")


def sample_quality(
    classifier: MNISTClassifier | DataClassifier,
    samples: torch.Tensor,
    reference: torch.Tensor | FeatureStats,
) -> SampleQuality:
    """Score generated images with the classifier (see the module docstring for the math).

    Args:
        classifier: e.g. :func:`pyrovae.analysis.quality.classifier.load_classifier` (), or
            for other data a :class:`~pyrovae.analysis.quality.data_classifier.DataClassifier`
            of any number of classes K (then ``entropy`` is at most log K, not log 10).
        samples: generated images, shape (N, 784), pixel values in [0, 1] (decoder means);
            for a ``DataClassifier`` rows (N, x_dim) in the data's own units.
        reference: real images of shape (M, 784) (e.g. the test split), or their
            :func:`feature_stats`, computed once and reused across sources.

    Returns:
        A :class:`SampleQuality`; ``.to_dict()`` gives entropy, ambiguous, coverage_kl and
        frechet.
    """
    mnist = isinstance(classifier, MNISTClassifier)
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2 or samples.shape[0] < 2:
        shape = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples)
        what = "images of shape (N, 784)" if mnist else "rows of shape (N, x_dim)"
        raise ValueError(f"samples must be a tensor of {what} with N >= 2, got {shape}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples hold NaN or infinite values; score finite decoder means")
    if mnist and (samples.min() < 0 or samples.max() > 1):
        raise ValueError(
            "samples must hold pixel values in [0, 1] (decoder means such as "
            "vae.decoder.mean(z)); got values outside that range"
        )
    if not isinstance(reference, FeatureStats):
        reference = feature_stats(classifier, reference)
    probs = classifier.probs(samples)
    feats = classifier.features(samples)
    p = _check_probs(probs)
    ambiguous = (p.max(-1).values < AMBIGUOUS_THRESHOLD).double().mean().item()
    hist = class_histogram(p)
    return SampleQuality(
        entropy=predictive_entropy(p).mean().item(),
        ambiguous=ambiguous,
        coverage_kl=coverage_kl(p),
        frechet=frechet_distance(_moments(feats, "classifier features of samples"), reference),
        class_fractions=tuple(hist.tolist()),
        num_samples=samples.shape[0],
        num_reference=reference.num_samples,
    )
