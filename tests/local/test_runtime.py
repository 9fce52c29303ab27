"""`weir run` as a process: model sources, scaling, and a clean end however it is stopped."""

from __future__ import annotations

import hashlib
import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests


@contextmanager
def serving_folder(folder: Path) -> Iterator[str]:
    """A plain HTTP file server for `folder` on 127.0.0.1 (a model registry stand-in)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class TestModelSources:
    def test_an_http_model_is_fetched_and_its_sha256_checked(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        model = iris_versions["iris"]
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        with serving_folder(model.parent) as base:
            good = manifest("good", model, "1")
            good["spec"]["model"] = {"uri": f"{base}/{model.name}", "sha256": digest}
            bad = manifest("bad", model, "1")
            bad["spec"]["model"] = {"uri": f"{base}/{model.name}", "sha256": "0" * 64}
            write_manifests(local_run.folder, good, bad)
            local_run.wait_up()

            def settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
                a, b = local_run.status("good"), local_run.status("bad")
                return (
                    (a, b) if a.get("phase") == "Healthy" and b.get("phase") == "Failed" else None
                )

            _, failed = local_run.eventually(settled, within=60, what="good Healthy, bad Failed")
        ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "ModelFetchFailed"
        assert digest in ready["message"], ready
        assert "0" * 64 in ready["message"], ready
        assert local_run.servers("bad") == []

    def test_a_source_it_cannot_reach_is_reported_not_run(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        document = manifest("remote", iris_versions["iris"], "1")
        document["spec"]["model"] = {"uri": "pvc://models/iris.onnx"}  # needs a cluster
        write_manifests(local_run.folder, document)
        local_run.wait_up()

        def failed() -> dict[str, Any] | None:
            status = local_run.status("remote")
            return status if status.get("phase") == "Failed" else None

        status = local_run.eventually(failed, within=30, what="a pvc:// model is Failed")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "UnsupportedModelSource"
        assert "pvc://models/iris.onnx" in ready["message"]


class TestScaling:
    def test_scaling_down_drains_servers_without_failing_a_request(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1", replicas=3))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        assert len(local_run.servers("iris")) == 3
        traffic = Traffic(local_run.router_url, threads=4, pause=0.0).start()
        try:
            time.sleep(1)
            write_manifests(
                local_run.folder, manifest("iris", iris_versions["iris"], "1", replicas=1)
            )
            local_run.eventually(
                lambda: len(local_run.servers("iris")) == 1, within=30, what="scaled to 1"
            )
            time.sleep(2)
        finally:
            counts = traffic.stop()
        assert traffic.failures() == 0, counts
        assert local_run.status("iris")["readyReplicas"] == 1


class TestStopping:
    def test_killing_weir_run_takes_its_servers_with_it(
        self, tmp_path: Path, iris_versions: dict[str, Path]
    ) -> None:
        folder = tmp_path / "manifests"
        write_manifests(folder, manifest("iris", iris_versions["iris"], "1", replicas=2))
        run = LocalRun(folder, tmp_path / "state")
        try:
            run.wait_up()
            run.wait_healthy("iris", "1")
            pids = [s["pid"] for s in run.servers("iris")]
            assert len(pids) == 2
        finally:
            run.process.send_signal(signal.SIGKILL)
            run.process.wait(timeout=10)
        run.eventually(lambda: not run.orphans(), within=10, what="servers gone with weir run")
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)

    def test_ctrl_c_stops_everything_and_exits_0(
        self, tmp_path: Path, iris_versions: dict[str, Path]
    ) -> None:
        folder = tmp_path / "manifests"
        write_manifests(folder, manifest("iris", iris_versions["iris"], "1", replicas=2))
        run = LocalRun(folder, tmp_path / "state")
        run.wait_up()
        run.wait_healthy("iris", "1")
        run.servers("iris")
        started = time.monotonic()
        assert run.stop(signal.SIGINT) == 0
        assert time.monotonic() - started < 15
        assert run.orphans() == []
        assert "stopped" in run.log()


def _zombie(pid: int) -> bool:
    try:
        return ") Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


def test_a_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", "run", "-f", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 3
    assert "no such file or folder" in result.stderr


class TestTheControlApiRefusesBadInput:
    """The control API (docs/local-runtime.md) answers bad input with 400, an invalid object or
    model with 422 and what is wrong with it, an unknown name with 404; and changes nothing."""

    def test_every_refusal_says_why_and_leaves_the_model_serving(
        self, local_run: LocalRun, iris_versions: dict[str, Path]
    ) -> None:
        write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1"))
        local_run.wait_up()
        local_run.wait_healthy("iris", "1")
        control = local_run.control
        base = "/api/v1/modeldeployments"
        good = manifest("other", iris_versions["iris"], "1")
        bad = manifest("broken", iris_versions["iris"], "1", replicas=-1)

        def refused(response: Any, status: int, says: str) -> list[str]:
            assert response.status_code == status, response.text
            body = response.json()
            assert says in body["error"], body
            problems: list[str] = body.get("problems", [])
            return problems

        as_json = {"Content-Type": "application/json"}
        refused(
            control.post(base, content=b"{not json", headers=as_json), 400, "the body is not JSON"
        )
        refused(control.post(base, json={"items": "x"}), 400, "items must be a list")
        problems = refused(
            control.post(base, json={"items": [good, bad]}), 422, "invalid ModelDeployment"
        )
        assert problems
        assert all(p.startswith("broken: ") for p in problems), problems
        assert any("replicas" in p for p in problems), problems
        refused(control.get(f"{base}/other"), 404, "'other' not found")  # nothing was applied

        model = f"{base}/iris/model"
        refused(control.patch(model, json={"uri": 5}), 400, "string uri")
        problems = refused(control.patch(model, json={"uri": "ftp://x"}), 422, "invalid model")
        assert any("uri" in p for p in problems), problems
        good_model = {"uri": "file:///models/iris-2.onnx"}
        refused(control.patch(model, json={**good_model, "reference": "x"}), 400, "reference needs")
        refused(
            control.patch(model, json={**good_model, "reference": {"uri": 5}}),
            400,
            "reference needs a string uri",
        )
        problems = refused(
            control.patch(model, json={**good_model, "reference": {"uri": "ftp://r.json"}}),
            422,
            "invalid model",
        )
        assert any(p.startswith("spec.monitoring.reference.uri") for p in problems), problems
        requests = f"{base}/iris/requests"
        refused(control.post(requests, json={"action": "jump"}), 400, "action must be one of")
        refused(
            control.post(requests, json={"action": "promote", "revision": 5}),
            400,
            "revision must be a string",
        )
        refused(control.post(f"{base}/nope/requests", json={"action": "abort"}), 404, "'nope'")

        served = local_run.get("iris")
        assert served["metadata"]["generation"] == 1
        assert served["spec"]["model"]["uri"].endswith("iris.onnx")
        assert local_run.status("iris")["phase"] == "Healthy"
