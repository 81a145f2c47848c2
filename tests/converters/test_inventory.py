"""The full-size config's keys and shapes equal the spec's 999-key inventory (no weights allocated)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from converters.checkpoint import TOWER_PREFIX, build_tower, official_inventory  # noqa: E402
from converters.config import clip_config_from_dict  # noqa: E402
from converters.make_checkpoint import OFFICIAL_CONFIG  # noqa: E402


def spec_inventory() -> dict[str, tuple[int, ...]]:
    """Transcribed by hand from jina-clip-v2-spec.md section 2 (tables 2.1, 2.2, 2.3)."""
    keys: dict[str, tuple[int, ...]] = {}
    t = "text_model.transformer.roberta."
    keys[t + "embeddings.word_embeddings.parametrizations.weight.original"] = (250002, 1024)
    keys[t + "embeddings.word_embeddings.parametrizations.weight.0.lora_A"] = (1, 250002, 4)
    keys[t + "embeddings.word_embeddings.parametrizations.weight.0.lora_B"] = (1, 4, 1024)
    keys[t + "embeddings.token_type_embeddings.parametrizations.weight.original"] = (1, 1024)
    keys[t + "embeddings.token_type_embeddings.parametrizations.weight.0.lora_A"] = (1, 1, 4)
    keys[t + "embeddings.token_type_embeddings.parametrizations.weight.0.lora_B"] = (1, 4, 1024)
    keys[t + "emb_ln.weight"] = (1024,)
    keys[t + "emb_ln.bias"] = (1024,)
    linears = {"mixer.Wqkv": (3072, 1024), "mixer.out_proj": (1024, 1024), "mlp.fc1": (4096, 1024), "mlp.fc2": (1024, 4096)}
    for i in range(24):
        layer = f"{t}encoder.layers.{i}."
        for name, (out_f, in_f) in linears.items():
            keys[f"{layer}{name}.parametrizations.weight.original"] = (out_f, in_f)
            keys[f"{layer}{name}.parametrizations.weight.0.lora_A"] = (1, 4, in_f)
            keys[f"{layer}{name}.parametrizations.weight.0.lora_B"] = (1, out_f, 4)
            keys[f"{layer}{name}.bias"] = (out_f,)
        for norm in ("norm1", "norm2"):
            keys[f"{layer}{norm}.weight"] = (1024,)
            keys[f"{layer}{norm}.bias"] = (1024,)
    v = "vision_model."
    keys[v + "cls_token"] = (1, 1, 1024)
    keys[v + "pos_embed"] = (1, 1297, 1024)
    keys[v + "patch_embed.proj.weight"] = (1024, 3, 14, 14)
    keys[v + "patch_embed.proj.bias"] = (1024,)
    for i in range(24):
        block = f"{v}blocks.{i}."
        for name, shape in {
            "norm1.weight": (1024,), "norm1.bias": (1024,),
            "attn.q_proj.weight": (1024, 1024), "attn.k_proj.weight": (1024, 1024), "attn.v_proj.weight": (1024, 1024),
            "attn.q_bias": (1024,), "attn.v_bias": (1024,),
            "attn.inner_attn_ln.weight": (1024,), "attn.inner_attn_ln.bias": (1024,),
            "attn.proj.weight": (1024, 1024), "attn.proj.bias": (1024,),
            "norm2.weight": (1024,), "norm2.bias": (1024,),
            "mlp.w1.weight": (2730, 1024), "mlp.w1.bias": (2730,),
            "mlp.w2.weight": (2730, 1024), "mlp.w2.bias": (2730,),
            "mlp.ffn_ln.weight": (2730,), "mlp.ffn_ln.bias": (2730,),
            "mlp.w3.weight": (1024, 2730), "mlp.w3.bias": (1024,),
        }.items():
            keys[block + name] = shape
    keys[v + "norm.weight"] = (1024,)
    keys[v + "norm.bias"] = (1024,)
    keys["logit_scale"] = ()
    return keys


def test_spec_transcription_has_the_documented_totals() -> None:
    keys = spec_inventory()
    assert len(keys) == 999
    text = sum(math.prod(s) for k, s in keys.items() if k.startswith("text_model."))
    vision = sum(math.prod(s) for k, s in keys.items() if k.startswith("vision_model."))
    assert (text, vision) == (560_895_564, 304_382_912)
    assert text + vision + 1 == 865_278_477


def test_full_config_inventory_equals_spec() -> None:
    cfg = clip_config_from_dict(OFFICIAL_CONFIG)
    assert official_inventory(cfg) == spec_inventory()


def test_reference_modules_hold_exactly_the_merged_official_tensors() -> None:
    """The meta-device reference's parameters are the official keys with LoRA folded away."""
    cfg = clip_config_from_dict(OFFICIAL_CONFIG)
    expected = {}
    for key, shape in spec_inventory().items():
        if ".lora_" in key or key == "logit_scale":
            continue
        expected[key.replace(".parametrizations.weight.original", ".weight")] = shape
    with torch.device("meta"):
        actual = {
            TOWER_PREFIX[tower] + name: tuple(t.shape)
            for tower in ("text", "vision")
            for name, t in build_tower(cfg, tower).state_dict().items()
        }
    assert actual == expected


def test_official_config_resolves_jina_embeddings_v3_defaults() -> None:
    cfg = clip_config_from_dict(OFFICIAL_CONFIG)
    assert cfg.text.rotary_base == 20000.0  # not the 10000 the kwargs alone would give
    assert (cfg.text.layer_norm_eps, cfg.text.intermediate_size, cfg.text.num_heads) == (1e-5, 4096, 16)
    assert cfg.text.lora_scaling == 1.0 and cfg.text.active_adapter == 0
    assert (cfg.vision.mlp_hidden, cfg.vision.num_heads, cfg.vision.grid_size) == (2730, 16, 36)
    assert cfg.matryoshka_dims == (32, 64, 128, 256, 512, 768, 1024)
    assert cfg.query_prefix == "Represent the query for retrieving evidence documents: "
