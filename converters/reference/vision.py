"""EVA02 image tower of jina-clip-v2 in plain PyTorch (spec section 3).

Module names mirror the checkpoint keys under ``vision_model.`` so the state dict loads strictly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import VisionTowerConfig
from .attention import attention
from .rotary import rotate


def rope_2d_tables(cfg: VisionTowerConfig) -> tuple[Tensor, Tensor]:
    """cos/sin half tables [1 + grid*grid, head_width/2] for EVA02's interleaved 2-D RoPE (spec section 3.1).

    One angle per adjacent channel pair: pairs [0, head_width/4) rotate by the patch row, the rest
    by the column. Positions are squeezed from the fine grid into the pre-training grid
    (intp_freq): t_i = i / grid * pt_hw_seq_len. Row 0 is the CLS token, which upstream leaves
    unrotated: angle 0 (cos 1, sin 0) gives exactly x, so one rotation covers every token.
    """
    axis_dim = cfg.head_width // 2
    freqs = 1.0 / (cfg.rope_theta ** (torch.arange(0, axis_dim, 2, dtype=torch.float32) / axis_dim))
    grid = cfg.grid_size
    t = torch.arange(grid, dtype=torch.float32) / grid * cfg.pt_hw_seq_len
    axis = torch.outer(t, freqs)  # [grid, axis_dim/2]
    rows = axis[:, None, :].expand(grid, grid, -1)
    cols = axis[None, :, :].expand(grid, grid, -1)
    angles = torch.cat([rows, cols], dim=-1).reshape(grid * grid, axis_dim)
    angles = torch.cat([torch.zeros(1, axis_dim), angles])  # CLS
    return angles.cos(), angles.sin()


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

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        q = rotate(self.q_proj(x) + self.q_bias, cos, sin, self.num_heads, interleaved=True)
        k = rotate(self.k_proj(x), cos, sin, self.num_heads, interleaved=True)
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
        for block in self.blocks:
            x = block(x, self.rope_cos, self.rope_sin)
        return self.norm(x)[:, 0]
