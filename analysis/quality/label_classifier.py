"""The test error of a semi-supervised M2's classifier q(y | x), with its exact interval."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pyrovae.analysis.quality.two_sample import clopper_pearson_interval
from pyrovae.data import Split, fixed_binarization
from pyrovae.semi_supervised import label_hits

__all__ = ["format_label_error", "label_error"]


@torch.no_grad()
def label_error(
    vae: nn.Module, split: Split, level: float = 0.95, *, binarize: bool | None = None
) -> dict[str, Any]:
    """The share of ``split`` whose most probable class under q(y | x) is wrong, with its
    Clopper-Pearson interval (the images as the model sees them: binarized once, with the
    library's fixed seed, for a Bernoulli likelihood, as in training's validation).
    ``binarize`` says whether to binarize them; None reads it from ``vae.decoder``, so a
    classifier without a decoder (any module with ``classify``) can pass it.

    Returns ``{"error", "interval": [low, high], "level", "errors", "num_test"}``.
    Semi-Supervised Learning with Deep Generative Models (Kingma et al., 2014), table 1.
    """
    x = split.x
    if binarize is None:
        binarize = getattr(vae.decoder, "binarize", False)
    if binarize:
        x = fixed_binarization(x)
    n = int(x.shape[0])
    wrong = n - label_hits(vae, x, split.y)
    low, high = clopper_pearson_interval(wrong, n, level)
    return {
        "error": wrong / n,
        "interval": [low, high],
        "level": level,
        "errors": wrong,
        "num_test": n,
    }


def format_label_error(entry: dict[str, Any]) -> str:
    """One line: ``q(y | x) test error 4.12% [3.74%, 4.53%] (412 of 10000 images, 95%)``."""
    low, high = entry["interval"]
    return (
        f"q(y | x) test error {100 * entry['error']:.2f}% [{100 * low:.2f}%, {100 * high:.2f}%] "
        f"({entry['errors']} of {entry['num_test']} images, {100 * entry['level']:.0f}% "
        "Clopper-Pearson)"
    )
