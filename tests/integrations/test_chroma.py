"""Chroma's "edgeclip" embedding function with chromadb's embedded PersistentClient, in the clients' virtualenv
(tests/clients/requirements.txt: chromadb never enters the main environment): texts and images stored,
the collection reopened from its saved config, queried by text and by image, all equal to edgeclip in-process."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from skips import clients_python

import edgeclip

ROOT = Path(__file__).resolve().parents[2]


def cosine_distances(rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    return 1 - rows @ query / np.linalg.norm(rows, axis=1) / np.linalg.norm(query)


def test_a_persisted_collection_embeds_and_queries_like_edgeclip(tiny_bundle: Path, tmp_path: Path) -> None:
    python = clients_python()
    for i in range(3):
        ramp = np.add.outer(np.arange(60), np.arange(80))[..., None] * np.array([1, 2, 3]) + i * 53
        Image.fromarray((ramp % 256).astype(np.uint8)).save(tmp_path / f"p{i}.png")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    env.update(PYTHONPATH=str(ROOT), ANONYMIZED_TELEMETRY="False")  # edgeclip from this checkout; Chroma's telemetry off
    run = subprocess.run([python, str(ROOT / "tests" / "integrations" / "chroma_run.py"), str(tiny_bundle), str(tmp_path),
                          str(tmp_path / "out.json")], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())

    model = edgeclip.load(tiny_bundle)
    images = [tmp_path / f"p{i}.png" for i in range(3)]
    rows = np.concatenate([model.encode_text(got["texts"]), model.encode_image(images)])
    assert got["ids"] == ["t0", "t1", "t2", "i0", "i1", "i2"]
    np.testing.assert_allclose(np.array(got["embeddings"]), rows, atol=1e-5)  # stored as float32 by Chroma
    np.testing.assert_allclose(np.array(got["mixed"]), np.concatenate([model.encode_text(["a mixed call"]),
                                                                       model.encode_image(images[:1])]), atol=1e-6)
    assert got["function"]["name"] == "edgeclip" and got["config"]["bundle"] == str(tiny_bundle)
    assert got["space"] == "cosine"
    task = "retrieval.query" if "retrieval.query" in model.manifest.text.task_prefixes else None
    for (ids, distances), query in ((got["by_text"], model.encode_text(["a red bicycle"], task=task)[0]),
                                    (got["by_image"], model.encode_image(images[1:2])[0])):
        want = cosine_distances(rows, query)
        np.testing.assert_allclose(distances, np.sort(want), atol=1e-4)  # HNSW over 6 rows: exact here
        np.testing.assert_allclose([want[got["ids"].index(i)] for i in ids], distances, atol=1e-4)
