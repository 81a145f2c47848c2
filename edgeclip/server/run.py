"""Serve the app with uvicorn: loopback by default, graceful on SIGTERM/SIGINT (in-flight requests finish)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from .app import create_app
from .config import ServerConfig
from .protocol import fit_descriptor_limit, protocol_class

log = logging.getLogger("edgeclip.server")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM/SIGINT it shut down for gracefully is not re-raised
    afterwards (uvicorn does, so the process would die by the signal, status 143, not exit 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run(config: ServerConfig) -> None:
    """Blocks until the server stops; uvicorn stops accepting on SIGTERM, lets in-flight requests finish
    (at most graceful_timeout_s) and returns."""
    if not is_loopback(config.host) and config.api_key is None:
        log.warning("listening on %s without an API key: anyone who can reach this port can use it "
                    "(pass --api-key or set EDGECLIP_API_KEY)", config.host)
    _Server(uvicorn_config(config)).run()


def uvicorn_config(config: ServerConfig, **overrides: Any) -> uvicorn.Config:
    """uvicorn's settings for this server: the app, its address, and our HTTP protocol with the header
    deadline and the connection cap (tests serve through this too)."""
    app = create_app(config)
    max_connections = fit_descriptor_limit(config.max_connections)
    settings: dict[str, Any] = dict(
        host=config.host.strip("[]"), port=config.port, log_level="info", access_log=False,  # the guard logs requests
        timeout_graceful_shutdown=int(config.graceful_timeout_s), server_header=False, lifespan="on", log_config=None,
        http=protocol_class(config.header_timeout_s, max_connections, app.state.metrics),
        backlog=max(2048, max_connections))
    return uvicorn.Config(app, **{**settings, **overrides})
