"""`edgeclip serve` as a process: start-up, readiness, one log line per request, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from edgeclip.server import engine as engine_module


def start(bundle: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`edgeclip serve BUNDLE --port 0 ...`; returns the process and its base URL (read from uvicorn's log)."""
    process = subprocess.Popen([sys.executable, "-m", "edgeclip", "serve", str(bundle), "--port", "0", *args],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    for line in process.stderr:
        found = re.search(r"running on (http://\S+)", line)
        if found:
            return process, found.group(1)
        assert time.monotonic() < deadline, "the server did not start"
    raise AssertionError(f"the server exited: {process.wait()}")


def test_sigterm_finishes_the_in_flight_request_then_exits_0(tiny_bundle: Path) -> None:
    process, base = start(tiny_bundle, "--api-key", "k")
    try:
        key = {"Authorization": "Bearer k"}
        while requests.get(f"{base}/ready", headers=key, timeout=10).status_code != 200:
            time.sleep(0.05)
        # An in-flight request: headers and half the body sent before the signal, the rest after it.
        body = json.dumps({"input": ["still answered after SIGTERM"]}).encode()
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nContent-Type: "
                         f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10])
            time.sleep(1.0)  # the server has read the headers: the request is in flight
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            sock.sendall(body[10:])
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["data"][0]["index"] == 0
        assert process.wait(timeout=30) == 0
        with pytest.raises(requests.ConnectionError):  # no longer accepting
            requests.get(f"{base}/live", timeout=5)
        log = process.stderr.read()  # type: ignore[union-attr]
        assert re.search(r"POST /v1/embeddings 200 items=1 [\d.]+ms", log), log
        assert re.search(r"GET /ready 200 items=0 [\d.]+ms", log) and "Traceback" not in log
    finally:
        process.kill()
        process.wait()


def test_the_api_key_comes_from_the_environment_too(tiny_bundle: Path) -> None:
    process, base = start(tiny_bundle, env={"EDGECLIP_API_KEY": "from-env"})
    try:
        assert requests.get(f"{base}/v1/models", timeout=10).status_code == 401
        assert requests.get(f"{base}/v1/models", headers={"Authorization": "Bearer from-env"}, timeout=10).status_code == 200
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0


@pytest.mark.parametrize("args, message", [
    (["/no/such/bundle"], "is not a bundle"),
    (["BUNDLE", "--allow-host", "nas.local"], "--allow-host only matters with --fetch-urls"),
    (["BUNDLE", "--port", "70000"], "--port must be 0-65535"),
    (["BUNDLE", "--max-wait-ms", "-1"], "--max-wait-ms must be 0-1000"),
    (["BUNDLE", "--variant", "fp64"], "fp64"),
])
def test_bad_options_are_an_error_line_and_exit_2(tiny_bundle: Path, args: list[str], message: str) -> None:
    args = [str(tiny_bundle) if a == "BUNDLE" else a for a in args]
    result = subprocess.run([sys.executable, "-m", "edgeclip", "serve", *args, "--port", "0"] if "--port" not in args
                            else [sys.executable, "-m", "edgeclip", "serve", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_not_ready_until_the_sessions_are_loaded_and_warmed(serve: Any, tiny_bundle: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    warm = engine_module.Engine._warm
    monkeypatch.setattr(engine_module.Engine, "_warm", lambda self, tower: (release.wait(30), warm(self, tower)))
    with serve(tiny_bundle, ready=False) as base:
        assert requests.get(f"{base}/live", timeout=10).status_code == 200
        assert requests.get(f"{base}/health", timeout=10).json()["status"] == "loading"
        for response in (requests.get(f"{base}/ready", timeout=10),
                         requests.post(f"{base}/v1/embeddings", json={"input": "early"}, timeout=10)):
            assert response.status_code == 503 and response.json()["code"] == "not_ready"
            assert response.headers["Retry-After"]
        release.set()
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/ready", timeout=10).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert requests.post(f"{base}/v1/embeddings", json={"input": "now"}, timeout=30).status_code == 200
