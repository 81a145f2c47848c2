"""Hostile clients: auth bypass attempts, oversized and malformed bodies, slow bodies, base64 bombs,
overload, SSRF probes, and schemathesis against the app's own OpenAPI document. Loopback only;
every loop is bounded in count and time."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from edgeclip.fetch import FetchPolicy
from edgeclip.server import Limits

KEY = "s3cret-key"


def post(base: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(f"{base}/v1/embeddings", json=body, timeout=60, **kwargs)


def raw_request(base: str, head: str, body: bytes = b"", *, drip: float = 0.0, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side path clean-up); with drip, one byte per `drip` seconds."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        try:
            for i in range(len(body)) if drip else ():
                sock.sendall(body[i:i + 1])
                time.sleep(drip)
            if not drip:
                sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


def assert_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["detail"] and body["request_id"] == response.headers["x-request-id"]
    return body


# ---- auth ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed(serve: Any, tiny_bundle: Path) -> Any:
    with serve(tiny_bundle, api_key=KEY) as base:
        yield base


def test_with_a_key_only_the_bearer_header_opens_the_api(keyed: str) -> None:
    good = {"Authorization": f"Bearer {KEY}"}
    assert post(keyed, {"input": "hi"}, headers=good).status_code == 200
    assert post(keyed, {"input": "hi"}, headers={"Authorization": f"bearer {KEY}"}).status_code == 200  # RFC 7235: case-insensitive
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {KEY}x"},
                    {"Authorization": f"Bearer {KEY[:-1]}"}, {"Authorization": KEY}, {"Authorization": f"Token {KEY}"},
                    {"Authorization": "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()},
                    {"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY.upper()}"}):
        body = assert_error(post(keyed, {"input": "hi"}, headers=headers), 401, "unauthorized")
        assert "Authorization: Bearer" in body["detail"]
    assert_error(requests.post(f"{keyed}/v1/embeddings?api_key={KEY}", json={"input": "hi"}, timeout=10), 401, "unauthorized")


def test_health_and_live_stay_open_and_metrics_needs_the_key(keyed: str) -> None:
    assert requests.get(f"{keyed}/health", timeout=10).status_code == 200
    assert requests.get(f"{keyed}/live", timeout=10).status_code == 200
    for path in ("/metrics", "/ready", "/v1/models", "/openapi.json"):
        assert_error(requests.get(f"{keyed}{path}", timeout=10), 401, "unauthorized")
    assert requests.get(f"{keyed}/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/health/../metrics", "/live/../v1/models", "//metrics", "/metrics/", "/HEALTH",
                                  "/health%2f..%2fmetrics", "/metrics?/health", "/health/"])
def test_path_tricks_do_not_skip_the_key(keyed: str, path: str) -> None:
    status, body = raw_request(keyed, f"GET {path} HTTP/1.1\nHost: x\nConnection: close\n")
    assert status in (401, 404), (status, body)
    assert b"edgeclip_requests" not in body and b"jina-clip-v2" not in body


# ---- bodies --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tight(serve: Any, tiny_bundle: Path) -> Any:
    limits = Limits(max_items=100, max_body_bytes=200_000, max_image_bytes=50_000, body_timeout_s=1.0, max_queue=2)
    with serve(tiny_bundle, limits=limits, max_wait_ms=1000) as base:
        yield base


def test_oversized_bodies_are_a_413_with_or_without_content_length(tight: str) -> None:
    big = json.dumps({"input": ["x" * 1000] * 250}).encode()
    assert_error(requests.post(f"{tight}/v1/embeddings", data=big, timeout=10), 413, "body_too_large")
    chunked = requests.post(f"{tight}/v1/embeddings", data=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]), timeout=10)
    assert_error(chunked, 413, "body_too_large")
    status, _ = raw_request(tight, "POST /v1/embeddings HTTP/1.1\nHost: x\nContent-Length: 99999999999\nConnection: close\n")
    assert status == 413


def test_ten_thousand_items_are_a_413(server: str) -> None:
    body = assert_error(post(server, {"input": ["a"] * 10_000}), 413, "too_many_items")
    assert "2048" in body["detail"]


def test_a_slow_body_is_cut_off_with_a_408(tight: str) -> None:
    body = json.dumps({"input": "slow"}).encode()
    started = time.monotonic()
    status, answer = raw_request(tight, f"POST /v1/embeddings HTTP/1.1\nHost: x\nContent-Length: {len(body)}\n"
                                        "Content-Type: application/json\nConnection: close\n", body, drip=0.25)
    assert status == 408 and json.loads(answer)["code"] == "body_timeout"
    assert time.monotonic() - started < 8  # the 1 s deadline, not the whole drip


@pytest.mark.parametrize("payload", [b"{", b"not json", b"\xff\xfe\x00", b"[]", b'"input"', b"null", b"{}",
                                     b'{"input": 5}', b'{"input": [5]}', b'{"input": [{"image": 5}]}',
                                     b'{"input": [{"foo": "bar"}]}', b'{"input": [{"text": "a", "image": "b"}]}',
                                     b'{"input": "x", "dimensions": NaN}', b'{"input": "x", "embedding_type": "int4"}',
                                     b'{"input": "x", "normalized": "maybe"}', b'{"input": []}',
                                     b'{"input": ["\\ud800"]}', b'{"input": [{"text": "\\udfff"}]}',
                                     b'[' * 100_000, b'{"input": ' + b'[' * 5000 + b']' * 5000 + b'}'])
def test_malformed_bodies_are_a_4xx_in_jinas_shape(server: str, payload: bytes) -> None:
    response = requests.post(f"{server}/v1/embeddings", data=payload, headers={"Content-Type": "application/json"}, timeout=30)
    # 100,000 nested arrays hold more JSON values than 2,048 inputs need: refused before parsing
    assert response.status_code in ((400, 422) if len(payload) < 5000 else (400, 413, 422)), response.text[:500]
    body = response.json()
    assert body["detail"] and body["code"] and body["request_id"]
    assert body["error"]["message"] == body["detail"] and body["error"]["code"] == body["code"]
    if response.status_code == 422:
        assert all({"field", "input", "message", "type"} <= set(e) for e in body["errors"])


def test_a_body_without_a_content_type_is_read_as_json(server: str) -> None:  # what `curl -d` sends
    response = requests.post(f"{server}/v1/embeddings", data=b'{"input": "hi"}',
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert response.status_code == 200


def test_base64_garbage_and_bombs_are_a_422_naming_the_item(server: str, tight: str, images: dict[str, bytes],
                                                           png_claiming: Any) -> None:
    bomb = base64.b64encode(png_claiming(60_000, 60_000)).decode()
    cases = {"!!! not base64 !!!": "base64_invalid", base64.b64encode(b"just some text, not an image").decode(): "image_unreadable",
             bomb: "image_unreadable", "data:image/png;base64," + bomb: "image_unreadable",
             "data:image/png;base64,%%%": "image_unreadable",
             base64.b64encode(images["/photo.png"][:60]).decode(): "image_unreadable"}
    for value, kind in cases.items():
        started = time.monotonic()
        response = post(server, {"input": ["fine text", {"image": value}]})
        body = assert_error(response, 422, "invalid_input")
        assert body["detail"].startswith("input[1]") and body["errors"][0]["type"] == kind, body
        assert time.monotonic() - started < 5  # judged from the header: nothing the size of the claim is allocated
    assert "pixels" in post(server, {"input": [{"image": bomb}]}).json()["detail"]
    oversized = base64.b64encode(b"\x89PNG" + b"\x00" * 60_000).decode()
    assert_error(post(tight, {"input": [{"bytes": oversized}]}), 413, "image_too_large")


def test_overload_is_a_429_at_once_with_retry_after(serve: Any, tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeclip.server import engine as engine_module

    armed, entered, release = threading.Event(), threading.Event(), threading.Event()
    run_text = engine_module.Engine._run_text

    def held(self: Any, rows: Any) -> Any:  # once armed, holds the inference thread: queued items stay queued
        if armed.is_set():
            entered.set()
            release.wait(30)
        return run_text(self, rows)

    monkeypatch.setattr(engine_module.Engine, "_run_text", held)
    with serve(tiny_bundle, limits=Limits(max_queue=2), max_batch=2) as base:
        armed.set()  # after the warm-up
        answers: list[requests.Response] = []
        first = threading.Thread(target=lambda: answers.append(post(base, {"input": ["one", "two"]})))
        first.start()
        assert entered.wait(10)  # its batch is on the (held) inference thread
        deadline = time.monotonic() + 10
        queued = threading.Thread(target=lambda: answers.append(post(base, {"input": ["three", "four"]})))
        queued.start()  # waits in the queue: depth 2, the limit
        while 'edgeclip_queue_depth{tower="text"} 2.0' not in requests.get(f"{base}/metrics", timeout=10).text:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        refused = post(base, {"input": ["five"]})
        assert time.monotonic() - started < 5  # answered at once, not after the held batch (30 s) or a timeout
        assert_error(refused, 429, "overloaded")
        assert int(refused.headers["Retry-After"]) >= 1
        release.set()
        first.join(30)
        queued.join(30)
        assert [a.status_code for a in answers] == [200, 200]
        assert post(base, {"input": ["x"] * 50}).status_code == 200  # a request larger than the queue is admitted whole


# ---- URLs ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict(serve: Any, tiny_bundle: Path) -> Any:
    """--fetch-urls with no --allow-host: public addresses only (and `localhost` for the redirect probe)."""
    with serve(tiny_bundle, fetch=FetchPolicy(allow_hosts=("localhost",), timeout_s=2)) as base:
        yield base


def test_urls_are_off_unless_asked_for(serve: Any, tiny_bundle: Path, image_host: str) -> None:
    with serve(tiny_bundle) as base:
        body = assert_error(post(base, {"input": [{"image": f"{image_host}/photo.png"}]}), 422, "invalid_input")
        assert "--fetch-urls" in body["detail"] and body["errors"][0]["type"] == "url_fetch_disabled"


def test_ssrf_probes_are_refused_before_any_connection(strict: str, image_host: str, image_hits: list[str]) -> None:
    port = image_host.rsplit(":", 1)[1]
    probes = [f"http://127.0.0.1:{port}/photo.png", f"http://[::1]:{port}/photo.png", f"http://0.0.0.0:{port}/photo.png",
              "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/",
              "http://10.0.0.1/x.png", "http://172.16.0.1/x.png", "http://192.168.1.1/x.png", "http://100.64.0.1/x.png",
              f"http://[::ffff:127.0.0.1]:{port}/photo.png", f"http://[::ffff:7f00:1]:{port}/photo.png",
              "http://[::ffff:169.254.169.254]/", "http://[64:ff9b::a9fe:a9fe]/", f"http://2130706433:{port}/photo.png",
              f"http://0x7f000001:{port}/photo.png", f"HTTP://127.0.0.1:{port}/photo.png", "http://224.0.0.1/x.png",
              f"http://127.1:{port}/photo.png", f"http://user@127.0.0.1:{port}/photo.png"]
    for url in probes:
        before = len(image_hits)
        body = assert_error(post(strict, {"input": [{"image": url}]}), 422, "invalid_input")
        assert "refused" in body["detail"] or "resolve" in body["detail"], (url, body)
        assert len(image_hits) == before, url  # nothing reached the image host
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x.png", "gopher://127.0.0.1:70/", "dict://127.0.0.1:11211/"):
        body = assert_error(post(strict, {"input": [{"image": url}]}), 422, "invalid_input")
        assert body["errors"][0]["type"] == "unsupported_scheme", (url, body)


def test_a_redirect_to_a_private_address_is_refused(strict: str, image_host: str, image_hits: list[str]) -> None:
    port = image_host.rsplit(":", 1)[1]
    allowed = f"http://localhost:{port}"  # localhost is allow-listed on this server; 127.0.0.1 is not
    assert post(strict, {"input": [{"image": f"{allowed}/photo.png"}]}).status_code == 200
    for target in (f"http://127.0.0.1:{port}/photo.png", "http://169.254.169.254/", "file:///etc/passwd"):
        before = len(image_hits)
        body = assert_error(post(strict, {"input": [{"image": f"{allowed}/redirect?to={target}"}]}), 422, "invalid_input")
        assert image_hits[before:] == [f"/redirect?to={target}"], body  # the redirect was not followed
    bomb = assert_error(post(strict, {"input": [{"image": f"{allowed}/bomb.png"}]}), 422, "invalid_input")
    assert "pixels" in bomb["detail"]


# ---- the OpenAPI document, fuzzed ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_server_errors(server: str, mode: str) -> None:
    """Every operation in /openapi.json, fuzzed with valid (positive) and invalid (negative) requests."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/embeddings", "GET /v1/models", "GET /metrics"}
    if mode == "negative":  # only the POST has inputs to get wrong
        operations = [op for op in operations if op.label == "POST /v1/embeddings"]
    checked = []
    for operation in operations:
        examples = 80 if operation.label == "POST /v1/embeddings" else 10

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(schemathesis.GenerationMode(mode)))
        def fuzz(case: Any) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500, (case.body, response.text[:500])
            checked.append(response.status_code)

        fuzz()
    assert len(checked) >= len(operations)  # the fuzzer really sent requests
