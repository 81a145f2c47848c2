"""Softmax attention shared by both towers: plain PyTorch when run, one fused node when exported.

ONNX Runtime's optimizer does not fuse attention in graphs with rotary embeddings, so the
exporter emits a placeholder node (edgeclip::Attention) that converters.fusion turns into
com.microsoft.MultiHeadAttention: on the CPU that runs a flash-attention kernel (no
[batch, heads, seq, seq] score tensor) when there is no padding mask.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

# The official text code adds -10000 (not -inf) to padded keys; with at least one real key per row
# the softmax is identical, and a finite value keeps graphs free of inf arithmetic.
PADDED_KEY_BIAS = -10000.0
PLACEHOLDER_DOMAIN = "edgeclip"


def _eager(q: Tensor, k: Tensor, v: Tensor, num_heads: int, mask: Tensor | None) -> Tensor:
    batch, tokens, width = q.shape
    head_dim = width // num_heads
    q, k, v = (t.view(batch, tokens, num_heads, head_dim).transpose(1, 2) for t in (q, k, v))  # [B, H, N, D]
    scores = torch.matmul(q * head_dim**-0.5, k.transpose(-1, -2))
    if mask is not None:
        scores = scores + ((1.0 - mask.to(scores.dtype)) * PADDED_KEY_BIAS)[:, None, None, :]
    context = torch.matmul(scores.softmax(dim=-1), v)
    return context.transpose(1, 2).reshape(batch, tokens, width)


class _Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, num_heads: int) -> Tensor:  # noqa: ANN001, ARG004
        return _eager(q, k, v, num_heads, None)

    @staticmethod
    def symbolic(g, q, k, v, num_heads):  # noqa: ANN001, ANN205
        out = g.op(f"{PLACEHOLDER_DOMAIN}::Attention", q, k, v, num_heads_i=num_heads)
        out.setType(q.type())
        return out


class _MaskedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, num_heads: int) -> Tensor:  # noqa: ANN001, ARG004
        return _eager(q, k, v, num_heads, mask)

    @staticmethod
    def symbolic(g, q, k, v, mask, num_heads):  # noqa: ANN001, ANN205
        out = g.op(f"{PLACEHOLDER_DOMAIN}::Attention", q, k, v, mask, num_heads_i=num_heads)
        out.setType(q.type())
        return out


_emit_placeholder = contextvars.ContextVar("emit_attention_placeholder", default=True)


@contextlib.contextmanager
def unfused_export() -> Iterator[None]:
    """Export attention and RoPE as plain ops (what a hand-made export gets; for baselines)."""
    token = _emit_placeholder.set(False)
    try:
        yield
    finally:
        _emit_placeholder.reset(token)


def fused_export() -> bool:
    """True while exporting with fused ONNX Runtime ops (the default); False under unfused_export()."""
    return torch.onnx.is_in_onnx_export() and _emit_placeholder.get()


def attention(q: Tensor, k: Tensor, v: Tensor, num_heads: int, key_mask: Tensor | None = None) -> Tensor:
    """q, k, v: [B, N, heads*head_dim], RoPE already applied -> [B, N, heads*head_dim].

    key_mask: [B, N], 1 for real tokens and 0 for padding (padded keys get PADDED_KEY_BIAS).
    Scale 1/sqrt(head_dim), as both towers use.
    """
    if fused_export():
        if key_mask is None:
            return _Attention.apply(q, k, v, num_heads)
        return _MaskedAttention.apply(q, k, v, key_mask, num_heads)
    return _eager(q, k, v, num_heads, key_mask)
