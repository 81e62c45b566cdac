"""Amortized guides (encoders) q_phi(z | x[, y]) that return Pyro distributions, and the
label classifier q_phi(y | x) of the semi-supervised M2."""

from .classifier import LabelClassifier
from .encoders import GUIDES, DiagonalNormalEncoder, FlowEncoder

__all__ = ["GUIDES", "DiagonalNormalEncoder", "FlowEncoder", "LabelClassifier"]
