"""Faithful PyTorch reference of both jina-clip-v2 towers (fp32, eval mode)."""

from .text import TextTower
from .vision import VisionTower

__all__ = ["TextTower", "VisionTower"]
