"""A shadow step on a real control plane: the operator writes the `<md>-shadow` ConfigMap, the
stable's real servers read it from their mounted volume (the test kubelet refreshes configMap
volumes and resolves the `<md>-canary` Service to a ready canary pod, as a kubelet and
kube-proxy would), copy the traffic they answer to the canary, and the direct provider reads
their weir_shadow_* counters. A version that answers 200, fast, and wrongly is rolled back in
the shadow, and the canary never had weight: with the `replicas` router (no mesh) and with
`gateway-api`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_gateway_rollout import GatewayStandIn, gateway_manifest
from tests.controlplane.test_rollout import Traffic, lookup_model, manifest, revision, status_where
from tests.support.operator_process import Operator

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shadow-lookups")
    return {"1": lookup_model(folder / "lookup-1.onnx", 10)}


def wrong_lookup(path: Path) -> Path:
    """The same signature and table size, other values: every answer is 200 and wrong."""
    return lookup_model(path, 10, np.arange(10, dtype=np.float32)[::-1].copy())


def shadowed(document: dict[str, Any]) -> dict[str, Any]:
    shadow = copy.deepcopy(document)
    rollout = shadow["spec"]["rollout"]
    rollout["steps"] = [{"shadow": {"percent": 100, "duration": "30s"}}, {"setWeight": 50}]
    rollout["analysis"]["minRequests"] = 5
    rollout["analysis"]["agreement"] = {"compare": "close", "minRate": 0.9, "minSamples": 10}
    return shadow


@pytest.mark.parametrize("router", ["replicas", "gateway-api"])
def test_a_wrong_version_is_rolled_back_in_the_shadow_with_no_weight_ever(
    admin: Kubectl,
    namespace: str,
    watched: Operator,
    tables: dict[str, Path],
    tmp_path: Path,
    router: str,
) -> None:
    built = gateway_manifest if router == "gateway-api" else manifest
    first = shadowed(built(tables["1"], "1"))
    wrong = shadowed(built(wrong_lookup(tmp_path / "lookup-wrong.onnx"), "2"))
    admin.apply(first, namespace=namespace)
    eventually(
        lambda: status_where(admin, namespace, phase="Healthy", readyReplicas=2),
        within=90,
        what="v1 Healthy on 2 servers",
    )
    config = admin.json("get", "configmap", "iris-shadow", "-n", namespace)
    assert '"percent":0' in config["data"]["mirror.json"], "nothing mirrored without a canary"
    # The test plays kube-proxy for the `iris` Service, or the gateway reading the HTTPRoute.
    traffic = (
        GatewayStandIn(admin, namespace) if router == "gateway-api" else Traffic(admin, namespace)
    )
    weights: set[int] = set()
    try:
        admin.apply(wrong, namespace=namespace)

        def rolled_back() -> dict[str, Any] | None:
            status = status_where(admin, namespace) or {}
            weights.add((status.get("canary") or {}).get("weight", 0))
            return status if status.get("phase") == "RolledBack" else None

        status = eventually(rolled_back, within=150, what="the wrong canary rolled back")
    finally:
        traffic.stop()
        print(dict(traffic.answers))
    assert weights == {0}, "the canary never had weight"
    assert traffic.answers[(revision(wrong), 200)] == 0, "no client request reached it"
    assert status["rolledBackRevision"] == revision(wrong)
    rolled = next(c for c in status["conditions"] if c["type"] == "RolledBack")
    assert rolled["reason"] == "AgreementFailed", rolled
    agreement = status["lastAnalysis"]["agreement"]
    assert agreement["samples"] >= 10, agreement
    assert agreement["rate"] < 0.9, agreement
    config = admin.json("get", "configmap", "iris-shadow", "-n", namespace)
    assert '"percent":0' in config["data"]["mirror.json"], "mirroring stops with the rollback"
