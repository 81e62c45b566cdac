"""Precision and recall of generated samples in a feature space, from k-NN balls.

Improved Precision and Recall Metric for Assessing Generative Models (Kynkaanniemi et al.,
2019), https://arxiv.org/abs/1904.06991. Each feature vector phi' of a set Phi carries a ball
whose radius is the distance to its k-th nearest neighbour among the *other* vectors of Phi
(the paper's reference code: the vector itself, at distance 0, is not counted). Phi's
manifold is the union of the balls, and::

    f(phi, Phi) = 1  if  ||phi - phi'|| <= ||phi' - NN_k(phi', Phi)||  for some phi' in Phi,

    precision = (1 / |Phi_g|) sum_{phi_g}  f(phi_g, Phi_r)   (samples inside the real manifold)
    recall    = (1 / |Phi_r|) sum_{phi_r}  f(phi_r, Phi_g)   (real data inside the samples')

with k = 3 as in the paper. A ball holds its boundary and its centre, so generated = real
gives precision = recall = 1 exactly. Both are biased by the set sizes (more rows: smaller
balls): compare sources at equal sizes.

The feature space (:class:`FeatureSpace`): the penultimate layer of a classifier trained on
the data's training split where the data are labelled; otherwise the data standardized by
the training split's per-value mean and standard deviation, and, above
:data:`MAX_RAW_DIM` values, mapped by a fixed Gaussian random projection to
:data:`PROJECTED_DIM` dimensions, scaled by 1 / sqrt(PROJECTED_DIM) so that distances are
kept in expectation (Johnson & Lindenstrauss, 1984); pixel distances are a weak feature space
for natural images, which the ``"space"`` entry of the result says.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pyrovae.nets import check_positive_int

__all__ = [
    "MAX_RAW_DIM",
    "PROJECTED_DIM",
    "FeatureSpace",
    "PrecisionRecall",
    "knn_radii",
    "manifold_fraction",
    "precision_recall",
    "standardized_space",
]

MAX_RAW_DIM = 256
"""Standardized data with more values than this are randomly projected (see the docstring)."""
PROJECTED_DIM = 256
"""Dimension of that random projection."""
PROJECTION_SEED = 0
_CHUNK_ELEMENTS = 1 << 23  # query rows per chunk x support rows x dims kept below this


def _check_features(name: str, f: torch.Tensor, min_rows: int) -> torch.Tensor:
    if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] < min_rows:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(
            f"{name} must be a tensor of shape (N, d) with N >= {min_rows}, got {shape}"
        )
    if not torch.isfinite(f).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return f.detach().double().cpu()


def _distances(queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (queries x support), float64, from the differences themselves (no
    |a|^2 - 2 a.b + |b|^2 expansion), so a row and its copy are exactly 0 apart."""
    return torch.cdist(queries, support, compute_mode="donot_use_mm_for_euclid_dist")


def _chunk_rows(num_support: int, dim: int) -> int:
    """Query rows per distance chunk, so that a chunk's differences stay small."""
    return max(1, _CHUNK_ELEMENTS // max(1, num_support * dim))


def knn_radii(features: torch.Tensor, k: int = 3) -> torch.Tensor:
    """||phi_i - NN_k(phi_i)||: the distance from each row to its k-th nearest *other* row,
    shape (N,), float64 (a duplicate row counts as a neighbour at distance 0)."""
    f = _check_features("features", features, 2)
    check_positive_int("k", k)
    if k >= f.shape[0]:
        raise ValueError(f"k={k} needs at least k + 1 = {k + 1} rows, got {f.shape[0]}; lower k")
    step = _chunk_rows(*f.shape)
    out = []
    for start in range(0, f.shape[0], step):
        d = _distances(f[start : start + step], f)
        # the row itself is the smallest (0); the (k + 1)-th smallest is the k-th other one
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(out)


def manifold_fraction(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor
) -> torch.Tensor:
    """f(q, support) for every query row: 1.0 where ||q - s_j|| <= radii[j] for some j, else
    0.0; shape (len(queries),), float64."""
    q = _check_features("queries", queries, 1)
    s = _check_features("support", support, 1)
    if q.shape[1] != s.shape[1]:
        raise ValueError(
            f"queries have {q.shape[1]} features but support has {s.shape[1]}; "
            "map both through the same feature space"
        )
    r = radii.detach().double().cpu()
    if r.shape != (s.shape[0],):
        raise ValueError(f"radii must have shape ({s.shape[0]},), got {tuple(r.shape)}")
    step = _chunk_rows(*s.shape)
    inside = [(_distances(q[i : i + step], s) <= r).any(1) for i in range(0, q.shape[0], step)]
    return torch.cat(inside).double()


@dataclass(frozen=True)
class PrecisionRecall:
    """Precision and recall of samples (see the module docstring).

    Attributes:
        precision: share of generated rows inside the real manifold.
        recall: share of real rows inside the generated manifold.
        k: the neighbour that sets each ball's radius.
        num_real, num_generated: the set sizes.
        space: the feature space, in words (e.g. ``"standardized data (5 values)"``).
    """

    precision: float
    recall: float
    k: int
    num_real: int
    num_generated: int
    space: str = "given features"

    def to_dict(self) -> dict[str, float | int | str]:
        """The evaluation's ``"precision_recall"`` entry."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "k": self.k,
            "num_real": self.num_real,
            "num_generated": self.num_generated,
            "space": self.space,
        }


def precision_recall(
    real_features: torch.Tensor,
    generated_features: torch.Tensor,
    k: int = 3,
    space: str = "given features",
) -> PrecisionRecall:
    """Precision and recall of ``generated_features`` against ``real_features`` (rows are
    feature vectors of one space; see the module docstring for the estimator)."""
    real = _check_features("real_features", real_features, 2)
    fake = _check_features("generated_features", generated_features, 2)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"real features have {real.shape[1]} dimensions but generated ones "
            f"{fake.shape[1]}; map both through the same feature space"
        )
    precision = manifold_fraction(fake, real, knn_radii(real, k)).mean().item()
    recall = manifold_fraction(real, fake, knn_radii(fake, k)).mean().item()
    return PrecisionRecall(precision, recall, k, real.shape[0], fake.shape[0], space)


@dataclass(frozen=True)
class FeatureSpace:
    """A fixed map from flat data rows (N, D) to feature rows (N, d), and its name.

    Attributes:
        name: what the features are, in words (recorded in the result).
        fn: the map itself.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def standardized_space(
    train_x: torch.Tensor, max_dim: int = MAX_RAW_DIM, seed: int = PROJECTION_SEED
) -> FeatureSpace:
    """(x - m) / s with the per-value mean m and standard deviation s of ``train_x`` (s = 1
    where a value is constant), then, when D > ``max_dim``, x -> x W / sqrt(d) with W a fixed
    (D, d) standard Gaussian matrix drawn from ``seed`` (d = :data:`PROJECTED_DIM`)."""
    x = _check_features("train_x", train_x, 2)
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    dim = x.shape[1]
    if dim <= max_dim:

        def standardize(rows: torch.Tensor) -> torch.Tensor:
            return (rows.detach().double().cpu() - mean) / std

        return FeatureSpace(f"standardized data ({dim} values)", standardize)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(dim, PROJECTED_DIM, generator=gen, dtype=torch.float64)
    weight /= math.sqrt(PROJECTED_DIM)

    def project(rows: torch.Tensor) -> torch.Tensor:
        return ((rows.detach().double().cpu() - mean) / std) @ weight

    return FeatureSpace(
        f"standardized data ({dim} values), random Gaussian projection to {PROJECTED_DIM} "
        f"(seed {seed})",
        project,
    )
