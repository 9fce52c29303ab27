"""The `weir` CLI against a real `weir run`: what a CI pipeline does to promote a model, with
the exit codes it relies on (0 healthy on the new version, 1 rolled back, 2 timed out, 3 not
found or unreachable)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support.local_run import LocalRun, Traffic, manifest, write_manifests
from tests.support.processes import free_port

ANALYSIS = {"interval": "2s", "failureThreshold": 2, "minRequests": 10}


def weir(run_url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", *args, "--local", run_url],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_pipeline_promotes_a_good_model_and_is_told_when_a_bad_one_is_rolled_back(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    steps = [{"setWeight": 50}, {"pause": {"duration": "1s"}}]
    rollout = {"steps": steps, "analysis": ANALYSIS}
    write_manifests(
        local_run.folder, manifest("iris", iris_versions["iris"], "1", replicas=2, rollout=rollout)
    )
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    url = local_run.control_url
    traffic = Traffic(local_run.router_url).start()
    try:
        good = iris_versions["iris_v2"].as_uri()
        assert weir(url, "set-model", "iris", "--uri", good, "--version", "2").returncode == 0
        waited = weir(url, "status", "iris", "--wait", "--timeout", "90s", "-o", "json")
        assert waited.returncode == 0, waited.stdout + waited.stderr
        last = json.loads(waited.stdout.strip().splitlines()[-1])
        assert last["result"] == "healthy"
        assert last["stable"]["version"] == "2"

        bad = iris_versions["iris_erroring"].as_uri()
        assert weir(url, "set-model", "iris", "--uri", bad, "--version", "3").returncode == 0
        waited = weir(url, "status", "iris", "--wait", "--timeout", "90s")
        assert waited.returncode == 1, waited.stdout + waited.stderr
        assert "rolled back" in waited.stdout
    finally:
        traffic.stop()
    history = weir(url, "history", "iris", "-o", "json")
    assert history.returncode == 0
    outcomes = [entry["outcome"] for entry in json.loads(history.stdout)]
    assert outcomes[:2] == ["RolledBack", "Promoted"]


def test_waiting_on_a_rollout_that_waits_for_a_person_times_out_with_2(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    rollout = {"steps": [{"setWeight": 50}, {"pause": {}}], "analysis": ANALYSIS}
    write_manifests(
        local_run.folder, manifest("iris", iris_versions["iris"], "1", replicas=2, rollout=rollout)
    )
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    url = local_run.control_url
    local_run.set_model("iris", iris_versions["iris_v2"], "2")
    started = time.monotonic()
    waited = weir(url, "status", "iris", "--wait", "--timeout", "3s")
    assert waited.returncode == 2, waited.stdout + waited.stderr
    assert time.monotonic() - started < 30
    promoted = weir(url, "promote", "iris", "--full")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert weir(url, "status", "iris", "--wait", "--timeout", "60s").returncode == 0


def test_a_missing_object_or_runtime_is_3(local_run: LocalRun) -> None:
    local_run.wait_up()
    missing = weir(local_run.control_url, "status", "nothing")
    assert missing.returncode == 3
    assert "nothing" in missing.stderr
    nowhere = weir(f"http://127.0.0.1:{free_port()}", "get")
    assert nowhere.returncode == 3
    assert "weir run" in nowhere.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly_with_141(
    local_run: LocalRun, iris_versions: dict[str, Path]
) -> None:
    """`weir get | head -0` printed a BrokenPipeError traceback."""
    write_manifests(local_run.folder, manifest("iris", iris_versions["iris"], "1"))
    local_run.wait_up()
    local_run.wait_healthy("iris", "1")
    for command in ("get", "status iris", "history iris -o json"):
        piped = subprocess.run(
            ["bash", "-c", f'{sys.executable} -m weir_operator.cli {command} --local '
             f'{local_run.control_url} | head -0; echo "exit ${{PIPESTATUS[0]}}" >&2'],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "Traceback" not in piped.stderr, piped.stderr
        assert piped.stderr.strip().splitlines()[-1] in ("exit 141", "exit 0"), piped.stderr
