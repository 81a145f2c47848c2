"""EVA02 image tower of jina-clip-v2 in plain PyTorch (spec section 3).

Module names mirror the checkpoint keys under ``vision_model.`` so the state dict loads strictly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import VisionTowerConfig
from .attention import attention


def rope_2d_tables(cfg: VisionTowerConfig) -> tuple[Tensor, Tensor]:
    """cos/sin [grid*grid, head_width] for EVA02's interleaved 2-D RoPE (spec section 3.1).

    Channels [0, head_width/2) rotate by the patch row, the rest by the column; each frequency
    appears on an adjacent (even, odd) channel pair. Positions are squeezed from the fine grid
    into the pre-training grid (intp_freq): t_i = i / grid * pt_hw_seq_len.
    """
    axis_dim = cfg.head_width // 2
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float32) / axis_dim))
    grid = cfg.grid_size
    t = torch.arange(grid, dtype=torch.float32) / grid * cfg.pt_hw_seq_len
    axis = torch.outer(t, freqs).repeat_interleave(2, dim=-1)  # [grid, axis_dim]
    rows = axis[:, None, :].expand(grid, grid, axis_dim)
    cols = axis[None, :, :].expand(grid, grid, axis_dim)
    angles = torch.cat([rows, cols], dim=-1).reshape(grid * grid, cfg.head_width)
    return angles.cos(), angles.sin()


def apply_rotary_interleaved(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs: (x0, x1) -> (x0*c - x1*s, x1*c + x0*s). x: [..., D]."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin


class PatchEmbed(nn.Module):
    def __init__(self, cfg: VisionTowerConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.proj(pixel_values).flatten(2).transpose(1, 2)  # [B, grid*grid, width], row-major


class VisionAttention(nn.Module):
    """Separate q/k/v (bias on q and v only), RoPE on patch tokens, sub-LN before the output proj."""

    def __init__(self, cfg: VisionTowerConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_width
        self.q_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        self.inner_attn_ln = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def _rotate(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """[B, N, width] -> the same with RoPE on every token but CLS (token 0), per head."""
        batch, tokens, width = x.shape
        heads = x.view(batch, tokens, self.num_heads, self.head_dim)  # tables [N-1, 1, D] broadcast over heads
        rotated = torch.cat([heads[:, :1], apply_rotary_interleaved(heads[:, 1:], cos, sin)], dim=1)
        return rotated.reshape(batch, tokens, width)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        q = self._rotate(self.q_proj(x) + self.q_bias, cos, sin)
        k = self._rotate(self.k_proj(x), cos, sin)
        context = attention(q, k, self.v_proj(x) + self.v_bias, self.num_heads)
        return self.proj(self.inner_attn_ln(context))


class SwiGLU(nn.Module):
    """h = SiLU(w1 x) * (w2 x); out = w3 ffn_ln(h)."""

    def __init__(self, cfg: VisionTowerConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.w2 = nn.Linear(cfg.width, cfg.mlp_hidden)
        self.ffn_ln = nn.LayerNorm(cfg.mlp_hidden, eps=cfg.layer_norm_eps)
        self.w3 = nn.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(self.ffn_ln(nn.functional.silu(self.w1(x)) * self.w2(x)))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionTowerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class VisionTower(nn.Module):
    """pixel_values [B, 3, S, S] fp32 (already normalized) -> CLS embedding [B, width] fp32."""

    def __init__(self, cfg: VisionTowerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_positions, cfg.width))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        # Not in the checkpoint (non-persistent upstream too); recomputed from the config.
        cos, sin = rope_2d_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, pixel_values: Tensor) -> Tensor:
        patches = self.patch_embed(pixel_values)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        x = torch.cat([cls, patches], dim=1) + self.pos_embed
        cos, sin = self.rope_cos[:, None, :], self.rope_sin[:, None, :]
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.norm(x)[:, 0]
