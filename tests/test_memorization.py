"""Nearest-training-image distances: copies are caught, fresh draws are not."""

from __future__ import annotations

import pytest
import torch

from pyrovae.analysis.quality.memorization import memorization, nearest_distances


def test_nearest_distances_match_cdist():
    gen = torch.Generator().manual_seed(0)
    q, r = torch.rand(37, 12, generator=gen), torch.rand(200, 12, generator=gen)
    expected = torch.cdist(q.double(), r.double()).amin(1)
    float32 = nearest_distances(q, r, chunk_size=8)
    assert float32.dtype == torch.float32
    torch.testing.assert_close(float32.double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(nearest_distances(q.double(), r), expected)


def test_copies_are_flagged_and_fresh_draws_are_not():
    gen = torch.Generator().manual_seed(1)
    train, test = torch.rand(3000, 20, generator=gen), torch.rand(1000, 20, generator=gen)
    fresh = memorization(torch.rand(1000, 20, generator=gen), train, test)
    # fresh draws from the data distribution: near-copies at the test rate, 5% +- 3 sd
    assert abs(fresh.near_copy_fraction - 0.05) < 3 * (0.05 * 0.95 / 1000) ** 0.5
    assert 0.95 < fresh.ratio < 1.05
    copies = train[torch.randint(3000, (500,), generator=gen)]
    copies = copies + 0.01 * torch.randn(copies.shape, generator=gen)
    copied = memorization(copies, train, test)
    assert copied.near_copy_fraction == 1.0 and copied.ratio < 0.1
    summary = copied.to_dict()
    assert summary["num_samples"] == 500 and summary["num_train"] == 3000
    assert summary["threshold"] == pytest.approx(
        float(torch.quantile(nearest_distances(test, train), 0.05))
    )


def test_bad_inputs():
    x = torch.rand(5, 4)
    with pytest.raises(ValueError, match="queries must be images"):
        nearest_distances(torch.rand(4), x)
    with pytest.raises(ValueError, match="features"):
        nearest_distances(torch.rand(3, 5), x)
    with pytest.raises(ValueError, match="quantile"):
        memorization(x, x, x, quantile=1.0)
