"""What `edgeclip serve` is started with: the bundle, the engine, batching, limits and security settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..fetch import FetchPolicy
from ..preprocess import DEFAULT_MAX_PIXELS

MODEL_ALIASES = ("jina-clip-v2", "jinaai/jina-clip-v2")  # what Jina's and OpenAI's clients send as `model`
JINA_MAX_IMAGE_BYTES = 8 * 1024 * 1024  # Jina's API limit per image
TOKENS_PER_TILE = 4000  # the launch post's price: one 512x512 tile of an image
TILE = 512
VISION_MAX_BATCH = 4  # images per session call on a GPU (on a CPU one: batching does not speed them up there)


@dataclass(frozen=True)
class Limits:
    max_items: int = 2048  # inputs per request (Jina's API accepts 2048)
    max_body_bytes: int = 64 * 1024 * 1024  # 413 past this (Content-Length or the bytes read)
    max_image_bytes: int = JINA_MAX_IMAGE_BYTES  # per image, after base64 decoding or fetching
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # read from the header before decoding (bomb guard)
    max_tokens: int = 8192  # per text: the model's limit; longer is a 422 unless truncate=true
    max_queue: int = 512  # texts waiting (images: a 16th); more is a 429 with Retry-After, answered at once
    body_timeout_s: float = 30.0  # a request body that takes longer to arrive is a 408 (slow-drip clients)
    max_images: int = 256  # images per request: each costs ~1-3 s of CPU at full size
    max_request_pixels: int = 1024 * 1_000_000  # all images of a request together (decoding costs by the pixel)

    def __post_init__(self) -> None:
        for name in ("max_items", "max_body_bytes", "max_image_bytes", "max_image_pixels", "max_tokens", "max_queue",
                     "max_images", "max_request_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.body_timeout_s > 0:
            raise ValueError(f"body_timeout_s must be positive, got {self.body_timeout_s!r}")
        if self.max_body_bytes < base64_size(self.max_image_bytes) + 1024:
            raise ValueError(f"max_body_bytes ({self.max_body_bytes}) must hold one image of max_image_bytes "
                             f"({self.max_image_bytes}) as base64 ({base64_size(self.max_image_bytes) + 1024} bytes)")


def base64_size(size: int) -> int:
    return (size + 2) // 3 * 4


@dataclass(frozen=True)
class ServerConfig:
    bundle: Path
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None  # None: no auth (fine on loopback); else `Authorization: Bearer KEY`
    fetch: FetchPolicy | None = None  # None: URL images are refused (422 naming --fetch-urls)
    threads: int | None = None  # ONNX Runtime intra-op threads (None: one per core)
    variant: str | None = None
    max_batch: int = 32  # text items per session call; images one per call on a CPU, at most VISION_MAX_BATCH on a GPU
    max_wait_ms: float = 5.0  # how long the first item of a batch waits for company
    limits: Limits = field(default_factory=Limits)
    graceful_timeout_s: float = 30.0  # SIGTERM: in-flight requests get this long to finish
    index: Path | None = None  # an `edgeclip index` file: the search page at / and /v1/search
    served_model_names: tuple[str, ...] = ()  # more names accepted as `model` (a client's default)
    header_timeout_s: float = 10.0  # a connection whose request headers are not complete by then is closed
    max_connections: int = 1000  # open connections; more are answered 503 and closed at once

    def __post_init__(self) -> None:
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {self.max_batch!r}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be in [0, 1000], got {self.max_wait_ms!r}")
        if not self.header_timeout_s > 0:
            raise ValueError(f"header_timeout_s must be positive, got {self.header_timeout_s!r}")
        if isinstance(self.max_connections, bool) or not isinstance(self.max_connections, int) or self.max_connections < 1:
            raise ValueError(f"max_connections must be a positive int, got {self.max_connections!r}")


def api_key_from(value: str | None) -> str | None:
    """--api-key, else EDGECLIP_API_KEY; an empty string means no key."""
    key = value if value is not None else os.environ.get("EDGECLIP_API_KEY")
    return key or None
