"""Small-device heads: a tower whose graph output is already the L2-normalized Matryoshka prefix.

Devices that only ever use 64 or 128 dims then skip the host-side slice and normalization, and
the manifest records the head (output_dim, normalized=True) so the runtime never re-does it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ClipConfig
from .errors import ConverterError


class MatryoshkaHead(nn.Module):
    """tower(...)[:, :dim], L2-normalized: slice first, then normalize (Matryoshka order)."""

    def __init__(self, tower: nn.Module, dim: int) -> None:
        super().__init__()
        self.tower, self.dim = tower, dim

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(*inputs)[:, : self.dim], dim=-1, eps=1e-12)


def check_head_dim(cfg: ClipConfig, dim: int | None) -> int | None:
    """None (full width, not normalized in the graph) or a Matryoshka dim below embed_dim."""
    if dim is None:
        return None
    allowed = [d for d in cfg.matryoshka_dims if d < cfg.embed_dim]
    if dim not in allowed:
        raise ConverterError(f"--dims {dim}: choose one of the model's smaller Matryoshka dims {allowed} "
                             f"(omit --dims for the full {cfg.embed_dim})")
    return dim
