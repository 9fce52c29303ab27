"""The predictionDrift check in `weir run`, end to end (rollout.analysis.maxPredictionDrift):
with a monitoring reference, the stable's and the canary's real servers count their predicted
classes, and a canary that is fast, answers 200 and predicts another mix of classes than the
stable on the same split traffic is rolled back at weight (PredictionDriftFailed), where no
shadow step compares answers row by row; a canary that predicts the same mix is promoted."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.local_run import LocalRun, Traffic, iris_row, manifest, write_manifests
from weir_server.profile import Table, profile
from weir_server.reference import write_reference

ANALYSIS = {"interval": "2s", "failureThreshold": 2, "minRequests": 10, "maxPredictionDrift": 0.2}
STEPS = [{"setWeight": 50}, {"pause": {"duration": "6s"}}]


@pytest.fixture
def reference(iris_versions: dict[str, Path], tmp_path: Path) -> Path:
    """The stable's reference: `weir profile` of iris on rows drawn as the traffic draws them."""
    rng = random.Random(7)
    rows = np.asarray([iris_row(rng) for _ in range(2000)], dtype=np.float32)
    path = tmp_path / "iris.reference.json"
    write_reference(profile(iris_versions["iris"], Table.from_array(rows, "traffic")), path)
    return path


def iris(model: Path, version: str, reference: Path) -> dict[str, Any]:
    sha256 = hashlib.sha256(reference.read_bytes()).hexdigest()
    return manifest(
        "iris",
        model,
        version,
        replicas=1,
        rollout={"steps": STEPS, "analysis": ANALYSIS},
        monitoring={"reference": {"uri": reference.as_uri(), "sha256": sha256}},
    )


def finished(local_run: LocalRun, version: str, within: float) -> dict[str, Any]:
    """The status once the rollout of `version` has ended (Promoted or RolledBack)."""

    def ended() -> dict[str, Any] | None:
        status = local_run.status("iris")
        history = status.get("history") or []
        return status if history and history[0].get("version") == version else None

    return local_run.eventually(ended, within=within, what=f"the rollout of {version} ended")


class TestACanaryThatPredictsAnotherMix:
    def test_is_rolled_back_at_weight_and_one_with_the_same_mix_is_promoted(
        self, local_run: LocalRun, iris_versions: dict[str, Path], reference: Path
    ) -> None:
        write_manifests(local_run.folder, iris(iris_versions["iris"], "1", reference))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        traffic = Traffic(local_run.router_url).start()
        try:
            time.sleep(1)
            # iris_swapped: its label map swapped, so it predicts another class for the same
            # flowers; fast and always 200.
            write_manifests(local_run.folder, iris(iris_versions["iris_swapped"], "2", reference))
            wrong = finished(local_run, "2", within=90)
            write_manifests(local_run.folder, iris(iris_versions["iris_v2"], "3", reference))
            right = finished(local_run, "3", within=90)
        finally:
            traffic.stop()
        assert traffic.failures() == 0, "neither canary failed a client request"

        rolled_back = wrong["history"][0]
        assert rolled_back["outcome"] == "RolledBack", wrong["history"]
        assert "predictions of probabilities: PSI " in rolled_back["reason"]
        reasons = [e["reason"] for e in local_run.events("iris")]
        assert "PredictionDriftFailed" in reasons, reasons
        warned = [
            e["message"] for e in local_run.events("iris") if e["reason"] == "PredictionDriftFailed"
        ]
        assert "at weight 50%" in warned[0], warned

        promoted = right["history"][0]
        assert promoted["outcome"] == "Promoted", right["history"]
        checks = {c["name"]: c for c in right["lastAnalysis"]["checks"]}
        assert checks["predictionDrift"]["outcome"] == "Pass", checks
