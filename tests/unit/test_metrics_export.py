"""One server process keeps its per-request metrics as plain numbers; what it exports must be
exactly what prometheus-client's own objects would export for the same requests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from weir_server.metrics import (
    BATCH_SIZE_BUCKETS,
    LABELS,
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    ServerMetrics,
)

LABEL_VALUES = ("iris", "7", "abc123", "canary")

# Latencies at, just below and just above bucket bounds, and beyond the last one.
seconds = st.one_of(
    st.sampled_from([0.0, *LATENCY_BUCKETS[:5], LATENCY_BUCKETS[-1], 11.0, 1e-9]),
    st.floats(min_value=0.0, max_value=20.0, allow_nan=False),
)
requests = st.lists(st.tuples(st.sampled_from([200, 400, 404, 413, 500, 503]), seconds))


def reference_exposition(
    answered: list[tuple[int, float]],
    in_flight: int,
    batches: list[int],
    load_seconds: float,
) -> str:
    registry = CollectorRegistry()
    counter = Counter(
        "weir_inference_requests", "Inference requests answered, by HTTP status code.",
        (*LABELS, "code"), registry=registry,
    )  # fmt: skip
    latency = Histogram(
        "weir_inference_request_duration_seconds",
        "Time from receiving an infer request to having its response, in seconds.",
        LABELS, buckets=LATENCY_BUCKETS, registry=registry,
    ).labels(*LABEL_VALUES)  # fmt: skip
    gauge = Gauge(
        "weir_inference_in_flight_requests", "Infer requests being processed now.",
        LABELS, registry=registry,
    ).labels(*LABEL_VALUES)  # fmt: skip
    batch = Histogram(
        "weir_inference_batch_size",
        "Requests' rows per ONNX Runtime call (1 without dynamic batching).",
        LABELS, buckets=BATCH_SIZE_BUCKETS, registry=registry,
    ).labels(*LABEL_VALUES)  # fmt: skip
    load = Gauge(
        "weir_inference_model_load_seconds",
        "Seconds it took to load the model and run its warm-up inference.",
        LABELS, registry=registry,
    ).labels(*LABEL_VALUES)  # fmt: skip
    Gauge(
        "weir_inference_model_ready", "1 when the model is loaded, warmed up and serving.",
        LABELS, registry=registry,
    ).labels(*LABEL_VALUES)  # fmt: skip
    for code, took in answered:
        counter.labels(*LABEL_VALUES, str(code)).inc()
        latency.observe(took)
    gauge.set(in_flight)
    for rows in batches:
        batch.observe(rows)
    load.set(load_seconds)
    return generate_latest(registry).decode()


@pytest.fixture(autouse=True)
def single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)


@settings(max_examples=150, deadline=None)
@given(
    finished=requests,
    refused=requests,
    still_running=st.integers(min_value=0, max_value=5),
    batches=st.lists(st.integers(min_value=1, max_value=4096)),
)
def test_the_plain_number_metrics_export_what_prometheus_client_would(
    finished: list[tuple[int, float]],
    refused: list[tuple[int, float]],
    still_running: int,
    batches: list[int],
) -> None:
    metrics = ServerMetrics("iris", "7", "abc123", "canary")
    assert not metrics.multiprocess
    for code, took in finished:
        metrics.started()
        metrics.finished(code, took)
    for code, took in refused:  # e.g. a body over the limit: answered without being started
        metrics.answered(code, took)
    for _ in range(still_running):
        metrics.started()
    for rows in batches:
        metrics.batch(rows)
    metrics.load_seconds.set(0.25)

    ours = metrics.exposition()[0].decode()
    expected = reference_exposition(finished + refused, still_running, batches, 0.25)
    assert sorted(ours.splitlines()) == sorted(expected.splitlines())


def test_a_request_is_in_flight_from_started_to_finished() -> None:
    metrics = ServerMetrics("iris", None, "", "")

    def in_flight() -> str:
        text = metrics.exposition()[0].decode()
        return next(line for line in text.splitlines() if line.startswith("weir_inference_in_"))

    metrics.started()
    metrics.started()
    assert in_flight().endswith(" 2.0")
    metrics.finished(200, 0.001)
    assert in_flight().endswith(" 1.0")
