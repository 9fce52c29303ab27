"""`WeirEmulator` against the Kubernetes API conventions, through real HTTP and the `kubernetes`
client, as the operator talks to it. A test here that fails means the emulator lies about
Kubernetes, and tests built on it would prove nothing."""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import kmock
import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from tests.support.emulator import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    ApiError,
    EmulatorApi,
    WeirEmulator,
    delayed,
    in_thread,
)

# strict: a server-side exception anywhere (a 500 of the emulator's own) fails the test.
pytestmark = [pytest.mark.timeout(60), pytest.mark.kmock(strict=True)]

GROUP, VERSION, PLURAL = "serving.weir.dev", "v1alpha1", "modeldeployments"
MD = f"{GROUP}/{VERSION}/{PLURAL}"
NS = "team-a"


def model_deployment(name: str = "iris", **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NS, **metadata},
        "spec": {"model": {"uri": "file:///models/iris.onnx"}, "replicas": 1},
    }


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"containers": [{"name": "server", "image": "weir:0.1.0"}]},
    }


def deployment(name: str = "iris") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "server", "image": "weir:0.1.0"}]},
            },
        },
    }


@pytest.fixture
def custom(k8s_client: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(k8s_client)


@pytest.fixture
def core(k8s_client: k8s.ApiClient) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_client)


@pytest.fixture
def apps(k8s_client: k8s.ApiClient) -> k8s.AppsV1Api:
    return k8s.AppsV1Api(k8s_client)


async def create_md(custom: k8s.CustomObjectsApi, body: dict[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = await in_thread(
        custom.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, body
    )
    return created


async def patch_md(
    custom: k8s.CustomObjectsApi, name: str, body: Any, *, status: bool = False, **kwargs: Any
) -> dict[str, Any]:
    method = (
        custom.patch_namespaced_custom_object_status
        if status
        else custom.patch_namespaced_custom_object
    )
    kwargs.setdefault("_content_type", MERGE_PATCH)
    patched: dict[str, Any] = await in_thread(
        method, GROUP, VERSION, NS, PLURAL, name, body, **kwargs
    )
    return patched


async def get_md(custom: k8s.CustomObjectsApi, name: str) -> dict[str, Any]:
    found: dict[str, Any] = await in_thread(
        custom.get_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, name
    )
    return found


async def rejection(call: Any, *args: Any, **kwargs: Any) -> ApiException:
    """The error of a `kubernetes` client call that must fail."""
    with pytest.raises(ApiException) as caught:
        await in_thread(call, *args, **kwargs)
    return caught.value


def assert_status_object(error: ApiException | ApiError, code: int, reason: str) -> None:
    assert error.status == code
    body = error.body if isinstance(error, ApiError) else json.loads(error.body)
    assert body["kind"] == "Status"
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["code"] == code
    assert body["reason"] == reason
    assert isinstance(body["message"], str)
    assert body["message"]


# --- create -------------------------------------------------------------------------------------


async def test_create_assigns_identity_and_answers_201(custom: k8s.CustomObjectsApi) -> None:
    body, code, _ = await in_thread(
        custom.create_namespaced_custom_object_with_http_info,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        model_deployment(),
    )
    assert code == 201
    meta = body["metadata"]
    assert uuid.UUID(meta["uid"]).version == 4
    assert meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    created = datetime.datetime.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ")
    age = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) - created
    assert datetime.timedelta(seconds=-1) < age < datetime.timedelta(seconds=60)
    assert await get_md(custom, "iris") == body


async def test_built_in_objects_get_identity_too(core: k8s.CoreV1Api) -> None:
    first, code, _ = await in_thread(core.create_namespaced_pod_with_http_info, NS, pod("a"))
    second = await in_thread(core.create_namespaced_pod, NS, pod("b"))
    assert code == 201
    assert first.metadata.uid != second.metadata.uid
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)
    assert first.metadata.creation_timestamp.tzinfo is not None


async def test_a_duplicate_name_is_409_already_exists(custom: k8s.CustomObjectsApi) -> None:
    await create_md(custom, model_deployment())
    error = await rejection(
        custom.create_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, model_deployment()
    )
    assert_status_object(error, 409, "AlreadyExists")


async def test_generate_name_gives_distinct_names(core: k8s.CoreV1Api) -> None:
    event = {"metadata": {"generateName": "iris-"}, "involvedObject": {"name": "iris"}}
    names = set()
    for _ in range(3):
        created, code, _ = await in_thread(core.create_namespaced_event_with_http_info, NS, event)
        assert code == 201
        assert created.metadata.name.startswith("iris-")
        assert len(created.metadata.name) == len("iris-") + 5
        names.add(created.metadata.name)
    assert len(names) == 3
    listed = await in_thread(core.list_namespaced_event, NS)
    assert {item.metadata.name for item in listed.items} == names


async def test_neither_name_nor_generate_name_is_422(core: k8s.CoreV1Api) -> None:
    unnamed = {"metadata": {}, "involvedObject": {"name": "iris"}}
    error = await rejection(core.create_namespaced_event, NS, unnamed)
    assert_status_object(error, 422, "Invalid")


# --- resourceVersion and generation -------------------------------------------------------------


async def test_every_write_gets_a_new_increasing_resource_version(
    custom: k8s.CustomObjectsApi,
) -> None:
    versions = [(await create_md(custom, model_deployment()))["metadata"]["resourceVersion"]]
    writes = [
        ({"spec": {"replicas": 2}}, False),
        ({"metadata": {"labels": {"team": "a"}}}, False),
        ({"status": {"phase": "Pending"}}, True),
        ({"metadata": {"finalizers": ["weir.dev/cleanup"]}}, False),
    ]
    for patch, status in writes:
        patched = await patch_md(custom, "iris", patch, status=status)
        versions.append(patched["metadata"]["resourceVersion"])
    assert [int(version) for version in versions] == sorted({int(v) for v in versions})
    assert (await get_md(custom, "iris"))["metadata"]["resourceVersion"] == versions[-1]


async def test_a_write_that_changes_nothing_keeps_the_resource_version(
    custom: k8s.CustomObjectsApi,
) -> None:
    created = await create_md(custom, model_deployment())
    patched = await patch_md(custom, "iris", {"spec": {"replicas": 1}})
    assert patched == created


async def test_generation_counts_spec_changes_only(custom: k8s.CustomObjectsApi) -> None:
    await create_md(custom, model_deployment())
    generation = [
        (await patch_md(custom, "iris", {"spec": {"replicas": 3}}))["metadata"]["generation"]
    ]
    for patch, status in [
        ({"metadata": {"labels": {"team": "a"}, "annotations": {"note": "x"}}}, False),
        ({"metadata": {"finalizers": ["weir.dev/cleanup"]}}, False),
        ({"status": {"phase": "Ready", "observedGeneration": 2}}, True),
    ]:
        generation.append(
            (await patch_md(custom, "iris", patch, status=status))["metadata"]["generation"]
        )
    generation.append(
        (await patch_md(custom, "iris", {"spec": {"replicas": None}}))["metadata"]["generation"]
    )
    assert generation == [2, 2, 2, 2, 3]


async def test_deployment_generation_and_status(apps: k8s.AppsV1Api) -> None:
    await in_thread(apps.create_namespaced_deployment, NS, deployment())
    scaled = await in_thread(
        apps.patch_namespaced_deployment,
        "iris",
        NS,
        {"spec": {"replicas": 3}},
        _content_type=STRATEGIC_MERGE_PATCH,
    )
    assert scaled.metadata.generation == 2
    reported = await in_thread(
        apps.patch_namespaced_deployment_status,
        "iris",
        NS,
        {"status": {"readyReplicas": 3, "observedGeneration": 2}, "spec": {"replicas": 9}},
        _content_type=MERGE_PATCH,
    )
    assert reported.metadata.generation == 2
    assert reported.spec.replicas == 3
    assert reported.status.ready_replicas == 3


# --- optimistic concurrency ----------------------------------------------------------------------


async def test_a_stale_resource_version_is_409_conflict(custom: k8s.CustomObjectsApi) -> None:
    created = await create_md(custom, model_deployment())
    stale = created["metadata"]["resourceVersion"]
    current = await patch_md(custom, "iris", {"spec": {"replicas": 2}})
    error = await rejection(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "iris",
        {"metadata": {"resourceVersion": stale}, "spec": {"replicas": 5}},
        _content_type=MERGE_PATCH,
    )
    assert_status_object(error, 409, "Conflict")
    fresh = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}}
    accepted = await patch_md(custom, "iris", {**fresh, "spec": {"replicas": 5}})
    assert accepted["spec"]["replicas"] == 5
    assert await get_md(custom, "iris") == accepted


async def test_put_replaces_and_checks_the_resource_version(custom: k8s.CustomObjectsApi) -> None:
    created = await create_md(custom, model_deployment())
    await patch_md(custom, "iris", {"status": {"phase": "Ready"}}, status=True)
    replacement = model_deployment()
    replacement["spec"] = {"model": {"uri": "file:///models/other.onnx"}}
    replacement["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    error = await rejection(
        custom.replace_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "iris", replacement
    )
    assert_status_object(error, 409, "Conflict")
    current = await get_md(custom, "iris")
    replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    replaced = await in_thread(
        custom.replace_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "iris", replacement
    )
    assert replaced["spec"] == {"model": {"uri": "file:///models/other.onnx"}}  # replicas gone
    assert replaced["status"] == {"phase": "Ready"}  # PUT to the main endpoint keeps status
    assert replaced["metadata"]["generation"] == 2
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]


async def test_a_failed_json_patch_test_is_422_and_changes_nothing(
    custom: k8s.CustomObjectsApi,
) -> None:
    created = await create_md(custom, model_deployment())
    version = created["metadata"]["resourceVersion"]
    await patch_md(custom, "iris", {"metadata": {"labels": {"touched": "yes"}}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": version},
        {"op": "add", "path": "/metadata/finalizers", "value": ["weir.dev/cleanup"]},
    ]
    before = await get_md(custom, "iris")
    error = await rejection(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "iris",
        ops,
        _content_type=JSON_PATCH,
    )
    assert_status_object(error, 422, "Invalid")
    assert await get_md(custom, "iris") == before
    ops[0]["value"] = before["metadata"]["resourceVersion"]
    patched = await patch_md(custom, "iris", ops, _content_type=JSON_PATCH)
    assert patched["metadata"]["finalizers"] == ["weir.dev/cleanup"]


# --- patch formats -------------------------------------------------------------------------------


async def test_merge_patch_null_deletes_and_lists_are_replaced(core: k8s.CoreV1Api) -> None:
    body = pod("a", {"app": "iris", "tier": "web"})
    body["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    await in_thread(core.create_namespaced_pod, NS, body)
    patch = {
        "metadata": {"labels": {"tier": None}},
        "spec": {"containers": [{"name": "server", "image": "weir:0.2.0"}]},
    }
    for content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):  # strategic: approximated
        patched = await in_thread(
            core.patch_namespaced_pod, "a", NS, patch, _content_type=content_type
        )
        assert patched.metadata.labels == {"app": "iris"}
        assert [(c.name, c.image) for c in patched.spec.containers] == [("server", "weir:0.2.0")]


async def test_a_strategic_merge_patch_of_a_custom_resource_is_415(
    custom: k8s.CustomObjectsApi,
) -> None:
    await create_md(custom, model_deployment())
    error = await rejection(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "iris",
        {"spec": {}},
        _content_type=STRATEGIC_MERGE_PATCH,
    )
    assert_status_object(error, 415, "UnsupportedMediaType")


async def test_a_json_patch_that_is_not_a_list_is_400(emulator_api: EmulatorApi) -> None:
    await emulator_api.create("v1/pods", pod("a"))
    with pytest.raises(ApiError) as caught:
        await emulator_api.patch("v1/pods", NS, "a", {"spec": {}}, content_type=JSON_PATCH)
    assert_status_object(caught.value, 400, "BadRequest")


async def test_server_side_apply_is_refused_loudly(emulator_api: EmulatorApi) -> None:
    await emulator_api.create("v1/pods", pod("a"))
    with pytest.raises(ApiError) as caught:
        await emulator_api.patch(
            "v1/pods", NS, "a", pod("a"), content_type="application/apply-patch+yaml"
        )
    assert_status_object(caught.value, 415, "UnsupportedMediaType")


# --- status subresource --------------------------------------------------------------------------


async def test_status_and_spec_are_kept_apart(custom: k8s.CustomObjectsApi) -> None:
    body = model_deployment()
    body["status"] = {"phase": "Invented"}
    created = await create_md(custom, body)
    assert "status" not in created  # dropped on create
    await patch_md(custom, "iris", {"status": {"phase": "Ready"}}, status=True)
    main = await patch_md(custom, "iris", {"spec": {"replicas": 2}, "status": {"phase": "Hacked"}})
    assert main["spec"]["replicas"] == 2
    assert main["status"] == {"phase": "Ready"}
    on_status = await patch_md(
        custom,
        "iris",
        {"spec": {"replicas": 7}, "metadata": {"labels": {"x": "y"}}, "status": {"replicas": 2}},
        status=True,
    )
    assert on_status["spec"]["replicas"] == 2
    assert "labels" not in on_status["metadata"]
    assert on_status["status"] == {"phase": "Ready", "replicas": 2}
    assert await get_md(custom, "iris") == on_status


async def test_status_of_a_resource_without_the_subresource_is_404(
    emulator_api: EmulatorApi,
) -> None:
    await emulator_api.create("v1/pods", pod("a"))
    with pytest.raises(ApiError) as caught:
        await emulator_api.patch("v1/pods", NS, "a", {"status": {}}, subresource="status")
    assert_status_object(caught.value, 404, "NotFound")


# --- selectors -----------------------------------------------------------------------------------

PODS = {
    "a": {"app": "iris", "tier": "web"},
    "b": {"app": "iris"},
    "c": {"app": "mnist", "tier": "batch"},
    "d": {},
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", "abcd"),
        ("app=iris", "ab"),
        ("app==iris", "ab"),
        ("app!=iris", "cd"),
        ("tier", "ac"),
        ("!tier", "bd"),
        ("app in (iris, mnist)", "abc"),
        ("app notin (iris)", "cd"),
        ("app=iris,tier", "a"),
        ("app in (iris,mnist),tier!=web", "bc"),
        ("app=nothing", ""),
    ],
)
async def test_label_selectors_filter_lists(
    core: k8s.CoreV1Api, emulator_api: EmulatorApi, selector: str, expected: str
) -> None:
    for name, labels in PODS.items():
        await emulator_api.create("v1/pods", pod(name, labels))
    listed = await in_thread(core.list_namespaced_pod, NS, label_selector=selector)
    assert "".join(item.metadata.name for item in listed.items) == expected
    everywhere = await in_thread(core.list_pod_for_all_namespaces, label_selector=selector)
    assert len(everywhere.items) == len(expected)


async def test_field_selectors_on_name_and_namespace(
    core: k8s.CoreV1Api, emulator_api: EmulatorApi
) -> None:
    await emulator_api.create("v1/pods", pod("a"))
    await emulator_api.create("v1/pods", pod("b"))
    other = pod("a")
    other["metadata"]["namespace"] = "team-b"
    await emulator_api.create("v1/pods", other)
    named = await in_thread(core.list_pod_for_all_namespaces, field_selector="metadata.name=a")
    assert sorted(p.metadata.namespace for p in named.items) == [NS, "team-b"]
    scoped = await in_thread(
        core.list_pod_for_all_namespaces,
        field_selector="metadata.namespace=team-b,metadata.name!=b",
    )
    assert [(p.metadata.namespace, p.metadata.name) for p in scoped.items] == [("team-b", "a")]


async def test_a_malformed_selector_is_400(core: k8s.CoreV1Api) -> None:
    error = await rejection(core.list_namespaced_pod, NS, label_selector="!app=iris")
    assert_status_object(error, 400, "BadRequest")


def watch_events(core: k8s.CoreV1Api, **kwargs: Any) -> list[tuple[str, str]]:
    stream = watch.Watch().stream(
        core.list_namespaced_pod, NS, timeout_seconds=1, _request_timeout=10, **kwargs
    )
    return [(event["type"], event["object"].metadata.name) for event in stream]


async def test_a_watch_with_a_selector_delivers_only_matching_objects(
    core: k8s.CoreV1Api, emulator_api: EmulatorApi
) -> None:
    await emulator_api.create("v1/pods", pod("a1", {"app": "iris"}))
    await emulator_api.create("v1/pods", pod("b1", {"app": "mnist"}))
    since = (await in_thread(core.list_namespaced_pod, NS)).metadata.resource_version
    await emulator_api.create("v1/pods", pod("a2", {"app": "iris"}))
    await emulator_api.create("v1/pods", pod("b2", {"app": "mnist"}))
    await emulator_api.patch("v1/pods", NS, "a1", {"metadata": {"labels": {"app": "mnist"}}})
    await emulator_api.patch("v1/pods", NS, "b1", {"metadata": {"labels": {"app": "iris"}}})
    await emulator_api.patch("v1/pods", NS, "b2", {"metadata": {"annotations": {"x": "y"}}})
    await emulator_api.delete("v1/pods", NS, "a2")

    resumed = await in_thread(watch_events, core, label_selector="app=iris", resource_version=since)
    # Leaving the selection is a DELETED, entering it an ADDED, as on a real server.
    assert resumed == [("ADDED", "a2"), ("DELETED", "a1"), ("ADDED", "b1"), ("DELETED", "a2")]
    fresh = await in_thread(watch_events, core, label_selector="app=iris")
    assert fresh == [("ADDED", "b1")]
    everything = await in_thread(watch_events, core)
    assert sorted(everything) == [("ADDED", "a1"), ("ADDED", "b1"), ("ADDED", "b2")]


async def test_a_live_watch_sees_later_changes_and_ends_after_its_timeout(
    core: k8s.CoreV1Api, emulator_api: EmulatorApi
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    watching = asyncio.create_task(in_thread(watch_events, core, label_selector="app=iris"))
    await asyncio.sleep(0.3)
    await emulator_api.create("v1/pods", pod("b", {"app": "mnist"}))
    await emulator_api.create("v1/pods", pod("a", {"app": "iris"}))
    assert await watching == [("ADDED", "a")]
    assert 0.9 < loop.time() - started < 5


# --- deletion ------------------------------------------------------------------------------------


async def test_finalizers_hold_deletion_until_removed(custom: k8s.CustomObjectsApi) -> None:
    await create_md(custom, model_deployment(finalizers=["weir.dev/cleanup"]))
    marked = await in_thread(
        custom.delete_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "iris"
    )
    assert marked["metadata"]["deletionTimestamp"].endswith("Z")
    assert marked["metadata"]["generation"] == 2
    assert (await get_md(custom, "iris"))["metadata"]["deletionTimestamp"]
    released = await patch_md(custom, "iris", {"metadata": {"finalizers": None}})
    assert "finalizers" not in released["metadata"]
    error = await rejection(custom.get_namespaced_custom_object, GROUP, VERSION, NS, PLURAL, "iris")
    assert_status_object(error, 404, "NotFound")
    recreated = await create_md(custom, model_deployment())
    assert recreated["metadata"]["uid"] != marked["metadata"]["uid"]


# --- errors --------------------------------------------------------------------------------------


async def test_errors_are_status_objects(custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api) -> None:
    error = await rejection(core.read_namespaced_service, "missing", NS)
    assert_status_object(error, 404, "NotFound")
    error = await rejection(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "missing",
        {"spec": {}},
        _content_type=MERGE_PATCH,
    )
    assert_status_object(error, 404, "NotFound")
    error = await rejection(core.delete_namespaced_pod, "missing", NS)
    assert_status_object(error, 404, "NotFound")
    error = await rejection(
        custom.list_namespaced_custom_object, "undeclared.dev", "v1", NS, "things"
    )
    assert_status_object(error, 404, "NotFound")


async def test_a_request_answered_by_a_test_reaction_changes_nothing(
    emulator: WeirEmulator, custom: k8s.CustomObjectsApi
) -> None:
    created = await create_md(custom, model_deployment())
    emulator[kmock.method.PATCH][:1] << 500  # the first PATCH since the emulator started
    error = await rejection(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "iris",
        {"spec": {"replicas": 4}},
        _content_type=MERGE_PATCH,
    )
    assert error.status == 500
    patches = emulator["patch", kmock.resource(MD)]
    patches[len(patches) : len(patches) + 1] << kmock.KubernetesError(409, "Conflict", "made up")
    error = await rejection(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        PLURAL,
        "iris",
        {"spec": {"replicas": 4}},
        _content_type=MERGE_PATCH,
    )
    assert_status_object(error, 409, "Conflict")
    assert await get_md(custom, "iris") == created
    assert (await patch_md(custom, "iris", {"spec": {"replicas": 4}}))["spec"]["replicas"] == 4


async def test_a_delayed_reaction_slows_every_answer_down(
    emulator: WeirEmulator, emulator_api: EmulatorApi
) -> None:
    created = await emulator_api.create("v1/pods", pod("a"))
    emulator["get", kmock.resource("v1/pods")] << delayed(0.3)
    loop = asyncio.get_running_loop()
    for _ in range(2):
        started = loop.time()
        assert await emulator_api.get("v1/pods", NS, "a") == created
        assert loop.time() - started >= 0.3


# --- namespaces and discovery --------------------------------------------------------------------


async def test_namespaces_are_a_cluster_scoped_resource(core: k8s.CoreV1Api) -> None:
    await in_thread(core.create_namespace, {"metadata": {"name": "team-a"}})
    await in_thread(core.create_namespace, {"metadata": {"name": "team-b", "labels": {"x": "y"}}})
    listed = await in_thread(core.list_namespace, label_selector="x")
    assert [ns.metadata.name for ns in listed.items] == ["team-b"]
    assert (await in_thread(core.read_namespace, "team-a")).metadata.uid
    assert (await in_thread(core.list_namespace)).metadata.resource_version


async def test_discovery_describes_every_declared_resource(emulator: WeirEmulator) -> None:
    async def get(path: str) -> Any:
        async with emulator.get(path) as response:
            assert response.status == 200, path
            return await response.json()

    assert (await get("/api"))["versions"] == ["v1"]
    groups = {group["name"]: group for group in (await get("/apis"))["groups"]}
    for name, info in emulator.resources.items():
        group_version = f"{name.group}/{name.version}".lstrip("/")
        if name.group:
            assert groups[name.group]["preferredVersion"]["groupVersion"] == group_version
        path = f"/apis/{group_version}" if name.group else "/api/v1"
        listing = await get(path)
        assert listing["groupVersion"] == group_version
        entries = {entry["name"]: entry for entry in listing["resources"]}
        entry = entries[name.plural]
        assert (entry["kind"], entry["namespaced"]) == (info.kind, info.namespaced)
        assert set(entry["verbs"]) >= {
            "get",
            "list",
            "watch",
            "create",
            "patch",
            "update",
            "delete",
        }
        assert {f"{name.plural}/{sub}" for sub in info.subresources} <= set(entries)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_discovers_and_reads_through_the_emulator(
    kubeconfig: Path, custom: k8s.CustomObjectsApi, core: k8s.CoreV1Api
) -> None:
    created = await create_md(custom, model_deployment())
    event = {
        "metadata": {"generateName": "iris-"},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ModelDeployment",
            "name": "iris",
            "namespace": NS,
            "uid": created["metadata"]["uid"],
        },
        "reason": "Created",
        "message": "created the servers",
        "type": "Normal",
    }
    await in_thread(core.create_namespaced_event, NS, event)

    async def kubectl(*args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(kubeconfig), *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert b"Warning" not in err, err.decode()
        return out.decode()

    assert "modeldeployments" in await kubectl("api-resources", "--api-group", GROUP)
    assert (await kubectl("get", "md", "-A", "-o", "name")).split() == [
        f"modeldeployment.{GROUP}/iris"
    ]
    described = await kubectl("describe", "mdep", "iris", "-n", NS)
    assert "created the servers" in described


@pytest.mark.asyncio(loop_scope="module")
async def test_a_module_scoped_emulator_serves_too(module_emulator: WeirEmulator) -> None:
    api = EmulatorApi(module_emulator)
    created = await api.create("v1/pods", pod("a"))
    assert await api.get("v1/pods", NS, "a") == created
    await api.delete("v1/pods", NS, "a")
