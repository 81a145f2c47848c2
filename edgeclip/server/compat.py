"""Other servers' embedding protocols on the same engine, for tools that speak only those.

- Ollama's `POST /api/embed` (Open WebUI, n8n, ...): texts only, `{"model", "input", "truncate", "dimensions"}`
  -> `{"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}`, plus `/api/tags` and
  `/api/version`, which those tools call to list models and check the connection.
- Weaviate's `multi2vec-clip` inference API (`CLIP_INFERENCE_API` / `inferenceUrl`): `POST /vectorize
  {"texts", "images"}` -> `{"textVectors", "imageVectors"}`, `GET /meta`, `GET /.well-known/live|ready` (204).

Each route turns its body into the engine's items and options, so the API key, the body and item limits,
the batcher and the metrics are those of /v1/embeddings, and the vectors are the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timezone
from typing import Any, Union

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from .. import __version__
from .config import ServerConfig
from .engine import Embedded, Engine
from .errors import ApiError
from .items import IMAGE_DATA_URI, Options, dimensions_option, finish, parse_items
from .schema import EmbeddingsRequest, ImageInput, TextInput

OLLAMA_PATHS = frozenset({"/api/embed", "/api/tags", "/api/version"})
WEAVIATE_PATHS = frozenset({"/vectorize", "/meta", "/.well-known/live", "/.well-known/ready"})
PROBE_PATHS = frozenset({"/.well-known/live", "/.well-known/ready"})  # a container's health probes: no key


class OllamaEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # keep_alive, options: nothing to keep alive or tune here

    model: str = Field(description="a name this server runs (an Ollama tag such as ':latest' is ignored)")
    input: Union[str, list[str]] = Field(description="a text or a list of texts (images: /v1/embeddings)")
    truncate: bool = Field(True, description="cut texts over the token limit (Ollama's default) instead of a 400")
    dimensions: Union[StrictInt, None] = Field(None, description="keep the first N dimensions, then L2-normalize")


class VectorizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    texts: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list, description="base64 image bytes")


def _model(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


def _options(truncate: bool, dimensions: int | None = None) -> Options:
    return Options(types=("float",), as_dict=False, dimensions=dimensions, normalized=True, task=None, truncate=truncate)


def _json(payload: dict[str, Any]) -> Response:
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def add_compat_routes(app: FastAPI, engine: Engine, config: ServerConfig,
                      unless_disconnected: Callable[[Coroutine[Any, Any, Embedded], Request], Awaitable[Embedded]]) -> None:
    """unless_disconnected(work, request): the app's wrapper that drops a request's queued items when its client
    hangs up, as /v1/embeddings does."""
    def served_name(name: str) -> str:
        untagged = name.strip().removesuffix(":latest")
        if untagged not in engine.model_names:
            raise ApiError(404, "model_not_found", f"model {name!r} not found: this server runs "
                           f"{', '.join(engine.model_names)} (start it with --served-model-name NAME to answer to another)")
        return untagged

    @app.post("/api/embed", tags=["ollama"])
    async def ollama_embed(request: Request) -> Response:
        started = time.perf_counter_ns()
        body: OllamaEmbedRequest = _model(OllamaEmbedRequest, await request.body())
        name = served_name(body.model)
        texts = [body.input] if isinstance(body.input, str) else body.input
        for index, text in enumerate(texts):
            if IMAGE_DATA_URI.match(text):
                raise ApiError(400, "images_not_supported", f"input[{index}] is an image: Ollama's /api/embed takes texts "
                               "only; send images to /v1/embeddings ({\"input\": [{\"image\": ...}]})")
        items = parse_items(EmbeddingsRequest(model=name, input=[TextInput(text=t) for t in texts]), config.limits)
        request.state.items = len(items)
        options = _options(body.truncate, dimensions_option(body.dimensions, engine.output_dim))
        done = await unless_disconnected(engine.embed(items, options), request)
        rows = finish(done.rows, options)
        return _json({"model": body.model, "embeddings": rows, "total_duration": time.perf_counter_ns() - started,
                      "load_duration": 0, "prompt_eval_count": done.text_tokens})

    @app.get("/api/tags", tags=["ollama"])
    async def ollama_tags() -> dict[str, Any]:
        manifest = config.bundle / "manifest.json"
        modified = datetime.fromtimestamp(manifest.stat().st_mtime, timezone.utc).isoformat()
        details = {"format": "onnx", "family": "jina-clip-v2", "families": ["jina-clip-v2"],
                   "quantization_level": engine.model.variant_name("text") if "text" in engine.towers else ""}
        return {"models": [{"name": name, "model": name, "modified_at": modified, "size": 0, "digest": "",
                            "details": details} for name in engine.model_names]}

    @app.get("/api/version", tags=["ollama"])
    async def ollama_version() -> dict[str, str]:
        return {"version": __version__}

    @app.post("/vectorize", tags=["weaviate"])
    async def weaviate_vectorize(request: Request) -> Response:
        body: VectorizeRequest = _model(VectorizeRequest, await request.body())
        inputs = [TextInput(text=t) for t in body.texts] + [ImageInput(image=i) for i in body.images]
        if not inputs:
            return _json({"textVectors": [], "imageVectors": []})
        items = parse_items(EmbeddingsRequest(input=inputs), config.limits)
        request.state.items = len(items)
        # a vectorizer is not where a long text should fail an import: cut it to the limit, as Weaviate's own does
        options = _options(truncate=True)
        rows = finish((await unless_disconnected(engine.embed(items, options), request)).rows, options)
        return _json({"textVectors": rows[: len(body.texts)], "imageVectors": rows[len(body.texts):]})

    @app.get("/meta", tags=["weaviate"])
    async def weaviate_meta() -> dict[str, Any]:
        return {"model": {"name": engine.model_names[0], "dimensions": engine.output_dim, "towers": list(engine.towers),
                          "runtime": f"edgeclip {__version__}"}}

    @app.get("/.well-known/live", status_code=204, tags=["weaviate"])
    async def weaviate_live() -> Response:
        return Response(status_code=204)

    @app.get("/.well-known/ready", status_code=204, tags=["weaviate"])
    async def weaviate_ready() -> Response:
        return Response(status_code=204 if engine.ready.is_set() else 503)
