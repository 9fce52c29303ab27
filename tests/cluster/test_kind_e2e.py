"""The cluster tier: hack/kind-e2e.sh for real, on a kind cluster.

It runs when WEIR_CLUSTER=1, or when kind is on PATH and a Docker engine answers; otherwise it
is skipped with a message that says how to run it (here no image registry is reachable, so a
kind cluster cannot be created). The harness builds the image, loads it into kind, installs
the chart, serves the example models in the cluster, and rolls out a good and a bad model
twice: with `traffic.router: replicas` (traffic through a port-forward to a relay in front of
the `iris` Service) and with `gateway-api` (Envoy Gateway; traffic through a port-forward to
Envoy). Every assertion is in the harness: `weir status --wait` exits 0 for the promotion and 1
for the rollback, the status and the Service or HTTPRoute show the stable revision, and the
traffic got answers. This test checks that it passed and went through every step."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.cluster.support import HARNESS, HOW_TO_RUN, ROOT, cluster_unavailable, steps

HARNESS_TIMEOUT_S = 3600
pytestmark = pytest.mark.timeout(HARNESS_TIMEOUT_S + 300)


def test_kind_promotes_a_good_model_and_rolls_back_a_bad_one(tmp_path: Path) -> None:
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(f"{reason}. {HOW_TO_RUN}")
    args = ["--gateway-api", "--workdir", str(tmp_path / "work")]
    args += shlex.split(os.environ.get("WEIR_CLUSTER_ARGS", ""))
    log = tmp_path / "kind-e2e.log"
    with log.open("w") as out:
        proc = subprocess.run(
            ["bash", str(HARNESS), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=HARNESS_TIMEOUT_S,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    output = log.read_text(errors="replace")
    tail = "\n".join(output.splitlines()[-200:])
    assert proc.returncode == 0, (
        f"hack/kind-e2e.sh {' '.join(args)} exited {proc.returncode}:\n{tail}"
    )
    done = steps(output)
    for step in (
        "create cluster",
        "helm install",
        "rollout iris v2 (good): expect promotion",
        "rollout iris v3 (bad): expect automatic rollback",
        "phase 2: traffic.router gateway-api",
        "rollout iris-gw v2 (good): expect promotion",
        "rollout iris-gw v3 (bad): expect automatic rollback",
        "cleanup",
    ):
        assert step in done, f"step {step!r} did not run:\n{tail}"
    assert "[kind-e2e] PASSED" in output, tail
