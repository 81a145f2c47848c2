"""uvicorn's HTTP/1.1 protocol (h11) with the two limits it lacks: a deadline for request headers and a cap
on open connections.

uvicorn closes idle keep-alive connections, but a connection that sends part of its headers and then
nothing stays open for good, and the key is checked only once headers are complete: 300 of them used
every file descriptor of a 256-descriptor server and its accept loop logged 94 MB in 20 s. Here a
connection without complete headers `header_timeout_s` after it opened (or after its last answer) is
answered 408 and closed, and one past `max_connections` is answered 503 and closed as soon as it opens,
before the descriptor limit is near (serve raises the soft limit to fit).
"""

from __future__ import annotations

import asyncio
import logging
import resource

import h11
import orjson
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_payload
from .metrics import Metrics

log = logging.getLogger("edgeclip.server")
SPARE_DESCRIPTORS = 64  # for the bundle's files, the index, logs and fetches


def canned_response(status: int, reason: str, code: str, detail: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer with our error body, written straight to the socket before closing it."""
    body = orjson.dumps(error_payload(status, code, detail, ""))
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def protocol_class(header_timeout_s: float, max_connections: int, metrics: Metrics) -> type[H11Protocol]:
    """An H11Protocol subclass bound to the server's limits (uvicorn takes a class, not an instance)."""
    too_many = canned_response(503, "Service Unavailable", "too_many_connections",
                               f"the server has {max_connections} open connections (--max-connections); retry shortly",
                               retry_after=1)
    too_slow = canned_response(408, "Request Timeout", "header_timeout",
                               f"the request headers did not arrive within {header_timeout_s:g} s (--header-timeout)")

    class EdgeProtocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                metrics.connections_refused.inc()
                transport.write(too_many)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def _arm(self) -> None:
            self._disarm()
            self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_overdue)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_overdue(self) -> None:
            self._header_deadline = None
            waiting_for_headers = self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)
            if waiting_for_headers and not self.transport.is_closing():
                metrics.header_timeouts.inc()
                if self.conn.trailing_data[0]:
                    self.transport.write(too_slow)  # a client part-way through its headers hears why; an idle one is just closed
                self.transport.close()

    return EdgeProtocol


def fit_descriptor_limit(max_connections: int) -> int:
    """Raise the soft open-file limit so max_connections fit with room to spare; returns the connections
    that do fit (fewer, with a warning, where the hard limit is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + SPARE_DESCRIPTORS
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitting = max(1, soft - SPARE_DESCRIPTORS)
        log.warning("--max-connections %d does not fit the open-file limit (%d): serving at most %d connections "
                    "(raise it with ulimit -n)", max_connections, soft, fitting)
        return fitting
    return max_connections

