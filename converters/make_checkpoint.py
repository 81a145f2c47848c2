"""Checkpoints the project makes itself, in the official jina-clip-v2 layout, with random weights.

``tiny`` is for unit tests (2 layers, width 64) but keeps the real 512-px input and 14-px patches
so preprocessing and the 1297-token vision sequence are the real ones. ``full`` has the real
config (and the 250002-row embedding table) for benchmarks; speed does not depend on weight values.
Random weights say nothing about model quality: the marker file makes every bundle say so.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import torch

from .atomic import staged_directory
from .checkpoint import OFFICIAL_MODEL_ID, RANDOM_MARKER_FILE, WEIGHTS_FILE, official_inventory
from .config import clip_config_from_dict
from .tokenizer_builder import build_tokenizer

Size = Literal["tiny", "full"]
StorageDtype = Literal["f16", "bf16", "f32"]
_TORCH_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}

QUERY_INSTRUCTION = "Represent the query for retrieving evidence documents: "

# config.json of jinaai/jina-clip-v2 (spec section 1), field for field.
OFFICIAL_CONFIG: dict[str, Any] = {
    "_name_or_path": OFFICIAL_MODEL_ID,
    "add_projections": False,
    "architectures": ["JinaCLIPModel"],
    "auto_map": {
        "AutoConfig": "jinaai/jina-clip-implementation--configuration_clip.JinaCLIPConfig",
        "AutoModel": "jinaai/jina-clip-implementation--modeling_clip.JinaCLIPModel",
    },
    "initializer_factor": 1.0,
    "logit_scale_init_value": 2.6592,
    "matryoshka_dimensions": [32, 64, 128, 256, 512, 768, 1024],
    "model_type": "jina_clip",
    "projection_dim": 1024,
    "text_config": {
        "default_instruction_task": None,
        "default_lora_task": "retrieval.query",
        "embed_dim": 1024,
        "hf_model_config_kwargs": {
            "load_trained_adapters": False,
            "lora_adaptations": ["retrieval.query"],
            "lora_alpha": 4,
            "lora_dropout_p": 0.0,
            "lora_main_params_trainable": False,
            "lora_rank": 4,
            "task_instructions": {"retrieval.query": QUERY_INSTRUCTION},
            "use_flash_attn": True,
        },
        "hf_model_name_or_path": "jinaai/jina-embeddings-v3",
        "model_type": "jina_clip_text",
        "pooler_type": "mean_pooler",
        "proj_bias": False,
        "proj_type": None,
    },
    "torch_dtype": "bfloat16",
    "transformers.js_config": {"use_external_data_format": {"model.onnx": True}},
    "truncate_dim": None,
    "use_text_flash_attn": None,
    "use_vision_xformers": None,
    "vision_config": {
        "embed_dim": 1024,
        "fused_layer_norm": False,
        "head_width": 64,
        "image_size": 512,
        "intp_freq": True,
        "layers": 24,
        "ls_init_value": None,
        "mlp_ratio": 2.6667,
        "model_type": "jina_clip_vision",
        "naive_swiglu": True,
        "patch_dropout": 0.1,
        "patch_size": 14,
        "post_norm": False,
        "proj_type": None,
        "pt_hw_seq_len": 16,
        "qkv_bias": True,
        "rope_embeddings": True,
        "subln": True,
        "width": 1024,
        "x_attention": True,
    },
}

PREPROCESSOR_CONFIG: dict[str, Any] = {
    "auto_map": {
        "AutoImageProcessor": "jinaai/jina-clip-implementation--processing_clip.JinaCLIPImageProcessor",
        "AutoProcessor": "jinaai/jina-clip-implementation--processing_clip.JinaCLIPProcessor",
    },
    "fill_color": 0,
    "image_processor_type": "JinaCLIPImageProcessor",
    "interpolation": "bicubic",
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "processor_class": "JinaCLIPProcessor",
    "resize_mode": "shortest",
    "size": 512,
    "std": [0.26862954, 0.26130258, 0.27577711],
}

TINY_WIDTH = 64


def checkpoint_config(size: Size, tokenizer_vocab: int) -> dict[str, Any]:
    """config.json for a checkpoint of the given size, in the official structure."""
    config = copy.deepcopy(OFFICIAL_CONFIG)
    if size == "full":
        return config  # the real 250002-row table, even though our tokenizer uses fewer ids
    width = TINY_WIDTH
    config["projection_dim"] = width
    config["matryoshka_dimensions"] = [16, 32, 64]
    text = config["text_config"]
    text["embed_dim"] = width
    # Overrides of the jina-embeddings-v3 defaults go where the official code reads them.
    text["hf_model_config_kwargs"].update(
        vocab_size=tokenizer_vocab, hidden_size=width, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    config["vision_config"].update(width=width, embed_dim=width, layers=2, head_width=16)
    return config


def _random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Values of a plausible scale for each kind of key, so attention and LoRA actually matter."""
    if key == "logit_scale":
        return torch.tensor(2.6592)
    leaf = key.rsplit(".", 1)[-1]
    noise = torch.randn(shape, generator=generator)
    is_norm = any(part in key for part in ("norm", "_ln.", "emb_ln"))
    if is_norm and leaf == "weight":
        return 1.0 + 0.1 * noise
    if leaf in ("bias", "q_bias", "v_bias"):
        return 0.05 * noise
    # LoRA deltas of about a quarter of the base weight's scale, so a wrong merge shows.
    if leaf == "lora_A":
        return 0.25 * noise if "embeddings" in key else noise / shape[-1] ** 0.5  # [n, r, in] or [n, vocab, r]
    if leaf == "lora_B":
        return 0.5 * noise if "embeddings" in key else 0.25 * noise / shape[-1] ** 0.5  # [n, r, dim] or [n, out, r]
    if "embeddings" in key or leaf in ("cls_token", "pos_embed"):
        return noise
    fan_in = 1
    for dim in shape[1:]:
        fan_in *= dim
    return noise / fan_in**0.5  # keeps activations O(1) through depth, like a trained model's


def make_checkpoint(out: Path, size: Size = "tiny", seed: int = 0, dtype: StorageDtype = "f16", overwrite: bool = False) -> Path:
    """Write config.json, model.safetensors, tokenizer.json, preprocessor_config.json (+ marker) atomically."""
    from safetensors.torch import save_file

    tokenizer = build_tokenizer()
    raw_config = checkpoint_config(size, tokenizer.get_vocab_size())
    cfg = clip_config_from_dict(raw_config)
    generator = torch.Generator().manual_seed(seed)
    storage = _TORCH_DTYPES[dtype]
    with staged_directory(Path(out), overwrite=overwrite, marker=RANDOM_MARKER_FILE,
                          what="checkpoint made by make-checkpoint") as stage:
        tensors = {
            key: _random_tensor(key, shape, generator).to(storage).contiguous()
            for key, shape in official_inventory(cfg).items()
        }
        save_file(tensors, str(stage / WEIGHTS_FILE), metadata={"format": "pt"})
        del tensors
        tokenizer.save(str(stage / "tokenizer.json"))
        _write_json(stage / "config.json", raw_config)
        _write_json(stage / "preprocessor_config.json", PREPROCESSOR_CONFIG)
        marker = {
            "model_id": f"edgeclip/random-jina-clip-v2-{size}",
            "random_weights": True,
            "size": size,
            "seed": seed,
            "storage_dtype": dtype,
            "note": "Random weights in the jina-clip-v2 layout, made by `python -m converters make-checkpoint`. "
            "Embeddings from it carry no meaning; use it for tests and speed measurements only.",
        }
        _write_json(stage / RANDOM_MARKER_FILE, marker)
    return Path(out)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
