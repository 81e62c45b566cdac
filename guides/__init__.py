"""Amortized guides (encoders) q_phi(z | x[, y]) that return Pyro distributions."""

from .encoders import GUIDES, DiagonalNormalEncoder, FlowEncoder

__all__ = ["GUIDES", "DiagonalNormalEncoder", "FlowEncoder"]
