"""k-NN precision and recall of samples (Kynkaanniemi et al., 2019) and their feature space."""

from __future__ import annotations

import math

import pytest
import torch

from pyrovae.analysis.quality.precision_recall import (
    PROJECTED_DIM,
    knn_radii,
    manifold_fraction,
    precision_recall,
    standardized_space,
)


def test_knn_radii_are_the_kth_nearest_other_point():
    points = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    assert knn_radii(points, k=1).tolist() == [1.0, 1.0, 2.0, 3.0, 4.0]
    assert knn_radii(points, k=2).tolist() == [3.0, 2.0, 3.0, 4.0, 7.0]
    # a duplicate is a neighbour at distance 0
    assert knn_radii(torch.tensor([[0.0], [0.0], [5.0]]), k=1).tolist() == [0.0, 0.0, 5.0]
    with pytest.raises(ValueError, match=r"k=3 needs at least k \+ 1 = 4 rows, got 3"):
        knn_radii(points[:3], k=3)


def test_knn_radii_match_sorted_distances():
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(300, 7, generator=gen)
    d = torch.cdist(f.double(), f.double())
    expected = d.sort(1).values[:, 3]  # column 0 is the point itself
    torch.testing.assert_close(knn_radii(f, k=3), expected)


def test_manifold_membership_counts_the_boundary():
    support = torch.tensor([[0.0], [10.0]])
    radii = torch.tensor([2.0, 1.0])
    queries = torch.tensor([[2.0], [2.5], [9.0], [11.5], [-2.0]])
    assert manifold_fraction(queries, support, radii).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_generated_equal_to_real_gives_one_and_one_exactly():
    gen = torch.Generator().manual_seed(1)
    real = torch.randn(400, 5, generator=gen)
    result = precision_recall(real, real.clone())
    assert (result.precision, result.recall) == (1.0, 1.0)
    # four copies of each row: every radius (k = 3) is 0, and a ball still holds its centre
    tiled = torch.randn(50, 5, generator=gen).repeat(4, 1)
    result = precision_recall(tiled, tiled.flip(0))
    assert (result.precision, result.recall) == (1.0, 1.0)
    assert knn_radii(tiled).max().item() == 0.0


def _modes(num_modes: int, per_mode: int, which: list[int], seed: int) -> torch.Tensor:
    """Unit Gaussians around ``num_modes`` centres 50 apart on a circle; rows from ``which``."""
    gen = torch.Generator().manual_seed(seed)
    angle = torch.arange(num_modes) * 2 * math.pi / num_modes
    centres = 50 / (2 * math.sin(math.pi / num_modes)) * torch.stack([angle.cos(), angle.sin()], 1)
    rows = [centres[m] + torch.randn(per_mode, 2, generator=gen) for m in which]
    return torch.cat(rows)


def _half_modes_answer(precision: float, recall: float) -> bool:
    """What samples from half the modes score: precision about 1, recall about 1/2."""
    return precision >= 0.96 and 0.45 <= recall <= 0.52


def test_samples_from_half_the_modes_have_recall_one_half():
    real = _modes(10, 100, list(range(10)), seed=2)
    fake = _modes(10, 200, list(range(5)), seed=3)  # as many rows, half the modes
    result = precision_recall(real, fake, k=3)
    assert _half_modes_answer(result.precision, result.recall), result
    assert (result.num_real, result.num_generated, result.k) == (1000, 1000, 3)
    # wrong estimators fail the same check: the sets swapped, radii from the queried set
    swapped = precision_recall(fake, real, k=3)
    assert not _half_modes_answer(swapped.precision, swapped.recall)
    own_radii = manifold_fraction(real, real, knn_radii(real)).mean().item()
    assert not _half_modes_answer(result.precision, own_radii)
    # and samples from all the modes recall them all
    full = precision_recall(real, _modes(10, 100, list(range(10)), seed=4))
    assert full.precision >= 0.97 and full.recall >= 0.97


def test_precision_recall_checks():
    with pytest.raises(ValueError, match=r"real features have 3 dimensions but generated ones 2"):
        precision_recall(torch.zeros(5, 3), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"radii must have shape \(2,\)"):
        manifold_fraction(torch.zeros(3, 1), torch.zeros(2, 1), torch.zeros(3))


def test_standardized_space():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(500, 4, generator=gen) * torch.tensor([1.0, 10.0, 1e3, 0.0]) + 7.0
    space = standardized_space(x)
    z = space(x)
    assert space.name == "standardized data (4 values)"
    torch.testing.assert_close(z[:, :3].mean(0), torch.zeros(3, dtype=z.dtype), atol=1e-9, rtol=0)
    torch.testing.assert_close(z[:, :3].std(0), torch.ones(3, dtype=z.dtype))
    assert z[:, 3].abs().max().item() == 0.0  # a constant value stays 0 (its scale is 1)


def test_large_rows_are_projected_keeping_distances():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(200, 1000, generator=gen)
    space = standardized_space(x)
    z = space(x)
    assert z.shape == (200, PROJECTED_DIM) and "random Gaussian projection" in space.name
    assert torch.equal(z, standardized_space(x)(x))  # a fixed projection
    zx = (x.double() - x.double().mean(0)) / x.double().std(0)
    ratio = torch.pdist(z) / torch.pdist(zx)
    assert abs(ratio.pow(2).mean().item() - 1) < 0.03  # squared distances kept on average
    assert ratio.min().item() > 0.7 and ratio.max().item() < 1.3
