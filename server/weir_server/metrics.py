"""Prometheus metrics of the inference server (`weir_inference_*`).

The rollout analysis reads these: request counts by status code and a latency histogram fine
enough (25 buckets per decade, each 9.6% wider than the last) that a p99 interpolated between
1 ms and 10 s is within 10% of the truth. `revision` and `track` labels come from the pod's
environment (WEIR_REVISION, WEIR_TRACK) so the operator can tell stable from canary. With
several worker processes, prometheus-client's multiprocess mode sums them on every scrape."""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def latency_buckets(
    per_decade: int = 25, low_exponent: int = -4, high_exponent: int = 1
) -> tuple[float, ...]:
    """Log-spaced upper bounds from 10**low to 10**high seconds (100 µs .. 10 s by default)."""
    steps = (high_exponent - low_exponent) * per_decade
    return tuple(float(f"{10 ** (low_exponent + i / per_decade):.6g}") for i in range(steps + 1))


LATENCY_BUCKETS: Final = latency_buckets()
BATCH_SIZE_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LABELS: Final = ("model", "version", "revision", "track")


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ServerMetrics:
    """The server's collectors, with label children bound once (no label lookups per request)."""

    def __init__(self, model: str, version: str | None, revision: str, track: str) -> None:
        # `_created` series would double the scrape for nothing the analysis reads.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_enabled()
        # In multiprocess mode the values live in files; each scrape builds a fresh registry.
        self.registry = None if self.multiprocess else CollectorRegistry()
        registry = self.registry
        labels = (model, version or "", revision, track)
        self._requests = Counter(
            "weir_inference_requests",
            "Inference requests answered, by HTTP status code.",
            (*LABELS, "code"),
            registry=registry,
        )
        self._label_values = labels
        self._by_code: dict[int, Counter] = {}
        self.latency = Histogram(
            "weir_inference_request_duration_seconds",
            "Time from receiving an infer request to having its response, in seconds.",
            LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ).labels(*labels)
        self.in_flight = Gauge(
            "weir_inference_in_flight_requests",
            "Infer requests being processed now.",
            LABELS,
            multiprocess_mode="livesum",
            registry=registry,
        ).labels(*labels)
        self.batch_size = Histogram(
            "weir_inference_batch_size",
            "Requests' rows per ONNX Runtime call (1 without dynamic batching).",
            LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        ).labels(*labels)
        self.load_seconds = Gauge(
            "weir_inference_model_load_seconds",
            "Seconds it took to load the model and run its warm-up inference.",
            LABELS,
            multiprocess_mode="max",
            registry=registry,
        ).labels(*labels)
        self.ready = Gauge(
            "weir_inference_model_ready",
            "1 when the model is loaded, warmed up and serving.",
            LABELS,
            multiprocess_mode="min",
            registry=registry,
        ).labels(*labels)

    def requests(self, code: int) -> Counter:
        child = self._by_code.get(code)
        if child is None:
            child = self._requests.labels(*self._label_values, str(code))
            self._by_code[code] = child
        return child

    def observe(self, code: int, seconds: float) -> None:
        self.requests(code).inc()
        self.latency.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
