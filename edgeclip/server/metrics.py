"""Prometheus metrics of one app (its own registry, so several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("edgeclip_requests", "HTTP requests by path and status", ["path", "status"], registry=r)
        self.errors = Counter("edgeclip_errors", "error responses by code", ["code"], registry=r)
        self.items = Counter("edgeclip_items", "embedded items by tower", ["tower"], registry=r)
        self.latency = Histogram("edgeclip_request_seconds", "request latency by path", ["path"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgeclip_batch_size", "items per session call", ["tower"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("edgeclip_inference_seconds", "seconds per session call", ["tower"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("edgeclip_queue_depth", "items waiting per tower", ["tower"], registry=r)
        self.dropped = Counter("edgeclip_dropped_items", "items not computed because their client hung up, by tower",
                               ["tower"], registry=r)
        self.connections_refused = Counter("edgeclip_connections_refused", "connections closed at once: over "
                                           "--max-connections", registry=r)
        self.header_timeouts = Counter("edgeclip_header_timeouts", "connections closed: no complete request headers "
                                       "within --header-timeout", registry=r)
        self.ready = Gauge("edgeclip_ready", "1 once the sessions are loaded and warmed", registry=r)

    def observe_batch(self, tower: str, size: int, seconds: float) -> None:
        self.batch_size.labels(tower).observe(size)
        self.inference.labels(tower).observe(seconds)
        self.items.labels(tower).inc(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)
