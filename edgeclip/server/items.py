"""A request's inputs and options, checked: texts and images with their index, output settings, encodings."""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
from PIL import Image

from ..errors import InputError, InputTooLarge
from ..fetch import FetchPolicy, decode_data_uri, fetch_url, is_data_uri
from ..postprocess import to_precision
from ..preprocess import open_image, preprocess_image
from ..bundle import VisionSpec
from .config import TILE, TOKENS_PER_TILE, Limits
from .errors import ApiError, invalid_item
from .schema import BytesInput, EmbeddingsRequest, ImageInput, TextInput, UrlInput

# Jina's jina-clip-v2 task names; only retrieval.query changes what the model sees (the query instruction).
KNOWN_TASKS = ("retrieval.query", "retrieval.passage", "text-matching", "separation", "classification")
_SCHEME_PREFIXES = ("http://", "https://")
# A bare string in this shape is an image (jina-haystack sends images so); every other bare string is a text.
IMAGE_DATA_URI = re.compile(r"data:image/[a-z0-9.+-]+(;[^,;]*)*;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class TextItem:
    index: int
    text: str


@dataclass(frozen=True)
class ImageItem:
    index: int
    kind: str  # "url", "data" (a data: URI) or "base64"
    value: str


Item = Union[TextItem, ImageItem]


@dataclass(frozen=True)
class Options:
    types: tuple[str, ...]  # embedding types, in the order asked
    as_dict: bool  # a list of types was asked: each embedding is {type: value}
    dimensions: int | None
    normalized: bool
    task: str | None
    truncate: bool


def parse_items(request: EmbeddingsRequest, limits: Limits) -> list[Item]:
    raw = [request.input] if isinstance(request.input, str) else list(request.input)
    if not raw:
        raise invalid_item(-1, "", "no inputs given: send at least one text or image", [], "missing")
    if len(raw) > limits.max_items:
        raise ApiError(413, "too_many_items", f"{len(raw)} inputs in one request; at most {limits.max_items} "
                       "(split the request, or start the server with a larger --max-items)")
    items: list[Item] = []
    for index, entry in enumerate(raw):
        if isinstance(entry, str) and IMAGE_DATA_URI.match(entry):
            items.append(ImageItem(index, "data", entry))
        elif isinstance(entry, str):
            items.append(TextItem(index, entry))
        elif isinstance(entry, TextInput):
            items.append(TextItem(index, entry.text))
        else:
            field, value = _image_field(entry)
            items.append(ImageItem(index, _image_kind(index, field, value), value))
    images = sum(isinstance(item, ImageItem) for item in items)
    if images > limits.max_images:
        raise ApiError(413, "too_many_images", f"{images} images in one request; at most {limits.max_images} "
                       "(split the request, or start the server with a larger --max-images)")
    for item in items:
        if isinstance(item, TextItem):
            _check_unicode(item)
    return items


def _image_field(entry: ImageInput | UrlInput | BytesInput) -> tuple[str, str]:
    if isinstance(entry, ImageInput):
        return "image", entry.image
    if isinstance(entry, UrlInput):
        return "url", entry.url
    return "bytes", entry.bytes


def _image_kind(index: int, field: str, value: str) -> str:
    stripped = value.strip()
    lowered = stripped[:16].lower()
    if field != "bytes" and lowered.startswith(_SCHEME_PREFIXES):
        return "url"
    if field != "bytes" and is_data_uri(stripped):
        return "data"
    if "://" in stripped[:32]:
        scheme = stripped.split("://", 1)[0]
        raise invalid_item(index, field, f"URL scheme {scheme!r} is not fetched; send an http(s) URL, a data: URI "
                           "or base64 image bytes", value, "unsupported_scheme")
    if field == "url":
        raise invalid_item(index, field, "expected an http(s) URL or a data: URI", value)
    return "base64"


def _check_unicode(item: TextItem) -> None:
    try:
        item.text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid_item(item.index, "text", f"the text is not valid Unicode ({exc.reason})", item.text) from exc


def parse_options(request: EmbeddingsRequest, output_dim: int) -> Options:
    given = [(name, value) for name, value in (("embedding_type", request.embedding_type),
                                               ("encoding_type", request.encoding_type),
                                               ("encoding_format", request.encoding_format)) if value is not None]
    as_lists = [tuple(value) if isinstance(value, list) else (value,) for _, value in given]
    if len(set(as_lists)) > 1:
        names = " and ".join(name for name, _ in given)
        raise invalid_item(-1, "", f"{names} disagree; send one of them", None, "conflict")
    types = tuple(dict.fromkeys(as_lists[0])) if as_lists else ("float",)
    if not types:
        raise invalid_item(-1, "", "embedding_type is an empty list; ask for float, base64, binary or ubinary")
    as_dict = bool(given) and isinstance(given[0][1], list)
    task = request.task
    if task is not None and task not in KNOWN_TASKS:
        raise ApiError(422, "invalid_request", f"task: unknown task {task!r}; use one of {', '.join(KNOWN_TASKS)} or null",
                       errors=[{"field": "task", "input": task, "message": "unknown task", "type": "enum"}])
    return Options(types, as_dict, dimensions_option(request.dimensions, output_dim), request.normalized, task, request.truncate)


def dimensions_option(value: int | str | None, output_dim: int) -> int | None:
    if value is None:
        return None
    number: Any = value
    if isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= output_dim:
        raise ApiError(422, "invalid_request", f"dimensions: expected an integer from 1 to {output_dim}, got {value!r}",
                       errors=[{"field": "dimensions", "input": value, "message": f"must be 1-{output_dim}", "type": "range"}])
    return number


# ---- images ----------------------------------------------------------------------------------------

def image_bytes(item: ImageItem, limits: Limits, fetch: FetchPolicy | None) -> bytes:
    """The image's encoded bytes, from base64, a data: URI or a URL; never more than max_image_bytes."""
    cap = limits.max_image_bytes
    too_large = ApiError(413, "image_too_large", f"input[{item.index}]: the image is larger than {cap} bytes "
                         "(the per-image limit); send a smaller image")
    try:
        if item.kind == "url":
            if fetch is None:
                raise invalid_item(item.index, "image", "image URLs are not fetched by this server; send the image "
                                   "as base64 or a data: URI, or start it with --fetch-urls (and --allow-host HOST for "
                                   "hosts on your own network)", item.value, "url_fetch_disabled")
            return fetch_url(item.value.strip(), _capped(fetch, cap))
        if item.kind == "data":
            return decode_data_uri(item.value.strip(), cap)
    except InputTooLarge as exc:
        raise too_large from exc
    except InputError as exc:
        raise invalid_item(item.index, "image", str(exc), item.value, "image_unreadable") from exc
    text = "".join(item.value.split())  # base64 may be wrapped over lines
    if len(text) > math.ceil(cap / 3) * 4:
        raise too_large
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid_item(item.index, "image", "not valid base64 (and not an http(s) URL or data: URI); "
                           "send base64 of the image file's bytes", item.value, "base64_invalid") from exc
    if len(data) > cap:
        raise too_large
    return data


def _capped(policy: FetchPolicy, cap: int) -> FetchPolicy:
    return replace(policy, max_bytes=min(policy.max_bytes, cap))


def image_area(data: bytes) -> int:
    """width x height from the image's header, without decoding it (0 if unreadable: decoding says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width * image.height
    except Exception:  # noqa: BLE001 - any unreadable header; image_pixels reports it per item
        return 0


def check_image_budget(areas: list[int], limits: Limits) -> None:
    total = sum(areas)
    if total > limits.max_request_pixels:
        raise ApiError(413, "images_too_large", f"the request's {len(areas)} images hold {total / 1e6:,.0f} megapixels "
                       f"together; at most {limits.max_request_pixels / 1e6:,.0f} per request (send fewer or smaller "
                       "images, or start the server with a larger --max-request-megapixels)")


def image_pixels(item: ImageItem, data: bytes, spec: VisionSpec, limits: Limits) -> tuple[np.ndarray, int]:
    """(3, S, S) model input and the image's token price: 4,000 per 512x512 tile, partial tiles counted."""
    try:
        image = open_image(data, True, limits.max_image_pixels)
        width, height = image.size
        pixels = preprocess_image(image, spec)
    except InputError as exc:
        raise invalid_item(item.index, "image", str(exc), None, "image_unreadable") from exc
    return pixels, math.ceil(width / TILE) * math.ceil(height / TILE) * TOKENS_PER_TILE


# ---- outputs ---------------------------------------------------------------------------------------

def finish(rows: np.ndarray, options: Options) -> np.ndarray:
    """Raw graph rows -> the asked width, L2-normalized unless normalized=false (slice first: Matryoshka)."""
    if options.dimensions is not None:
        rows = rows[:, : options.dimensions]
    if options.normalized:
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows.astype(np.float32)


def encode(rows: np.ndarray, kind: str) -> list[Any]:
    """One value per row: float32 rows (the app writes them as JSON numbers), base64 of little-endian
    float32, or packed sign bits as ints."""
    if kind == "float":
        return list(rows.astype(np.float32, copy=False))
    if kind == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows.astype("<f4")]
    return to_precision(rows, kind).tolist()  # type: ignore[arg-type]


def embeddings(rows: np.ndarray, options: Options) -> list[Any]:
    encoded = {kind: encode(rows, kind) for kind in options.types}
    if not options.as_dict:
        return encoded[options.types[0]]
    return [{kind: encoded[kind][i] for kind in options.types} for i in range(len(rows))]
