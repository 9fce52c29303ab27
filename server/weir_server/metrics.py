"""Prometheus metrics of the inference server (`weir_inference_*`).

The rollout analysis reads these: request counts by status code and a latency histogram fine
enough (25 buckets per decade, each 9.6% wider than the last) that a p99 interpolated between
1 ms and 10 s is within 10% of the truth. `revision` and `track` labels come from the pod's
environment (WEIR_REVISION, WEIR_TRACK) so the operator can tell stable from canary. With
several worker processes, prometheus-client's multiprocess mode sums them on every scrape; one
process keeps the per-request metrics as plain numbers (`_LocalRequestMetrics`)."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable, Iterator
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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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

REQUESTS: Final = "weir_inference_requests"
REQUESTS_HELP: Final = "Inference requests answered, by HTTP status code."
LATENCY: Final = "weir_inference_request_duration_seconds"
LATENCY_HELP: Final = "Time from receiving an infer request to having its response, in seconds."
IN_FLIGHT: Final = "weir_inference_in_flight_requests"
IN_FLIGHT_HELP: Final = "Infer requests being processed now."
BATCH: Final = "weir_inference_batch_size"
BATCH_HELP: Final = "Requests' rows per ONNX Runtime call (1 without dynamic batching)."


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class _SharedRequestMetrics:
    """Per-request metrics in prometheus-client's multiprocess files (several workers)."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self._labels = labels
        self._requests = Counter(REQUESTS, REQUESTS_HELP, (*LABELS, "code"), registry=None)
        self._by_code: dict[int, Counter] = {}
        self._latency = Histogram(
            LATENCY, LATENCY_HELP, LABELS, buckets=LATENCY_BUCKETS, registry=None
        ).labels(*labels)
        self._in_flight = Gauge(
            IN_FLIGHT, IN_FLIGHT_HELP, LABELS, multiprocess_mode="livesum", registry=None
        ).labels(*labels)
        self._batch = Histogram(
            BATCH, BATCH_HELP, LABELS, buckets=BATCH_SIZE_BUCKETS, registry=None
        ).labels(*labels)

    def started(self) -> None:
        self._in_flight.inc()

    def finished(self, code: int, seconds: float) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self._requests.labels(*self._labels, str(code))
        child.inc()
        self._latency.observe(seconds)
        self._in_flight.dec()

    def answered(self, code: int, seconds: float) -> None:
        self.started()
        self.finished(code, seconds)

    def batch(self, rows: int) -> None:
        self._batch.observe(rows)


class _Buckets:
    """A histogram as plain numbers: an observation is one bisect and two additions."""

    __slots__ = ("_le", "bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        # `le` labels written as prometheus-client writes them.
        self._le: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        buckets: list[tuple[str, float]] = []
        total = 0
        for le, count in zip(self._le, self.counts, strict=False):
            total += count
            buckets.append((le, total))
        buckets.append(("+Inf", total + self.counts[-1]))
        family.add_metric(labels, buckets, self.sum)


class _LocalRequestMetrics(Collector):
    """Per-request metrics of a single process, kept as plain numbers and turned into the same
    series at scrape time. Measured (docs/benchmarks.md): prometheus-client's objects cost
    about 9 µs per request here (a lock per update and a linear scan of the 126 latency
    buckets); these cost about 2. tests/unit/test_metrics_export.py checks that both export the
    same text for the same requests. Only the event loop's thread writes them (the batcher
    reports from the loop too), so they need no lock."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self._labels = list(labels)
        self._by_code: dict[int, int] = {}
        self._latency = _Buckets(LATENCY_BUCKETS)
        self._batch = _Buckets(tuple(float(b) for b in BATCH_SIZE_BUCKETS))
        self.in_flight = 0

    def started(self) -> None:
        self.in_flight += 1

    def finished(self, code: int, seconds: float) -> None:
        by_code = self._by_code
        by_code[code] = by_code.get(code, 0) + 1
        self._latency.observe(seconds)
        self.in_flight -= 1

    def answered(self, code: int, seconds: float) -> None:
        by_code = self._by_code
        by_code[code] = by_code.get(code, 0) + 1
        self._latency.observe(seconds)

    def batch(self, rows: int) -> None:
        self._batch.observe(rows)

    def collect(self) -> Iterator[Metric]:
        labels = self._labels
        requests = CounterMetricFamily(REQUESTS, REQUESTS_HELP, labels=[*LABELS, "code"])
        for code, count in sorted(self._by_code.items()):
            requests.add_metric([*labels, str(code)], count)
        yield requests
        latency = HistogramMetricFamily(LATENCY, LATENCY_HELP, labels=list(LABELS))
        self._latency.add_to(latency, labels)
        yield latency
        in_flight = GaugeMetricFamily(IN_FLIGHT, IN_FLIGHT_HELP, labels=list(LABELS))
        in_flight.add_metric(labels, self.in_flight)
        yield in_flight
        batch = HistogramMetricFamily(BATCH, BATCH_HELP, labels=list(LABELS))
        self._batch.add_to(batch, labels)
        yield batch


class ServerMetrics:
    """The server's metrics. Per request: `started()`, then `finished(code, seconds)`; `answered`
    for a request refused before it started; `batch(rows)` per ONNX Runtime call."""

    def __init__(self, model: str, version: str | None, revision: str, track: str) -> None:
        # `_created` series would double the scrape for nothing the analysis reads.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.multiprocess = multiprocess_enabled()
        labels = (model, version or "", revision, track)
        per_request: _SharedRequestMetrics | _LocalRequestMetrics
        if self.multiprocess:
            # The values live in files; each scrape builds a fresh registry.
            self.registry = None
            per_request = _SharedRequestMetrics(labels)
        else:
            self.registry = CollectorRegistry()
            per_request = _LocalRequestMetrics(labels)
            self.registry.register(per_request)
        # Called before every scrape (the model monitor counts what it buffered).
        self.before_scrape: list[Callable[[], None]] = []
        self.started = per_request.started
        self.finished = per_request.finished
        self.answered = per_request.answered
        self.batch = per_request.batch
        self.load_seconds = Gauge(
            "weir_inference_model_load_seconds",
            "Seconds it took to load the model and run its warm-up inference.",
            LABELS,
            multiprocess_mode="max",
            registry=self.registry,
        ).labels(*labels)
        self.ready = Gauge(
            "weir_inference_model_ready",
            "1 when the model is loaded, warmed up and serving.",
            LABELS,
            multiprocess_mode="min",
            registry=self.registry,
        ).labels(*labels)

    def observe(self, code: int, seconds: float) -> None:
        """One answered request (for tests and callers outside the request path)."""
        self.answered(code, seconds)

    def exposition(self) -> tuple[bytes, str]:
        for hook in self.before_scrape:
            hook()
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
