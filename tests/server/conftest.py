"""Servers for the tests: the app under uvicorn in a thread, on a socket bound to a free loopback port,
and a plain HTTP server on loopback that serves images (the "internet" of the URL tests)."""

from __future__ import annotations

import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
import uvicorn  # noqa: E402

import edgeclip  # noqa: E402
from edgeclip.fetch import FetchPolicy  # noqa: E402
from edgeclip.server import ServerConfig  # noqa: E402
from edgeclip.server.run import uvicorn_config  # noqa: E402


@contextmanager
def running(bundle: Path, *, ready: bool = True, **settings: Any) -> Iterator[str]:
    """Serve `bundle` with these ServerConfig settings; yields the base URL, http://127.0.0.1:PORT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before the server starts: no race for the port
    port = sock.getsockname()[1]
    config = ServerConfig(bundle=bundle, port=port, **settings)
    server = uvicorn.Server(uvicorn_config(config, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    key = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    deadline = time.monotonic() + 60
    while not server.started or (ready and httpx.get(f"{base}/ready", headers=key).status_code != 200):
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not come up"
        time.sleep(0.02)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def png(width: int = 64, height: int = 48, seed: int = 0, fmt: str = "PNG") -> bytes:
    """A small photo-like image: smooth gradients, different per seed."""
    ramp = np.add.outer(np.arange(height), np.arange(width))[..., None] * np.array([1, 2, 3]) + seed * 37
    image = Image.fromarray((ramp % 256).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


IMAGES = {"/id/84/1280/848.jpg": png(1280, 848, 1, "JPEG"), "/photo.png": png(), "/other.png": png(40, 90, 2)}


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits.append(self.path)
        if self.path in IMAGES:
            self._send(200, IMAGES[self.path])
        elif self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/bomb.png":
            self._send(200, png_claiming(60_000, 60_000))
        else:
            self._send(404, b"no such image")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "image/png")  # lies for the JPEG: content is judged by decoding
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width * 3 + 1) * 4)  # a few rows; a reader that trusts the header allocates them all
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def image_host() -> Iterator[str]:
    """http://127.0.0.1:PORT serving IMAGES (and /redirect?to=URL, /bomb.png)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


@pytest.fixture(scope="session")
def model(tiny_bundle: Path) -> edgeclip.EdgeClip:
    """The in-process model the server's answers are compared with."""
    return edgeclip.load(tiny_bundle)


@pytest.fixture(scope="session")
def server(tiny_bundle: Path) -> Iterator[str]:
    """The default server, with URL fetching on and the loopback image host allow-listed."""
    with running(tiny_bundle, fetch=FetchPolicy(allow_hosts=("127.0.0.1",))) as base:
        yield base


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    """The image host's files, by path."""
    return IMAGES


@pytest.fixture(scope="session")
def image_hits() -> list[str]:
    """Every path the image host was asked for, in order (SSRF tests check nothing got through)."""
    return _ImageHandler.hits


@pytest.fixture(scope="session", name="png_claiming")
def png_claiming_fixture() -> Any:
    """png_claiming(width, height): a small PNG whose header claims a huge image."""
    return png_claiming


@pytest.fixture(scope="session")
def serve() -> Any:
    """running(bundle, **settings): a server of one's own (other limits, a key, no fetching)."""
    return running


@pytest.fixture(scope="session")
def make_png() -> Any:
    """png(width, height, seed, fmt): a small photo-like image's bytes."""
    return png
