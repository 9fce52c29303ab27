"""TLS on the inference port on a real control plane: the certificate comes from a Secret of
type kubernetes.io/tls (cert-manager's shape, made here by a test CA), the servers speak HTTPS
only, the kubelet probes them over HTTPS, and the operator verifies them with the Secret's
ca.crt (read through the API, cluster/trust.py) for the pre-traffic checks and the direct
provider's scrapes: a rollout is analysed over TLS and promoted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.controlplane.conftest import Kubectl, eventually
from tests.controlplane.test_rollout import (
    Traffic,
    lookup_model,
    manifest,
    revision,
    status_where,
)
from tests.support.certs import Authority
from tests.support.operator_process import Operator
from tests.support.tls import https_client

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tls-lookups")
    return {v: lookup_model(folder / f"lookup-{v}.onnx", 10) for v in ("1", "2")}


def with_tls(document: dict[str, Any]) -> dict[str, Any]:
    served = copy.deepcopy(document)
    served["spec"]["replicas"] = 1
    served["spec"]["server"] = {"tls": {"secretName": "iris-tls"}}
    return served


def test_a_tls_model_deployment_is_served_probed_and_analysed_over_tls(
    admin: Kubectl, namespace: str, watched: Operator, tables: dict[str, Path]
) -> None:
    authority = Authority()
    name = f"iris.{namespace}.svc"
    admin.apply(authority.issue(name).secret("iris-tls", namespace=namespace), namespace=namespace)
    first, second = (with_tls(manifest(tables[v], v)) for v in ("1", "2"))
    admin.apply(first, namespace=namespace)
    eventually(
        lambda: status_where(admin, namespace, phase="Healthy", readyReplicas=1),
        within=90,
        what="v1 Healthy over HTTPS (the kubelet's HTTPS readiness probe)",
    )
    traffic = Traffic(admin, namespace, client=https_client(authority.pem, name))
    try:
        admin.apply(second, namespace=namespace)

        def promoted() -> dict[str, Any] | None:
            status = status_where(admin, namespace) or {}
            stable = (status.get("stable") or {}).get("revision")
            return status if stable == revision(second) and status["phase"] == "Healthy" else None

        status = eventually(promoted, within=150, what="v2 promoted over TLS")
    finally:
        traffic.stop()
        print(dict(traffic.answers))
    analysis = status["lastAnalysis"]
    assert analysis["verdict"] == "Pass", analysis
    assert analysis["canary"]["requests"] >= 10, "the canary's pods were scraped over TLS"
    assert traffic.answers[(revision(second), 200)] > 0, traffic.answers
    pods = admin.json("get", "pods", "-n", namespace)["items"]
    address = next(p["status"]["podIP"] for p in pods if p["status"].get("podIP"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{address}:8080/v2/health/ready", timeout=2).raise_for_status()
