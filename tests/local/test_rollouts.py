"""Rollouts in `weir run`, end to end: real `weir serve` processes, the real router, real
traffic, the operator's own rollout engine. Each test starts its own `weir run`."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests

FAST_STEPS = [{"setWeight": 25}, {"pause": {"duration": "2s"}}, {"setWeight": 50}]
FAST_ANALYSIS = {"interval": "2s", "failureThreshold": 2, "minRequests": 10}
# The acceptance configuration for rollbacks: a canary that turns bad is at weight 0 within 15 s.
ROLLBACK_ANALYSIS = {"interval": "5s", "failureThreshold": 2, "minRequests": 10}


def iris(model: Path, version: str, analysis: dict[str, Any], steps: list[Any]) -> dict[str, Any]:
    return manifest(
        "iris", model, version, replicas=2, rollout={"steps": steps, "analysis": analysis}
    )


def router_counts(run: LocalRun, track: str) -> float:
    """Requests the router sent to a track, from its own /metrics."""
    import httpx

    text = httpx.get(f"{run.router_url}/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("weir_router_requests_total{") and f'track="{track}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


class TestAGoodVersion:
    def test_is_promoted_through_every_step_with_no_failed_request(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        path = write_manifests(
            local_run.folder, iris(iris_versions["iris"], "1", FAST_ANALYSIS, FAST_STEPS)
        )
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        traffic = Traffic(local_run.router_url).start()
        try:
            time.sleep(1)
            # Editing the file is `kubectl apply`: the new model starts a rollout.
            write_manifests(
                local_run.folder, iris(iris_versions["iris_v2"], "2", FAST_ANALYSIS, FAST_STEPS)
            )
            assert path.exists()
            status = local_run.wait_healthy("iris", "2", within=90)
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert counts[200] > 300, counts
        assert router_counts(local_run, "canary") > 20, "the canary never got traffic"
        promoted = status["history"][0]
        assert promoted["outcome"] == "Promoted"
        assert promoted["version"] == "2"
        assert status["lastAnalysis"]["verdict"] == "Pass"


def _watch_rollback(run: LocalRun, within: float) -> tuple[float, float, dict[str, Any]]:
    """Poll until the canary had weight and then was rolled back; (first weight seen, weight 0
    seen, final status), times from time.monotonic()."""
    weighted = 0.0
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status = run.status("iris")
        canary = status.get("canary") or {}
        if not weighted and canary.get("weight", 0) > 0:
            weighted = time.monotonic()
        if weighted and status.get("phase") == "RolledBack":
            return weighted, time.monotonic(), status
        time.sleep(0.1)
    raise AssertionError(f"no rollback within {within} s:\n{run.log()}")


class TestABadCanary:
    @pytest.mark.parametrize("kind", ["slow", "erroring", "crashing"])
    def test_is_rolled_back_by_itself_within_15_seconds_of_turning_bad(
        self, kind: str, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        steps = [{"setWeight": 50}, {"pause": {}}]
        analysis = ROLLBACK_ANALYSIS
        if kind == "slow":
            # iris_slow adds about 3 ms per row (1.8 ms on two threads): its p99 under this
            # traffic, 4-15 ms, straddles the default 5 ms latencyToleranceMs, so whether it is
            # "slow" was down to the window. At 1 ms it is 3-20x the stable's p99 and always slow.
            analysis = {**ROLLBACK_ANALYSIS, "latencyToleranceMs": 1}
        write_manifests(local_run.folder, iris(iris_versions["iris"], "1", analysis, steps))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        # A crashing canary runs a good model whose servers keep dying (killed by the test).
        model = iris_versions["iris_v2" if kind == "crashing" else f"iris_{kind}"]
        traffic = Traffic(local_run.router_url).start()
        try:
            time.sleep(1)
            local_run.set_model("iris", model, "3")
            if kind == "crashing":
                with Crasher(local_run):
                    weighted, rolled_back, status = _watch_rollback(local_run, within=90)
            else:
                weighted, rolled_back, status = _watch_rollback(local_run, within=90)
            time.sleep(1)
        finally:
            traffic.stop()
        took = rolled_back - weighted
        failed = traffic.failures(since=weighted - 1)
        print(f"{kind} canary: weight > 0 -> RolledBack in {took:.1f} s; "
              f"{failed} client requests failed during the canary phase")  # fmt: skip
        assert took < 15, (
            f"rolled back {took:.1f} s after the canary got traffic:\n{local_run.log()}"
        )
        print(status["history"][0])
        assert status["rolledBackRevision"]
        # A canary whose servers keep dying is Failed (its pods cannot serve); the others lose
        # their analyses: RolledBack. Either way the traffic is back on the stable revision.
        outcome = "Failed" if kind == "crashing" else "RolledBack"
        assert status["history"][0]["outcome"] == outcome
        assert status["stable"]["version"] == "1"
        # Back on stable: traffic after the rollback all succeeds.
        assert traffic.failures(since=rolled_back + 0.5) == 0
        if kind == "erroring":
            assert failed > 0, "an erroring canary that failed nothing was not tested"
        if kind != "erroring":
            assert failed == 0, "slow or crashing canaries must not fail client requests"
        reason = status["history"][0]["reason"]
        expected = {"slow": "p99", "erroring": "error rate", "crashing": "SIGKILL"}[kind]
        assert expected in reason, reason


class Crasher:
    """Kills the canary's servers with SIGKILL once a second while it has traffic (bounded:
    at most 20 kills), as a model that crashes its server would."""

    def __init__(self, run: LocalRun) -> None:
        import threading

        self.run = run
        self.kills = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Crasher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(1.0) and self.kills < 20:
            status = self.run.status("iris")
            canary = status.get("canary") or {}
            if canary.get("weight", 0) <= 0:
                continue
            for server in self.run.servers("iris"):
                if server["revision"] == canary["revision"] and server["pid"]:
                    try:
                        os.kill(server["pid"], signal.SIGKILL)
                        self.kills += 1
                    except ProcessLookupError:
                        pass


class TestAnIdleCanary:
    def test_is_held_and_paused_with_a_reason_never_promoted_nor_rolled_back(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        analysis = {"interval": "1s", "failureThreshold": 1, "minRequests": 20}
        steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
        write_manifests(local_run.folder, iris(iris_versions["iris"], "1", analysis, steps))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        local_run.set_model("iris", iris_versions["iris_v2"], "2")

        def paused() -> dict[str, Any] | None:
            status = local_run.status("iris")
            return status if status.get("phase") == "Paused" else None

        status = local_run.eventually(paused, within=60, what="the idle canary is paused")
        time.sleep(3)  # several more intervals: still held, nothing decided
        status = local_run.status("iris")
        assert status["phase"] == "Paused"
        assert status["stable"]["version"] == "1"
        assert status["canary"]["version"] == "2"
        assert not status.get("history") or status["history"][0]["version"] != "2"
        held = next(c for c in status["conditions"] if c["type"] == "Paused")
        assert held["status"] == "True"
        assert held["reason"] == "InconclusiveAnalysis"
        assert "fewer than minRequests 20" in held["message"], held
        assert status["canary"]["weight"] == 50, "an inconclusive analysis never moves the weight"


class TestServers:
    def test_killing_a_server_mid_traffic_loses_no_request(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        document = manifest("iris", iris_versions["iris"], "1", replicas=3)
        write_manifests(local_run.folder, document)
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        traffic = Traffic(local_run.router_url, threads=4, pause=0.0).start()
        try:
            time.sleep(1)
            victim = local_run.servers("iris")[0]
            os.kill(victim["pid"], signal.SIGKILL)
            time.sleep(3)
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert counts[200] > 200, counts

        def restarted() -> dict[str, Any] | None:
            found = [s for s in local_run.servers("iris") if s["name"] == victim["name"]]
            return found[0] if found and found[0]["restarts"] >= 1 and found[0]["ready"] else None

        local_run.eventually(restarted, within=30, what="the killed server is restarted")

    def test_a_broken_manifest_changes_nothing_and_is_reported(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        path = write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1"))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        path.write_text(path.read_text().replace("version: '1'", "version: '2'\n  replicas: -1"))
        local_run.eventually(
            lambda: "spec.replicas" in local_run.log(), within=10, what="the bad field reported"
        )
        status = local_run.status("iris")
        assert status["phase"] == "Healthy"
        assert local_run.get("iris")["metadata"]["generation"] == 1


class TestThePreTrafficGate:
    def test_a_canary_failing_the_sample_inference_never_gets_traffic(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        """`server.sampleInput` is sent to the canary before any traffic: the erroring iris
        fails on a first feature of 7 or more, so it is failed without serving a request."""
        sample = {
            "inputs": [
                {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [7.5, 3, 6, 2]}
            ]
        }
        document = iris(iris_versions["iris"], "1", FAST_ANALYSIS, FAST_STEPS)
        document["spec"]["server"] = {"sampleInput": sample}
        write_manifests(local_run.folder, document)
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        traffic = Traffic(local_run.router_url).start()
        weights = []
        try:
            local_run.set_model("iris", iris_versions["iris_erroring"], "3")

            def failed() -> dict[str, Any] | None:
                status = local_run.status("iris")
                weights.append((status.get("canary") or {}).get("weight", 0))
                history = status.get("history") or []
                return status if history and history[0]["version"] == "3" else None

            status = local_run.eventually(failed, within=60, what="the canary is failed")
        finally:
            counts = traffic.stop()
        assert max(weights) == 0, "the canary got traffic before passing its checks"
        assert status["history"][0]["outcome"] == "Failed"
        assert "sample inference failed" in status["history"][0]["reason"]
        assert traffic.failures() == 0, counts
        assert router_counts(local_run, "canary") == 0
