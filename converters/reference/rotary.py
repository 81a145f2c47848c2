"""Rotary position embeddings for both towers: plain PyTorch when run, one fused node when exported.

Both towers rotate q and k per head, from "half" tables cos/sin [tokens, head_dim/2] (one angle per
rotated pair). The text tower pairs channel i with i + head_dim/2 ("rotate-half"); the vision tower
pairs adjacent channels (2j, 2j+1), "interleaved". Exported, each call is one
com.microsoft.RotaryEmbedding node instead of ~15 Slice/Gather/Neg/Concat/Mul ops, which on the
full-size towers cost 5-8 % of the run time in small-op overhead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .attention import fused_export


def _eager(x: Tensor, cos: Tensor, sin: Tensor, num_heads: int, interleaved: bool) -> Tensor:
    batch, tokens, width = x.shape
    x = x.view(batch, tokens, num_heads, width // num_heads)
    if interleaved:  # pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s)
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    else:  # x * cos + rotate_half(x) * sin, rotate_half(x) = concat(-x[D/2:], x[:D/2])
        cos, sin = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos[:, None, :] + rotated * sin[:, None, :]).reshape(batch, tokens, width)


class _RotaryEmbedding(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor, num_heads: int, interleaved: bool) -> Tensor:  # noqa: ANN001, ARG004
        return _eager(x, cos, sin, num_heads, interleaved)

    @staticmethod
    def symbolic(g, x, cos, sin, num_heads, interleaved):  # noqa: ANN001, ANN205
        first_position = g.op("Constant", value_t=torch.tensor([0], dtype=torch.int64))  # token i uses table row i
        out = g.op("com.microsoft::RotaryEmbedding", x, first_position, cos, sin, num_heads_i=num_heads,
                   interleaved_i=int(interleaved))
        out.setType(x.type())
        return out


def rotate(x: Tensor, cos: Tensor, sin: Tensor, num_heads: int, interleaved: bool) -> Tensor:
    """x: [B, N, heads*head_dim]; cos/sin: [N, head_dim/2] -> x with every head rotated."""
    if fused_export():
        return _RotaryEmbedding.apply(x, cos, sin, num_heads, interleaved)
    return _eager(x, cos, sin, num_heads, interleaved)
