"""`weir run` restarted mid-rollout resumes where it was, as a restarted operator resumes from
`.status`: its state folder keeps every ModelDeployment (step, stable, history, last request,
autoscaler windows), written atomically, so even `kill -9` loses nothing. A state it cannot
read stops the start with a reason; it is never silently reset."""

from __future__ import annotations

import getpass
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.local_run import LocalRun, Traffic, infer_body, manifest, write_manifests

PAUSED_AT_50 = [{"setWeight": 50}, {"pause": {}}]
ANALYSIS = {"interval": "2s", "failureThreshold": 2, "minRequests": 10}


def iris(model: Path, version: str, **rollout: Any) -> dict[str, Any]:
    steps = rollout.pop("steps", PAUSED_AT_50)
    return manifest(
        "iris", model, version, replicas=2,
        rollout={"steps": steps, "analysis": {**ANALYSIS, **rollout}},
    )  # fmt: skip


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[LocalRun]]:
    """The weir runs of a test (the first is created here); each is stopped at the end."""
    (tmp_path / "manifests").mkdir()
    started = [LocalRun(tmp_path / "manifests", tmp_path / "state")]
    yield started
    for run in started:
        run.stop()
    orphans = started[-1].orphans()
    assert not orphans, f"server processes outlived weir run: {orphans}"


def rollout_state(status: dict[str, Any]) -> dict[str, Any]:
    """What a restart must keep exactly."""
    canary = status.get("canary") or {}
    return {
        "phase": status.get("phase"),
        "stable": (status.get("stable") or {}).get("revision"),
        "canary": canary.get("revision"),
        "step": canary.get("step"),
        "weight": canary.get("weight"),
        "history": status.get("history"),
    }


def served_versions(run: LocalRun, requests: int = 40) -> set[str]:
    with httpx.Client(base_url=run.router_url, timeout=10) as client:
        answers = [
            client.post("/v2/models/iris/infer", json=infer_body([5.1, 3.5, 1.4, 0.2]))
            for _ in range(requests)
        ]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers[:3]]
    return {str(a.json().get("model_version")) for a in answers}


class TestKilledMidRollout:
    def test_kill_9_while_paused_at_50_resumes_the_same_step_stable_and_history(
        self, runs: list[LocalRun], iris_versions: dict[str, Path]
    ) -> None:
        run = runs[0]
        write_manifests(run.folder, iris(iris_versions["iris"], "1"))
        run.wait_up()
        run.wait_healthy("iris", "1")
        write_manifests(run.folder, iris(iris_versions["iris_v2"], "2"))

        def waiting_for_promote() -> dict[str, Any] | None:
            status = run.status("iris")
            canary = status.get("canary") or {}
            at_pause = canary.get("weight") == 50 and canary.get("step") == 1
            return status if at_pause and status.get("phase") == "Paused" else None

        traffic = Traffic(run.router_url).start()  # the analysis passes step 1, setWeight 50
        try:
            before = run.eventually(waiting_for_promote, 60, "paused at 50% for a promote")
        finally:
            traffic.stop()
        generation = run.get("iris")["metadata"]["generation"]
        run.kill()

        again = run.restarted()
        runs.append(again)
        again.wait_up()
        after = again.eventually(
            lambda: (s := again.status("iris")).get("phase") == "Paused" and s, 60, "Paused again"
        )
        assert rollout_state(after) == rollout_state(before)
        assert again.get("iris")["metadata"]["generation"] == generation
        assert "first revision" not in again.log().split("resumed from", 1)[-1]
        again.eventually(
            lambda: (
                {s["revision"] for s in again.servers("iris") if s["ready"]}
                == {before["stable"]["revision"], before["canary"]["revision"]}
            ),
            60,
            "both revisions' servers ready again",
        )
        assert {"1", "2"} <= served_versions(again, 60), "both tracks serve again"

        # The rollout goes on from there: promote, then undo (refused when history was lost).
        again.request("iris", "promote")
        promoted = again.wait_healthy("iris", "2", within=60)
        assert len(promoted["history"]) == len(before["history"]) + 1
        # Who asked: the control API's default is the user weir run runs as.
        assert promoted["history"][0]["requestedBy"] == getpass.getuser()
        request_id = again.request("iris", "undo")
        undone = again.eventually(
            lambda: (
                (s := again.status("iris")).get("lastRequest", {}).get("id") == request_id and s
            ),
            30,
            "the undo request answered",
        )
        assert undone["lastRequest"]["accepted"], undone["lastRequest"]
        assert undone["lastRequest"]["by"] == getpass.getuser()
        rolling_back = again.eventually(
            lambda: (again.status("iris").get("canary") or {}).get("revision"), 30, "a canary"
        )
        assert rolling_back == before["stable"]["revision"], "undo rolls version 1 out again"


class TestStoppedAfterARollback:
    def test_a_rolled_back_version_is_not_served_after_a_restart(
        self, runs: list[LocalRun], iris_versions: dict[str, Path]
    ) -> None:
        run = runs[0]
        write_manifests(run.folder, iris(iris_versions["iris"], "1"))
        run.wait_up()
        run.wait_healthy("iris", "1")
        traffic = Traffic(run.router_url).start()
        try:
            write_manifests(run.folder, iris(iris_versions["iris_erroring"], "3"))
            rolled_back = run.eventually(
                lambda: (s := run.status("iris")).get("phase") == "RolledBack" and s,
                90,
                "the erroring version rolled back",
            )
        finally:
            traffic.stop()
        assert run.stop(signal.SIGTERM) == 0

        again = run.restarted()
        runs.append(again)
        again.wait_up()
        again.eventually(
            lambda: [s for s in again.servers("iris") if s["ready"]], 60, "a server ready again"
        )
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # a few reconciles: the spec still names version 3
            status = again.status("iris")
            assert rollout_state(status) == rollout_state(rolled_back), status
            time.sleep(0.5)
        assert served_versions(again) == {"1"}


class TestStateThatCannotBeUsed:
    def test_an_unreadable_state_file_stops_the_start_and_is_left_as_it_was(
        self, runs: list[LocalRun], iris_versions: dict[str, Path]
    ) -> None:
        run = runs[0]
        write_manifests(run.folder, iris(iris_versions["iris"], "1"))
        run.wait_up()
        run.wait_healthy("iris", "1")
        assert run.stop() == 0
        state_file = run.state_dir / "objects" / "iris.json"
        state_file.write_bytes(b'{"format": 1, "object": {"metadata": ')  # a torn write

        again = run.restarted()
        runs.append(again)
        code = again.process.wait(timeout=30)
        assert code == 1, again.log()
        errors = [line for line in again.log().splitlines() if "error:" in line]
        assert any(str(state_file) in line and "cannot be read" in line for line in errors)
        assert "Traceback" not in again.log()
        assert state_file.read_bytes() == b'{"format": 1, "object": {"metadata": '

    def test_a_second_weir_run_on_the_same_state_folder_is_refused(
        self, runs: list[LocalRun], iris_versions: dict[str, Path], tmp_path: Path
    ) -> None:
        run = runs[0]
        write_manifests(run.folder, iris(iris_versions["iris"], "1"))
        run.wait_up()
        run.wait_healthy("iris", "1")
        second = subprocess.run(
            [sys.executable, "-m", "weir_operator.cli", "run", "-f", str(run.folder),
             "--port", "0", "--control-port", "1", "--state-dir", str(run.state_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 3, second.stderr  # port 0: a usage error comes first
        second = subprocess.run(
            [sys.executable, "-m", "weir_operator.cli", "run", "-f", str(run.folder),
             "--port", str(run.port + 1), "--control-port", str(run.port + 2),
             "--state-dir", str(run.state_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        assert "another weir run" in second.stderr
        assert str(run.state_dir) in second.stderr
        assert run.status("iris")["phase"] == "Healthy"
