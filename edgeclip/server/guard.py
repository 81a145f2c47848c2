"""The pure ASGI layer every HTTP request passes before the app: request id, API key, the body read
within bounds (bytes, time, JSON values), the access log and the request metrics."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .api_docs import ASSET_PATHS, DOCS_PATH
from .body import Receive, Refusal, read_body
from .compat import OLLAMA_PATHS, PROBE_PATHS, WEAVIATE_PATHS
from .config import ServerConfig
from .errors import error_payload
from .metrics import Metrics

log = logging.getLogger("edgeclip.server")
OPEN_PATHS = frozenset({"/health", "/live"}) | PROBE_PATHS  # answered without the API key
PAGE_PATHS = frozenset({"/", "/v1/search", "/v1/thumbnail"})  # a browser's: the key also as Basic auth's password
KNOWN_PATHS = frozenset({"/v1/embeddings", "/v1/models", "/health", "/live", "/ready", "/metrics", "/openapi.json",
                         DOCS_PATH}) | PAGE_PATHS | ASSET_PATHS | OLLAMA_PATHS | WEAVIATE_PATHS

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Guard:
    """In front of the app. The body is read here in full (the app needs all of it to parse JSON), so a
    body over the size limit or with more values than --max-items inputs can hold is a 413 as soon as it
    is seen, and one that trickles in slower than the deadline is a 408."""

    def __init__(self, app: Any, config: ServerConfig, metrics: Metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics
        self.state = app.state  # tests and tools reach the engine through the guard too
        self._key = config.api_key.encode() if config.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id = uuid.uuid4().hex
        path = scope.get("path", "")
        status = {"code": 500}

        async def send_tracked(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            refusal = self._check_key(scope, path)
            body = None
            if refusal is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                body, refusal = await self._read_body(scope, receive)
                _as_json(scope)
            if refusal is not None:
                state["error_code"] = refusal.code
                headers = {"connection": "close"} if refusal.close else {}
                if refusal.status == 401:
                    headers["www-authenticate"] = 'Basic realm="edgeclip", charset="UTF-8"' if path in PAGE_PATHS else "Bearer"
                await _json(send_tracked, refusal.status, error_payload(refusal.status, refusal.code, refusal.detail,
                                                                        request_id), headers)
            elif body is not None:
                await self.app(scope, _replay(body, receive), send_tracked)
            else:
                await self.app(scope, receive, send_tracked)
        finally:
            self._record(scope, path, status["code"], time.perf_counter() - started)

    def _check_key(self, scope: Scope, path: str) -> Refusal | None:
        if self._key is None or path in OPEN_PATHS:
            return None
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key):
            return None
        if path in PAGE_PATHS and scheme.lower() == b"basic" and hmac.compare_digest(_basic_password(token), self._key):
            return None  # a browser on the search page: any user name, the key as the password
        return Refusal(401, "unauthorized", "missing or wrong API key: send the header 'Authorization: Bearer <key>'")

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, Refusal | None]:
        limits = self.config.limits
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and not declared.isdigit():
            return None, Refusal(400, "bad_request", "Content-Length is not a number", close=True)
        if declared is not None and int(declared) > limits.max_body_bytes:  # drained if a little over (a mistake)
            return None, Refusal(413, "body_too_large", f"the request body is over {limits.max_body_bytes} bytes; "
                                 "send fewer or smaller inputs", close=int(declared) > 2 * limits.max_body_bytes)
        return await read_body(receive, limits.max_body_bytes, limits.max_items, limits.body_timeout_s,
                               int(declared) if declared is not None else None)

    def _record(self, scope: Scope, path: str, status: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"  # unknown paths share one label: bounded cardinality
        state = scope.get("state", {})
        self.metrics.requests.labels(label, str(status)).inc()
        self.metrics.latency.labels(label).observe(seconds)
        if status >= 400:
            self.metrics.errors.labels(state.get("error_code", "http_error")).inc()
        log.info("%s %s %d items=%s %.1fms", scope.get("method"), path[:200], status, state.get("items", 0), seconds * 1e3)


def _basic_password(token: bytes) -> bytes:
    try:
        return base64.b64decode(token.strip(), validate=True).partition(b":")[2]
    except (binascii.Error, ValueError):
        return b""


def _as_json(scope: Scope) -> None:
    """The API takes only JSON: a body sent without its content type (`curl -d`) is read as JSON anyway."""
    headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
    scope["headers"] = [*headers, (b"content-type", b"application/json")]


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as Starlette expects

    return replay


async def _json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = orjson.dumps(body)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
