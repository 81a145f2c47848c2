"""What existing clients send, unchanged but for the URL: Jina's launch-post snippet, the OpenAI SDK,
LangChain's and LlamaIndex's Jina request shapes. Every answer equals the in-process model's to 1e-6."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import requests

import edgeclip

TOL = 1e-6


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_launch_post_snippet_works_with_only_the_url_changed(server: str, image_host: str, model: edgeclip.EdgeClip,
                                                                  images: dict[str, bytes]) -> None:
    # https://jina.ai/news/jina-clip-v2-... : requests.post(url, headers=headers, json=data). Only `url`
    # (and the image's host) change, and dimensions "768" -> "48": the test bundle is 64 wide.
    url = f"{server}/v1/embeddings"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer jina_local"}
    data = {
        "input": [{"text": "Bridge close-shot"}, {"url": f"{image_host}/id/84/1280/848.jpg"}],
        "model": "jina-clip-v2",
        "encoding_type": "float",
        "dimensions": "48",
    }
    response = requests.post(url, headers=headers, json=data, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == "jina-clip-v2"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    got = np.array([d["embedding"] for d in body["data"]])
    text = unit(model.encode_text(["Bridge close-shot"])[:, :48])
    image = unit(model.encode_image([images["/id/84/1280/848.jpg"]])[:, :48])
    np.testing.assert_allclose(got, np.vstack([text, image]), atol=TOL)
    # the launch post's price: 4,000 tokens per 512x512 tile, partial tiles counted: 3 x 2 tiles for 1280x848
    text_tokens = len(model.tokenize(["Bridge close-shot"])[0].ids)
    assert body["usage"] == {"prompt_tokens": text_tokens + 24_000, "total_tokens": text_tokens + 24_000,
                             "image_tokens": 24_000}


def test_the_openai_sdk_works_unchanged(server: str, model: edgeclip.EdgeClip) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    texts = ["a photo of a cat", "ein Foto einer Katze", "猫の写真"]
    # the SDK asks for encoding_format=base64 by default and decodes little-endian float32 itself
    response = client.embeddings.create(model="jina-clip-v2", input=texts)
    got = np.array([d.embedding for d in response.data])
    np.testing.assert_allclose(got, model.encode_text(texts), atol=TOL)
    assert [d.index for d in response.data] == [0, 1, 2]
    assert response.usage.prompt_tokens == sum(len(t.ids) for t in model.tokenize(texts))
    sliced = client.embeddings.create(model="jina-clip-v2", input="a photo of a cat", dimensions=32, encoding_format="float")
    np.testing.assert_allclose(np.array([sliced.data[0].embedding]), model.encode_text(["a photo of a cat"], truncate_dim=32),
                               atol=TOL)
    assert {m.id for m in client.models.list()} >= {"jina-clip-v2", "jinaai/jina-clip-v2"}


def test_langchain_jina_request_shapes(server: str, image_host: str, model: edgeclip.EdgeClip,
                                      images: dict[str, bytes]) -> None:
    # langchain_community.embeddings.JinaEmbeddings: {"input": [...], "model": ...}; images as {"url"} or {"bytes"}
    session = requests.Session()
    session.headers.update({"Authorization": "Bearer jina_local"})
    texts = session.post(f"{server}/v1/embeddings", json={"input": ["first doc", "second doc"], "model": "jina-clip-v2"},
                         timeout=60).json()
    np.testing.assert_allclose([d["embedding"] for d in texts["data"]], model.encode_text(["first doc", "second doc"]), atol=TOL)
    local = base64.b64encode(images["/photo.png"]).decode()
    answer = session.post(f"{server}/v1/embeddings", json={
        "input": [{"url": f"{image_host}/other.png"}, {"bytes": local}], "model": "jina-clip-v2"}, timeout=60).json()
    np.testing.assert_allclose([d["embedding"] for d in answer["data"]],
                               model.encode_image([images["/other.png"], images["/photo.png"]]), atol=TOL)


def test_llamaindex_jina_request_shapes(server: str, model: edgeclip.EdgeClip, tiny_bundle: Path,
                                        images: dict[str, bytes]) -> None:
    # llama_index.embeddings.jinaai: {"input": [...], "model": ..., "encoding_type": "float"|"binary"|"ubinary",
    # "task": ..., "dimensions": ...}; images as {"bytes": base64}
    query = {"input": ["where is the bridge"], "model": tiny_bundle.name, "encoding_type": "float",
             "task": "retrieval.query", "dimensions": 32}
    body = requests.post(f"{server}/v1/embeddings", json=query, timeout=60).json()
    expected = model.encode_text(["where is the bridge"], task="retrieval.query", truncate_dim=32)
    np.testing.assert_allclose([body["data"][0]["embedding"]], expected, atol=TOL)
    assert body["model"] == tiny_bundle.name  # the bundle's own name is accepted and echoed
    packed = requests.post(f"{server}/v1/embeddings", json={**query, "encoding_type": "ubinary", "task": None}, timeout=60).json()
    expected_bits = model.encode_text(["where is the bridge"], truncate_dim=32, precision="ubinary")
    assert packed["data"][0]["embedding"] == expected_bits[0].tolist()
    image = {"input": [{"bytes": base64.b64encode(images["/photo.png"]).decode()}], "model": "jina-clip-v2",
             "encoding_type": "binary"}
    bits = requests.post(f"{server}/v1/embeddings", json=image, timeout=60).json()["data"][0]["embedding"]
    assert bits == model.encode_image([images["/photo.png"]], precision="binary")[0].tolist()
