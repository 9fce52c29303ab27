"""The real `weir operator`, with only the chart's RBAC, against a real control plane whose pods
the test kubelet runs as real `weir serve` processes: apply -> servers answer inferences;
status through the status subresource with observedGeneration following generation; a new
model version rolled out on real pods; `kubectl scale md`; a model that cannot be fetched
becomes a condition; delete -> kube-controller-manager's garbage collector removes everything.

One operator for this module, watching every namespace (no flags, as the chart runs it)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.controlplane.conftest import Kubectl, eventually
from tests.support.kubelet import LoopbackKubelet
from tests.support.operator_process import Operator
from weir_operator.core.render import label_selector, revision_of
from weir_operator.core.spec import parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = "app.kubernetes.io/instance"


pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def model_files(iris_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two versions of the iris model, at their own paths (so their URIs and revisions differ)."""
    from weir_server import sample_models

    folder = tmp_path_factory.mktemp("model-store")
    v1 = shutil.copy(iris_model, folder / "iris-1.onnx")
    v2 = sample_models.iris(folder / "iris-2.onnx", seed=8)
    return {"1": Path(v1), "2": v2}


def manifest(
    model: Path, version: str, replicas: int = 2, sha256: str | None = None
) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text())
    document["spec"]["model"] = {
        "uri": f"file://{model}",
        "version": version,
        "sha256": sha256 or hashlib.sha256(model.read_bytes()).hexdigest(),
    }
    document["spec"]["replicas"] = replicas
    return document


def revision(document: dict[str, Any]) -> str:
    return revision_of(parse_model_deployment(document).spec)


def md(admin: Kubectl, namespace: str, name: str = "iris") -> dict[str, Any]:
    return admin.json("get", "md", name, "-n", namespace)


def healthy_on(admin: Kubectl, namespace: str, rev: str, ready: int) -> dict[str, Any] | None:
    found = md(admin, namespace)
    status = found.get("status") or {}
    if (
        status.get("phase") == "Healthy"
        and (status.get("stable") or {}).get("revision") == rev
        and status.get("readyReplicas") == ready
        and not status.get("canary")
        and status.get("observedGeneration") == found["metadata"]["generation"]
    ):
        return found
    return None


def pods(admin: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.json(
        "get", "pods", "-n", namespace, "-l", f"{INSTANCE}=iris"
    )["items"]
    return items


def infer(address: str) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
        ]
    }
    response = httpx.post(f"http://{address}:8080/v2/models/iris/infer", json=body, timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_apply_runs_real_servers_and_reports_through_the_status_subresource(
    admin: Kubectl, namespace: str, watched: Operator, model_files: dict[str, Path]
) -> None:
    document = manifest(model_files["1"], "1")
    admin.apply(document, namespace=namespace)
    rev = revision(document)

    found = eventually(
        lambda: healthy_on(admin, namespace, rev, 2), within=90, what="Healthy, 2 ready"
    )
    status = found["status"]
    assert status["observedGeneration"] == found["metadata"]["generation"] == 1
    assert status["selector"] == label_selector(parse_model_deployment(found))
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True"
    assert all(c["lastTransitionTime"] and c["reason"] for c in conditions.values())

    # Every child is owned by the ModelDeployment (so the garbage collector can remove it).
    uid = found["metadata"]["uid"]
    for kind in ("deployments", "services", "poddisruptionbudgets"):
        for child in admin.json("get", kind, "-n", namespace, "-l", f"{INSTANCE}=iris")["items"]:
            (owner,) = child["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["uid"], owner["controller"]) == (
                "ModelDeployment",
                uid,
                True,
            )

    # The pods are real servers on their own loopback addresses: they answer inferences.
    running = [p for p in pods(admin, namespace) if p["status"].get("podIP")]
    assert len(running) == 2
    addresses = {p["status"]["podIP"] for p in running}
    assert len(addresses) == 2
    assert all(a.startswith("127.0.0.") for a in addresses)
    for address in addresses:
        assert infer(address)["model_name"] == "iris"

    # `kubectl get md` tells the truth.
    row = admin.ok("get", "md", "iris", "-n", namespace, "--no-headers").split()
    assert row[:3] == ["iris", "Healthy", "iris"]
    assert "2/2" in row


def test_a_new_model_version_is_rolled_out_on_real_pods(
    admin: Kubectl, namespace: str, watched: Operator, model_files: dict[str, Path]
) -> None:
    first = manifest(model_files["1"], "1", replicas=1)
    admin.apply(first, namespace=namespace)
    eventually(
        lambda: healthy_on(admin, namespace, revision(first), 1), within=90, what="v1 Healthy"
    )

    # No canary steps: promoted once its server is ready and its model signature, read from
    # the real servers, matches v1's.
    second = manifest(model_files["2"], "2", replicas=1)
    second["spec"]["rollout"] = {"steps": []}
    admin.apply(second, namespace=namespace)
    rev2 = revision(second)
    found = eventually(lambda: healthy_on(admin, namespace, rev2, 1), within=90, what="v2 Healthy")
    assert found["metadata"]["generation"] == 2 == found["status"]["observedGeneration"]
    assert found["status"]["history"][0]["outcome"] == "Promoted"
    assert found["status"]["history"][0]["revision"] == rev2
    assert "all 0 steps completed" in found["status"]["history"][0]["reason"]

    # The old revision's Deployment is removed after the drain delay; only v2's pods remain.
    def only_v2() -> list[dict[str, Any]] | None:
        listed = pods(admin, namespace)
        names = {
            d["metadata"]["name"]
            for d in admin.json("get", "deployments", "-n", namespace)["items"]
        }
        return listed if names == {f"iris-{rev2[:10]}"} and len(listed) == 1 else None

    (pod,) = eventually(only_v2, within=60, what="the old revision retired")
    assert pod["metadata"]["labels"]["serving.weir.dev/revision"] == rev2
    address = eventually(
        lambda: pod_ready_address(admin, namespace), within=30, what="v2 pod ready"
    )
    metadata = httpx.get(f"http://{address}:8080/v2/models/iris", timeout=5).json()
    assert metadata["versions"] == ["2"]


def pod_ready_address(admin: Kubectl, namespace: str) -> str | None:
    for pod in pods(admin, namespace):
        ready = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}.get("Ready")
        if ready == "True" and not pod["metadata"].get("deletionTimestamp"):
            return str(pod["status"]["podIP"])
    return None


def test_kubectl_scale_changes_the_number_of_servers(
    admin: Kubectl, namespace: str, watched: Operator, model_files: dict[str, Path]
) -> None:
    document = manifest(model_files["1"], "1", replicas=1)
    admin.apply(document, namespace=namespace)
    rev = revision(document)
    eventually(lambda: healthy_on(admin, namespace, rev, 1), within=90, what="Healthy, 1 ready")

    admin.ok("scale", "md", "iris", "-n", namespace, "--replicas=3")
    found = eventually(lambda: healthy_on(admin, namespace, rev, 3), within=90, what="3 ready")
    assert found["status"]["replicas"] == 3
    deployment = admin.json("get", "deployment", f"iris-{rev[:10]}", "-n", namespace)
    assert deployment["spec"]["replicas"] == 3
    assert len([p for p in pods(admin, namespace) if p["status"].get("podIP")]) == 3


def test_a_model_that_cannot_be_fetched_becomes_a_condition(
    admin: Kubectl, namespace: str, watched: Operator, model_files: dict[str, Path]
) -> None:
    document = manifest(model_files["1"], "1", replicas=1, sha256="0" * 64)
    admin.apply(document, namespace=namespace)

    def failed() -> dict[str, Any] | None:
        status = md(admin, namespace).get("status") or {}
        ready = {c["type"]: c for c in status.get("conditions", [])}.get("Ready")
        return ready if status.get("phase") == "Failed" and ready else None

    ready = eventually(failed, within=90, what="phase Failed with a Ready condition")
    assert ready["status"] == "False"
    assert ready["reason"] == "ModelFetchFailed"
    assert "sha256" in ready["message"], ready["message"]


def test_deleting_the_model_deployment_garbage_collects_its_children(
    admin: Kubectl, namespace: str, watched: Operator, model_files: dict[str, Path]
) -> None:
    document = manifest(model_files["1"], "1", replicas=1)
    admin.apply(document, namespace=namespace)
    eventually(
        lambda: healthy_on(admin, namespace, revision(document), 1), within=90, what="Healthy"
    )

    admin.ok("delete", "md", "iris", "-n", namespace, "--wait=false")

    def all_gone() -> bool:
        left = admin.json("get", "deployments,services,poddisruptionbudgets,pods", "-n", namespace)
        return not left["items"]

    eventually(all_gone, within=90, what="children and pods removed by the garbage collector")


def test_a_crashed_server_is_restarted_and_counted(
    admin: Kubectl,
    namespace: str,
    watched: Operator,
    kubelet: LoopbackKubelet,
    model_files: dict[str, Path],
) -> None:
    document = manifest(model_files["1"], "1", replicas=1)
    admin.apply(document, namespace=namespace)
    rev = revision(document)
    eventually(lambda: healthy_on(admin, namespace, rev, 1), within=90, what="Healthy")
    (pod,) = pods(admin, namespace)

    assert kubelet.crash(namespace, pod["metadata"]["name"], "server")

    def restarted() -> dict[str, Any] | None:
        (current,) = pods(admin, namespace)
        (server,) = current["status"]["containerStatuses"]
        return server if server["restartCount"] == 1 and server["ready"] else None

    server = eventually(restarted, within=60, what="the server restarted and ready again")
    assert server["lastState"]["terminated"]["exitCode"] == 137  # 128 + SIGKILL
    eventually(lambda: healthy_on(admin, namespace, rev, 1), within=60, what="Healthy again")
    assert infer(pod_ready_address(admin, namespace) or "")["model_name"] == "iris"
