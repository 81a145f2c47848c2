"""A small collection to index: photos in nested folders, Markdown documents and a JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeclip


def photo(path: Path, seed: int, size: tuple[int, int] = (96, 72)) -> Path:
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.arange(size[1]), np.arange(size[0]))[..., None] * rng.uniform(0.3, 3.0, 3)
    Image.fromarray(((ramp + rng.integers(0, 60, (size[1], size[0], 3))) % 256).astype(np.uint8)).save(path)
    return path


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "collection"
    (root / "trips" / "coast").mkdir(parents=True)
    for i in range(4):
        photo(root / "trips" / f"p{i}.png", i)
    photo(root / "trips" / "coast" / "seal.jpg", 10)
    photo(root / "<img src=x onerror=alert(1)>.png", 11)  # names can hold HTML
    (root / "notes.md").write_text("# Harbour\nThe seal sleeps on the rock by the harbour.", encoding="utf-8")
    (root / "trips" / "plan.txt").write_text("Take the early ferry and bring a warm coat.", encoding="utf-8")
    (root / "ignored.bin").write_bytes(b"\x00\x01")
    return root


@pytest.fixture()
def documents(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (
        {"id": "d1", "text": "Una foca descansa sobre una roca."},
        {"id": "d2", "text": "岩の上のアザラシ"})) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def model(tiny_bundle: Path) -> edgeclip.EdgeClip:
    return edgeclip.load(tiny_bundle)
