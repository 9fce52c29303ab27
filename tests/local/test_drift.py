"""Model monitoring in `weir run`, end to end: the reference is fetched next to the model, the
real servers count every row they serve into its bins (weir_drift_*), and Weir judges the
stable's traffic once per window (status.drift, the Drifting condition, its events), as the
operator does on a cluster.

The acceptance of issue 21: in-distribution traffic gives no Drifting window out of 20; one
feature moved by 2.5 standard deviations is detected within 2 windows, named first, with the
untouched features under the threshold, and the verdict clears within 3 windows after the
traffic is back. `weir status` draws it; a reference made for another model is still served
and judged, and the Drifting message says so. Windows of 2 s with at least 200 rows (the traffic sends about 1400) keep it
fast and sound: a feature's PSI from sampling noise alone is about (bins - 1) / rows, 0.01 here
against a threshold of 0.2, while the shift scores above 3."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.local.test_cli import weir
from tests.support.local_run import DriftingTraffic, LocalRun, manifest, write_manifests
from weir_server import sample_models

WINDOW_SECONDS = 2.0
THRESHOLD = 0.2
MIN_SAMPLES = 200
SHIFTED_FEATURE = 2  # petal length
SHIFT_SDS = 2.5


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The iris model and its reference, profiled from sample_models.iris_training_data."""
    folder = tmp_path_factory.mktemp("drift")
    model = sample_models.iris(folder / "iris.onnx")
    built = sample_models.build_iris_reference(folder, model)
    return model, built["iris.reference"]


def monitored(model: Path, reference: Path) -> dict[str, Any]:
    sha256 = hashlib.sha256(reference.read_bytes()).hexdigest()
    monitoring = {
        "reference": {"uri": reference.as_uri(), "sha256": sha256},
        "drift": {
            "window": f"{WINDOW_SECONDS:g}s",
            "threshold": THRESHOLD,
            "minSamples": MIN_SAMPLES,
            "output": "probabilities",
        },
    }
    return manifest("iris", model, "1", replicas=1, monitoring=monitoring)


@dataclass(frozen=True)
class Window:
    """One drift window as `weir status` shows it: status.drift and the Drifting condition."""

    seen: float  # time.monotonic() when it was first read
    drift: dict[str, Any]
    drifting: dict[str, Any]

    @property
    def verdict(self) -> str:
        return str(self.drifting["status"])


class Windows:
    """Reads the status often, and keeps each new window (a new status.drift.at) once."""

    def __init__(self, run: LocalRun) -> None:
        self.run = run
        self.seen: list[Window] = []

    def next(self, within: float = 4 * WINDOW_SECONDS + 5) -> Window:
        def new() -> Window | None:
            status = self.run.status("iris")
            drift = status.get("drift")
            drifting = next(
                (c for c in status.get("conditions") or [] if c["type"] == "Drifting"), None
            )
            if not drift or drifting is None:
                return None
            if self.seen and self.seen[-1].drift["at"] == drift["at"]:
                return None
            return Window(time.monotonic(), drift, drifting)

        window = self.run.eventually(new, within, "the next drift window")
        self.seen.append(window)
        return window

    def until(self, verdict: str, windows: int) -> list[Window]:
        """The next windows up to the first with `verdict`, failing after `windows` of them."""
        found: list[Window] = []
        for _ in range(windows):
            found.append(self.next())
            if found[-1].verdict == verdict:
                return found
        raise AssertionError(
            f"no {verdict} verdict within {windows} windows: "
            + "; ".join(f"{w.verdict} {w.drifting['message']}" for w in found)
        )


def serving(run: LocalRun, profiled: tuple[Path, Path]) -> tuple[DriftingTraffic, Windows]:
    """Version 1 served with monitoring, in-distribution traffic on it, and its first verdict
    read (the first scrape is only a baseline)."""
    write_manifests(run.folder, monitored(*profiled))
    run.wait_up()
    run.wait_healthy("iris", "1")
    traffic = DriftingTraffic(run.router_url).start()
    windows = Windows(run)
    windows.until("False", windows=4)
    return traffic, windows


class TestInDistributionTraffic:
    def test_no_window_of_20_is_drifting(
        self, local_run: LocalRun, profiled: tuple[Path, Path]
    ) -> None:
        traffic, windows = serving(local_run, profiled)
        try:
            judged = [windows.next() for _ in range(20)]
        finally:
            traffic.stop()
        assert traffic.failures() == 0
        verdicts = [(w.verdict, w.drifting["reason"]) for w in judged]
        assert verdicts == [("False", "NoDrift")] * 20, [w.drifting["message"] for w in judged]
        for window in judged:
            assert window.drift["samples"] >= MIN_SAMPLES
            assert max(f["score"] for f in window.drift["features"]) < THRESHOLD
            assert window.drift["prediction"]["score"] < THRESHOLD
        reasons = {e["reason"] for e in local_run.events("iris")}
        assert "DriftDetected" not in reasons


class TestOneFeatureShifted:
    def test_is_detected_within_2_windows_named_first_and_clears_within_3(
        self, local_run: LocalRun, profiled: tuple[Path, Path]
    ) -> None:
        traffic, windows = serving(local_run, profiled)
        try:
            traffic.shifted({SHIFTED_FEATURE: SHIFT_SDS})
            detected = windows.until("True", windows=2)[-1]
            windows.next()  # a whole window of shifted traffic
            traffic.shifted({})
            cleared = windows.until("False", windows=3)[-1]
        finally:
            traffic.stop()
        assert traffic.failures() == 0
        name = f"input[{SHIFTED_FEATURE}]"
        features = detected.drift["features"]
        assert features[0]["name"] == name
        assert features[0]["score"] > THRESHOLD
        assert all(f["score"] < THRESHOLD for f in features[1:]), features
        assert detected.drifting["reason"] == "DriftDetected"
        assert detected.drifting["message"].startswith(f"input drift: {name} PSI ")
        assert cleared.drifting["reason"] == "NoDrift"
        assert max(f["score"] for f in cleared.drift["features"]) < THRESHOLD
        told = [e["reason"] for e in local_run.events("iris") if e["reason"].startswith("Drift")]
        assert told == ["DriftDetected", "DriftCleared"]


class TestWeirStatus:
    def test_draws_a_bar_per_feature_and_its_json_has_status_drift(
        self, local_run: LocalRun, profiled: tuple[Path, Path]
    ) -> None:
        traffic, windows = serving(local_run, profiled)
        try:
            traffic.shifted({SHIFTED_FEATURE: SHIFT_SDS})
            windows.until("True", windows=2)
            shown = weir(local_run.control_url, "status", "iris")
            record = weir(local_run.control_url, "status", "iris", "-o", "json")
        finally:
            traffic.stop()
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        drift = next(i for i, line in enumerate(lines) if line.startswith("Drift:"))
        assert lines[drift].startswith(
            f"Drift:      True (DriftDetected): input drift: input[{SHIFTED_FEATURE}] PSI "
        )
        assert lines[drift + 2].split() == ["FEATURE", "PSI", "SCORE"]
        assert lines[drift + 3].split()[0] == f"input[{SHIFTED_FEATURE}]"
        assert "|" in lines[drift + 3]
        assert record.returncode == 0, record.stderr
        status = json.loads(record.stdout)
        assert status["drift"]["features"][0]["name"] == f"input[{SHIFTED_FEATURE}]"
        assert status["drift"]["window"] == "2s"


class TestAWeirRunKilledWhileDrifting:
    def test_keeps_the_verdict_and_tells_drift_cleared_once_after_a_restart(
        self, profiled: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """kill -9 while Drifting is True: the restarted weir run starts new servers (their
        counts from 0, its first scrape a baseline), keeps the verdict from the status, and
        tells DriftCleared once the traffic is back, without a second DriftDetected. (On a
        cluster an operator restart leaves the pods serving; weir run restarts its servers.)"""
        (tmp_path / "manifests").mkdir()
        local_run = LocalRun(tmp_path / "manifests", tmp_path / "state")  # killed below
        again: LocalRun | None = None
        traffic: DriftingTraffic | None = None
        try:
            traffic, windows = serving(local_run, profiled)
            traffic.shifted({SHIFTED_FEATURE: SHIFT_SDS})
            windows.until("True", windows=2)
            local_run.kill()
            again = local_run.restarted()
            again.wait_up()
            again.wait_healthy("iris", "1")
            # While its new servers start, a window cannot be measured (Unknown, saying why),
            # but the verdict is kept: status.drift.drifting, and no event either way.
            first = Windows(again).next()
            assert first.drift["drifting"] is True, first.drift
            assert (first.verdict, first.drifting["reason"]) in {
                ("True", "DriftDetected"),
                ("Unknown", "MeasurementFailed"),
            }, first.drifting
            traffic.shifted({})
            cleared = Windows(again).until("False", windows=6)[-1]
            reasons = [e["reason"] for e in again.events("iris")]
        finally:
            if traffic is not None:
                traffic.stop()
            local_run.stop()
            if again is not None:
                assert again.stop() == 0
                assert not again.orphans(), "server processes outlived weir run"
        assert cleared.drifting["reason"] == "NoDrift"
        assert (reasons.count("DriftDetected"), reasons.count("DriftCleared")) == (1, 1), reasons
        assert "Traceback" not in again.log()


class TestAReferenceForAnotherModel:
    def test_is_served_and_judged_and_the_drifting_message_says_so(
        self, local_run: LocalRun, profiled: tuple[Path, Path], tmp_path: Path
    ) -> None:
        other = sample_models.iris(tmp_path / "other.onnx", seed=99)
        write_manifests(local_run.folder, monitored(other, profiled[1]))
        local_run.wait_up()

        def noted() -> dict[str, Any] | None:
            status = local_run.status("iris")
            drifting = next(
                (c for c in status.get("conditions") or [] if c["type"] == "Drifting"), {}
            )
            return drifting if "made for another model" in drifting.get("message", "") else None

        drifting = local_run.eventually(noted, within=60, what="the Drifting message's note")
        assert drifting["message"].endswith("profile this one with weir profile")
        status = local_run.status("iris")
        assert status["phase"] == "Healthy", status.get("conditions")
        assert [s for s in local_run.servers("iris") if s.get("pid")], "a server serves"


class TestUndoUnderMonitoring:
    def test_brings_back_the_very_revision_its_model_with_its_own_reference(
        self, local_run: LocalRun, profiled: tuple[Path, Path], tmp_path: Path
    ) -> None:
        """v2 ships with its own reference (set-model --reference-uri, one revision); undo
        writes v1's model and v1's reference back, so the spec asks for v1's revision again
        (the same hash), not for v1's model counted against v2's reference."""
        model, reference = profiled
        v2 = sample_models.BUILDERS["iris_v2"](tmp_path / "iris_v2.onnx")
        v2_reference = sample_models.build_iris_reference(tmp_path, v2)["iris.reference"]
        document = monitored(model, reference)
        document["spec"]["rollout"] = {
            "steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}],
            "analysis": {"interval": "2s", "failureThreshold": 2, "minRequests": 10},
        }
        write_manifests(local_run.folder, document)
        local_run.wait_up()
        first = local_run.wait_healthy("iris", "1")["stable"]["revision"]
        traffic = DriftingTraffic(local_run.router_url).start()
        try:
            shipped = weir(
                local_run.control_url, "set-model", "iris", "--uri", v2.as_uri(),
                "--version", "2", "--reference-uri", v2_reference.as_uri(),
            )  # fmt: skip
            assert shipped.returncode == 0, shipped.stderr
            promoted = local_run.wait_healthy("iris", "2", within=90)
            assert promoted["stable"]["reference"] == {"uri": v2_reference.as_uri()}
            undone = weir(local_run.control_url, "undo", "iris")
            assert undone.returncode == 0, undone.stderr
            assert "spec.model and spec.monitoring.reference set back" in undone.stdout
            back = local_run.wait_healthy("iris", "1", within=90)
        finally:
            traffic.stop()
        assert back["stable"]["revision"] == first, "the very revision v1 was"
        spec = local_run.get("iris")["spec"]
        assert spec["monitoring"]["reference"]["uri"] == reference.as_uri()
        assert spec["monitoring"]["drift"]["window"] == f"{WINDOW_SECONDS:g}s", "the rest kept"
