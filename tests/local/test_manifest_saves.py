"""A careless save never deletes a ModelDeployment: an empty or truncated file, a misspelled
kind or broken YAML keep the last good spec running, and `weir status` says what is wrong with
the file (condition ManifestApplied False), not only `weir run`'s log.

Was: `: > iris.yaml` deleted iris at once (1,105 failed requests of 3,300, generation and history
started again from 1), and a file that did not parse showed Healthy in `weir status`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests


def manifest_condition(run: LocalRun) -> dict[str, Any] | None:
    conditions = run.status("iris").get("conditions", [])
    return next((c for c in conditions if c["type"] == "ManifestApplied"), None)


def weir_status(run: LocalRun) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", "status", "iris", "--local", run.control_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


BAD_SAVES = {
    "truncated to nothing": "",
    "only a comment left": "# iris, to be continued\n",
    "kind misspelled": "apiVersion: serving.weir.dev/v1alpha1\nkind: ModelDeploymnet\n"
    "metadata: {name: iris}\nspec: {model: {uri: 'file:///x.onnx'}}\n",
    "kind in lower case": "apiVersion: v1\nkind: modeldeployment\nmetadata: {name: iris}\n",
    "broken YAML": "apiVersion: serving.weir.dev/v1alpha1\nkind: ModelDeployment\nspec: [\n",
    "not UTF-8": "\udcff",
}


class TestABadSave:
    @pytest.mark.parametrize("save", list(BAD_SAVES))
    def test_keeps_the_last_good_spec_serving_and_says_so_in_the_status(
        self, save: str, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        path = write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1"))
        good = path.read_text()
        local_run.wait_up()
        before = local_run.wait_healthy("iris", "1")
        traffic = Traffic(local_run.router_url).start()
        try:
            time.sleep(0.5)
            path.write_bytes(BAD_SAVES[save].encode("utf-8", "surrogateescape"))
            condition = local_run.eventually(
                lambda: manifest_condition(local_run), 30, "ManifestApplied in the status"
            )
            time.sleep(2)  # several watch periods and reconciles on the bad file
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert condition["status"] == "False"
        assert condition["reason"] == "ManifestInvalid"
        assert str(path) in condition["message"]
        assert "last good spec" in condition["message"]
        served = local_run.get("iris")
        assert served["metadata"]["generation"] == 1
        assert served["status"]["phase"] == "Healthy"
        assert served["status"]["history"] == before["history"]
        assert "ManifestApplied" in weir_status(local_run)

        path.write_text(good)  # the file is fixed: the condition goes
        local_run.eventually(lambda: manifest_condition(local_run) is None, 30, "condition gone")
        assert local_run.get("iris")["metadata"]["generation"] == 1

    def test_removing_the_file_still_deletes_the_model_deployment(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        path = write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1"))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        path.unlink()
        local_run.eventually(
            lambda: local_run.control.get("/api/v1/modeldeployments/iris").status_code == 404,
            30,
            "iris deleted with its file",
        )
