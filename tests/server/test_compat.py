"""Ollama's /api/embed (through the real `ollama` client) and Weaviate's multi2vec-clip inference API, each
against the in-process model, behind the same key and metrics as /v1/embeddings."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import edgeclip

ollama = pytest.importorskip("ollama")

TOL = 1e-6
TEXTS = ["a red bicycle", "ein rotes Fahrrad", "une bicyclette rouge sous la pluie de novembre"]


def test_ollama_client_embeds_what_edgeclip_does(server: str, model: edgeclip.EdgeClip) -> None:
    client = ollama.Client(host=server)
    answer = client.embed(model="jina-clip-v2", input=TEXTS)
    np.testing.assert_allclose(np.array(answer.embeddings), model.encode_text(TEXTS), atol=TOL)
    assert answer.model == "jina-clip-v2" and answer.prompt_eval_count > len(TEXTS) and answer.total_duration > 0
    one = client.embed(model="jina-clip-v2:latest", input=TEXTS[0], dimensions=32)  # Ollama's tag; Matryoshka width
    np.testing.assert_allclose(np.array(one.embeddings), model.encode_text([TEXTS[0]], truncate_dim=32), atol=TOL)


def test_ollama_errors_name_the_problem(server: str) -> None:
    client = ollama.Client(host=server)
    with pytest.raises(ollama.ResponseError) as unknown:
        client.embed(model="llama3", input="hi")
    assert unknown.value.status_code == 404 and "jina-clip-v2" in str(unknown.value)
    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model="jina-clip-v2", input=["a text", image])
    assert refused.value.status_code == 400 and "/v1/embeddings" in str(refused.value)
    with pytest.raises(ollama.ResponseError) as too_long:
        client.embed(model="jina-clip-v2", input="word " * 9000, truncate=False)
    assert too_long.value.status_code == 422 and "truncate" in str(too_long.value)
    assert len(client.embed(model="jina-clip-v2", input="word " * 9000).embeddings) == 1  # truncate: Ollama's default


def test_ollama_listing_routes(server: str) -> None:
    names = [m.model for m in ollama.Client(host=server).list().models]
    assert "jina-clip-v2" in names
    assert requests.get(f"{server}/api/version", timeout=10).json()["version"] == edgeclip.__version__


def test_weaviate_vectorize_meta_and_probes(server: str, model: edgeclip.EdgeClip, make_png: Any, tmp_path: Path) -> None:
    photos = [make_png(64, 48, 1), make_png(30, 90, 2, "JPEG")]
    body = {"texts": TEXTS[:2], "images": [base64.b64encode(p).decode() for p in photos]}
    answer = requests.post(f"{server}/vectorize", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    vectors = answer.json()
    np.testing.assert_allclose(np.array(vectors["textVectors"]), model.encode_text(TEXTS[:2]), atol=TOL)
    for i, photo in enumerate(photos):
        (tmp_path / f"{i}.img").write_bytes(photo)
    np.testing.assert_allclose(np.array(vectors["imageVectors"]), model.encode_image([tmp_path / "0.img", tmp_path / "1.img"]), atol=TOL)
    assert requests.post(f"{server}/vectorize", json={"texts": ["only a text"]}, timeout=60).json()["imageVectors"] == []
    assert requests.post(f"{server}/vectorize", json={}, timeout=60).json() == {"textVectors": [], "imageVectors": []}
    broken = requests.post(f"{server}/vectorize", json={"images": ["not base64!"]}, timeout=60)
    assert broken.status_code == 422 and "base64" in broken.json()["detail"]
    assert requests.get(f"{server}/meta", timeout=10).json()["model"]["dimensions"] == model.manifest.embed_dim
    for probe in ("live", "ready"):
        assert requests.get(f"{server}/.well-known/{probe}", timeout=10).status_code == 204


def test_the_api_key_and_metrics_cover_the_new_routes(tiny_bundle: Path, serve: Any) -> None:
    key = "s3cret-key-for-tests"
    with serve(tiny_bundle, api_key=key) as base:
        assert requests.post(f"{base}/vectorize", json={"texts": ["x"]}, timeout=10).status_code == 401
        assert requests.post(f"{base}/api/embed", json={"model": "jina-clip-v2", "input": "x"}, timeout=10).status_code == 401
        assert requests.get(f"{base}/.well-known/ready", timeout=10).status_code == 204  # a container's probe: no key
        keyed = ollama.Client(host=base, headers={"Authorization": f"Bearer {key}"})
        assert len(keyed.embed(model="jina-clip-v2", input=["x", "y"]).embeddings) == 2
        metrics = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10).text
    assert 'path="/api/embed",status="200"' in metrics and 'path="/vectorize",status="401"' in metrics


def test_weaviate_multi2vec_jinaai_request_shape(server: str, model: edgeclip.EdgeClip, make_png: Any, tmp_path: Path) -> None:
    """Weaviate's other route: multi2vec-jinaai with baseURL pointed here posts texts first, then images as
    {"image": raw base64}, embedding_type float and dimensions, and reads data[].embedding by position."""
    photo = make_png(50, 40, 3)
    (tmp_path / "photo.png").write_bytes(photo)
    body = {"model": "jina-clip-v2", "input": [{"text": TEXTS[0]}, {"image": base64.b64encode(photo).decode()}],
            "embedding_type": "float", "dimensions": 32, "normalized": True}
    answer = requests.post(f"{server}/v1/embeddings", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    np.testing.assert_allclose(data[0]["embedding"], model.encode_text([TEXTS[0]], truncate_dim=32)[0], atol=TOL)
    np.testing.assert_allclose(data[1]["embedding"], model.encode_image([tmp_path / "photo.png"], truncate_dim=32)[0], atol=TOL)
    broken = requests.post(f"{server}/v1/embeddings", json={**body, "input": [{"image": "not base64!"}]}, timeout=60)
    assert broken.status_code == 422 and "base64" in broken.json()["detail"]  # Weaviate shows `detail`
