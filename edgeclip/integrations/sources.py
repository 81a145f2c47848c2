"""Telling texts from images in a mixed list of sources, as the stores hand them over."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..model import EdgeClip, load


@lru_cache(maxsize=4)
def cached_model(bundle: str, variant: str | None, threads: int | None) -> EdgeClip:
    """One model per bundle/variant/threads in a process: stores re-create their function objects freely."""
    return load(bundle, variant=variant, threads=threads)  # a bundle folder or "hf:owner/name"


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"})
QUERY_TASK = "retrieval.query"


def is_image(value: Any) -> bool:
    """bytes, PIL images, uint8 arrays, data:image URIs, http(s)/file URLs and paths of image files are images;
    every other string is a text."""
    if isinstance(value, (bytes, bytearray, memoryview, os.PathLike)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype == np.uint8 and value.ndim == 3
    if not isinstance(value, str):
        return hasattr(value, "size") and hasattr(value, "mode")  # a PIL image, without importing PIL here
    head = value[:16].lower()
    if head.startswith(("data:image/", "http://", "https://", "file://")):
        return True
    return len(value) < 4096 and "\n" not in value and Path(value).suffix.lower() in IMAGE_SUFFIXES and Path(value).is_file()


def image_input(value: Any) -> Any:
    if isinstance(value, str) and value[:7].lower() == "file://":
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(value).path)
    return bytes(value) if isinstance(value, (bytearray, memoryview)) else value


def embed_mixed(model: EdgeClip, values: Sequence[Any], dim: int | None, fetch_urls: bool,
                kind: Callable[[Any], bool] = is_image) -> np.ndarray:
    """One row per value, in order: texts through the text tower (as passages), images through the vision tower."""
    images = [i for i, v in enumerate(values) if kind(v)]
    texts = [i for i in range(len(values)) if i not in set(images)]
    rows: list[np.ndarray | None] = [None] * len(values)
    if texts:
        for i, row in zip(texts, model.encode_text([values[i] for i in texts], truncate_dim=dim)):
            rows[i] = row
    if images:
        got = model.encode_image([image_input(values[i]) for i in images], truncate_dim=dim, fetch_urls=fetch_urls)
        for i, row in zip(images, got):
            rows[i] = row
    return np.stack(rows) if rows else np.zeros((0, dim or model.manifest.embed_dim), np.float32)  # type: ignore[arg-type]


def embed_query(model: EdgeClip, query: Any, dim: int | None, fetch_urls: bool,
                kind: Callable[[Any], bool] = is_image) -> np.ndarray:
    """A text query gets the model's query instruction (as `edgeclip search` does); an image is embedded as is."""
    if kind(query):
        return model.encode_image([image_input(query)], truncate_dim=dim, fetch_urls=fetch_urls)[0]
    spec = model.manifest.text
    task = QUERY_TASK if spec is not None and QUERY_TASK in spec.task_prefixes else None
    return model.encode_text([query], task=task, truncate_dim=dim)[0]
