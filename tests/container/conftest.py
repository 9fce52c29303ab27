"""Container tier fixtures: a Docker engine, the image built from our Dockerfile, and containers
that are always removed.

No engine, or no base image to build from, is a skip, unless `WEIR_REQUIRE_DOCKER=1` (set by CI)
makes it a failure. A Dockerfile that does not build is always a failure."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from weir_server import sample_models

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("WEIR_TEST_IMAGE", "weir:test")
LOCAL_BASE = "weir-base:bookworm"
OFFICIAL_BASE = "python:3.12-slim"
LABEL = "io.weir.test=container-tier"
BUILD_TIMEOUT = 900.0
READY_TIMEOUT = 60.0

# Measurements shown in the terminal summary (image size, build time...), kept on the config
# so the test module reaches them through the `container_report` fixture, never by importing us.
REPORT_KEY = pytest.StashKey[dict[str, str]]()


def docker_required() -> bool:
    return os.environ.get("WEIR_REQUIRE_DOCKER", "") not in ("", "0")


def unavailable(reason: str) -> None:
    """Skip, or fail when WEIR_REQUIRE_DOCKER=1 says the container tier must run."""
    if docker_required():
        pytest.fail(f"WEIR_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def docker(
    *args: str, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs the docker CLI, bounded in time; a failure carries the command's output."""
    try:
        result = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"`docker {' '.join(args)}` took more than {timeout} s") from error
    if check and result.returncode != 0:
        raise AssertionError(
            f"`docker {' '.join(args)}` exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def uses_legacy_builder() -> bool:
    """`docker build` is the classic builder when buildx is missing or BuildKit is turned off."""
    if os.environ.get("DOCKER_BUILDKIT") == "0":
        return True
    return docker("buildx", "version", check=False).returncode != 0


def log_tail(path: Path, lines: int = 60) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def report_of(config: pytest.Config) -> dict[str, str]:
    return config.stash.setdefault(REPORT_KEY, {})


@pytest.fixture(scope="session")
def container_report(request: pytest.FixtureRequest) -> dict[str, str]:
    return report_of(request.config)


@pytest.fixture(scope="session")
def docker_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`docker(*args, timeout=..., check=...)` for the tests."""
    return docker


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine's version; skips (or fails) when no engine answers, with the one-line reason
    and remedy that hack/docker-engine.sh gives `make test` as well."""
    try:
        probe = subprocess.run(
            [str(ROOT / "hack" / "docker-engine.sh")],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        unavailable("hack/docker-engine.sh did not answer within 60 s")
    line = probe.stdout.strip()
    if probe.returncode != 0:
        unavailable(f"container tier skipped: {line}")
    return line.removeprefix("Docker engine ")


@pytest.fixture(scope="session")
def base_image(docker_engine: str) -> str:
    """WEIR_BASE_IMAGE, else the local debootstrapped base if built, else python:3.12-slim.
    Only images already present are used: the tests never pull from a registry."""
    tag = os.environ.get("WEIR_BASE_IMAGE") or (
        LOCAL_BASE if image_exists(LOCAL_BASE) else OFFICIAL_BASE
    )
    if not image_exists(tag):
        unavailable(
            f"base image {tag} is not present locally: build it with hack/build-base-image.sh "
            f"(then WEIR_BASE_IMAGE={LOCAL_BASE}) or `docker pull {OFFICIAL_BASE}`"
        )
    return tag


@pytest.fixture(scope="session")
def image(
    base_image: str,
    docker_engine: str,
    tmp_path_factory: pytest.TempPathFactory,
    container_report: dict[str, str],
) -> str:
    """Builds the Dockerfile at the repository root (Docker's layer cache makes reruns fast)."""
    log_path = tmp_path_factory.mktemp("docker-build") / "build.log"
    command = ["docker", "build", "--build-arg", f"BASE_IMAGE={base_image}", "--tag", IMAGE]
    if uses_legacy_builder():
        # Otherwise a failed RUN leaves its container behind (BuildKit never does; it would
        # reject the flag where `docker build` is buildx).
        command.append("--force-rm")
    started = time.monotonic()
    with log_path.open("w") as log:
        try:
            result = subprocess.run(
                [*command, "."],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=BUILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"docker build took more than {BUILD_TIMEOUT} s; log tail:\n{log_tail(log_path)}",
                pytrace=False,
            )
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        pytest.fail(
            f"docker build (BASE_IMAGE={base_image}) exited with {result.returncode}; "
            f"log tail:\n{log_tail(log_path)}",
            pytrace=False,
        )
    container_report["image"] = f"{IMAGE} from {base_image} (Docker engine {docker_engine})"
    container_report["build"] = f"{elapsed:.1f} s (Docker's layer cache reused where it could)"
    return IMAGE


@dataclass(frozen=True)
class ImageSize:
    total: int
    base: int

    @property
    def added(self) -> int:
        """What our Dockerfile adds on top of the base image."""
        return self.total - self.base


@pytest.fixture(scope="session")
def image_size(image: str, base_image: str, container_report: dict[str, str]) -> ImageSize:
    def size_of(tag: str) -> int:
        return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)

    size = ImageSize(total=size_of(image), base=size_of(base_image))
    container_report["size"] = (
        f"{size.total / 1e6:.0f} MB ({size.base / 1e6:.0f} MB base + {size.added / 1e6:.0f} MB ours)"
    )
    return size


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with iris.onnx that the container's non-root user can read (pytest makes
    temporary directories 0700, owned by whoever runs the tests)."""
    directory = tmp_path_factory.mktemp("container-models")
    model = sample_models.iris(directory / "iris.onnx")
    directory.chmod(0o755)
    model.chmod(0o644)
    return directory


@dataclass
class Container:
    id: str  # the container's name, which every docker command accepts as well

    def inspect(self) -> dict[str, Any]:
        document: list[dict[str, Any]] = json.loads(docker("inspect", self.id).stdout)
        return document[0]

    def logs(self) -> str:
        result = docker("logs", "--tail", "80", self.id, check=False)
        return f"{result.stdout}{result.stderr}"

    def exec(self, *command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        options = ["--user", user] if user is not None else []
        return docker("exec", *options, self.id, *command, check=False, timeout=30)

    def url(self, container_port: int = 8080) -> str:
        """The published port, on 127.0.0.1 (the only address the tests talk to)."""
        mapping = docker("port", self.id, f"{container_port}/tcp").stdout.split()[0]
        host, _, port = mapping.rpartition(":")
        assert host == "127.0.0.1", f"port {container_port} is published on {mapping}"
        return f"http://127.0.0.1:{port}"

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> str:
        url = self.url()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(
                    f"container exited with {state['ExitCode']} before it was ready:\n{self.logs()}"
                )
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout} s on {url}:\n{self.logs()}")

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.id, check=False, timeout=60)


@pytest.fixture(scope="module")
def run_serve(image: str, model_dir: Path) -> Iterator[Callable[..., Container]]:
    """Starts `weir serve` on iris.onnx in a locked-down container; removes every one it
    started at teardown, whatever happened."""
    containers: list[Container] = []

    def start(*extra_args: str) -> Container:
        # Named before it exists, so even a `docker run` that fails half-way is cleaned up.
        container = Container(f"weir-test-{uuid.uuid4().hex[:12]}")
        containers.append(container)
        docker(
            "run", "--detach", "--name", container.id, "--label", LABEL,
            "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--publish", "127.0.0.1::8080",
            "--volume", f"{model_dir}:/models:ro",
            image,
            "serve", "/models/iris.onnx", "--host", "0.0.0.0", "--port", "8080", "--name", "iris",
            *extra_args,
        )  # fmt: skip
        return container

    yield start
    for container in containers:
        container.remove()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = report_of(terminalreporter.config)
    if report:
        terminalreporter.write_sep("-", "container tier")
        for key, value in report.items():
            terminalreporter.write_line(f"{key}: {value}")
