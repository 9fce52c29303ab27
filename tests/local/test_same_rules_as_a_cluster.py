"""`weir run` and the operator are one reconcile driver (weir_operator/driver.py) behind two
ports; where their rules used to differ, they are now one behaviour. Each test here has its
twin on the emulator tier (named in the docstring) that shows the operator doing the same.

- An invalid spec becomes a Failed status with a Ready condition InvalidSpec (it used to be a
  log line only, here). Twin: tests/emulator/test_operator.py::
  test_a_spec_the_crd_would_reject_becomes_a_condition_and_the_operator_goes_on.
- Whether each track scales on its own load during a rollout is the router's rule (exact
  weights: gateway-api, and weir run's own router), not a string compared in each shell. Twin:
  tests/emulator/test_autoscaling.py::
  test_with_gateway_api_each_track_scales_on_its_own_load_during_a_rollout."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests


def test_a_new_invalid_spec_is_failed_with_invalid_spec_in_its_status(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    broken = manifest("broken", iris_versions["iris"], "1")
    broken["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"setWeight": 10}]}
    (local_run.folder / "broken.yaml").write_text(yaml.safe_dump(broken))
    write_manifests(local_run.folder, manifest("fine", iris_versions["iris"], "1"))
    local_run.wait_up()
    local_run.wait_healthy("fine", "1")

    def failed() -> dict[str, Any] | None:
        response = local_run.control.get("/api/v1/modeldeployments/broken")
        status = (response.json().get("status") or {}) if response.status_code == 200 else {}
        return status if status.get("phase") == "Failed" else None

    status = local_run.eventually(failed, 30, "broken is Failed")
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "spec.rollout.steps" in ready["message"]
    assert local_run.servers("broken") == [], "nothing runs for it"
    shown = subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", "status", "broken", "--local",
         local_run.control_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "InvalidSpec" in shown.stdout

    broken["spec"]["rollout"] = {"steps": [{"setWeight": 10}, {"setWeight": 50}]}  # fixed
    (local_run.folder / "broken.yaml").write_text(yaml.safe_dump(broken))
    local_run.wait_healthy("broken", "1")


def test_during_a_rollout_each_track_scales_on_its_own_load_as_exact_weights_allow(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    autoscaling = {"minReplicas": 1, "maxReplicas": 3, "metric": "rps", "target": 1000}
    rollout = {
        "steps": [{"setWeight": 50}, {"pause": {}}],
        "analysis": {"interval": "2s", "minRequests": 10},
    }
    write_manifests(
        local_run.folder,
        manifest("iris", iris_versions["iris"], "1", autoscaling=autoscaling, rollout=rollout),
    )
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    write_manifests(
        local_run.folder,
        manifest("iris", iris_versions["iris_v2"], "2", autoscaling=autoscaling, rollout=rollout),
    )
    traffic = Traffic(local_run.router_url, limit_seconds=60).start()
    try:

        def per_track() -> list[dict[str, Any]] | None:
            status = local_run.status("iris")
            tracks = (status.get("autoscaler") or {}).get("tracks") or []
            return tracks if status.get("canary") and len(tracks) == 2 else None

        tracks = local_run.eventually(per_track, 45, "a count per track in status.autoscaler")
        time.sleep(0.5)
    finally:
        traffic.stop()
    status = local_run.status("iris")
    revisions = {t["revision"] for t in tracks}
    assert revisions == {status["stable"]["revision"], status["canary"]["revision"]}
