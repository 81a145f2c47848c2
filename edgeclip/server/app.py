"""The FastAPI app: routes in Jina's and OpenAI's shapes, and the guard every request passes first.

FastAPI (on Starlette, served by uvicorn) because its pydantic models give the app an OpenAPI document
that clients and schemathesis read, and because it is what most Python model servers use.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from .. import __version__
from .api_docs import ASSET_PATHS, DOCS_PATH, add_docs_routes
from .config import ServerConfig
from .engine import Engine
from .errors import ApiError, install_handlers
from .items import embeddings, finish, parse_items, parse_options
from .metrics import Metrics
from .schema import EmbeddingsRequest, EmbeddingsResponse, ErrorBody, ModelList

log = logging.getLogger("edgeclip.server")
OPEN_PATHS = frozenset({"/health", "/live"})  # answered without the API key
PAGE_PATHS = frozenset({"/", "/v1/search", "/v1/thumbnail"})  # a browser's: the key also as Basic auth's password
KNOWN_PATHS = frozenset({"/v1/embeddings", "/v1/models", "/health", "/live", "/ready", "/metrics", "/openapi.json",
                         DOCS_PATH}) | PAGE_PATHS | ASSET_PATHS
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 401, 408, 413, 422, 429, 503)
}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def create_app(config: ServerConfig, engine: Engine | None = None) -> FastAPI:
    metrics = engine.metrics if engine is not None else Metrics()
    engine = engine or Engine(config, metrics)

    index = None
    if config.index is not None:
        from ..errors import InputError
        from ..index import Index

        if not config.index.is_file():
            raise InputError(f"--index {config.index}: no such index; make it with `edgeclip index {config.index} SOURCE... "
                             f"--bundle {config.bundle}`")
        index = Index(config.index, engine.model)  # refuses an index built with another bundle, before serving

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.stop)
        if index is not None:
            index.close()

    app = FastAPI(title="edgeclip", version=__version__, lifespan=lifespan, redoc_url=None, docs_url=None,
                  description="jina-clip-v2 text and image embeddings, served locally in Jina's API shape.")
    app.state.engine, app.state.metrics = engine, metrics
    install_handlers(app)
    add_docs_routes(app)

    @app.post("/v1/embeddings", response_model=EmbeddingsResponse, responses=ERRORS)
    async def create_embeddings(body: EmbeddingsRequest, request: Request) -> Response:
        model_name = body.model.strip()
        if model_name not in engine.model_names:
            raise ApiError(422, "invalid_request", f"model: unknown model {body.model!r}; this server runs "
                           f"{', '.join(engine.model_names)}",
                           errors=[{"field": "model", "input": body.model, "message": "unknown model", "type": "enum"}])
        items = parse_items(body, config.limits)
        request.state.items = len(items)
        options = parse_options(body, engine.output_dim)
        done = await engine.embed(items, options)
        rows = finish(done.rows, options)
        data = [{"object": "embedding", "index": i, "embedding": value} for i, value in enumerate(embeddings(rows, options))]
        total = done.text_tokens + done.image_tokens
        payload = {"object": "list", "model": model_name, "data": data,
                   "usage": {"prompt_tokens": total, "total_tokens": total, "image_tokens": done.image_tokens}}
        # orjson writes float32 rows in their shortest exact form: 20x faster than json and 35 % smaller
        return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS)
    async def list_models() -> dict[str, Any]:
        created = int(config.bundle.joinpath("manifest.json").stat().st_mtime)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "edgeclip"}
                                           for name in engine.model_names]}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if engine.ready.is_set() else ("error" if engine.load_error else "loading"),
                "version": __version__, "towers": list(engine.towers)}

    @app.get("/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/ready", responses={503: {"model": ErrorBody}})
    async def ready() -> dict[str, str]:
        if not engine.ready.is_set():
            raise ApiError(503, "not_ready", engine.load_error or "loading and warming the sessions",
                           headers={"Retry-After": "5"})
        return {"status": "ready"}

    @app.get("/metrics", responses={401: {"model": ErrorBody}})
    async def prometheus() -> Response:
        if engine.batcher is not None:
            for tower in engine.towers:
                metrics.queue_depth.labels(tower).set(engine.batcher.depth(tower))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    if index is not None:
        from .search import add_search_routes

        add_search_routes(app, index, engine.pool)
    return Guard(app, config, metrics)  # type: ignore[return-value]


class Guard:
    """Pure ASGI, in front of the app: request id, API key, body size and read deadline, access log, metrics.

    The body is read here in full (FastAPI would read it anyway to parse JSON), so a body over the
    limit is a 413 as soon as it is seen, and one that trickles in slower than the deadline is a 408.
    """

    def __init__(self, app: FastAPI, config: ServerConfig, metrics: Metrics) -> None:
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
                status_code, code, detail = refusal
                state["error_code"] = code
                challenge = 'Basic realm="edgeclip", charset="UTF-8"' if path in PAGE_PATHS else "Bearer"
                await _json(send_tracked, status_code, {"detail": detail, "code": code, "request_id": request_id},
                            {"www-authenticate": challenge} if status_code == 401 else None)
            elif body is not None:
                await self.app(scope, _replay(body, receive), send_tracked)
            else:
                await self.app(scope, receive, send_tracked)
        finally:
            self._record(scope, path, status["code"], time.perf_counter() - started)

    def _check_key(self, scope: Scope, path: str) -> tuple[int, str, str] | None:
        if self._key is None or path in OPEN_PATHS:
            return None
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key):
            return None
        if path in PAGE_PATHS and scheme.lower() == b"basic" and hmac.compare_digest(_basic_password(token), self._key):
            return None  # a browser on the search page: any user name, the key as the password
        return 401, "unauthorized", "missing or wrong API key: send the header 'Authorization: Bearer <key>'"

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes | None, tuple[int, str, str] | None]:
        limit = self.config.limits.max_body_bytes
        too_large = (413, "body_too_large", f"the request body is over {limit} bytes; send fewer or smaller inputs")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return None, too_large if declared.isdigit() else (400, "bad_request", "Content-Length is not a number")
        chunks: list[bytes] = []
        size = 0

        async def read_all() -> tuple[int, str, str] | None:
            nonlocal size
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return 400, "client_disconnected", "the client closed the connection before the body arrived"
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return too_large
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return None

        try:
            refusal = await asyncio.wait_for(read_all(), self.config.limits.body_timeout_s)
        except asyncio.TimeoutError:
            refusal = (408, "body_timeout", f"the request body took longer than {self.config.limits.body_timeout_s:g} s "
                       "to arrive")
        return (None, refusal) if refusal else (b"".join(chunks), None)

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


async def _json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})
