"""Search results as a gallery page: one self-contained HTML file (thumbnails inline as data: URIs,
no outside assets), every name and snippet escaped (file names and documents can hold HTML)."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from .._files import atomic_write_bytes
from ..errors import InputError
from ..preprocess import open_image
from .index import Result

THUMB_PX = 256
_STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:hidden}
img{width:100%;height:200px;object-fit:cover;border-radius:4px;background:#eee}
figcaption{font-size:12px;word-break:break-all;margin-top:6px}.score{color:#666}.doc{white-space:pre-wrap;font-size:13px}"""


def thumbnail_bytes(path: str, width: int = THUMB_PX, height: int | None = None) -> bytes:
    """A JPEG of an image file scaled to fit width x height, aspect kept, never enlarged (the runtime's
    decoder: the same limits and EXIF handling)."""
    image = open_image(path)
    image.thumbnail((width, height or width))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=82)
    return buffer.getvalue()


def _card(result: Result) -> str:
    caption = (f'<figcaption><span class="score">#{result.rank} &middot; {result.score:.4f}</span><br>'
               f"{html.escape(result.source if result.kind == 'image' else result.id)}</figcaption>")
    if result.kind == "text":
        return f'<figure><div class="doc">{html.escape(result.snippet)}</div>{caption}</figure>'
    try:
        data = base64.b64encode(thumbnail_bytes(result.source)).decode("ascii")
        picture = f'<img alt="" src="data:image/jpeg;base64,{data}">'
    except (InputError, OSError):
        picture = '<div class="doc">(the image can no longer be read)</div>'
    return f"<figure>{picture}{caption}</figure>"


def write_gallery(path: str | Path, title: str, results: Sequence[Result]) -> None:
    page = (f'<!doctype html><html lang="en"><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style><h1>{html.escape(title)}</h1><div class=\"grid\">"
            + "".join(_card(r) for r in results) + "</div></html>\n")
    atomic_write_bytes(Path(path), page.encode("utf-8"))
