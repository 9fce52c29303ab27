"""Model monitoring on a real control plane: spec.monitoring.reference is rendered into the
pods as the issue's contract says (the fetch-model init container's `--reference-uri` and
`--reference-sha256`, the server's `--reference`), the test kubelet runs them as a kubelet
would, the real servers count what they serve, and the operator judges the stable's traffic
into status.drift, the Drifting condition and its DriftDetected event.

The traffic sends indices 2 and 7 only, and the reference was profiled on 0..9 evenly: the
`indices` feature has drifted (PSI about 6.8) from the first window, and nothing else is
monitored, so the verdict is True and names it."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_operator import md
from tests.controlplane.test_rollout import Traffic, lookup_model, manifest, status_where
from tests.support.operator_process import Operator
from weir_server.profile import Table, profile
from weir_server.reference import write_reference

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def monitored_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A lookup model and its reference, profiled on the indices 0..9 evenly."""
    folder = tmp_path_factory.mktemp("monitored")
    model = lookup_model(folder / "lookup.onnx", 10)
    reference = folder / "lookup.reference.json"
    training = np.tile(np.arange(10, dtype=np.int64), 100)
    write_reference(profile(model, Table.from_array(training, "indices 0..9")), reference)
    return model, reference


def with_monitoring(model: Path, reference: Path) -> dict[str, Any]:
    document = copy.deepcopy(manifest(model, "1"))
    document["spec"]["replicas"] = 1
    document["spec"]["monitoring"] = {
        "reference": {
            "uri": reference.as_uri(),
            "sha256": hashlib.sha256(reference.read_bytes()).hexdigest(),
        },
        "drift": {"window": "2s", "minSamples": 20, "threshold": 0.2},
    }
    return document


def test_the_reference_is_rendered_fetched_counted_and_judged(
    admin: Kubectl, namespace: str, watched: Operator, monitored_model: tuple[Path, Path]
) -> None:
    model, reference = monitored_model
    document = with_monitoring(model, reference)
    admin.apply(document, namespace=namespace)
    eventually(
        lambda: status_where(admin, namespace, phase="Healthy", readyReplicas=1),
        within=90,
        what="v1 Healthy with its reference",
    )
    deployments = admin.json("get", "deployments", "-n", namespace)["items"]
    (pod,) = [d["spec"]["template"]["spec"] for d in deployments]
    (fetch,) = pod["initContainers"]
    sha256 = document["spec"]["monitoring"]["reference"]["sha256"]
    assert fetch["args"][-4:] == [
        "--reference-uri", reference.as_uri(), "--reference-sha256", sha256,
    ], fetch["args"]  # fmt: skip
    server = next(c for c in pod["containers"] if c["name"] == "server")
    assert "--reference" in server["args"], server["args"]

    traffic = Traffic(admin, namespace, limit_seconds=90)
    try:

        def drifting() -> dict[str, Any] | None:
            status = md(admin, namespace).get("status") or {}
            found = [c for c in status.get("conditions") or [] if c["type"] == "Drifting"]
            return status if found and found[0]["status"] == "True" else None

        status = eventually(drifting, within=60, what="Drifting True on the stable's traffic")
    finally:
        traffic.stop()
    drift = status["drift"]
    assert drift["revision"] == status["stable"]["revision"]
    assert drift["samples"] >= 20
    assert drift["features"][0]["name"] == "indices"
    assert drift["features"][0]["score"] > 1, drift
    (condition,) = [c for c in status["conditions"] if c["type"] == "Drifting"]
    assert condition["reason"] == "DriftDetected"
    assert condition["message"].startswith("input drift: indices PSI "), condition
    events = admin.json("get", "events", "-n", namespace)["items"]
    assert any(e["reason"] == "DriftDetected" for e in events), [e["reason"] for e in events]
