"""What the report shows about one run: :class:`RunReport`, plain data."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunReport"]


@dataclass
class RunReport:
    """Everything the report shows about one trained run.

    Attributes:
        name: short label, e.g. ``"vae-z2"`` (unique within a report).
        description: a sentence or two about the run (free text).
        config: settings shown as a key/value table, e.g. ``{"model": "vae", "z_dim": 2}``;
            nested mappings (``config.json``'s ``model``/``train`` halves) are flattened
            to ``model.z_dim``.
        evaluation: the ``pyrovae evaluate`` JSON (see the module docstring).
        figures: title -> PNG path (or raw PNG bytes), shown in this order.
        metrics: training rows with ``epoch``, ``train_elbo``, ``val_elbo``, ``seconds``.
        diagnostics: the ``pyrovae diagnose`` JSON (see
            :func:`~pyrovae.analysis.posterior.diagnose.load_diagnostics`); when given, the run gets
            an "Inference quality" section with its figures (``"figure_paths"``).
        data: what the run's data are, where known: ``name``, ``kind`` (of
            :data:`pyrovae.images.VALUE_KINDS`), ``image_shape`` ([C, H, W], None for
            vectors), ``x_dim``, ``num_classes`` and ``class_names``. The text then says
            "images" or "data points", and 8-bit data get log-likelihoods in bits per
            dimension too. Empty: the run is taken to be of images, in nats only.
        notes: what the report leaves out for this run and why, one sentence each (e.g.
            the training curves of a model trained outside pyrovae).
    """

    name: str
    description: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    evaluation: Mapping[str, Any] = field(default_factory=dict)
    figures: Mapping[str, str | os.PathLike[str] | bytes] = field(default_factory=dict)
    metrics: Sequence[Mapping[str, Any]] | None = None
    diagnostics: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    notes: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"RunReport.name must be a non-empty string, got {self.name!r}")
        for attr in ("config", "evaluation", "figures", "diagnostics", "data"):
            value = getattr(self, attr)
            if value is None:
                setattr(self, attr, {})
            elif not isinstance(value, Mapping):
                raise ValueError(
                    f"RunReport.{attr} of run {self.name!r} must be a dict, "
                    f"got {type(value).__name__}"
                )
        notes = self.notes
        if isinstance(notes, str) or not all(isinstance(n, str) for n in notes or ()):
            raise ValueError(
                f"RunReport.notes of run {self.name!r} must be a list of sentences (strings), "
                f"got {notes!r}"
            )
        self.notes = tuple(notes or ())
