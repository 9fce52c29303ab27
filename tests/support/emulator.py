"""kmock's KubernetesEmulator, extended with the API conventions the operator relies on.

`WeirEmulator` assigns uid, resourceVersion, generation and creationTimestamp; answers 201 on
create, 409 on a stale resourceVersion or a duplicate, 422 on a failed JSON Patch `test`; applies
JSON merge patches, JSON Patches and PUT replacements; keeps `status` apart from the rest for
resources declared with the status subresource; filters lists and watches by label and field
selectors; resumes watches from a resourceVersion and ends them after `timeoutSeconds`; answers
errors as Kubernetes `Status` objects. tests/emulator/test_emulator_conventions.py checks it.

Not emulated: strategic merge patch (applied as a JSON merge patch to built-in resources, so
lists are replaced, not merged by key; custom resources answer 415 as on a real server),
server-side apply (415), schema validation and defaulting, garbage collection of owned objects,
the scale subresource (404), admission, dryRun, pagination (`limit` is ignored), bookmarks.

A request that a test answers with its own reaction changes nothing, as on a real server that
failed, because the state changes in the fallbacks only. Injecting API errors, e.g.:

    emulator["patch", kmock.resource("apps/v1/deployments")] << 500  # every such PATCH
    emulator["patch"] << kmock.KubernetesError(409, "Conflict", "injected")  # a Status body
    emulator["get", kmock.resource("v1/pods")] << delayed(2.0)  # every GET, 2 s late
    patches = emulator["patch"]  # a slice counts the matching requests since the start:
    patches[len(patches) : len(patches) + 2] << 500  # the next two PATCHes
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml
from kmock._internal import apps, parsing

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

VERBS = {"get", "list", "watch", "create", "patch", "update", "delete"}

# What the operator (and kopf under it) touches, declared for discovery.
RESOURCES: dict[str, kmock.ResourceInfo] = {
    "v1/namespaces": kmock.ResourceInfo(
        kind="Namespace", singular="namespace", shortnames={"ns"}, namespaced=False, verbs=VERBS
    ),
    "v1/pods": kmock.ResourceInfo(
        kind="Pod", singular="pod", shortnames={"po"}, namespaced=True, verbs=VERBS
    ),
    "v1/secrets": kmock.ResourceInfo(
        kind="Secret", singular="secret", namespaced=True, verbs=VERBS
    ),
    "v1/configmaps": kmock.ResourceInfo(
        kind="ConfigMap", singular="configmap", shortnames={"cm"}, namespaced=True, verbs=VERBS
    ),
    "v1/services": kmock.ResourceInfo(
        kind="Service", singular="service", shortnames={"svc"}, namespaced=True, verbs=VERBS
    ),
    "v1/events": kmock.ResourceInfo(
        kind="Event", singular="event", shortnames={"ev"}, namespaced=True, verbs=VERBS
    ),
    "events.k8s.io/v1/events": kmock.ResourceInfo(
        kind="Event", singular="event", shortnames={"ev"}, namespaced=True, verbs=VERBS
    ),
    "apps/v1/deployments": kmock.ResourceInfo(
        kind="Deployment",
        singular="deployment",
        shortnames={"deploy"},
        namespaced=True,
        verbs=VERBS,
        subresources={"status", "scale"},
    ),
    "autoscaling/v2/horizontalpodautoscalers": kmock.ResourceInfo(
        kind="HorizontalPodAutoscaler",
        singular="horizontalpodautoscaler",
        shortnames={"hpa"},
        namespaced=True,
        verbs=VERBS,
    ),
    "policy/v1/poddisruptionbudgets": kmock.ResourceInfo(
        kind="PodDisruptionBudget",
        singular="poddisruptionbudget",
        shortnames={"pdb"},
        namespaced=True,
        verbs=VERBS,
    ),
    "gateway.networking.k8s.io/v1/httproutes": kmock.ResourceInfo(
        kind="HTTPRoute", singular="httproute", namespaced=True, verbs=VERBS
    ),
    "serving.weir.dev/v1alpha1/modeldeployments": kmock.ResourceInfo(
        kind="ModelDeployment",
        singular="modeldeployment",
        shortnames={"md", "mdep"},
        categories={"weir"},
        namespaced=True,
        verbs=VERBS,
        subresources={"status", "scale"},
    ),
    "apiextensions.k8s.io/v1/customresourcedefinitions": kmock.ResourceInfo(
        kind="CustomResourceDefinition",
        singular="customresourcedefinition",
        shortnames={"crd", "crds"},
        namespaced=False,
        verbs=VERBS,
    ),
}

# Served by Kubernetes itself (the rest are custom resources, Gateway API included).
BUILT_IN_GROUPS = {"", "apps", "autoscaling", "batch", "policy", "events.k8s.io"}
REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}
# Set by the server, never by a write (a real server rejects or ignores such changes).
SYSTEM_METADATA = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)
Event = tuple[str, dict[str, Any], dict[str, Any] | None]  # type, object, the object before

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    # kmock 0.8 reads /api/v1/namespaces[/NAME[/status]] as a namespace prefix: listing namespaces
    # fails with a 500 and a Namespace's own URL is misread. Parse these as the resource itself.
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        name, subresource = [*parts[3:], None, None][:2]
        return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path  # kmock calls it through the module for every request


def api_error(code: int, message: str, reason: str | None = None) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason or REASONS[code], message=message)


def status_object(code: int, message: str, reason: str | None = None) -> dict[str, Any]:
    if reason is None or " " in reason:  # kmock's own reasons are phrases: "Object Not Found"
        reason = REASONS.get(code, "InternalError")
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "reason": reason,
        "code": code,
        "message": message,
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


_LABEL_REQUIREMENT = re.compile(
    r"(?P<absent>!?)\s*(?P<key>[\w./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[\w.-]*)|\s(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?"
)
_FIELD_REQUIREMENT = re.compile(r"(?P<path>[\w.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*)")


def _requirements(pattern: re.Pattern[str], selector: str) -> list[re.Match[str]]:
    requirements = []
    for part in re.split(r",(?![^(]*\))", selector) if selector.strip() else []:
        match = pattern.fullmatch(part.strip())
        if match is None or (match.groupdict().get("absent") and (match["op"] or match["set"])):
            raise api_error(400, f"unable to parse requirement: {part!r}")
        requirements.append(match)
    return requirements


def label_selector(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`; a comma means AND."""
    requirements = _requirements(_LABEL_REQUIREMENT, selector)

    def satisfied(requirement: re.Match[str], labels: Mapping[str, str]) -> bool:
        value = labels.get(requirement["key"])
        if requirement["op"]:
            return (value == requirement["value"]) != (requirement["op"] == "!=")
        if requirement["set"]:
            values = {item.strip() for item in requirement["values"].split(",")}
            return (value in values) != (requirement["set"] == "notin")
        return (requirement["key"] in labels) != bool(requirement["absent"])

    return lambda labels: all(satisfied(requirement, labels) for requirement in requirements)


def field_selector(selector: str) -> Callable[[Mapping[str, Any]], bool]:
    """`path=value` / `path!=value` on any dotted path (a real server allows fewer fields)."""
    requirements = _requirements(_FIELD_REQUIREMENT, selector)

    def field(obj: Any, path: str) -> str:
        for key in path.split("."):
            obj = obj.get(key) if isinstance(obj, dict) else None
        return "" if obj is None else obj if isinstance(obj, str) else json.dumps(obj)

    return lambda obj: all(
        (field(obj, requirement["path"]) == requirement["value"].strip())
        != (requirement["op"] == "!=")
        for requirement in requirements
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content_type(request: kmock.Request) -> str:
    headers = {key.lower(): value for key, value in request.headers.items()}
    return headers.get("content-type", "").split(";")[0].strip()


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key not in keys}


@attrs.define(kw_only=True)
class WeirEmulator(kmock.KubernetesEmulator):
    """See the module docstring. Declare resources before use (``RESOURCES``, ``serve``)."""

    _revision: int = attrs.field(default=0, init=False)
    _events: dict[kmock.resource, list[Event]] = attrs.field(
        factory=lambda: collections.defaultdict(list), init=False
    )

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[kmock.method.PUT] << self._serve_update

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            # Skip KubernetesEmulator._handle: it changes the state before any reaction answers.
            return await apps.RawHandler._handle(self, request)
        except kmock.KubernetesError as error:  # an answer, not a failure of the emulator
            return await self._render_error(error)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            body = status_object(exc.status, exc.message or repr(exc), exc.reason)
            return aiohttp.web.json_response(body, status=exc.status)
        return await super()._render_error(exc)

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        resources: dict[str, Any] = await super()._serve_version(request)  # type: ignore[assignment]
        resources["groupVersion"] = resources["groupVersion"].lstrip("/")  # kmock says "/v1"
        for entry in resources["resources"]:
            if "/" in entry["name"]:  # kmock gives subresources the short names of the resource
                entry.update(
                    singularName="", shortNames=[], categories=[], verbs=["get", "patch", "update"]
                )
        return resources

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        if request.subresource not in (None, "status"):  # scale is not emulated
            raise api_error(404, f"the server could not find the subresource {request.subresource}")
        return await super()._serve_fetch(request)

    def _info(self, request: kmock.Request) -> kmock.ResourceInfo:
        if request.resource is not None and request.resource in self.resources:
            return self.resources[request.resource]
        if request.resource is None or request.resource not in self._get_resources():
            raise api_error(404, "the server could not find the requested resource")
        return kmock.ResourceInfo()  # undeclared, but objects of it were put in `objects`

    def _selected(self, request: kmock.Request) -> Callable[[Mapping[str, Any]], bool]:
        labels = label_selector(request.params.get("labelSelector", ""))
        fields = field_selector(request.params.get("fieldSelector", ""))

        def selected(obj: Mapping[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return (
                request.namespace in (None, meta.get("namespace"))
                and request.name in (None, meta.get("name"))
                and labels(meta.get("labels") or {})
                and fields(obj)
            )

        return selected

    def _current(self, request: kmock.Request) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (resource, _, _), obj in self._objects.items()
            if resource == request.resource and not obj.deleted
        ]

    def _exists(self, request: kmock.Request, name: str | None) -> bool:
        key = (request.resource, request.namespace, name)
        return key in self._objects and not self._objects[key].deleted

    def _stored(self, request: kmock.Request) -> kmock.Object:
        if not self._exists(request, request.name):
            plural = request.resource.plural if request.resource else "objects"
            raise api_error(404, f'{plural} "{request.name}" not found')
        return self._objects[request.resource, request.namespace, request.name]

    def _next_revision(self) -> str:
        self._revision += 1
        return str(self._revision)

    async def _emit(
        self, request: kmock.Request, kind: str, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        assert request.resource is not None
        self._events[request.resource].append((kind, obj, old))
        await self._buses[request.resource].put((kind, obj, old))

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        info, selected = self._info(request), self._selected(request)
        assert request.resource is not None
        async with self._lock:
            items = [obj for obj in self._current(request) if selected(obj)]
            revision = str(self._revision)
        group_version = "/".join(filter(None, [request.resource.group, request.resource.version]))
        return {
            "apiVersion": group_version,
            "kind": f"{info.kind or 'Object'}List",
            "metadata": {"resourceVersion": revision},
            "items": items,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        self._info(request)
        selected = self._selected(request)
        since = request.params.get("resourceVersion") or "0"
        if not since.isdigit():
            raise api_error(400, f"invalid resourceVersion {since!r}")
        timeout = float(request.params.get("timeoutSeconds") or 0)
        deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        assert request.resource is not None
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            if since == "0":  # "any version": the current objects, then the changes
                backlog: list[Event] = [("ADDED", obj, None) for obj in self._current(request)]
            else:
                backlog = [
                    event
                    for event in self._events[request.resource]
                    if int(event[1]["metadata"]["resourceVersion"]) > int(since)
                ]
        yield b""  # kmock sends the headers with the first chunk
        try:
            for event in backlog:
                if shown := self._shown(event, selected):
                    yield shown
            stream = bus.stream(since=marker)
            while True:
                async with asyncio.timeout_at(deadline):
                    event = await anext(stream)
                if shown := self._shown(event, selected):
                    yield shown
        except TimeoutError:
            return
        finally:
            await bus.unmark(marker)

    @staticmethod
    def _shown(
        event: Event, selected: Callable[[Mapping[str, Any]], bool]
    ) -> dict[str, Any] | None:
        kind, obj, old = event
        now, before = selected(obj), old is not None and selected(old)
        if kind == "MODIFIED" and now != before:  # moved into or out of the selection
            kind = "ADDED" if now else "DELETED"
        return {"type": kind, "object": obj} if now or before else None

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        info = self._info(request)
        if not isinstance(request.data, dict):
            raise api_error(400, "the body of a create must be a JSON object")
        assert request.resource is not None
        obj = copy.deepcopy(request.data)
        meta = obj.setdefault("metadata", {})
        if meta.get("namespace") not in (None, request.namespace):
            raise api_error(400, "the namespace of the object does not match the request's")
        if request.namespace is None:
            meta.pop("namespace", None)
        else:
            meta["namespace"] = request.namespace
        group_version = "/".join(filter(None, [request.resource.group, request.resource.version]))
        obj.setdefault("apiVersion", group_version)
        obj.setdefault("kind", info.kind)
        if "status" in info.subresources:
            obj.pop("status", None)
        async with self._lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise api_error(422, "metadata.name: Required value: name or generateName")
                while not meta.get("name") or self._exists(request, meta["name"]):
                    suffix = "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
                    meta["name"] = meta["generateName"] + suffix
            elif self._exists(request, meta["name"]):
                plural = request.resource.plural
                raise api_error(409, f'{plural} "{meta["name"]}" already exists', "AlreadyExists")
            meta.pop("deletionTimestamp", None)
            meta.update(
                uid=str(uuid.uuid4()),
                resourceVersion=self._next_revision(),
                generation=1,
                creationTimestamp=_now(),
            )
            key = (request.resource, request.namespace, meta["name"])
            if key in self._objects:
                self._objects[key].create(obj)
            else:
                self._objects[key] = obj
            await self._emit(request, "ADDED", obj, None)
        # Always a Response: kmock keeps the last status on the reaction for the next answers.
        return kmock.Response(status=201, payload=obj)

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        """PATCH and PUT, on the object or on its /status."""
        info = self._info(request)
        on_status = request.subresource == "status"
        if request.subresource not in (None, "status") or (
            on_status and "status" not in info.subresources
        ):
            raise api_error(404, f"the server could not find the subresource {request.subresource}")
        async with self._lock:
            stored = self._stored(request)
            old = stored.raw
            old_meta = old.get("metadata") or {}
            new = self._changed(old, request)
            requested = (new.get("metadata") or {}).get("resourceVersion")
            if requested is not None and requested != old_meta.get("resourceVersion"):
                assert request.resource is not None
                plural = ".".join(filter(None, [request.resource.plural, request.resource.group]))
                raise api_error(
                    409,
                    f'Operation cannot be fulfilled on {plural} "{request.name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                )
            if on_status:
                new = {**old, "status": new.get("status")}
            elif "status" in info.subresources:
                new["status"] = old.get("status")
            new = {key: value for key, value in new.items() if value is not None}
            meta = new["metadata"] = _without(new.get("metadata") or {}, *SYSTEM_METADATA)
            meta.update({key: old_meta[key] for key in SYSTEM_METADATA if key in old_meta})
            if new == old:  # a no-op write changes no version and wakes no watcher
                return old
            if _without(new, "metadata", "status") != _without(old, "metadata", "status"):
                meta["generation"] = old_meta.get("generation", 0) + 1
            meta["resourceVersion"] = self._next_revision()
            stored.history.append(new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                stored.delete()
                await self._emit(request, "DELETED", new, None)
            else:
                await self._emit(request, "MODIFIED", new, old)
        return new

    @staticmethod
    def _changed(old: dict[str, Any], request: kmock.Request) -> dict[str, Any]:
        body, content_type = request.data, _content_type(request)
        if request.method == kmock.method.PUT:
            if not isinstance(body, dict):
                raise api_error(400, "the body of a PUT must be a JSON object")
            return copy.deepcopy(body)
        if content_type == JSON_PATCH:
            if not isinstance(body, list):
                raise api_error(400, "a JSON Patch must be a JSON array of operations")
            try:
                patched: dict[str, Any] = jsonpatch.apply_patch(old, body)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
                raise api_error(422, f"the JSON Patch could not be applied: {error}") from None
            return patched
        if content_type == STRATEGIC_MERGE_PATCH and request.resource.group not in BUILT_IN_GROUPS:
            raise api_error(415, "strategic merge patch is not supported for custom resources")
        # A strategic merge patch is applied as a merge patch: lists are replaced, not merged.
        if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            if not isinstance(body, dict):
                raise api_error(400, "a merge patch must be a JSON object")
            result: dict[str, Any] = merge_patch(old, body)
            return result
        raise api_error(415, f"the patch type {content_type!r} is not supported here")

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        self._info(request)
        async with self._lock:
            stored = self._stored(request)
            old = stored.raw
            if (old.get("metadata") or {}).get("deletionTimestamp"):
                return kmock.Response(status=200, payload=old)
            new = copy.deepcopy(old)
            meta = new.setdefault("metadata", {})
            meta["resourceVersion"] = self._next_revision()
            if meta.get("finalizers"):  # marked, deleted when the last finalizer goes
                meta.update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0)
                meta["generation"] = meta.get("generation", 0) + 1
                stored.history.append(new)
                await self._emit(request, "MODIFIED", new, old)
                return kmock.Response(status=200, payload=new)
            stored.delete()
            await self._emit(request, "DELETED", new, None)
        return kmock.Response(status=200, payload=new)


def delayed(seconds: float) -> Callable[[], Awaitable[None]]:
    """A reaction that answers nothing itself, `seconds` late, every time it matches."""

    async def wait() -> None:
        await asyncio.sleep(seconds)
        raise NotImplementedError  # kmock: "matched, no answer": the next reaction answers

    return wait


@contextlib.asynccontextmanager
async def serve(
    resources: Mapping[str, kmock.ResourceInfo] = RESOURCES, **options: Any
) -> AsyncIterator[WeirEmulator]:
    """A `WeirEmulator(**options)` on 127.0.0.1 (a free port) with `resources` declared.

    kmock's options: `strict=True` fails on exit if the emulator raised (500s), `limit=N`."""
    async with WeirEmulator(**options) as emulator, kmock.Server(emulator):
        for name, info in resources.items():
            emulator.resources[name] = copy.deepcopy(info)
        yield emulator


def write_kubeconfig(path: Path, server: str, namespace: str = "default") -> Path:
    """A kubeconfig for plain HTTP to `server` with a dummy token."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body = status, body


class EmulatorApi:
    """Objects through the emulator's HTTP API, from async tests on the emulator's event loop.

    `resource` is kmock's notation: "v1/pods", "apps/v1/deployments". Requests are recorded in
    ``list(emulator)`` like the operator's; they carry a "kmock/..." User-Agent."""

    def __init__(self, emulator: WeirEmulator) -> None:
        self.emulator = emulator

    @staticmethod
    def path(
        resource: str,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        ref = kmock.resource(resource)
        prefix = "/api/v1" if ref.group == "" else f"/apis/{ref.group}/{ref.version}"
        scope = f"/namespaces/{namespace}" if namespace else ""
        tail = "".join(f"/{part}" for part in (name, subresource) if part)
        return f"{prefix}{scope}/{ref.plural}{tail}"

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type}
        async with self.emulator.request(
            method, path, data=data, headers=headers, params=params
        ) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise ApiError(response.status, payload)
            return payload

    async def create(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        namespace = body.get("metadata", {}).get("namespace")
        created: dict[str, Any] = await self.request("POST", self.path(resource, namespace), body)
        return created

    async def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = await self.request("GET", self.path(resource, namespace, name))
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        return found

    async def list(
        self, resource: str, namespace: str | None = None, *, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        listed = await self.request("GET", self.path(resource, namespace), params=params)
        return list(listed["items"])

    async def patch(
        self,
        resource: str,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        path = self.path(resource, namespace, name, subresource)
        patched: dict[str, Any] = await self.request("PATCH", path, body, content_type=content_type)
        return patched

    async def delete(self, resource: str, namespace: str | None, name: str) -> dict[str, Any]:
        deleted: dict[str, Any] = await self.request("DELETE", self.path(resource, namespace, name))
        return deleted


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], within: float = 10.0, interval: float = 0.05
) -> Any:
    """Await until `check()` (sync or async) returns something truthy; fail after `within` s."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {within} s: {check}")
        await asyncio.sleep(interval)


async def in_thread(
    function: Callable[..., Any], *args: Any, within: float = 10.0, **kwargs: Any
) -> Any:
    """Run a blocking call (the `kubernetes` client) off the event loop serving the emulator."""
    return await asyncio.wait_for(asyncio.to_thread(function, *args, **kwargs), within)
