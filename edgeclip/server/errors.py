"""Errors every client can read: Jina's {"detail", "code", "request_id"} (422 adds "errors") and OpenAI's
{"error": {"message", "type", "param", "code"}} in the same body (the OpenAI SDK and LangChain read
`error.message`; Jina's clients read `detail`)."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("edgeclip.server")


class ApiError(Exception):
    """An error answered with its own status, code and message (never a traceback)."""

    def __init__(self, status: int, code: str, detail: str, *, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.errors, self.headers = status, code, detail, errors, headers


def invalid_item(index: int, field: str, message: str, value: Any = None, kind: str = "value_error") -> ApiError:
    """A 422 naming the item, with Jina's `errors` entry."""
    where = f"input[{index}]" if index >= 0 else "input"
    return ApiError(422, "invalid_input", f"{where}: {message}",
                    errors=[{"field": f"{where}.{field}" if field else where, "input": _short(value), "message": message, "type": kind}])


def error_payload(status: int, code: str, detail: str, request_id: str,
                  errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The one error body of every route and of the guard in front of them."""
    body: dict[str, Any] = {"detail": detail, "code": code, "request_id": request_id}
    if errors is not None:
        body["errors"] = errors
    body["error"] = {"message": detail, "type": openai_type(status), "param": errors[0]["field"] if errors else None,
                     "code": code}
    return body


def openai_type(status: int) -> str:
    """OpenAI's error `type` for a status, as its SDK and LangChain expect."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(request: Request, status: int, code: str, detail: str, errors: list[dict[str, Any]] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    request.state.error_code = code
    body = error_payload(status, code, detail, getattr(request.state, "request_id", ""), errors)
    return JSONResponse(body, status_code=status, headers=headers)


def _short(value: Any, limit: int = 200) -> Any:
    """Echo back short inputs only (a base64 image in an error body helps nobody), always as JSON values."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value[: limit + 1]).decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # NaN / Infinity are not JSON
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate cannot go out as UTF-8
        return value[:limit] + "..." if len(value) > limit else value
    if isinstance(value, (dict, list)):
        text = repr(value)
        return value if len(text) <= limit and _is_json(value) else text[:limit] + ("..." if len(text) > limit else "")
    return value if value is None or isinstance(value, (bool, int, float, str)) else repr(value)[:limit]


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return False
    return True


def _validation_errors(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for error in exc.errors()[:20]:
        location = [str(part) for part in error.get("loc", ()) if part != "body" and not _union_tag(part)]
        errors.append({"field": ".".join(location) or "body", "input": _short(error.get("input")),
                       "message": str(error.get("msg", "invalid")), "type": str(error.get("type", "value_error"))})
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return f"{first['field']}: {first['message']}", errors


def _union_tag(part: object) -> bool:
    """pydantic names the union member it tried in `loc` ("int", "TextInput", "list[...]"): not a field."""
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in ("int", "str", "bool", "float"))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_body(request, exc.status, exc.code, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return error_body(request, 400, "invalid_json", "the request body is not valid JSON; send "
                              '{"model": "jina-clip-v2", "input": [...]} with Content-Type: application/json')
        detail, errors = _validation_errors(exc)
        return error_body(request, 422, "invalid_request", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_body(request, exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail),
                          headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_body(request, 500, "internal_error", "the server failed on this request; the log has the details")
