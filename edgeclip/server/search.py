"""`edgeclip serve BUNDLE --index DB`: a search page at `/`, its JSON endpoint and thumbnails.

Thumbnails are looked up by item id in the index, never by a path the client sends, so only indexed
images can be read. The page is one self-contained document (no outside assets: it works offline)
and builds every result with textContent / setAttribute, so file names and documents that hold
HTML stay text.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..errors import InputError
from ..index import Index
from ..index.gallery import THUMB_PX, thumbnail_bytes
from .errors import ApiError

PAGE = (Path(__file__).with_name("search_page.html")).read_text(encoding="utf-8")


def add_search_routes(app: FastAPI, index: Index, pool: Any) -> None:
    """`pool`: the executor that runs the query embedding and the search (never the event loop)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self'; "
                                           "style-src 'unsafe-inline'; script-src 'unsafe-inline'"})

    @app.get("/v1/search")
    async def search(q: str | None = Query(None, max_length=2000), image_id: str | None = Query(None, max_length=4096),
                     k: int = Query(24, ge=1, le=200), kind: str | None = Query(None, pattern="^(image|text)$")) -> JSONResponse:
        if (q is None) == (image_id is None):
            raise ApiError(422, "invalid_request", "give q (a text) or image_id (an indexed image), one of them")
        image = None
        if image_id is not None:
            image = _indexed_image(index, image_id)

        def run() -> list[Any]:
            return index.search(text=q, image=image, k=k, kind=kind)

        try:
            results = await asyncio.get_running_loop().run_in_executor(pool, run)
        except InputError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from exc
        return JSONResponse({"results": [{**r.__dict__, "thumbnail": f"/v1/thumbnail?id={_quote(r.id)}"
                                          if r.kind == "image" else None} for r in results]})

    @app.get("/v1/thumbnail")
    async def thumbnail(id: str = Query(..., max_length=4096),  # noqa: A002 - the query name clients use
                        w: int = Query(THUMB_PX, ge=16, le=2048, description="box width in device pixels"),
                        h: int = Query(THUMB_PX, ge=16, le=2048, description="box height in device pixels")) -> Response:
        """The image scaled to fit w x h, its aspect kept (never enlarged)."""
        path = _indexed_image(index, id)
        try:
            data = await asyncio.get_running_loop().run_in_executor(pool, thumbnail_bytes, path, w, h)
        except (InputError, OSError) as exc:
            raise ApiError(404, "not_found", f"the image {id!r} cannot be read any more; reindex") from exc
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


def _indexed_image(index: Index, item_id: str) -> str:
    path = index.image_source(item_id)
    if path is None or not os.path.isfile(path):
        raise ApiError(404, "not_found", f"no indexed image has the id {item_id[:200]!r}")
    return path


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")
