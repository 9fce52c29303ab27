"""Drift monitoring in the real operator process, against the emulator: the kopf handlers
measure the stable's pods once per `monitoring.drift.window` (the direct provider: two
scrapes of each pod), write status.drift and the Drifting condition, post DriftDetected and
DriftCleared, and export weir_model_drift_score.

The test plays the kubelet as tests/emulator/test_autoscaling.py does: a Ready Pod of the
revision on its own loopback address, whose /metrics serve weir_drift_* counters that grow
at a fixed rate of rows with the bin shares the test sets."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.emulator.test_autoscaling import CraftedPod, create_pods
from tests.emulator.test_operator import MD, manifest, status_of
from tests.support.emulator import EmulatorApi, eventually
from tests.support.operator_process import Operator

ROWS_PER_SECOND = 200.0
EVEN = (0.25, 0.25, 0.25, 0.25)
SHIFTED = (0.01, 0.01, 0.03, 0.95)
MONITORING = {
    "reference": {"uri": "https://models.example.com/iris-7.reference.json"},
    "drift": {"window": "1s", "threshold": 0.2, "minSamples": 20},
}


class DriftPod(CraftedPod):
    """A pod whose server counts ROWS_PER_SECOND rows into the bins of input[0] with the
    shares set (input[1] always even), against an even reference."""

    def __init__(self, name: str, revision: str) -> None:
        self._drift_lock = threading.Lock()
        self._shares = EVEN
        self._rows = [0.0] * 4
        self._at = time.monotonic()
        super().__init__(name, revision)

    def _advance(self) -> None:
        now = time.monotonic()
        grown = ROWS_PER_SECOND * (now - self._at)
        self._rows = [r + grown * s for r, s in zip(self._rows, self._shares, strict=True)]
        self._at = now

    def set_shares(self, shares: tuple[float, ...]) -> None:
        with self._drift_lock:
            self._advance()
            self._shares = shares

    def exposition(self) -> str:
        with self._drift_lock:
            self._advance()
            rows = list(self._rows)
        labels = f'model="iris",version="7",revision="{self.revision}",track="stable"'
        total = sum(rows)
        lines = [
            "# TYPE weir_drift_rows_total counter",
            f"weir_drift_rows_total{{{labels}}} {total}",
            "# TYPE weir_drift_feature_rows_total counter",
        ]
        for feature, counts in (("input[0]", rows), ("input[1]", [total / 4] * 4)):
            lines += [
                f'weir_drift_feature_rows_total{{{labels},feature="{feature}",bin="{b}"}} {c}'
                for b, c in enumerate(counts)
            ]
        lines.append("# TYPE weir_drift_feature_reference_share gauge")
        for feature in ("input[0]", "input[1]"):
            lines += [
                f'weir_drift_feature_reference_share{{{labels},feature="{feature}",bin="{b}"}} 0.25'
                for b in range(4)
            ]
        return "\n".join([*lines, ""])


@pytest.fixture
def drift_pods() -> Iterator[Callable[[str, str], CraftedPod]]:
    made: list[DriftPod] = []

    def make(name: str, revision: str) -> CraftedPod:
        made.append(DriftPod(name, revision))
        return made[-1]

    yield make
    for pod in made:
        pod.stop()


async def drifting(api: EmulatorApi, verdict: str) -> dict[str, Any] | None:
    status = await status_of(api)
    found = next((c for c in status.get("conditions") or [] if c["type"] == "Drifting"), None)
    return status if found is not None and found["status"] == verdict else None


async def told(api: EmulatorApi) -> list[str]:
    events = await api.list("v1/events", "default")
    return [
        e["reason"]
        for e in sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime")))
        if e.get("involvedObject", {}).get("name") == "iris"
        and str(e.get("reason", "")).startswith("Drift")
    ]


@pytest.mark.usefixtures("deployment_controller")
async def test_the_operator_judges_the_stables_drift_and_tells_it(
    emulator_api: EmulatorApi,
    operator: Operator,
    drift_pods: Callable[[str, str], CraftedPod],
) -> None:
    api = emulator_api
    document = manifest(version="7", replicas=1, monitoring=MONITORING)
    await api.create(MD, document)
    (pod,) = await create_pods(api, drift_pods, document, 1)
    assert isinstance(pod, DriftPod)

    status = await eventually(lambda: drifting(api, "False"), within=30, interval=0.2)
    condition = next(c for c in status["conditions"] if c["type"] == "Drifting")
    assert condition["reason"] == "NoDrift"
    assert condition["observedGeneration"] == 1
    assert status["drift"]["window"] == "1s"
    assert status["drift"]["samples"] >= 20

    pod.set_shares(SHIFTED)
    status = await eventually(lambda: drifting(api, "True"), within=20, interval=0.2)
    condition = next(c for c in status["conditions"] if c["type"] == "Drifting")
    assert condition["reason"] == "DriftDetected"
    assert condition["message"].startswith("input drift: input[0] PSI ")
    assert [f["name"] for f in status["drift"]["features"]] == ["input[0]", "input[1]"]
    metrics = await asyncio.to_thread(operator.metrics)
    score = re.search(r'weir_model_drift_score\{feature="input\[0\]"[^}]*\} ([0-9.e+-]+)', metrics)
    assert score is not None, metrics
    assert float(score[1]) > 0.2

    pod.set_shares(EVEN)
    await eventually(lambda: drifting(api, "False"), within=20, interval=0.2)

    async def both_told() -> bool:
        return await told(api) == ["DriftDetected", "DriftCleared"]

    assert await eventually(both_told, within=10)
