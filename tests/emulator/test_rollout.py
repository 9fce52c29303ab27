"""Progressive delivery end to end in the real operator process, against the emulator and a
Prometheus HTTP API stand-in on 127.0.0.1 serving crafted numbers per revision: a good canary
goes through every step, a failing one is rolled back after exactly `failureThreshold` failing
windows, an idle one is held and never promoted, and promote/abort/retry/undo requests work,
also across an operator restart mid-rollout.

The test plays the Deployment controller (a background task marks every Deployment's replicas
ready); the emulator runs no servers, so the signature check is waived (`allowSignatureChange`)
and the pre-traffic gate is the canary's readiness."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from tests.emulator.test_operator import DEPLOYMENTS, MD, SERVICES, manifest, revision, status_of
from tests.support.emulator import EmulatorApi, eventually
from tests.support.operator_process import Operator

GOOD = (100.0, 0.0, 0.010)  # requests, 5xx answers, p99 seconds in a window
REQUEST = "serving.weir.dev/request"


class PrometheusStandIn:
    """`GET /api/v1/query` answering Weir's default queries from numbers set per revision."""

    def __init__(self) -> None:
        self.numbers: dict[str, tuple[float, float, float]] = {}
        self.queries = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                stand_in.queries += 1
                found = re.search(r'revision="([0-9a-f]+)"', query)
                requests, errors, p99 = stand_in.numbers.get(found[1] if found else "", GOOD)
                if "histogram_quantile" in query:
                    value = p99
                elif 'code=~"5.."' in query:
                    value = errors
                else:
                    value = requests
                body = {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, str(value)]}]},
                }  # fmt: skip
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[PrometheusStandIn]:
    stand_in = PrometheusStandIn()
    yield stand_in
    stand_in.close()


def rollout_md(
    version: str, url: str, steps: list[dict[str, Any]], failure_threshold: int = 2
) -> dict[str, Any]:
    rollout = {
        "steps": steps,
        "allowSignatureChange": True,
        "progressDeadline": "1m",
        "analysis": {
            "interval": "2s",
            "failureThreshold": failure_threshold,
            "minRequests": 10,
            "provider": {"prometheus": {"url": url, "scrapeInterval": "1s"}},
        },
    }
    return manifest(version=version, replicas=2, rollout=rollout)


async def start_rollout(
    api: EmulatorApi, url: str, steps: list[dict[str, Any]], failure_threshold: int = 2
) -> tuple[str, str]:
    """v7 stable and healthy, then v8 applied: (old revision, new revision)."""
    first = await api.create(MD, rollout_md("7", url, steps, failure_threshold))
    await eventually(lambda: phase(api, "Healthy"), within=20)
    second = rollout_md("8", url, steps, failure_threshold)
    await api.patch(MD, "default", "iris", {"spec": {"model": second["spec"]["model"]}})
    return revision(first), revision(second)


async def phase(api: EmulatorApi, *phases: str) -> dict[str, Any] | None:
    status = await status_of(api)
    return status if status.get("phase") in phases else None


async def request(api: EmulatorApi, action: str, revision: str | None = None) -> str:
    body = {"id": str(uuid.uuid4()), "action": action, "revision": revision}
    await api.patch(
        MD, "default", "iris", {"metadata": {"annotations": {REQUEST: json.dumps(body)}}}
    )
    return body["id"]


async def handled(api: EmulatorApi, request_id: str) -> dict[str, Any] | None:
    status = await status_of(api)
    last = status.get("lastRequest") or {}
    return status if last.get("id") == request_id else None


async def serving_selector(api: EmulatorApi) -> dict[str, str]:
    service = await api.get(SERVICES, "default", "iris")
    assert service is not None
    selector: dict[str, str] = service["spec"]["selector"]
    return selector


@pytest.mark.usefixtures("deployment_controller")
async def test_a_good_canary_is_promoted_through_every_step(
    emulator_api: EmulatorApi, prometheus: PrometheusStandIn, operator: Operator
) -> None:
    steps = [{"setWeight": 50}, {"pause": {"duration": "2s"}}]
    old, new = await start_rollout(emulator_api, prometheus.url, steps)
    seen: set[tuple[int, int]] = set()

    async def promoted() -> dict[str, Any] | None:
        status = await status_of(emulator_api)
        canary = status.get("canary")
        if canary:
            seen.add((canary["step"], canary["weight"]))
            if canary["weight"]:  # children are applied before the status says so
                selector = await serving_selector(emulator_api)
                assert selector.get("serving.weir.dev/revision") != old, "the canary serves"
        stable = (status.get("stable") or {}).get("revision")
        return status if stable == new and status.get("phase") == "Healthy" else None

    status = await eventually(promoted, within=45, interval=0.2)
    assert (0, 50) in seen, seen
    assert (1, 50) in seen, seen
    assert status["history"][0]["outcome"] == "Promoted"
    assert status["history"][0]["reason"] == "all 2 steps completed"
    assert status["lastAnalysis"]["verdict"] == "Pass"
    assert (await serving_selector(emulator_api))["serving.weir.dev/revision"] == new
    metrics = await asyncio.to_thread(operator.metrics)
    assert re.search(r'weir_rollout_analysis_total\{[^}]*verdict="Pass"[^}]*\} [1-9]', metrics)
    stable_service = await emulator_api.get(SERVICES, "default", "iris-stable")
    assert stable_service is not None
    assert stable_service["spec"]["selector"]["serving.weir.dev/revision"] == new

    async def retired() -> bool:
        return await emulator_api.get(DEPLOYMENTS, "default", f"iris-{old[:10]}") is None

    assert await eventually(retired, within=30), "the old revision is deleted after draining"


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_a_failing_canary_is_rolled_back_after_exactly_failure_threshold_windows(
    emulator_api: EmulatorApi, prometheus: PrometheusStandIn
) -> None:
    steps = [{"setWeight": 50}, {"pause": {}}]
    old, new = await start_rollout(emulator_api, prometheus.url, steps, failure_threshold=3)
    prometheus.numbers[new] = (100.0, 40.0, 0.010)  # 40% errors
    streaks: list[int] = []

    async def rolled_back() -> dict[str, Any] | None:
        status = await status_of(emulator_api)
        if status.get("canary"):
            streaks.append(status["canary"]["failedChecks"])
        return status if status.get("phase") == "RolledBack" else None

    status = await eventually(rolled_back, within=45, interval=0.2)
    assert max(streaks) == 2, "rolled back on the third failure, not before"
    assert status["rolledBackRevision"] == new
    assert status["stable"]["revision"] == old
    assert status["history"][0]["outcome"] == "RolledBack"
    assert "3 analyses in a row failed (failureThreshold 3)" in status["history"][0]["reason"]
    assert status["lastAnalysis"]["verdict"] == "Fail"
    assert (await serving_selector(emulator_api))["serving.weir.dev/revision"] == old

    async def canary_gone() -> bool:
        return await emulator_api.get(DEPLOYMENTS, "default", f"iris-{new[:10]}") is None

    assert await eventually(canary_gone, within=20)
    await asyncio.sleep(3)
    status = await status_of(emulator_api)
    assert status["phase"] == "RolledBack", "the rolled-back spec is held, not retried"
    assert not status.get("canary")


@pytest.mark.usefixtures("deployment_controller", "operator")
async def test_an_idle_canary_is_held_and_paused_never_promoted(
    emulator_api: EmulatorApi, prometheus: PrometheusStandIn
) -> None:
    steps = [{"setWeight": 50}]
    old, new = await start_rollout(emulator_api, prometheus.url, steps)
    prometheus.numbers[new] = (0.0, 0.0, 0.0)  # no traffic at all

    status = await eventually(lambda: phase(emulator_api, "Paused"), within=45, interval=0.2)
    paused = next(c for c in status["conditions"] if c["type"] == "Paused")
    assert paused["status"] == "True"
    assert paused["reason"] == "InconclusiveAnalysis"
    assert "inconclusive" in paused["message"]
    assert status["canary"]["weight"] == 50, "Inconclusive never moves the weight"
    await asyncio.sleep(4)
    status = await status_of(emulator_api)
    assert status["stable"]["revision"] == old
    assert status["canary"]["revision"] == new
    assert status["lastAnalysis"]["verdict"] == "Inconclusive"
    assert all(h["revision"] != new for h in status["history"]), "never promoted or rolled back"

    prometheus.numbers[new] = GOOD  # traffic comes: the analysis passes and the rollout resumes
    await eventually(lambda: phase(emulator_api, "Healthy"), within=30, interval=0.2)
    assert (await status_of(emulator_api))["stable"]["revision"] == new


@pytest.mark.usefixtures("deployment_controller")
async def test_requests_promote_abort_retry_undo_and_a_restart_resumes_at_the_same_step(
    emulator_api: EmulatorApi, prometheus: PrometheusStandIn, kubeconfig: Path, tmp_path: Path
) -> None:
    api = emulator_api
    operator = Operator(kubeconfig, tmp_path / "operator-1.log")
    try:
        steps = [{"setWeight": 50}, {"pause": {}}]
        old, new = await start_rollout(api, prometheus.url, steps)

        async def waiting_for_promote() -> dict[str, Any] | None:
            status = await status_of(api)
            canary = status.get("canary") or {}
            return status if canary.get("step") == 1 and status["phase"] == "Paused" else None

        mid = await eventually(waiting_for_promote, within=30, interval=0.2)
        assert await operator.stop() == 0
    finally:
        await operator.stop()
        print(operator.log()[-5000:])

    operator = Operator(kubeconfig, tmp_path / "operator-2.log")
    try:
        await asyncio.sleep(4)  # several convergence ticks of the new process
        status = await status_of(api)
        assert status["canary"]["step"] == 1, "resumed at the same step"
        assert status["canary"]["startedAt"] == mid["canary"]["startedAt"]
        assert status["canary"]["weight"] == 50
        assert status["phase"] == "Paused"

        promote = await request(api, "promote", new)
        status = await eventually(lambda: handled(api, promote), within=15, interval=0.2)
        assert status["lastRequest"]["accepted"], status["lastRequest"]["message"]
        await eventually(lambda: phase(api, "Healthy"), within=30, interval=0.2)
        assert (await status_of(api))["stable"]["revision"] == new

        undo = await request(api, "undo")
        status = await eventually(lambda: handled(api, undo), within=15, interval=0.2)
        assert status["lastRequest"]["accepted"], status["lastRequest"]["message"]
        found = await api.get(MD, "default", "iris")
        assert found is not None
        assert found["spec"]["model"]["version"] == "7", "undo writes the old model back"
        assert revision(found) == old

        async def canary_of_old() -> dict[str, Any] | None:
            status = await status_of(api)
            return status if (status.get("canary") or {}).get("revision") == old else None

        await eventually(canary_of_old, within=15, interval=0.2)
        abort = await request(api, "abort", old)
        status = await eventually(lambda: handled(api, abort), within=15, interval=0.2)
        assert status["lastRequest"]["accepted"], status["lastRequest"]["message"]
        status = await eventually(lambda: phase(api, "RolledBack"), within=15, interval=0.2)
        assert status["history"][0]["outcome"] == "Aborted"
        assert status["stable"]["revision"] == new

        retry = await request(api, "retry", old)
        status = await eventually(lambda: handled(api, retry), within=15, interval=0.2)
        assert status["lastRequest"]["accepted"], status["lastRequest"]["message"]
        await eventually(canary_of_old, within=15, interval=0.2)
        full = await request(api, "promote-full", old)
        await eventually(lambda: handled(api, full), within=15, interval=0.2)
        status = await eventually(lambda: phase(api, "Healthy"), within=30, interval=0.2)
        assert status["stable"]["revision"] == old
        assert status["history"][0]["reason"].startswith(f"promoted by request {full}")
    finally:
        await operator.stop()
        print(operator.log()[-8000:])
