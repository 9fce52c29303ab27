"""Running hack/kind-e2e.sh from the tests, and reading what its --dry-run prints."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "hack" / "kind-e2e.sh"
HOW_TO_RUN = (
    "The cluster tier needs kind (>= 0.24, https://kind.sigs.k8s.io) on PATH, a Docker engine that "
    "can create a kind cluster, and internet access (the kindest/node image, BASE_IMAGE, the "
    "Gateway API CRDs, Envoy Gateway's chart on docker.io). Run it with "
    "`WEIR_CLUSTER=1 .venv/bin/python -m pytest tests/cluster -q` (about 15 minutes), or the "
    "harness directly: `hack/kind-e2e.sh --gateway-api` (`--keep` keeps the cluster, "
    "`--dry-run` prints the steps). WEIR_CLUSTER_ARGS adds harness flags (e.g. `--name my-e2e`), "
    "BASE_IMAGE chooses the image's base; WEIR_CLUSTER=0 always skips."
)


@dataclass(frozen=True)
class Command:
    """One command the harness printed: its words, and how it is run."""

    argv: tuple[str, ...]
    background: bool
    expect_exit: int | None
    expect_output: str | None

    @property
    def text(self) -> str:
        return " ".join(self.argv)


def parse_commands(stdout: str) -> list[Command]:
    """The `+ …` lines of a run: words split as a shell would, with the harness' own suffixes
    (`  # expect exit N`, `  # expect output '…' …`, ` >LOG 2>&1 &`) read off."""
    commands = []
    for line in stdout.splitlines():
        if not line.startswith("+ "):
            continue
        body, _, comment = line[2:].partition("  # ")
        words = shlex.split(body)
        background = bool(words) and words[-1] == "&"
        if background:
            words = [w for w in words[:-1] if not w.startswith(">") and w != "2>&1"]
        expect_exit = expect_output = None
        if comment.startswith("expect exit "):
            expect_exit = int(comment.removeprefix("expect exit "))
        elif comment.startswith("expect output "):
            expect_output = shlex.split(comment.removeprefix("expect output "))[0]
        commands.append(Command(tuple(words), background, expect_exit, expect_output))
    return commands


def steps(stdout: str) -> list[str]:
    return [line[3:] for line in stdout.splitlines() if line.startswith("== ")]


def run_harness(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(HARNESS), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def cluster_unavailable() -> str | None:
    """Why the real harness cannot run here, or None when it can (or must: WEIR_CLUSTER=1)."""
    flag = os.environ.get("WEIR_CLUSTER", "")
    if flag == "1":
        return None
    if flag == "0":
        return "WEIR_CLUSTER=0"
    if shutil.which("kind") is None:
        return "kind is not on PATH"
    if shutil.which("docker") is None:
        return "docker is not on PATH"
    try:
        info = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`docker info` failed: {e}"
    if info.returncode != 0:
        return "the Docker engine does not answer (`docker info` failed)"
    return None
