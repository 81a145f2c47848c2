"""The embeddings API's options, shapes and endpoints, each checked against the in-process model."""

from __future__ import annotations

import base64
import concurrent.futures
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import edgeclip

TOL = 1e-6
TEXTS = ["a red bicycle", "ein rotes Fahrrad", "une bicyclette rouge sous la pluie de novembre"]


def post(server: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(f"{server}/v1/embeddings", json=body, timeout=60, **kwargs)


def vectors(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def raw_text(model: edgeclip.EdgeClip, texts: list[str], task: str | None = None) -> np.ndarray:
    return model.run_tokens([t.ids for t in model.tokenize(texts, task=task)])


def data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


@pytest.mark.parametrize("kind", ["float", "base64", "binary", "ubinary"])
def test_every_embedding_type(server: str, model: edgeclip.EdgeClip, kind: str) -> None:
    response = post(server, {"model": "jina-clip-v2", "input": TEXTS, "embedding_type": kind})
    assert response.status_code == 200, response.text
    values = [d["embedding"] for d in response.json()["data"]]
    floats = model.encode_text(TEXTS)
    if kind == "float":
        np.testing.assert_allclose(values, floats, atol=TOL)
    elif kind == "base64":  # little-endian float32, as OpenAI's and Jina's clients decode it
        decoded = np.array([np.frombuffer(base64.b64decode(v), dtype="<f4") for v in values])
        np.testing.assert_allclose(decoded, floats, atol=TOL)
    else:  # 8 dims per value: int8 for binary (offset -128), uint8 for ubinary
        assert np.array_equal(np.array(values), model.encode_text(TEXTS, precision=kind))
        assert len(values[0]) == floats.shape[1] // 8


def test_a_list_of_types_gives_each_item_a_dict(server: str, model: edgeclip.EdgeClip) -> None:
    body = post(server, {"input": TEXTS[:2], "embedding_type": ["ubinary", "float"]}).json()
    first = body["data"][0]["embedding"]
    assert set(first) == {"ubinary", "float"}
    np.testing.assert_allclose([d["embedding"]["float"] for d in body["data"]], model.encode_text(TEXTS[:2]), atol=TOL)
    assert first["ubinary"] == model.encode_text(TEXTS[:1], precision="ubinary")[0].tolist()


def test_encoding_type_and_openais_encoding_format_are_aliases(server: str) -> None:
    expected = vectors(post(server, {"input": TEXTS, "embedding_type": "float"}))
    np.testing.assert_array_equal(vectors(post(server, {"input": TEXTS, "encoding_type": "float"})), expected)
    b64 = post(server, {"input": TEXTS, "encoding_format": "base64"}).json()["data"][0]["embedding"]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(b64), "<f4"), expected[0])
    clash = post(server, {"input": TEXTS, "embedding_type": "float", "encoding_format": "base64"})
    assert clash.status_code == 422 and "disagree" in clash.json()["detail"]


@pytest.mark.parametrize("dimensions", [16, "16", " 48 ", 64, "5"])
def test_dimensions_slice_then_normalize(server: str, model: edgeclip.EdgeClip, dimensions: int | str) -> None:
    n = int(str(dimensions).strip())
    got = vectors(post(server, {"input": TEXTS, "dimensions": dimensions}))
    np.testing.assert_allclose(got, unit(raw_text(model, TEXTS)[:, :n]), atol=TOL)


@pytest.mark.parametrize("dimensions", [0, 65, "abc", "1e3", "", True, -3, 2.5])
def test_bad_dimensions_are_a_422_naming_the_field(server: str, dimensions: Any) -> None:
    response = post(server, {"input": TEXTS, "dimensions": dimensions})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["field"] == "dimensions" and body["request_id"] == response.headers["x-request-id"]


def test_normalized_false_returns_the_raw_rows(server: str, model: edgeclip.EdgeClip, images: dict[str, bytes]) -> None:
    got = vectors(post(server, {"input": TEXTS, "normalized": False}))
    np.testing.assert_allclose(got, raw_text(model, TEXTS), atol=TOL)
    sliced = vectors(post(server, {"input": [{"image": data_uri(images["/photo.png"])}], "normalized": False, "dimensions": 32}))
    raw_image = model.run_pixels(model.image_pixels(images["/photo.png"])[None])
    np.testing.assert_allclose(sliced, raw_image[:, :32], atol=TOL)


def test_only_retrieval_query_adds_the_query_instruction(server: str, model: edgeclip.EdgeClip) -> None:
    plain = model.encode_text(TEXTS)
    query = vectors(post(server, {"input": TEXTS, "task": "retrieval.query"}))
    np.testing.assert_allclose(query, model.encode_text(TEXTS, task="retrieval.query"), atol=TOL)
    assert not np.allclose(query, plain, atol=1e-3)  # the instruction changes what the model sees
    for task in (None, "retrieval.passage", "text-matching", "classification", "separation"):
        np.testing.assert_allclose(vectors(post(server, {"input": TEXTS, "task": task})), plain, atol=TOL)
    unknown = post(server, {"input": TEXTS, "task": "retrieval.querry"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "task"


def test_mixed_lists_keep_their_order(server: str, model: edgeclip.EdgeClip, images: dict[str, bytes]) -> None:
    photo, other = images["/photo.png"], images["/other.png"]
    body = {"input": ["plain string", {"image": data_uri(photo)}, {"text": "a text object"},
                      {"image": base64.b64encode(other).decode()}, {"bytes": base64.b64encode(photo).decode()}]}
    got = vectors(post(server, body))
    texts = model.encode_text(["plain string", "a text object"])
    pictures = model.encode_image([photo, other, photo])
    np.testing.assert_allclose(got, np.vstack([texts[0], pictures[0], texts[1], pictures[1], pictures[2]]), atol=TOL)
    assert post(server, {"input": "one string"}).json()["data"][0]["index"] == 0


def test_an_item_embeds_the_same_alone_or_in_a_busy_batch(server: str, images: dict[str, bytes]) -> None:
    """The int8 graphs use per-row activation scales: batch-mates (and their padding) cannot move a row."""
    target = "the same query, alone or not"
    alone = vectors(post(server, {"input": [target]}))[0]
    crowd = [f"{'long ' * (i * 7)}filler text number {i}" for i in range(31)]
    in_batch = vectors(post(server, {"input": [*crowd[:13], target, *crowd[13:]]}))[13]
    np.testing.assert_allclose(in_batch, alone, atol=TOL)
    photo = {"image": data_uri(images["/photo.png"])}
    image_alone = vectors(post(server, {"input": [photo]}))[0]
    noise = [{"image": data_uri(images[p])} for p in ("/other.png", "/id/84/1280/848.jpg", "/other.png")]
    np.testing.assert_allclose(vectors(post(server, {"input": [*noise, photo]}))[3], image_alone, atol=TOL)

    def busy(i: int) -> np.ndarray:  # concurrent requests share session calls through the batcher
        return vectors(post(server, {"input": [target] if i % 4 == 0 else crowd[i % 31: i % 31 + 3]}))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(busy, range(24)))
    for answer in answers[::4]:
        np.testing.assert_allclose(answer[0], alone, atol=TOL)


def test_over_long_texts_are_a_422_unless_truncate(serve: Any, tiny_bundle: Path, model: edgeclip.EdgeClip) -> None:
    from edgeclip.server import Limits

    long_text = "word " * 40
    with serve(tiny_bundle, limits=Limits(max_tokens=16)) as base:
        refused = post(base, {"input": ["short", long_text]})
        assert refused.status_code == 422
        body = refused.json()
        assert body["code"] == "input_too_long" and body["detail"].startswith("input[1]:")
        assert body["errors"][0]["field"] == "input[1]" and "truncate" in body["detail"]
        cut = vectors(post(base, {"input": ["short", long_text], "truncate": True}))
        np.testing.assert_allclose(cut, model.encode_text(["short", long_text], max_length=16), atol=TOL)


def test_usage_counts_text_tokens_and_image_tiles(server: str, model: edgeclip.EdgeClip, images: dict[str, bytes]) -> None:
    body = post(server, {"input": [*TEXTS, {"image": data_uri(images["/id/84/1280/848.jpg"])}]}).json()
    text_tokens = sum(len(t.ids) for t in model.tokenize(TEXTS))
    assert body["usage"] == {"prompt_tokens": text_tokens + 24_000, "total_tokens": text_tokens + 24_000,
                             "image_tokens": 24_000}


def test_models_health_live_ready_and_metrics(server: str, tiny_bundle: Path) -> None:
    models = requests.get(f"{server}/v1/models", timeout=10).json()
    names = [m["id"] for m in models["data"]]
    assert names[:2] == ["jina-clip-v2", "jinaai/jina-clip-v2"] and tiny_bundle.name in names
    assert requests.get(f"{server}/health", timeout=10).json()["status"] == "ok"
    assert requests.get(f"{server}/live", timeout=10).json() == {"status": "alive"}
    assert requests.get(f"{server}/ready", timeout=10).json() == {"status": "ready"}
    post(server, {"input": TEXTS})
    post(server, {"input": TEXTS, "dimensions": 0})
    text = requests.get(f"{server}/metrics", timeout=10).text
    for line in ('edgeclip_requests_total{path="/v1/embeddings",status="200"}',
                 'edgeclip_errors_total{code="invalid_request"}', 'edgeclip_items_total{tower="text"}',
                 'edgeclip_batch_size_count{tower="text"}', 'edgeclip_queue_depth{tower="text"}', "edgeclip_ready 1.0",
                 'edgeclip_request_seconds_bucket{le="0.005",path="/v1/embeddings"}'):
        assert line in text, line
    unknown = requests.get(f"{server}/v1/nothing-here", timeout=10)
    assert unknown.status_code == 404 and set(unknown.json()) == {"detail", "code", "request_id", "error"}
    assert requests.get(f"{server}/v1/embeddings", timeout=10).status_code == 405


def test_model_names_other_than_the_served_ones_are_refused(server: str) -> None:
    response = post(server, {"model": "text-embedding-3-small", "input": TEXTS})
    assert response.status_code == 422 and "jina-clip-v2" in response.json()["detail"]
