"""Prometheus metrics, one registry per app (so two apps in one process, as in the tests, never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

# Latency buckets from a tiny CPU model (ms) to a slow GPU queue (seconds).
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The service's metrics: HTTP requests, micro-batches, queues and model inference."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rtd_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("rtd_http_request_seconds", "HTTP request latency, first byte in to last byte out",
                                 ["method", "route", "status"], buckets=SECONDS, registry=self.registry)
        self.batch_size = Histogram("rtd_batch_size", "requests fused into one inference call",
                                    ["model"], buckets=BATCH, registry=self.registry)
        self.queue_depth = Gauge("rtd_queue_depth", "requests waiting for a model", ["model"],
                                 registry=self.registry)
        self.inference = Histogram("rtd_inference_seconds", "one batched onnxruntime call",
                                   ["model"], buckets=SECONDS, registry=self.registry)
        self.rejected = Counter("rtd_queue_rejected_total", "requests refused because a model queue was full",
                                ["model"], registry=self.registry)
        self.catalog_size = Gauge("rtd_catalog_products", "products in the served catalog", registry=self.registry)
        self.backend = Info("rtd_backend", "inference backend and resolved precision (index/backends.py)",
                            registry=self.registry)  # exposed as rtd_backend_info{backend=...,precision=...} 1

    def render(self) -> bytes:
        """The text exposition format of this registry."""
        return generate_latest(self.registry)
