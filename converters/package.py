"""Assemble and write the bundle's manifest.json from the configs, the files and the figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import edgeclip
from edgeclip.bundle import (
    MANIFEST_FILE,
    SCHEMA_VERSION,
    FileEntry,
    LicenseInfo,
    Manifest,
    SourceInfo,
    TextSpec,
    Variant,
    VisionSpec,
    VocabInfo,
    sha256_file,
)

from .atomic import atomic_write_text
from .checkpoint import SOURCE_FILES, CheckpointSource
from .config import TEXT_DEFAULT_MAX_TOKENS, TEXT_MAX_TOKENS, ClipConfig, PreprocessConfig
from .specs import ExportSpec

TOKENIZER_FILE = "tokenizer.json"

JINA_CLIP_V2_LICENSE = LicenseInfo(
    spdx="CC-BY-NC-4.0",
    url="https://creativecommons.org/licenses/by-nc/4.0/",
    note="jina-clip-v2's weights are licensed CC BY-NC 4.0: non-commercial use only; commercial use goes "
    "through Jina AI. This bundle is derived from those weights and carries the same licence.",
)
RANDOM_WEIGHTS_LICENSE = LicenseInfo(
    spdx="Apache-2.0",
    url="https://www.apache.org/licenses/LICENSE-2.0",
    note="Random weights made by edgeclip's make-checkpoint in the jina-clip-v2 layout; no Jina AI weights are "
    "included. Embeddings carry no meaning: for tests and speed measurements only.",
)


def file_entry(root: Path, path: Path) -> FileEntry:
    return FileEntry(path=path.relative_to(root).as_posix(), sha256=sha256_file(path), size=path.stat().st_size)


def source_info(source: CheckpointSource) -> SourceInfo:
    return SourceInfo(
        model_id=source.model_id,
        revision=source.revision,
        random_weights=source.random_weights,
        files=tuple(file_entry(source.directory, source.path(name)) for name in SOURCE_FILES),
    )


def make_variant(root: Path, files: list[Path], spec: ExportSpec, precision: str,
                 validation: dict[str, Any] | None = None) -> Variant:
    output_dim = int(spec.outputs[0].shape[1])
    return Variant(
        precision=precision,
        graph=files[0].relative_to(root).as_posix(),
        files=tuple(file_entry(root, f) for f in files),
        inputs=spec.inputs,
        outputs=spec.outputs,
        output_dim=output_dim,
        normalized=spec.head_dim is not None,
        validation=validation or {},
        row_independent=True,  # fp32/fp16/int4 by construction; int8 through converters.row_scales
    )


def text_section(root: Path, cfg: ClipConfig, variants: dict[str, Variant], vocab: VocabInfo | None = None) -> TextSpec:
    return TextSpec(
        tokenizer=file_entry(root, root / TOKENIZER_FILE),
        pad_token_id=cfg.text.pad_token_id,
        default_max_length=TEXT_DEFAULT_MAX_TOKENS,
        max_length=TEXT_MAX_TOKENS,
        pooling="mean",
        task_prefixes={cfg.query_task: cfg.query_prefix} if cfg.query_prefix else {},
        variants=variants,
        vocab=vocab,
    )


def vision_section(pre: PreprocessConfig, variants: dict[str, Variant], source_image_size: int | None = None) -> VisionSpec:
    return VisionSpec(
        source_image_size=source_image_size if source_image_size != pre.image_size else None,
        image_size=pre.image_size,
        resize_mode=pre.resize_mode,
        interpolation=pre.interpolation,
        crop="center",
        mean=pre.mean,
        std=pre.std,
        pooling="cls",
        variants=variants,
    )


def assemble_manifest(root: Path, source: SourceInfo, cfg: ClipConfig, pre: PreprocessConfig,
                      text: dict[str, Variant] | None, vision: dict[str, Variant] | None,
                      source_image_size: int | None = None, vocab: VocabInfo | None = None) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        source=source,
        license=RANDOM_WEIGHTS_LICENSE if source.random_weights else JINA_CLIP_V2_LICENSE,
        embed_dim=cfg.embed_dim,
        matryoshka_dims=cfg.matryoshka_dims,
        text=text_section(root, cfg, text, vocab) if text else None,
        vision=vision_section(pre, vision, source_image_size) if vision else None,
        created_by=f"edgeclip {edgeclip.__version__}",
    )


def write_manifest(root: Path, manifest: Manifest) -> None:
    atomic_write_text(root / MANIFEST_FILE, manifest.to_json())
