"""The container tier: the image our Dockerfile builds, run the way a cluster would run it
(read-only root filesystem, no capabilities, no privilege escalation, a non-root user, the model
on a read-only mount), answering real V2 requests through a port published on 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import onnxruntime as ort
import pytest

if TYPE_CHECKING:  # the fixtures come from conftest.py; it is never imported at run time
    from conftest import Container, ImageSize

Docker = Callable[..., subprocess.CompletedProcess[str]]

# Covers a cold `docker build` in the first test's setup (conftest bounds it to 900 s).
pytestmark = [pytest.mark.container, pytest.mark.timeout(1080)]
STOP_TIMEOUT = 20

# What our Dockerfile adds to the base: a venv with onnxruntime, numpy and the kubernetes client
# (about 320 MB). A stray .venv, build tools or pip caches in the final stage would break this.
ADDED_SIZE_BUDGET_BYTES = 400_000_000

# Run inside the container with its own interpreter: which paths can be written, as errno names.
WRITE_PROBE = """
import errno, json, sys
results = {}
for path in sys.argv[1:]:
    try:
        with open(path, "w") as file:
            file.write("x")
        results[path] = "written"
    except OSError as error:
        results[path] = errno.errorcode.get(error.errno, str(error.errno))
print(json.dumps(results))
"""

TOOLS_PROBE = """
import importlib.util, json, shutil
tools = ["gcc", "cc", "c++", "g++", "clang", "make"]
print(json.dumps({
    "on_path": {tool: shutil.which(tool) for tool in tools if shutil.which(tool)},
    "pip_in_venv": importlib.util.find_spec("pip") is not None,
    "setuptools_in_venv": importlib.util.find_spec("setuptools") is not None,
}))
"""


@pytest.fixture(scope="module")
def serving(
    run_serve: Callable[..., Container], container_report: dict[str, str]
) -> tuple[Container, str]:
    started = time.monotonic()
    container = run_serve()
    url = container.wait_ready()
    container_report["ready after"] = (
        f"{time.monotonic() - started:.1f} s (docker run to /v2/health/ready)"
    )
    return container, url


def test_inference_matches_onnxruntime(serving: tuple[Container, str], model_dir: Path) -> None:
    container, url = serving
    rows = np.random.default_rng(2024).normal(scale=3.0, size=(5, 4)).astype(np.float32)
    request = {
        "inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32", "data": rows.tolist()}]
    }

    response = httpx.post(f"{url}/v2/models/iris/infer", json=request, timeout=10)

    assert response.status_code == 200, f"{response.text}\n{container.logs()}"
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    described = {name: (output["datatype"], output["shape"]) for name, output in outputs.items()}
    assert described == {"probabilities": ("FP32", [5, 3]), "label": ("INT64", [5])}
    expected_probabilities, expected_labels = ort.InferenceSession(
        str(model_dir / "iris.onnx"), providers=["CPUExecutionProvider"]
    ).run(["probabilities", "label"], {"input": rows})
    probabilities = np.asarray(outputs["probabilities"]["data"], dtype=np.float32).reshape(5, 3)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(outputs["label"]["data"]), expected_labels)
    # A real classifier on these rows, not a constant answer.
    assert len(set(outputs["label"]["data"])) > 1


def test_process_runs_as_non_root(serving: tuple[Container, str]) -> None:
    container, _ = serving
    user = container.inspect()["Config"]["User"]
    assert re.fullmatch(r"[1-9]\d*(:\d+)?", user), (
        f"image USER must be a numeric non-root UID: {user!r}"
    )

    exec_uid = container.exec("id", "-u")
    assert exec_uid.returncode == 0, exec_uid.stderr
    assert int(exec_uid.stdout) != 0

    # PID 1 is the server itself (no shell, no init in between): every one of its UIDs.
    status = container.exec("cat", "/proc/1/status").stdout
    cmdline = container.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert all(int(uid) != 0 for uid in uids), f"server process UIDs: {uids}"
    assert cmdline[1:3] == ["/opt/weir/bin/weir", "serve"], cmdline


def test_root_filesystem_is_read_only(serving: tuple[Container, str]) -> None:
    container, _ = serving
    host_config = container.inspect()["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    assert host_config["CapDrop"] == ["ALL"]

    paths = ["/weir-probe", "/tmp/weir-probe", "/opt/weir/weir-probe", "/models/weir-probe"]
    # Even root (in the container, without capabilities) gets EROFS: the filesystem is read-only,
    # which is more than the non-root user's missing permissions.
    for user in (None, "0"):
        probe = container.exec("/opt/weir/bin/python", "-c", WRITE_PROBE, *paths, user=user)
        assert probe.returncode == 0, probe.stderr
        results = json.loads(probe.stdout)
        assert results == dict.fromkeys(paths, "EROFS"), (
            f"as user {user or 'of the image'}: {results}"
        )


def test_docker_stop_exits_cleanly(
    run_serve: Callable[..., Container], docker_cli: Docker, container_report: dict[str, str]
) -> None:
    container = run_serve()
    url = container.wait_ready()
    assert httpx.get(f"{url}/v2/health/live", timeout=5).status_code == 200

    started = time.monotonic()
    docker_cli("stop", "--time", str(STOP_TIMEOUT), container.id, timeout=STOP_TIMEOUT + 30)
    elapsed = time.monotonic() - started

    state = container.inspect()["State"]
    assert not state["Running"]
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{container.logs()}"
    assert not state["OOMKilled"]
    # SIGKILL comes only after the stop timeout: well under it means SIGTERM was handled.
    assert elapsed < STOP_TIMEOUT / 2, f"took {elapsed:.1f} s to stop:\n{container.logs()}"
    container_report["stop"] = f"{elapsed:.1f} s from docker stop to exit 0"


def test_image_has_no_build_tools(image: str, docker_cli: Docker) -> None:
    result = docker_cli(
        "run", "--rm", "--read-only", "--entrypoint", "/opt/weir/bin/python", image,
        "-c", TOOLS_PROBE,
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert found == {"on_path": {}, "pip_in_venv": False, "setuptools_in_venv": False}


def test_entrypoint_is_weir(image: str, docker_cli: Docker) -> None:
    default = docker_cli("run", "--rm", "--read-only", image, check=False)
    assert default.returncode == 0, default.stderr
    assert "usage: weir" in default.stdout
    assert "serve" in default.stdout

    reported = docker_cli("run", "--rm", "--read-only", image, "--version").stdout.strip()
    assert reported == f"weir {version('weir')}"

    config = docker_cli("image", "inspect", "--format", "{{json .Config}}", image).stdout
    assert "8080/tcp" in json.loads(config)["ExposedPorts"]


def test_image_size_within_budget(image_size: ImageSize) -> None:
    assert 0 < image_size.added < ADDED_SIZE_BUDGET_BYTES, (
        f"the Dockerfile adds {image_size.added / 1e6:.0f} MB to its base image, "
        f"budget {ADDED_SIZE_BUDGET_BYTES / 1e6:.0f} MB"
    )
