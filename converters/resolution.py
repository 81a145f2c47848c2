"""Resolution variants: the image tower exported for a smaller square input (`build --image-size 384`).

EVA02's absolute position embeddings are stored for the 512 px grid (36x36 patches + CLS). For
another size they are resampled the way timm's `resample_abs_pos_embed` does (what EVA02 fine-tunes
at other resolutions use): CLS kept, the grid bicubically interpolated (antialiased when shrinking,
align_corners False). The 2-D RoPE tables are recomputed for the new grid: positions are squeezed
into the pre-training grid (intp_freq), so they follow from the config. Random weights say nothing
about the quality this costs: `validate --reference torch` on the real weights measures it.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from .config import ClipConfig
from .errors import ConverterError

RESOLUTIONS = (224, 336, 384, 448, 512)


def resample_pos_embed(pos_embed: Tensor, grid: int) -> Tensor:
    """[1, 1 + g*g, C] -> [1, 1 + grid*grid, C]."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    old = math.isqrt(patches.shape[1])
    if old * old != patches.shape[1]:
        raise ConverterError(f"pos_embed holds {patches.shape[1]} patch positions: not a square grid")
    if grid == old:
        return pos_embed
    image = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    resized = nn.functional.interpolate(image, size=(grid, grid), mode="bicubic", antialias=grid < old, align_corners=False)
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos_embed.dtype)], dim=1)


def at_image_size(cfg: ClipConfig, image_size: int) -> ClipConfig:
    if image_size not in RESOLUTIONS:
        raise ConverterError(f"--image-size {image_size}: choose one of {', '.join(map(str, RESOLUTIONS))}")
    if image_size > cfg.vision.image_size:
        raise ConverterError(f"--image-size {image_size} is larger than the model's {cfg.vision.image_size} px")
    return dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, image_size=image_size))


def resize_vision_tower(model: nn.Module, cfg: ClipConfig) -> nn.Module:
    """The reference vision tower, in place, for cfg.vision.image_size (see at_image_size)."""
    from .reference.vision import rope_2d_tables

    with torch.no_grad():
        model.pos_embed = nn.Parameter(resample_pos_embed(model.pos_embed.data, cfg.vision.grid_size), requires_grad=False)
    model.rope_cos, model.rope_sin = rope_2d_tables(cfg.vision)
    model.config = cfg.vision
    return model
