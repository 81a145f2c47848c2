"""Checkpoint resolution and strict, pickle-free loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

from converters import checkpoint  # noqa: E402
from converters.checkpoint import (  # noqa: E402
    WEIGHTS_FILE,
    load_reference,
    load_tower_state,
    official_inventory,
    read_safetensors_header,
    resolve_source,
)
from converters.config import load_clip_config  # noqa: E402
from converters.errors import CheckpointError  # noqa: E402
from converters.make_checkpoint import make_checkpoint  # noqa: E402


def _copy_with_tensors(src: Path, dst: Path, tensors: dict[str, torch.Tensor]) -> Path:
    shutil.copytree(src, dst)
    save_file(tensors, str(dst / WEIGHTS_FILE))
    return dst


def test_tiny_checkpoint_has_the_official_layout(tiny_checkpoint: Path) -> None:
    cfg = load_clip_config(tiny_checkpoint / "config.json")
    header = read_safetensors_header(tiny_checkpoint / WEIGHTS_FILE)
    assert {k: shape for k, (_, shape) in header.items()} == official_inventory(cfg)
    assert {dtype for dtype, _ in header.values()} == {"F16"}
    # Same number of keys as the real model: only widths and depth shrink... except layers.
    raw = json.loads((tiny_checkpoint / "config.json").read_text())
    assert raw["vision_config"]["image_size"] == 512 and raw["vision_config"]["patch_size"] == 14
    assert set(raw) >= {"text_config", "vision_config", "matryoshka_dimensions", "auto_map"}


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_loading_is_strict(tiny_checkpoint: Path, tmp_path: Path, damage: str) -> None:
    tensors = load_file(str(tiny_checkpoint / WEIGHTS_FILE))
    victim = "vision_model.blocks.0.attn.q_bias"
    if damage == "missing":
        del tensors[victim]
    elif damage == "unexpected":
        tensors["vision_model.blocks.0.attn.k_bias"] = tensors[victim].clone()
    else:
        tensors[victim] = torch.zeros(7, dtype=torch.float16)
    source = resolve_source(str(_copy_with_tensors(tiny_checkpoint, tmp_path / "bad", tensors)))
    with pytest.raises(CheckpointError, match="does not match its config.json") as info:
        load_reference(source, "vision")
    assert "k_bias" in str(info.value) or "q_bias" in str(info.value)


def test_lora_adapter_zero_is_merged_into_every_adapted_weight(tiny_checkpoint: Path) -> None:
    source = resolve_source(str(tiny_checkpoint))
    cfg = load_clip_config(tiny_checkpoint / "config.json")
    raw = {k: v.double() for k, v in load_file(str(tiny_checkpoint / WEIGHTS_FILE)).items()}
    state = load_tower_state(source, cfg, "text")
    p = "text_model.transformer.roberta."
    # Linear: W + B[0] @ A[0] (scale alpha/rank = 1); embedding: W + A[0] @ B[0].
    name = "encoder.layers.1.mlp.fc1"
    expected = raw[f"{p}{name}.parametrizations.weight.original"] + (
        raw[f"{p}{name}.parametrizations.weight.0.lora_B"][0] @ raw[f"{p}{name}.parametrizations.weight.0.lora_A"][0]
    )
    torch.testing.assert_close(state[f"{name}.weight"].double(), expected, atol=1e-5, rtol=0)
    name = "embeddings.word_embeddings"
    expected = raw[f"{p}{name}.parametrizations.weight.original"] + (
        raw[f"{p}{name}.parametrizations.weight.0.lora_A"][0] @ raw[f"{p}{name}.parametrizations.weight.0.lora_B"][0]
    )
    torch.testing.assert_close(state[f"{name}.weight"].double(), expected, atol=1e-5, rtol=0)
    # The delta is not negligible in our random checkpoints, so a skipped merge would show.
    assert (state[f"{name}.weight"].double() - raw[f"{p}{name}.parametrizations.weight.original"]).abs().max() > 0.1
    assert not any("lora" in k or "parametrizations" in k for k in state)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_storage_dtypes_are_upcast_to_fp32(tmp_path: Path, dtype: str) -> None:
    out = make_checkpoint(tmp_path / dtype, size="tiny", seed=3, dtype=dtype)
    header = read_safetensors_header(out / WEIGHTS_FILE)
    assert {d for d, _ in header.values()} == {dtype.upper()}
    state = load_tower_state(resolve_source(str(out)), load_clip_config(out / "config.json"), "vision")
    assert {t.dtype for t in state.values()} == {torch.float32}


def test_pickled_checkpoints_are_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    directory = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, directory)
    (directory / WEIGHTS_FILE).rename(directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pickled checkpoints are never loaded"):
        resolve_source(str(directory))


def test_not_a_safetensors_file(tiny_checkpoint: Path, tmp_path: Path) -> None:
    directory = tmp_path / "garbage"
    shutil.copytree(tiny_checkpoint, directory)
    (directory / WEIGHTS_FILE).write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file|implausible"):
        load_reference(resolve_source(str(directory)), "text")


def test_hub_ids_download_only_safetensors_and_json(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = tmp_path / "snapshots" / "0123abcd"
    shutil.copytree(tiny_checkpoint, snapshot)
    calls = []

    def fake_snapshot_download(repo_id: str, revision: str | None = None, allow_patterns: list[str] | None = None) -> str:
        calls.append((repo_id, revision, allow_patterns))
        return str(snapshot)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = resolve_source("jinaai/jina-clip-v2", revision="v1.0")
    assert (source.model_id, source.revision, source.random_weights) == ("jinaai/jina-clip-v2", "0123abcd", False)
    (repo_id, revision, patterns), = calls
    assert (repo_id, revision) == ("jinaai/jina-clip-v2", "v1.0")
    assert patterns is not None and not any(p.endswith(".bin") or "*" in p for p in patterns)
    assert "model.safetensors" in patterns


def test_offline_hub_download_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointError, match="could not download jinaai/jina-clip-v2@main.*local directory"):
        resolve_source("jinaai/jina-clip-v2")


def test_unknown_source_is_explained(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="neither a checkpoint directory nor a hub id"):
        resolve_source(str(tmp_path / "nope" / "deeper"))
    assert checkpoint.OFFICIAL_MODEL_ID == "jinaai/jina-clip-v2"
