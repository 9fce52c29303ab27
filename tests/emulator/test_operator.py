"""The real `weir operator` process against the (extended) kmock emulator: what it creates,
patches, reports and survives. The test plays the Deployment controller and the kubelet by
writing Deployment and Pod status, which the emulator does not do by itself."""

from __future__ import annotations

import asyncio
import copy
import os
from pathlib import Path
from typing import Any

import kmock
import kubernetes_validate
import yaml

from tests.support.emulator import EmulatorApi, WeirEmulator, delayed, eventually
from tests.support.operator_process import Operator
from weir_operator.core.render import revision_of
from weir_operator.core.spec import parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
MD = "serving.weir.dev/v1alpha1/modeldeployments"
DEPLOYMENTS = "apps/v1/deployments"
SERVICES = "v1/services"


def manifest(name: str = "iris", version: str = "7", **spec: Any) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "examples" / "iris.yaml").read_text())
    document["metadata"] = {"name": name, "namespace": "default"}
    document["spec"]["model"] = {
        "uri": f"https://models.example.com/iris-{version}.onnx",
        "version": version,
    }
    document["spec"].update(spec)
    return document


def revision(document: dict[str, Any]) -> str:
    return revision_of(parse_model_deployment(document).spec)


async def make_ready(api: EmulatorApi, name: str) -> None:
    """Play the Deployment controller: all replicas of the Deployment updated and ready."""
    deployment = await api.get(DEPLOYMENTS, "default", name)
    assert deployment is not None
    replicas = deployment["spec"].get("replicas", 1)
    status = {
        "replicas": replicas,
        "readyReplicas": replicas,
        "updatedReplicas": replicas,
        "availableReplicas": replicas,
    }
    await api.patch(DEPLOYMENTS, "default", name, {"status": status}, subresource="status")


async def status_of(api: EmulatorApi, name: str = "iris") -> dict[str, Any]:
    found = await api.get(MD, "default", name)
    return (found or {}).get("status") or {}


async def phase_is(api: EmulatorApi, *phases: str, name: str = "iris") -> dict[str, Any] | None:
    status = await status_of(api, name)
    return status if status.get("phase") in phases else None


async def test_apply_creates_valid_owned_children_and_reports_status(
    emulator: WeirEmulator, emulator_api: EmulatorApi, operator: Operator
) -> None:
    created = await emulator_api.create(MD, manifest())
    rev = revision(created)
    deployment_name = f"iris-{rev[:10]}"

    deployment = await eventually(
        lambda: emulator_api.get(DEPLOYMENTS, "default", deployment_name), within=20
    )
    children = [deployment]
    for name in ("iris", "iris-stable", "iris-canary"):
        children.append(await eventually(lambda n=name: emulator_api.get(SERVICES, "default", n)))
    children.append(
        await eventually(
            lambda: emulator_api.get("policy/v1/poddisruptionbudgets", "default", "iris")
        )
    )
    for child in children:
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == (
            "ModelDeployment",
            "iris",
            created["metadata"]["uid"],
        )
        assert owner["controller"] is True
        served = {k: v for k, v in child.items() if k not in ("status",)}
        served["metadata"] = {
            k: v
            for k, v in child["metadata"].items()
            if k in ("name", "namespace", "labels", "ownerReferences", "annotations")
        }
        kubernetes_validate.validate(served, "1.30.0", strict=True)

    status = await eventually(lambda: phase_is(emulator_api, "Pending", "Progressing"))
    assert status["stable"]["revision"] == rev
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert (
        status["selector"] == "app.kubernetes.io/name=weir-server,app.kubernetes.io/instance=iris"
    )

    await make_ready(emulator_api, deployment_name)
    status = await eventually(lambda: phase_is(emulator_api, "Healthy"), within=15)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "AllServersReady")
    assert status["readyText"] == "1/1"

    events = await eventually(
        lambda: _events(emulator_api, "iris", {"Created", "Healthy"}), within=15
    )
    assert {e["reason"] for e in events} >= {"Created", "Healthy"}
    metrics = operator.metrics()
    assert 'weir_rollout_phase{name="iris",namespace="default",phase="Healthy"} 1.0' in metrics


async def _events(api: EmulatorApi, name: str, reasons: set[str]) -> list[dict[str, Any]] | None:
    events = [
        e
        for e in await api.list("v1/events", "default")
        if e.get("involvedObject", {}).get("name") == name
    ]
    return events if reasons <= {e.get("reason") for e in events} else None


async def test_a_spec_change_patches_children_without_recreating_them(
    emulator_api: EmulatorApi, operator: Operator
) -> None:
    created = await emulator_api.create(MD, manifest())
    name = f"iris-{revision(created)[:10]}"
    before = await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", name), within=20)
    await emulator_api.patch(MD, "default", "iris", {"spec": {"replicas": 3}})

    async def scaled() -> dict[str, Any] | None:
        found = await emulator_api.get(DEPLOYMENTS, "default", name)
        return found if found and found["spec"].get("replicas") == 3 else None

    after = await eventually(scaled, within=15)
    assert after["metadata"]["uid"] == before["metadata"]["uid"], (
        "patched, not deleted and recreated"
    )
    assert after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"]
    status = await eventually(lambda: _generation_observed(emulator_api, 2))
    assert status["observedGeneration"] == 2


async def _generation_observed(api: EmulatorApi, generation: int) -> dict[str, Any] | None:
    status = await status_of(api)
    return status if status.get("observedGeneration") == generation else None


async def test_a_new_model_rolls_out_and_the_old_revision_is_retired(
    emulator_api: EmulatorApi, operator: Operator
) -> None:
    # No steps and no signature to compare (the emulator runs no servers): promoted when ready.
    straight = {"steps": [], "allowSignatureChange": True}
    first = await emulator_api.create(MD, manifest(version="7", rollout=straight))
    old = f"iris-{revision(first)[:10]}"
    await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", old), within=20)
    await make_ready(emulator_api, old)
    await eventually(lambda: phase_is(emulator_api, "Healthy"), within=15)

    changed = await emulator_api.patch(
        MD,
        "default",
        "iris",
        {"spec": {"model": {"uri": "https://models.example.com/iris-8.onnx", "version": "8"}}},
    )
    new_rev = revision(changed)
    new = f"iris-{new_rev[:10]}"
    await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", new), within=15)
    status = await eventually(lambda: phase_is(emulator_api, "Progressing"), within=15)
    assert status["canary"]["revision"] == new_rev
    assert status["canary"]["version"] == "8"

    await make_ready(emulator_api, new)
    status = await eventually(lambda: phase_is(emulator_api, "Healthy"), within=15)
    assert status["stable"]["revision"] == new_rev
    assert status["history"][0]["outcome"] == "Promoted"
    stable_service = await emulator_api.get(SERVICES, "default", "iris-stable")
    assert stable_service is not None
    assert stable_service["spec"]["selector"]["serving.weir.dev/revision"] == new_rev

    async def retired() -> bool:
        return await emulator_api.get(DEPLOYMENTS, "default", old) is None

    assert await eventually(retired, within=30), "the old revision is deleted after draining"


async def test_a_restarted_operator_resumes_without_duplicates_or_lost_status(
    emulator_api: EmulatorApi, kubeconfig: Path, tmp_path: Path, operator: Operator
) -> None:
    first = await emulator_api.create(MD, manifest(version="7"))
    old = f"iris-{revision(first)[:10]}"
    await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", old), within=20)
    await make_ready(emulator_api, old)
    await eventually(lambda: phase_is(emulator_api, "Healthy"), within=15)
    changed = await emulator_api.patch(
        MD,
        "default",
        "iris",
        {"spec": {"model": {"uri": "https://models.example.com/iris-8.onnx", "version": "8"}}},
    )
    mid = await eventually(lambda: phase_is(emulator_api, "Progressing"), within=15)

    assert await operator.stop() == 0
    restarted = Operator(kubeconfig, tmp_path / "operator-2.log")
    try:
        await asyncio.sleep(4)  # several convergence ticks of the new process
        status = await status_of(emulator_api)
        assert status["stable"] == mid["stable"]
        assert status["canary"]["revision"] == mid["canary"]["revision"]
        assert status["canary"]["startedAt"] == mid["canary"]["startedAt"], (
            "the rollout resumed, not restarted"
        )
        deployments = await emulator_api.list(DEPLOYMENTS, "default")
        assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
            [old, f"iris-{revision(changed)[:10]}"]
        )
        services = await emulator_api.list(SERVICES, "default")
        assert len(services) == 3
    finally:
        await restarted.stop()
        print(restarted.log()[-3000:])


async def test_api_errors_are_retried_and_the_operator_stays_up(
    emulator: WeirEmulator, emulator_api: EmulatorApi, operator: Operator
) -> None:
    creates = emulator[kmock.action.CREATE, kmock.resource(DEPLOYMENTS)]
    (
        creates[:2]
        << 500
        << {
            "kind": "Status",
            "status": "Failure",
            "code": 500,
            "message": "etcd is having a bad day",
        }
    )
    services = emulator[kmock.action.CREATE, kmock.resource(SERVICES)]
    services[:3] << delayed(3.0)  # slow answers: each of the first three takes 3 s
    patches = emulator[kmock.action.UPDATE, kmock.resource(MD)]
    (
        patches[:1]
        << 409
        << {
            "kind": "Status",
            "status": "Failure",
            "code": 409,
            "reason": "Conflict",
            "message": "the object has been modified",
        }
    )

    created = await emulator_api.create(MD, manifest())
    name = f"iris-{revision(created)[:10]}"
    await eventually(lambda: emulator_api.get(DEPLOYMENTS, "default", name), within=30)
    await make_ready(emulator_api, name)
    await eventually(lambda: phase_is(emulator_api, "Healthy"), within=45)
    assert len(await emulator_api.list(SERVICES, "default")) == 3
    assert operator.process.poll() is None, "the operator survived the errors"
    assert "weir_reconcile_errors_total" in operator.metrics()


async def test_a_namespaced_operator_reconciles_only_its_namespaces(
    emulator_api: EmulatorApi, kubeconfig: Path, tmp_path: Path
) -> None:
    watched = Operator(kubeconfig, tmp_path / "namespaced.log", "--namespace", "team-a")
    try:
        inside = manifest(name="inside")
        inside["metadata"]["namespace"] = "team-a"
        await emulator_api.create(MD, inside)
        await emulator_api.create(MD, manifest(name="outside"))
        await eventually(
            lambda: emulator_api.get(DEPLOYMENTS, "team-a", f"inside-{revision(inside)[:10]}"),
            within=20,
        )
        await asyncio.sleep(3)  # several ticks: nothing may happen outside team-a
        assert await emulator_api.list(DEPLOYMENTS, "default") == []
        assert await status_of(emulator_api, "outside") == {}
    finally:
        await watched.stop()
        print(watched.log()[-3000:])


async def test_a_spec_the_crd_would_reject_becomes_a_condition_and_the_operator_goes_on(
    emulator_api: EmulatorApi, operator: Operator
) -> None:
    # The emulator does not enforce the CRD schema, so an invalid spec reaches the operator.
    broken = manifest(name="broken", rollout={"steps": [{"setWeight": 50}, {"setWeight": 10}]})
    await emulator_api.create(MD, broken)
    good = await emulator_api.create(MD, manifest(name="fine"))
    status = await eventually(lambda: phase_is(emulator_api, "Failed", name="broken"), within=20)
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "spec.rollout.steps" in ready["message"]
    await eventually(
        lambda: emulator_api.get(DEPLOYMENTS, "default", f"fine-{revision(good)[:10]}"), within=20
    )


async def test_a_model_that_cannot_be_fetched_is_reported_with_the_reason(
    emulator_api: EmulatorApi, operator: Operator
) -> None:
    created = await emulator_api.create(MD, manifest())
    rev = revision(created)
    await eventually(
        lambda: emulator_api.get(DEPLOYMENTS, "default", f"iris-{rev[:10]}"), within=20
    )
    labels = {"app.kubernetes.io/name": "weir-server", "app.kubernetes.io/instance": "iris",
              "app.kubernetes.io/managed-by": "weir", "serving.weir.dev/revision": rev}  # fmt: skip
    terminated = {
        "exitCode": 1,
        "reason": "Error",
        "message": "weir fetch-model: error: GET https://models.example.com/iris-7.onnx answered 404 Not Found",
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "iris-pod-1", "namespace": "default", "labels": labels},
           "spec": {"containers": [{"name": "server", "image": "weir"}]},
           "status": {"initContainerStatuses": [{"name": "fetch-model", "state": {"terminated": terminated}}]}}  # fmt: skip
    await emulator_api.create("v1/pods", pod)
    status = await eventually(lambda: phase_is(emulator_api, "Failed"), within=20)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ModelFetchFailed"
    assert "answered 404" in ready["message"]
    assert operator.process.poll() is None


async def test_many_model_deployments_are_all_reconciled(
    emulator_api: EmulatorApi, kubeconfig: Path, tmp_path: Path
) -> None:
    # The emulator (pure Python, in this process) is the bottleneck, at about 1 s per object:
    # this checks that every object converges at scale, not how fast the operator is.
    count = int(os.environ.get("WEIR_EMULATOR_SCALE", "30"))
    operator = Operator(kubeconfig, tmp_path / "scale.log", "--interval", "5")  # the default
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index in range(count):
            await emulator_api.create(MD, manifest(name=f"model-{index}"))

        async def all_reconciled() -> bool:
            items = await emulator_api.list(MD, "default")
            return sum(1 for item in items if (item.get("status") or {}).get("stable")) == count

        await eventually(all_reconciled, within=max(60.0, count * 3.0), interval=0.5)
        elapsed = loop.time() - started
        deployments = await emulator_api.list(DEPLOYMENTS, "default")
        assert len(deployments) == count
        assert operator.process.poll() is None
        print(f"{count} ModelDeployments reconciled in {elapsed:.1f} s")
    finally:
        await operator.stop()


def test_manifest_helper_is_independent_of_example_edits() -> None:
    # The tests above build on examples/iris.yaml; keep it a valid minimal manifest.
    document = manifest()
    assert parse_model_deployment(copy.deepcopy(document)).name == "iris"
