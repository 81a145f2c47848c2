"""The pieces bench.serve and bench.serve_edge share: photos, a loopback image host, `edgeclip serve` in
its own process, a keep-alive client, percentiles."""

from __future__ import annotations

import http.client
import http.server
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def photo(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = np.add.outer(np.arange(height), np.arange(width))[..., None] * rng.uniform(0.2, 1.5, 3)
    noise = rng.integers(0, 40, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(((base + noise) % 256).astype(np.uint8)).save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def image_host(images: dict[str, bytes]) -> str:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = images.get(self.path.split("?")[0], b"")
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_port}"


class Server:
    """`edgeclip serve` in its own process, on a free loopback port."""

    def __init__(self, bundle: Path, threads: int, log_path: Path, *extra: str) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgeclip", "serve", str(bundle), "--port", "0", "--threads", str(threads), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while not (found := re.search(r"running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        self.port = int(found.group(1))
        while Client(self.port).get("/ready")[0] != 200:
            time.sleep(0.2)

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]

    def stop(self) -> int:
        self.process.terminate()
        code = self.process.wait(60)
        self.log.close()
        return code


class Client:
    """One keep-alive connection."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def get(self, path: str) -> tuple[int, bytes]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        return response.status, response.read()

    def post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.connection.request("POST", "/v1/embeddings", json.dumps(body), {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ms = np.array(seconds) * 1e3
    return {"n": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2)}
