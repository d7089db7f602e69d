"""Backbones: pre-trained networks with a new classification head."""

from sabma.models.registry import BACKBONES, Backbone, build_backbone, head_features

__all__ = ["BACKBONES", "Backbone", "build_backbone", "head_features"]
