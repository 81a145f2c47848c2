"""Tower configurations resolved from a jina-clip-v2 style ``config.json``.

The vision settings are all in ``vision_config``. The text settings are not: the official code
loads the jina-embeddings-v3 config and updates it with ``text_config.hf_model_config_kwargs``.
We keep that config's values as known defaults (``JINA_EMBEDDINGS_V3_TEXT_DEFAULTS``) and apply the
same override, so the RoPE base stays 20000 (building from the kwargs alone would give 10000).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

# Values of jinaai/jina-embeddings-v3's config.json that jina-clip-v2 inherits (spec section 4.1).
JINA_EMBEDDINGS_V3_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "position_embedding_type": "rotary",
    "rotary_emb_base": 20000.0,
    "max_position_embeddings": 8194,
    "lora_adaptations": ["retrieval.query"],
    "lora_rank": 4,
    "lora_alpha": 4,
    "task_instructions": {},
}

# The model card's input limit; max_position_embeddings (8194) counts <s> and </s> twice over.
TEXT_MAX_TOKENS = 8192
# Official encode_text tokenizes with max_length=512 unless told otherwise.
TEXT_DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class TextTowerConfig:
    """Jina XLM-RoBERTa text encoder (post-LN, rotary, LoRA adapter 0 merged, mean pooling)."""

    vocab_size: int  # rows of the token-embedding table
    hidden_size: int  # model width; also the embedding dim (projection is identity)
    num_layers: int  # encoder blocks
    num_heads: int  # attention heads; head_dim = hidden_size // num_heads
    intermediate_size: int  # MLP hidden width
    layer_norm_eps: float  # eps of every LayerNorm in the tower
    type_vocab_size: int  # token-type rows; type id 0 is added to every position
    pad_token_id: int  # right-padding id; also defines the official attention mask
    rotary_base: float  # RoPE theta (20000 for jina-clip-v2)
    num_lora_adapters: int  # adapters stored in the checkpoint
    active_adapter: int  # adapter merged into the weights: index of default_lora_task (always on upstream)
    lora_rank: int  # LoRA rank r
    lora_alpha: float  # LoRA alpha; merge scale = alpha / rank
    task_instructions: dict[str, str] = field(default_factory=dict)  # task -> text prefix

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"text hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if (self.hidden_size // self.num_heads) % 2:
            raise ConfigError("text head_dim must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def lora_scaling(self) -> float:
        return self.lora_alpha / self.lora_rank


@dataclass(frozen=True)
class VisionTowerConfig:
    """EVA02 ViT image encoder (pre-LN, 2-D RoPE on patches, sub-LN attention and SwiGLU, CLS pooling)."""

    width: int  # model width; also the embedding dim (projection is identity)
    layers: int  # transformer blocks
    head_width: int  # per-head dim; heads = width // head_width
    mlp_hidden: int  # SwiGLU hidden width, int(width * mlp_ratio)
    image_size: int  # square input side in pixels
    patch_size: int  # conv patch side (the last image_size % patch_size pixels are never seen)
    pt_hw_seq_len: int  # grid side at pre-training; RoPE positions are squeezed into it
    layer_norm_eps: float = 1e-6  # EVA's LayerNorm eps
    rope_theta: float = 10000.0  # 2-D RoPE base

    def __post_init__(self) -> None:
        if self.width % self.head_width:
            raise ConfigError(f"vision width {self.width} is not divisible by head_width {self.head_width}")
        if self.head_width % 4:
            raise ConfigError("vision head_width must be a multiple of 4 for 2-D RoPE")

    @property
    def num_heads(self) -> int:
        return self.width // self.head_width

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid_size**2 + 1


@dataclass(frozen=True)
class ClipConfig:
    """The whole checkpoint: both towers plus the joint-space facts a bundle needs."""

    text: TextTowerConfig
    vision: VisionTowerConfig
    embed_dim: int  # joint embedding dim (both towers' widths; projections are identity)
    matryoshka_dims: tuple[int, ...]  # dims the model was trained to be truncated to
    query_task: str  # the task whose instruction is the retrieval-query prefix

    @property
    def query_prefix(self) -> str:
        return self.text.task_instructions.get(self.query_task, "")


def _require(section: dict[str, Any], key: str, where: str) -> Any:
    if key not in section:
        raise ConfigError(f"config.json: {where} has no '{key}'")
    return section[key]


def text_config_from_dict(text_section: dict[str, Any]) -> TextTowerConfig:
    """Resolve the text tower the way the official code does: v3 defaults, then the kwargs."""
    resolved = dict(JINA_EMBEDDINGS_V3_TEXT_DEFAULTS)
    resolved.update(text_section.get("hf_model_config_kwargs") or {})
    adaptations = list(resolved["lora_adaptations"])
    default_task = text_section.get("default_lora_task")
    if resolved["position_embedding_type"] != "rotary":
        raise ConfigError(f"text position_embedding_type {resolved['position_embedding_type']!r} is not supported (rotary only)")
    if resolved["hidden_act"] != "gelu":
        raise ConfigError(f"text hidden_act {resolved['hidden_act']!r} is not supported (exact gelu only)")
    if text_section.get("pooler_type", "mean_pooler") != "mean_pooler":
        raise ConfigError(f"text pooler_type {text_section['pooler_type']!r} is not supported (mean_pooler only)")
    if text_section.get("proj_type") not in (None, "identity"):
        raise ConfigError(f"text proj_type {text_section['proj_type']!r} is not supported (none only)")
    return TextTowerConfig(
        vocab_size=int(resolved["vocab_size"]),
        hidden_size=int(resolved["hidden_size"]),
        num_layers=int(resolved["num_hidden_layers"]),
        num_heads=int(resolved["num_attention_heads"]),
        intermediate_size=int(resolved["intermediate_size"]),
        layer_norm_eps=float(resolved["layer_norm_eps"]),
        type_vocab_size=int(resolved["type_vocab_size"]),
        pad_token_id=int(resolved["pad_token_id"]),
        rotary_base=float(resolved["rotary_emb_base"]),
        num_lora_adapters=len(adaptations),
        active_adapter=adaptations.index(default_task) if default_task in adaptations else 0,
        lora_rank=int(resolved["lora_rank"]),
        lora_alpha=float(resolved["lora_alpha"]),
        task_instructions=dict(resolved.get("task_instructions") or {}),
    )


def vision_config_from_dict(section: dict[str, Any]) -> VisionTowerConfig:
    where = "vision_config"
    for flag, wanted in (("rope_embeddings", True), ("naive_swiglu", True), ("subln", True), ("post_norm", False)):
        if section.get(flag, wanted) != wanted:
            raise ConfigError(f"{where}.{flag}={section.get(flag)!r} is not supported (expected {wanted})")
    if section.get("ls_init_value") is not None:
        raise ConfigError(f"{where}.ls_init_value must be null (layer scale is not supported)")
    if section.get("proj_type") not in (None, "identity"):
        raise ConfigError(f"{where}.proj_type {section['proj_type']!r} is not supported")
    width = int(_require(section, "width", where))
    return VisionTowerConfig(
        width=width,
        layers=int(_require(section, "layers", where)),
        head_width=int(_require(section, "head_width", where)),
        mlp_hidden=int(width * float(_require(section, "mlp_ratio", where))),
        image_size=int(_require(section, "image_size", where)),
        patch_size=int(_require(section, "patch_size", where)),
        pt_hw_seq_len=int(section.get("pt_hw_seq_len", 16)),
    )


def clip_config_from_dict(raw: dict[str, Any]) -> ClipConfig:
    text_section = _require(raw, "text_config", "the top level")
    vision_section = _require(raw, "vision_config", "the top level")
    if raw.get("add_projections"):
        raise ConfigError("add_projections=true is not supported: jina-clip-v2 has identity projections")
    text = text_config_from_dict(text_section)
    vision = vision_config_from_dict(vision_section)
    if text.hidden_size != vision.width:
        raise ConfigError(f"text width {text.hidden_size} != vision width {vision.width}; identity projections need equal widths")
    dims = tuple(int(d) for d in raw.get("matryoshka_dimensions") or [text.hidden_size])
    if not dims or max(dims) > text.hidden_size or list(dims) != sorted(set(dims)):
        raise ConfigError(f"matryoshka_dimensions {list(dims)} must be increasing and at most {text.hidden_size}")
    query_task = text_section.get("default_lora_task") or "retrieval.query"
    return ClipConfig(text=text, vision=vision, embed_dim=text.hidden_size, matryoshka_dims=dims, query_task=query_task)


def load_clip_config(path: Path) -> ClipConfig:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return clip_config_from_dict(raw)


@dataclass(frozen=True)
class PreprocessConfig:
    """Image preprocessing from preprocessor_config.json (OpenAI CLIP constants for jina-clip-v2)."""

    image_size: int  # output side; shorter side resized to this, then center-cropped
    resize_mode: str  # "shortest": shorter side to image_size, aspect ratio kept
    interpolation: str  # PIL resampling filter name ("bicubic")
    mean: tuple[float, float, float]  # per-channel mean subtracted after scaling to [0, 1]
    std: tuple[float, float, float]  # per-channel std divided after the mean

    def __post_init__(self) -> None:
        if self.resize_mode != "shortest":
            raise ConfigError(f"preprocessor resize_mode {self.resize_mode!r} is not supported (shortest only)")
        if self.interpolation != "bicubic":
            raise ConfigError(f"preprocessor interpolation {self.interpolation!r} is not supported (bicubic only)")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("preprocessor mean/std must be three numbers each, std > 0")


def load_preprocess_config(path: Path) -> PreprocessConfig:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    size = raw.get("size", 512)
    if isinstance(size, dict):  # transformers-style {"height": .., "width": ..} or {"shortest_edge": ..}
        size = size.get("shortest_edge") or size.get("height")
    return PreprocessConfig(
        image_size=int(size),
        resize_mode=str(raw.get("resize_mode", "shortest")),
        interpolation=str(raw.get("interpolation", "bicubic")),
        mean=tuple(float(v) for v in raw.get("mean", raw.get("image_mean", ()))),  # type: ignore[arg-type]
        std=tuple(float(v) for v in raw.get("std", raw.get("image_std", ()))),  # type: ignore[arg-type]
    )
