"""The operator's real API calls against the RBAC it is granted (`permissions.RULES`, which the
chart renders: tests/chart/ proves chart == RULES).

The real `weir operator` runs against the emulator through a whole life cycle while the emulator
records every HTTP request; each request the operator made (kopf's and the `kubernetes`
client's, told from the test's own "kmock/..." requests by their User-Agent) is mapped to the
RBAC terms the API server would authorize it with: (apiGroup, resource[/subresource], verb).
Every call must be granted by RULES, and every verb RULES grants must have been used, except
those only a real cluster would exercise (`REAL_CLUSTER_ONLY`: none, see there why).

The life cycle, in two operator runs:

1. `weir operator` with no flags (all namespaces, peering auto-detected), with kopf's peering
   resources served. Some children exist beforehand without Weir's labels (left over, or made
   by hand), so they are not in the operator's watch caches: creating them answers 409, and
   the operator reads (GET) and patches them instead: the create-conflict path. A
   ModelDeployment with cpu autoscaling (an HPA per revision) and the gateway-api router (an
   HTTPRoute) is created; its Deployment made ready; its model changed, so that a new revision
   rolls out, becomes ready and is promoted, and the old revision's Deployment and HPA are
   deleted after draining; the ModelDeployment is deleted; the operator stopped.
2. `weir operator --namespace 'defa*'` (a pattern, so kopf lists and watches Namespaces, and
   peers through namespaced KopfPeerings): a second ModelDeployment, created from nothing, is
   reconciled. It serves over TLS (`spec.server.tls`) with Weir's own rps autoscaler, so once
   its server pod is Ready the operator scrapes it over HTTPS, and to verify it reads the ca.crt
   of its Secret (GET, the one Secret call it makes). Every call on a namespaced resource must
   name a watched namespace, because with `watchNamespaces` the chart grants those only through
   Roles in these namespaces.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from tests.emulator.test_operator import (
    DEPLOYMENTS,
    MD,
    SERVICES,
    make_ready,
    manifest,
    phase_is,
    revision,
)
from tests.support.certs import Authority
from tests.support.emulator import (
    RESOURCES,
    VERBS,
    EmulatorApi,
    eventually,
    serve,
    write_kubeconfig,
)
from tests.support.operator_process import Operator
from weir_operator.cluster.permissions import RULES
from weir_operator.core.render import RenderSettings, render_children
from weir_operator.core.routers import router_named
from weir_operator.core.shadow import render_shadow_config
from weir_operator.core.spec import parse_model_deployment
from weir_operator.core.status import ModelDeploymentStatus

HPAS = "autoscaling/v2/horizontalpodautoscalers"
PDBS = "policy/v1/poddisruptionbudgets"
CONFIG_MAPS = "v1/configmaps"
ROUTES = "gateway.networking.k8s.io/v1/httproutes"
CLUSTER_PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
PEERINGS = "kopf.dev/v1/kopfpeerings"
# kopf's peering CRDs (https://kopf.readthedocs.io/en/stable/peering/): no status subresource.
PEERING_RESOURCES = {
    CLUSTER_PEERINGS: kmock.ResourceInfo(
        kind="ClusterKopfPeering", singular="clusterkopfpeering", namespaced=False, verbs=VERBS
    ),
    PEERINGS: kmock.ResourceInfo(
        kind="KopfPeering", singular="kopfpeering", namespaced=True, verbs=VERBS
    ),
}
# The ModelDeployment of the life cycle: an HPA per revision, an HTTPRoute.
SPEC: dict[str, Any] = {
    "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "metric": "cpu", "target": 70},
    "traffic": {"router": "gateway-api", "gateway": {"parentRefs": [{"name": "public"}]}},
    # Promoted as soon as ready: the emulator runs no servers to compare signatures with.
    "rollout": {"steps": [], "allowSignatureChange": True},
}
# Phase 2's ModelDeployment: TLS servers, Weir's own autoscaler (it scrapes the pods).
TLS_SECRET = "second-tls"
TLS_SPEC: dict[str, Any] = {
    **SPEC,
    "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "metric": "rps", "target": 10},
    "server": {"tls": {"secretName": TLS_SECRET}},
}
SECRETS = "v1/secrets"
NOWHERE = "127.0.73.1"  # a loopback address nothing listens on (port 8080 refused at once)
# Answered by any API server to any authenticated client (the system:discovery ClusterRole),
# whatever RBAC says: not checked against RULES.
DISCOVERY = re.compile(r"/(version|api|api/v1|apis|apis/[^/]+|apis/[^/]+/[^/]+|openapi/.*)/?")
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # kopf's aiohttp, the `kubernetes` client
TEST_AGENT = "kmock/"  # EmulatorApi

Triple = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb); "" = the core group

# Granted by RULES but used only on a real cluster, each with the reason; checked to stay unused
# here, so that a stale excuse fails too. Empty: every path to the API runs here. kopf's peering
# runs because its resources are served and its default objects exist, its CRD watch in both
# runs, its Namespace watch in the pattern run; the operator's create-conflict path (409, then
# GET) and its deletion of an old revision run in the life cycle. What is left is used nowhere:
# kopf never GETs a single object (it lists, watches, patches, and POSTs core/v1 Events only),
# and the operator reads Pods only from its watch cache.
REAL_CLUSTER_ONLY: dict[Triple, str] = {}


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One request in RBAC terms, and where it went."""

    group: str
    resource: str  # with its subresource: "modeldeployments/status"
    verb: str
    namespace: str | None  # None: cluster-scoped, or across all namespaces
    path: str

    @property
    def triple(self) -> Triple:
        return (self.group, self.resource, self.verb)

    def __str__(self) -> str:
        group = self.group or "core"
        return f"{self.verb} {group}/{self.resource} ({self.path})"


def api_call(method: str, path: str, params: dict[str, str]) -> ApiCall | None:
    """The RBAC request attributes of an HTTP request, as the API server derives them
    (k8s.io/apiserver's RequestInfoFactory); None for discovery, which needs no grant."""
    if DISCOVERY.fullmatch(path):
        return None
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "v1"] and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        raise AssertionError(f"not a Kubernetes resource path: {method} {path}")
    watch_path = rest[0] == "watch"  # the deprecated /watch/ prefix
    if watch_path:
        rest = rest[1:]
    namespace = None
    # /namespaces/NS/RESOURCE/...; but /namespaces/NS[/status|/finalize] is the Namespace NS
    # (whose namespace attribute is its own name, as for the API server).
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    if len(rest) > 3:
        raise AssertionError(f"not a Kubernetes resource path: {method} {path}")
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    if len(rest) == 3:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        watching = watch_path or params.get("watch", "").lower() in ("true", "1")
        verb = "watch" if watching else "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    return ApiCall(group, resource, verb, namespace, path)


def operator_calls(requests: Iterable[kmock.Request]) -> list[ApiCall]:
    """The operator's requests in RBAC terms; fails on a request from an unknown client."""
    calls = []
    for request in requests:
        agent = {k.lower(): v for k, v in request.headers.items()}.get("user-agent", "")
        if agent.startswith(TEST_AGENT):
            continue
        assert agent.startswith(OPERATOR_AGENTS), f"a request from whom? {agent!r} {request.url}"
        call = api_call(str(request.method.value), request.url.path, dict(request.params))
        if call is not None:
            calls.append(call)
    return calls


def granted() -> set[Triple]:
    return {(group, resource, verb) for group, resource, verbs in RULES for verb in verbs}


def test_the_rbac_terms_of_requests_follow_the_api_server() -> None:
    cases = {
        ("GET", "/api/v1/pods", "watch=true"): ("", "pods", "watch", None),
        ("GET", "/api/v1/namespaces/default/pods", ""): ("", "pods", "list", "default"),
        ("GET", "/api/v1/watch/namespaces/ns/pods", ""): ("", "pods", "watch", "ns"),
        ("GET", "/api/v1/namespaces", ""): ("", "namespaces", "list", None),
        ("GET", "/api/v1/namespaces/ns", ""): ("", "namespaces", "get", "ns"),
        ("PUT", "/api/v1/namespaces/ns/finalize", ""): ("", "namespaces/finalize", "update", "ns"),
        ("POST", "/api/v1/namespaces/ns/events", ""): ("", "events", "create", "ns"),
        ("PATCH", "/apis/serving.weir.dev/v1alpha1/namespaces/ns/modeldeployments/m/status", ""): (
            "serving.weir.dev", "modeldeployments/status", "patch", "ns"),
        ("DELETE", "/apis/apps/v1/namespaces/ns/deployments/d", ""): ("apps", "deployments", "delete", "ns"),
        ("DELETE", "/apis/apps/v1/namespaces/ns/deployments", ""): ("apps", "deployments", "deletecollection", "ns"),
        ("GET", "/apis/kopf.dev/v1/clusterkopfpeerings/default", ""): ("kopf.dev", "clusterkopfpeerings", "get", None),
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "watch=1"): (
            "apiextensions.k8s.io", "customresourcedefinitions", "watch", None),
    }  # fmt: skip
    for (method, path, query), expected in cases.items():
        params = dict(p.split("=") for p in query.split("&") if p)
        call = api_call(method, path, params)
        assert call is not None
        assert (call.group, call.resource, call.verb, call.namespace) == expected, path
    for path in ("/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/version"):
        assert api_call("GET", path, {}) is None, path


def unlabelled(child: dict[str, Any]) -> dict[str, Any]:
    """A child as if made by someone else: same name and spec, not labelled or owned by Weir."""
    other = copy.deepcopy(child)
    other["metadata"] = {"name": child["metadata"]["name"], "namespace": "default"}
    return other


async def run_life_cycle(api: EmulatorApi, kubeconfig: Path, log: Path) -> None:
    """Phase 1 (see the module docstring)."""
    first = manifest(version="7", **SPEC)
    old = f"iris-{revision(first)[:10]}"
    md = parse_model_deployment(copy.deepcopy(first))
    children = {
        (c["kind"], c["metadata"]["name"]): c
        for c in [
            *render_children(md, revision(first), None, settings=RenderSettings()),
            *router_named(md.spec.traffic.router).children(md, 0),
            render_shadow_config(md, ModelDeploymentStatus(), RenderSettings()),
        ]
    }
    existing = [
        (DEPLOYMENTS, children["Deployment", old]),
        (HPAS, children["HorizontalPodAutoscaler", old]),
        (SERVICES, children["Service", "iris-canary"]),
        (PDBS, children["PodDisruptionBudget", "iris"]),
        (ROUTES, children["HTTPRoute", "iris"]),
        (CONFIG_MAPS, children["ConfigMap", "iris-shadow"]),
    ]
    for resource, child in existing:
        await api.create(resource, unlabelled(child))

    operator = Operator(kubeconfig, log)
    try:
        await api.create(MD, first)

        async def adopted(resource: str, name: str) -> bool:
            found = await api.get(resource, "default", name)
            return bool(found and found["metadata"].get("ownerReferences"))

        for resource, child in existing:  # through 409, GET, merge patch
            name = child["metadata"]["name"]
            assert await eventually(lambda r=resource, n=name: adopted(r, n), within=30), name
        await make_ready(api, old)
        await eventually(lambda: phase_is(api, "Healthy"), within=20)

        changed = await api.patch(
            MD,
            "default",
            "iris",
            {"spec": {"model": {"uri": "https://models.example.com/iris-8.onnx", "version": "8"}}},
        )
        new = f"iris-{revision(changed)[:10]}"
        await eventually(lambda: api.get(DEPLOYMENTS, "default", new), within=20)
        await make_ready(api, new)

        async def promoted() -> dict[str, Any] | None:
            found = await phase_is(api, "Healthy")
            stable = ((found or {}).get("stable") or {}).get("revision")
            return found if stable == revision(changed) else None

        await eventually(promoted, within=20)
        # The promoted revision's count goes to its own HPA (the canary's was the rollout's).
        await eventually(lambda: api.get(HPAS, "default", new), within=20)

        async def retired() -> bool:
            return (
                await api.get(DEPLOYMENTS, "default", old) is None
                and await api.get(HPAS, "default", old) is None
            )

        assert await eventually(retired, within=40), "the old revision is deleted after draining"

        # The router leaves gateway-api: the HTTPRoute Weir owned goes (it is not watched, so
        # the operator knows it from status.router).
        body = {"spec": {"traffic": {"router": "replicas", "gateway": None}}}
        await api.patch(MD, "default", "iris", body)

        async def unrouted() -> bool:
            status = (await api.get(MD, "default", "iris") or {}).get("status") or {}
            route = await api.get(ROUTES, "default", "iris")
            return route is None and status.get("router") == "replicas"

        assert await eventually(unrouted, within=20), "the HTTPRoute outlived gateway-api"

        await api.delete(MD, "default", "iris")

        async def gone() -> bool:
            return await api.get(MD, "default", "iris") is None

        await eventually(gone, within=20)
        await asyncio.sleep(2)  # whatever the operator does after the deletion, recorded too
    finally:
        await operator.stop()
        print(operator.log()[-5000:])  # shown by pytest only when the test failed


async def run_namespaced(api: EmulatorApi, kubeconfig: Path, log: Path) -> None:
    """Phase 2 (see the module docstring)."""
    operator = Operator(kubeconfig, log, "--namespace", "defa*")
    try:
        await api.create(SECRETS, Authority().issue("second.default.svc").secret(TLS_SECRET))
        second = manifest(name="second", **TLS_SPEC)
        await api.create(MD, second)
        name = f"second-{revision(second)[:10]}"
        deployment = await eventually(lambda: api.get(DEPLOYMENTS, "default", name), within=30)
        await make_ready(api, name)
        await eventually(lambda: phase_is(api, "Healthy", name="second"), within=20)
        # Its server pod, Ready at an address where nothing listens: the scrape fails, after
        # the Secret was read to verify it with.
        template = deployment["spec"]["template"]["metadata"]
        pod = {
            "metadata": {
                "name": f"{name}-0",
                "namespace": "default",
                "labels": template["labels"],
                "annotations": template["annotations"],
            },
            "status": {"podIP": NOWHERE, "conditions": [{"type": "Ready", "status": "True"}]},
        }
        await api.create("v1/pods", pod)

        def secret_read() -> bool:
            return any(
                call.triple == ("", "secrets", "get") for call in operator_calls(api.emulator)
            )

        assert await eventually(secret_read, within=20), "the TLS pod's CA was never read"
    finally:
        await operator.stop()
        print(operator.log()[-5000:])


@dataclass(frozen=True)
class Recorded:
    cluster_wide: list[ApiCall]  # phase 1
    namespaced: list[ApiCall]  # phase 2

    @property
    def calls(self) -> list[ApiCall]:
        return self.cluster_wide + self.namespaced


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def recorded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Recorded]:
    """Both phases, once for the module's tests; the operator's calls of each."""
    tmp_path = tmp_path_factory.mktemp("rbac")
    async with serve({**RESOURCES, **PEERING_RESOURCES}) as emulator:
        api = EmulatorApi(emulator)
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(emulator.url).rstrip("/"))
        # What a cluster has before the operator starts: kopf's default peering objects (when
        # the peering CRDs are installed) and the namespace.
        await api.create(CLUSTER_PEERINGS, {"metadata": {"name": "default"}})
        await api.create(PEERINGS, {"metadata": {"name": "default", "namespace": "default"}})
        await api.create("v1/namespaces", {"metadata": {"name": "default"}})

        await run_life_cycle(api, kubeconfig, tmp_path / "operator.log")
        first = len(list(emulator))
        await run_namespaced(api, kubeconfig, tmp_path / "namespaced.log")
        requests = list(emulator)
        yield Recorded(operator_calls(requests[:first]), operator_calls(requests[first:]))


def test_every_call_of_the_operator_is_granted(recorded: Recorded) -> None:
    rules = granted()
    outside = sorted({str(call) for call in recorded.calls if call.triple not in rules})
    assert not outside, "the operator made calls RBAC does not grant:\n" + "\n".join(outside)
    # Both runs did their whole job (a run that stopped early would prove little).
    phase_1 = {call.triple for call in recorded.cluster_wide}
    assert ("apps", "deployments", "delete") in phase_1
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in phase_1
    phase_2 = {call.triple for call in recorded.namespaced}
    assert ("serving.weir.dev", "modeldeployments/status", "patch") in phase_2
    assert ("kopf.dev", "kopfpeerings", "patch") in phase_2


def test_every_grant_is_used(recorded: Recorded) -> None:
    rules, used = granted(), {call.triple for call in recorded.calls}
    never = sorted(rules - used - set(REAL_CLUSTER_ONLY))
    assert not never, "RULES (and so the chart) grants what the operator never used:\n" + "\n".join(
        f"{verb} {group or 'core'}/{resource}" for group, resource, verb in never
    )
    stale = sorted(used & set(REAL_CLUSTER_ONLY))
    assert not stale, f"used here after all, not real-cluster-only: {stale}"


def test_watching_namespaces_the_operator_stays_inside_them(recorded: Recorded) -> None:
    namespaced_resources = {
        (kmock.resource(name).group, kmock.resource(name).plural)
        for name, info in {**RESOURCES, **PEERING_RESOURCES}.items()
        if info.namespaced
    }
    elsewhere = sorted(
        str(call)
        for call in recorded.namespaced
        if (call.group, call.resource.split("/")[0]) in namespaced_resources
        and call.namespace != "default"
    )
    assert not elsewhere, (
        "with --namespace, calls outside the watched namespaces (a Role cannot grant them):\n"
        + "\n".join(elsewhere)
    )
