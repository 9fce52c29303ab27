"""Who asked for a promote, as the API server says: `weir promote` on a real control plane asks
the SelfSubjectReview API who its kubeconfig's user is and writes it into the request, and the
operator records it in status.lastRequest and in the history entry the promote leads to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_rollout import lookup_model, manifest, revision, status_where
from tests.support.operator_process import Operator

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("who-lookups")
    return {v: lookup_model(folder / f"lookup-{v}.onnx", 10) for v in ("1", "2")}


def held_at_a_pause(model: Path, version: str) -> dict[str, Any]:
    document = manifest(model, version)
    document["spec"]["replicas"] = 1
    document["spec"]["rollout"]["steps"] = [{"pause": {}}]  # until promoted
    return document


def test_a_cli_promote_records_the_api_servers_name_for_the_caller(
    admin: Kubectl, namespace: str, watched: Operator, tables: dict[str, Path]
) -> None:
    first, second = held_at_a_pause(tables["1"], "1"), held_at_a_pause(tables["2"], "2")
    admin.apply(first, namespace=namespace)
    eventually(lambda: status_where(admin, namespace, phase="Healthy"), within=90, what="v1")
    admin.apply(second, namespace=namespace)
    eventually(lambda: status_where(admin, namespace, phase="Paused"), within=90, what="paused")
    me = admin.json("auth", "whoami", "-o", "json")["status"]["userInfo"]["username"]
    promote = subprocess.run(
        [sys.executable, "-m", "weir_operator.cli", "promote", "iris", "-n", namespace,
         "--kubeconfig", str(admin.kubeconfig), "--timeout", "60s"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert promote.returncode == 0, promote.stderr + promote.stdout

    def promoted() -> dict[str, Any] | None:
        status = status_where(admin, namespace) or {}
        return status if (status.get("stable") or {}).get("revision") == revision(second) else None

    status = eventually(promoted, within=90, what="v2 promoted")
    assert status["lastRequest"]["by"] == me, status["lastRequest"]
    assert status["history"][0]["requestedBy"] == me, status["history"][0]
