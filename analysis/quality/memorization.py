"""Are generated samples near-copies of training data? Nearest-neighbour distances.

A source that draws z close to the training encodings (the exact aggregated posterior,
a mixture of N narrow components) can give legible samples because it reproduces
training digits. For each generated row s the distance to its nearest training row,
d(s) = min_n ||s - x_n||_2 (flat rows of any dimension, in whatever space they are given:
pixels in [0, 1] for MNIST, standardized values for vectors of other units), is compared with
the same distance for held-out test rows, d(t): a generator that copies has d(s) well below
d(t). Reported:
the medians, their ratio, and the share of samples closer to the training set than
``quantile`` (5%) of test images are (a near-copy rate; 5% for a generator whose samples
are as far from the training set as new real data).

A note on the evaluation of generative models (Theis et al., 2016),
https://arxiv.org/abs/1511.01844, on the limits of nearest-neighbour checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Memorization", "nearest_distances", "memorization"]


@dataclass(frozen=True)
class Memorization:
    """Nearest-training-row distances of samples against those of test rows.

    Attributes:
        sample_median: median over samples of the distance to the nearest training image.
        test_median: the same for held-out test images (the reference).
        ratio: sample_median / test_median (well below 1: samples copy training images).
        near_copy_fraction: share of samples nearer to the training set than the
            ``quantile`` of the test distances (``quantile`` for new real data).
        threshold: that test-distance quantile.
        quantile: the quantile used (0.05 by default).
        num_samples, num_test, num_train: the sizes compared.
    """

    sample_median: float
    test_median: float
    ratio: float
    near_copy_fraction: float
    threshold: float
    quantile: float
    num_samples: int
    num_test: int
    num_train: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "sample_median": self.sample_median,
            "test_median": self.test_median,
            "ratio": self.ratio,
            "near_copy_fraction": self.near_copy_fraction,
            "threshold": self.threshold,
            "quantile": self.quantile,
            "num_samples": self.num_samples,
            "num_test": self.num_test,
            "num_train": self.num_train,
        }


def _check_images(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be images or rows of shape (N, x_dim), N >= 1, got {shape}")
    return x


def nearest_distances(
    queries: torch.Tensor, reference: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """min_n ``||q_i - r_n||_2`` for every query row, shape (len(queries),), on the CPU.

    Squared distances as ``|q|^2 - 2 q.r + |r|^2`` (one matrix product per chunk of queries),
    in float32 unless the queries are float64, after subtracting the reference's mean from
    both (distances do not change): the rounding error of a squared distance is about 1e-7
    of ``|q - m|^2``, so data far from the origin (values around 1e4 that differ by units)
    keep their distances, which the expansion of the raw values would drown.
    """
    q = _check_images("queries", queries)
    q = q if q.dtype == torch.float64 else q.float()
    r = _check_images("reference", reference).to(q.device, q.dtype)
    if q.shape[1] != r.shape[1]:
        raise ValueError(
            f"queries have {q.shape[1]} features but reference has {r.shape[1]}; "
            "flatten both to the same x_dim"
        )
    centre = r.mean(0)
    q, r = q - centre, r - centre
    r2 = r.pow(2).sum(1)
    out = []
    for start in range(0, q.shape[0], chunk_size):
        qc = q[start : start + chunk_size]
        d2 = qc.pow(2).sum(1, keepdim=True) - 2 * qc @ r.T + r2
        out.append(d2.amin(1).clamp_min(0.0).sqrt())
    return torch.cat(out).cpu()


def memorization(
    samples: torch.Tensor, train: torch.Tensor, test: torch.Tensor, quantile: float = 0.05
) -> Memorization:
    """Compare nearest-training-row distances of ``samples`` with those of ``test`` rows.

    Args:
        samples: generated rows (decoder means), (S, x_dim), in the space of ``train``.
        train: the training rows the model saw, (N, x_dim).
        test: held-out rows, (M, x_dim), the reference for "as far as new data".
        quantile: the test-distance quantile below which a sample counts as a near-copy.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile!r}")
    d_samples = nearest_distances(samples, train)
    d_test = nearest_distances(test, train)
    threshold = float(torch.quantile(d_test, quantile))
    test_median = float(d_test.median())
    sample_median = float(d_samples.median())
    return Memorization(
        sample_median=sample_median,
        test_median=test_median,
        ratio=sample_median / test_median if test_median > 0 else float("nan"),
        near_copy_fraction=float((d_samples < threshold).double().mean()),
        threshold=threshold,
        quantile=quantile,
        num_samples=samples.shape[0],
        num_test=test.shape[0],
        num_train=train.shape[0],
    )
