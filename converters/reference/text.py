"""Jina XLM-RoBERTa text tower of jina-clip-v2 in plain PyTorch (spec section 4).

Module names mirror the checkpoint keys under ``text_model.transformer.roberta.`` with the LoRA
parametrization folded away (``X.parametrizations.weight.original`` -> ``X.weight``), so a merged
state dict loads with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import TextTowerConfig
from .attention import attention
from .rotary import rotate


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)

    def forward(self, input_ids: Tensor) -> Tensor:
        # Token type 0 everywhere; there are no absolute position embeddings (rotary only).
        return self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0]


def rotary_cos_sin(seq_len: int | Tensor, head_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin half tables [seq_len, head_dim/2] for non-interleaved ("rotate-half") RoPE, in fp32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


class TextSelfAttention(nn.Module):
    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: Tensor, mask: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        width = self.num_heads * self.head_dim  # a Python int, so the export's Split is constant
        # Output rows are laid out (three, heads, head_dim): q rows first, then k, then v.
        q, k, v = self.Wqkv(hidden).split(width, dim=-1)  # each [B, L, heads*head_dim]
        q = rotate(q, cos, sin, self.num_heads, interleaved=False)
        k = rotate(k, cos, sin, self.num_heads, interleaved=False)
        context = attention(q, k, v, self.num_heads, mask)
        return self.out_proj(context)


class TextMLP(nn.Module):
    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))  # exact (erf) GELU


class TextBlock(nn.Module):
    """Post-LN block: h = norm1(h + attn(h)); h = norm2(h + mlp(h))."""

    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.mixer = TextSelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = TextMLP(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, hidden: Tensor, mask: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        hidden = self.norm1(hidden + self.mixer(hidden, mask, cos, sin))
        return self.norm2(hidden + self.mlp(hidden))


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TextBlock(cfg) for _ in range(cfg.num_layers))


class TextTower(nn.Module):
    """input_ids [B, L] int64 (+ attention_mask [B, L], 1 = real token) -> mean-pooled [B, hidden] fp32.

    The official model derives the mask as ``input_ids != pad_token_id``; that is the default here.
    The exported graph takes the mask explicitly so callers control padding.
    """

    def __init__(self, cfg: TextTowerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = TextEmbeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = TextEncoder(cfg)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).to(torch.int64)
        hidden = self.emb_ln(self.embeddings(input_ids))
        # Follow the weights' device and dtype (no-ops for the fp32 CPU export; used by the GPU reference).
        mask = attention_mask.to(hidden.dtype)  # [B, L]
        cos, sin = rotary_cos_sin(input_ids.shape[1], self.config.head_dim, self.config.rotary_base)
        cos, sin = cos.to(hidden.device, hidden.dtype), sin.to(hidden.device, hidden.dtype)
        for layer in self.encoder.layers:
            hidden = layer(hidden, mask, cos, sin)
        # Masked mean over real tokens; no clamp, as upstream (every row has at least <s>).
        summed = (hidden * mask[:, :, None]).sum(dim=1)
        return summed / mask.sum(dim=1, keepdim=True)
