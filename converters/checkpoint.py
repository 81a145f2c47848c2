"""Find a jina-clip-v2 checkpoint and turn it into per-tower fp32 state dicts for the reference.

Only safetensors is ever read (never pickles). The file's keys and shapes must equal the
inventory implied by config.json exactly: nothing missing, nothing unexpected.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from .config import ClipConfig, load_clip_config
from .errors import CheckpointError
from .reference import TextTower, VisionTower

Tower = Literal["text", "vision"]
TOWERS: tuple[Tower, ...] = ("text", "vision")
TOWER_PREFIX: dict[Tower, str] = {"text": "text_model.transformer.roberta.", "vision": "vision_model."}
LOGIT_SCALE_KEY = "logit_scale"
WEIGHTS_FILE = "model.safetensors"
SOURCE_FILES = ("config.json", WEIGHTS_FILE, "tokenizer.json", "preprocessor_config.json")
OFFICIAL_MODEL_ID = "jinaai/jina-clip-v2"
# Written by `make-checkpoint` so bundles built from random weights say so.
RANDOM_MARKER_FILE = "edgeclip_random_checkpoint.json"
_STORAGE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


@dataclass(frozen=True)
class CheckpointSource:
    """A local directory holding the four source files, and where it came from."""

    directory: Path  # holds config.json, model.safetensors, tokenizer.json, preprocessor_config.json
    model_id: str  # hub id, or a name for a local checkpoint
    revision: str | None  # resolved hub commit, when known
    random_weights: bool  # True for checkpoints made by `make-checkpoint`

    def path(self, name: str) -> Path:
        return self.directory / name


def resolve_source(source: str, revision: str | None = None) -> CheckpointSource:
    """A local directory, or a Hugging Face id such as ``jinaai/jina-clip-v2`` (downloaded once)."""
    local = Path(source).expanduser()
    if local.is_dir():
        directory = local.resolve()
        model_id, random_weights = directory.name, False
        marker = directory / RANDOM_MARKER_FILE
        if marker.is_file():
            info = json.loads(marker.read_text(encoding="utf-8"))
            model_id, random_weights = str(info["model_id"]), True
    elif local.exists() or source.count("/") != 1:
        raise CheckpointError(f"{source!r} is neither a checkpoint directory nor a hub id like {OFFICIAL_MODEL_ID!r}")
    else:
        directory = _download(source, revision)
        model_id, random_weights = source, False
        revision = directory.name  # snapshot folders are named by the resolved commit
    missing = [name for name in SOURCE_FILES if not (directory / name).is_file()]
    if missing:
        pickles = sorted(p.name for p in directory.glob("*.bin"))
        hint = f" ({', '.join(pickles)} present, but pickled checkpoints are never loaded)" if pickles else ""
        raise CheckpointError(f"{directory} lacks {', '.join(missing)}{hint}; a checkpoint needs {', '.join(SOURCE_FILES)}")
    return CheckpointSource(directory, model_id, revision, random_weights)


def _download(repo_id: str, revision: str | None) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise CheckpointError("downloading from the hub needs huggingface-hub: pip install 'edgeclip[convert]'") from exc
    try:
        # Only what we read: no pickles, no ONNX files, no remote code.
        path = snapshot_download(repo_id, revision=revision, allow_patterns=list(SOURCE_FILES))
    except Exception as exc:  # network, auth, unknown revision: all end the same way for the user
        raise CheckpointError(
            f"could not download {repo_id}@{revision or 'main'}: {exc}. "
            "Check the id and your connection, or pass a local directory with the checkpoint files."
        ) from exc
    return Path(path)


def build_tower(cfg: ClipConfig, tower: Tower) -> nn.Module:
    return TextTower(cfg.text) if tower == "text" else VisionTower(cfg.vision)


def _lora_modules(module: nn.Module) -> dict[str, nn.Module]:
    """Upstream wraps every Linear and Embedding of the text tower with a LoRA parametrization."""
    return {name: m for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}


def _lora_shapes(module: nn.Module, adapters: int, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if isinstance(module, nn.Embedding):
        vocab, dim = module.weight.shape
        return (adapters, vocab, rank), (adapters, rank, dim)
    out_features, in_features = module.weight.shape
    return (adapters, rank, in_features), (adapters, out_features, rank)


def official_inventory(cfg: ClipConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the official model.safetensors for this config, with its shape."""
    inventory: dict[str, tuple[int, ...]] = {}
    with torch.device("meta"):
        text, vision = TextTower(cfg.text), VisionTower(cfg.vision)
    lora = _lora_modules(text)
    prefix = TOWER_PREFIX["text"]
    for name, param in text.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        if owner in lora and leaf == "weight":
            shape_a, shape_b = _lora_shapes(lora[owner], cfg.text.num_lora_adapters, cfg.text.lora_rank)
            inventory[f"{prefix}{owner}.parametrizations.weight.original"] = tuple(param.shape)
            inventory[f"{prefix}{owner}.parametrizations.weight.0.lora_A"] = shape_a
            inventory[f"{prefix}{owner}.parametrizations.weight.0.lora_B"] = shape_b
        else:
            inventory[prefix + name] = tuple(param.shape)
    for name, param in vision.state_dict().items():
        inventory[TOWER_PREFIX["vision"] + name] = tuple(param.shape)
    inventory[LOGIT_SCALE_KEY] = ()
    return inventory


def _safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """The file's JSON header (key -> dtype, shape, data_offsets) and where the tensor data starts."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise CheckpointError(f"{path}: header length {length} is implausible; not a safetensors file")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
    header.pop("__metadata__", None)
    return header, 8 + length


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """key -> (dtype, shape) from the file's JSON header, without reading any tensor data."""
    header, _ = _safetensors_header(path)
    return {key: (entry["dtype"], tuple(entry["shape"])) for key, entry in header.items()}


def check_inventory(header: dict[str, tuple[str, tuple[int, ...]]], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Raise CheckpointError listing every missing, unexpected, mis-shaped or mis-typed key."""
    problems: list[str] = []
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:3]}")
    for key in sorted(set(expected) & set(header)):
        dtype, shape = header[key]
        if shape != expected[key]:
            problems.append(f"{key}: shape {list(shape)} in the file, {list(expected[key])} from config.json")
        if dtype not in _STORAGE_DTYPES:
            problems.append(f"{key}: storage dtype {dtype} (expected F16, BF16 or F32)")
    if problems:
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise CheckpointError(
            f"{path} does not match its config.json ({len(header)} keys in the file, {len(expected)} expected):\n  "
            + "\n  ".join(shown)
            + "\nUse the config.json that was published with these weights."
        )


def merge_lora(weight: Tensor, lora_a: Tensor, lora_b: Tensor, adapter: int, scaling: float, embedding: bool) -> Tensor:
    """Fold one LoRA adapter into its base weight (fp32), as the parametrization computes it: weight + scaling * delta.

    Computed in the delta's own storage (x + y == y + x exactly in IEEE arithmetic), so the 250002x1024
    token table costs one extra copy while merging, not three."""
    if embedding:  # A: [vocab, r], B: [r, dim]
        delta = lora_a[adapter] @ lora_b[adapter]
    else:  # A: [r, in], B: [out, r]
        delta = lora_b[adapter] @ lora_a[adapter]
    return delta.mul_(scaling).add_(weight)


_NUMPY_STORAGE = {"F16": (np.uint16, torch.float16), "BF16": (np.uint16, torch.bfloat16), "F32": (np.float32, torch.float32)}


class _SafetensorsReader:
    """Tensors of a safetensors file read with plain file reads.

    safetensors' own safe_open memory-maps the file, and every mapped page it touches counts toward the
    process's RSS until the file is closed: 1.1 GB for the text tower, on top of its 2.2 GB of fp32."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries, self.data_start = _safetensors_header(path)

    def keys(self) -> list[str]:
        return list(self.entries)

    def get_tensor(self, key: str) -> Tensor:
        entry = self.entries[key]
        numpy_dtype, torch_dtype = _NUMPY_STORAGE[entry["dtype"]]
        start, end = entry["data_offsets"]
        with open(self.path, "rb") as handle:
            handle.seek(self.data_start + start)
            array = np.fromfile(handle, dtype=numpy_dtype, count=(end - start) // np.dtype(numpy_dtype).itemsize)
        return torch.from_numpy(array).view(torch_dtype).reshape(entry["shape"])


def load_tower_state(source: CheckpointSource, cfg: ClipConfig, tower: Tower) -> dict[str, Tensor]:
    """One tower's fp32 state dict with LoRA merged, keyed like the reference module."""
    weights = source.path(WEIGHTS_FILE)
    check_inventory(read_safetensors_header(weights), official_inventory(cfg), weights)
    prefix = TOWER_PREFIX[tower]
    state: dict[str, Tensor] = {}
    handle = _SafetensorsReader(weights)
    for key in [k for k in handle.keys() if k.startswith(prefix)]:
        if ".parametrizations.weight.0.lora_" in key:
            continue  # consumed with their base weight below
        name = key[len(prefix):]
        tensor = handle.get_tensor(key).to(torch.float32)
        if name.endswith(".parametrizations.weight.original"):
            owner = name.removesuffix(".parametrizations.weight.original")
            lora_a = handle.get_tensor(f"{prefix}{owner}.parametrizations.weight.0.lora_A").to(torch.float32)
            lora_b = handle.get_tensor(f"{prefix}{owner}.parametrizations.weight.0.lora_B").to(torch.float32)
            embedding = owner.startswith("embeddings.")
            tensor = merge_lora(tensor, lora_a, lora_b, cfg.text.active_adapter, cfg.text.lora_scaling, embedding)
            name = owner + ".weight"
        state[name] = tensor
    return state


def load_reference(source: CheckpointSource, tower: Tower, cfg: ClipConfig | None = None) -> nn.Module:
    """The fp32 reference tower in eval mode, weights loaded strictly."""
    cfg = cfg or load_clip_config(source.path("config.json"))
    state = load_tower_state(source, cfg, tower)
    with torch.device("meta"):
        model = build_tower(cfg, tower)
    # assign=True adopts our fp32 tensors instead of copying into a second allocation.
    model.load_state_dict(state, strict=True, assign=True)
    if tower == "vision":  # non-persistent RoPE tables were built on meta: rebuild them for real
        from .reference.vision import rope_2d_tables

        model.rope_cos, model.rope_sin = rope_2d_tables(cfg.vision)
    return model.eval()
