"""Prometheus metrics (also summed across worker processes) and structured access logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processes import ServerProcess, running_server

BODY = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


def samples(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{server.url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


def test_requests_latency_in_flight_and_load_time_are_exported(iris_server: ServerProcess) -> None:
    before = samples(iris_server)
    for _ in range(5):
        httpx.post(f"{iris_server.url}/v2/models/iris/infer", json=BODY)
    httpx.post(f"{iris_server.url}/v2/models/iris/infer", content=b"{")
    after = samples(iris_server)
    labels = {"model": "iris", "version": "7", "revision": "abc123", "track": "canary"}
    ok = "weir_inference_requests_total"
    assert value(after, ok, code="200", **labels) - value(before, ok, code="200", **labels) == 5
    assert value(after, ok, code="400", **labels) - value(before, ok, code="400", **labels) == 1
    count = "weir_inference_request_duration_seconds_count"
    assert value(after, count, **labels) - value(before, count, **labels) == 6
    assert value(
        after, "weir_inference_request_duration_seconds_bucket", le="10.0", **labels
    ) == value(after, count, **labels)
    assert value(after, "weir_inference_in_flight_requests", **labels) == 0
    assert value(after, "weir_inference_model_load_seconds", **labels) > 0
    assert value(after, "weir_inference_model_ready", **labels) == 1
    assert value(after, "weir_inference_batch_size_count", **labels) >= 5


def test_counts_stay_exact_with_several_worker_processes(iris_model: Path) -> None:
    with running_server(
        iris_model, "--name", "iris", "--workers", "2", "--no-access-log"
    ) as server:
        for _ in range(40):  # a new connection each time, so that both workers answer
            response = httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY)
            assert response.status_code == 200
        for _ in range(6):  # every scrape, whichever worker answers it, sees the sum
            found = samples(server)
            assert value(found, "weir_inference_requests_total", code="200") == 40
            assert value(found, "weir_inference_request_duration_seconds_count") == 40
        assert server.log().count("ready (") >= 2, "both workers should load and warm up the model"


def test_access_log_lines_are_json(iris_model: Path) -> None:
    with running_server(iris_model, "--name", "iris") as server:
        httpx.post(f"{server.url}/v2/models/iris/infer", json=BODY)
        httpx.get(f"{server.url}/v2/models/nope")
        expected = {("POST", "/v2/models/iris/infer", 200), ("GET", "/v2/models/nope", 404)}
        deadline = time.monotonic() + 5  # lines are written every 50 ms, off the request path
        while time.monotonic() < deadline:
            entries = [
                json.loads(line) for line in server.log().splitlines() if line.startswith("{")
            ]
            access = [e for e in entries if e.get("logger") == "weir.access"]
            paths = {(e["method"], e["path"], e["status"]) for e in access}
            if expected <= paths:
                break
            time.sleep(0.05)
        assert expected <= paths, f"access log lines seen: {sorted(paths)}"
        client = next(e["client"] for e in access if e["path"] == "/v2/models/iris/infer")
        assert client.startswith("127.0.0.1:"), client
        assert all(e["duration_ms"] >= 0 and e["ts"].endswith("Z") for e in access)
        assert all(e.get("level") for e in entries), "every log line is structured"
