"""`/docs`: Swagger UI served from the installed package, never from a CDN, so it works offline.

FastAPI's own /docs page loads Swagger UI's script and CSS from a public CDN: offline it is a blank
page. The `server` extra brings fastapi-offline, whose wheel carries Swagger UI 5's release files (Swagger
UI 4 cannot read FastAPI's OpenAPI 3.1): only those files are used, the routes are ours. Where it is
missing, /docs is a short page that links /openapi.json, which always works.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

DOCS_PATH = "/docs"
ASSETS = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css"}
ASSET_PATHS = frozenset(f"{DOCS_PATH}/{name}" for name in ASSETS)


def swagger_ui_dir() -> Path | None:
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).parent / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def add_docs_routes(app: FastAPI) -> None:
    """Call with FastAPI(docs_url=None): these routes take /docs over."""
    assets = swagger_ui_dir()

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<!doctype html><title>edgeclip API</title><p>The API is described in "
                                "<a href=\"openapi.json\">/openapi.json</a>. For Swagger UI here, "
                                "<code>pip install fastapi-offline</code> (part of the <code>server</code> extra).")
        # relative asset URLs: the page also works behind a proxy that mounts the server under a prefix
        return get_swagger_ui_html(openapi_url="openapi.json", title="edgeclip API",
                                   swagger_js_url="docs/swagger-ui-bundle.js", swagger_css_url="docs/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    if assets is None:
        return
    for name, media_type in ASSETS.items():
        def serve(path: Path = assets / name, media_type: str = media_type) -> FileResponse:
            return FileResponse(path, media_type=media_type, headers={"cache-control": "max-age=86400"})

        app.add_api_route(f"{DOCS_PATH}/{name}", serve, methods=["GET"], include_in_schema=False)
