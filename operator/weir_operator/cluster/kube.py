"""The operator's only door to the Kubernetes API: get, create, merge-patch, delete, list.

A thin shell over the `kubernetes` client. `apply` is idempotent create-or-patch: it creates
what is missing, merge-patches what differs (never delete-and-recreate), and writes nothing
when the object already says what we want, so a level-based reconcile loop costs reads only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from weir_operator.kubeapi import MERGE_PATCH, explain, is_transient

__all__ = ["KINDS", "MERGE_PATCH", "Kind", "Kube", "explain", "is_transient"]

log = logging.getLogger("weir.kube")

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    group: str  # "" = core
    version: str
    plural: str
    snake: str = ""  # the client's name in its core-group methods (config_map); default plural[:-1]

    @property
    def method(self) -> str:
        return self.snake or self.plural[:-1]


KINDS: dict[str, Kind] = {
    "Deployment": Kind("apps", "v1", "deployments"),
    "Service": Kind("", "v1", "services"),
    "Pod": Kind("", "v1", "pods"),
    "ConfigMap": Kind("", "v1", "configmaps", "config_map"),
    "HorizontalPodAutoscaler": Kind("autoscaling", "v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Kind("policy", "v1", "poddisruptionbudgets"),
    "HTTPRoute": Kind("gateway.networking.k8s.io", "v1", "httproutes"),
    "ModelDeployment": Kind("serving.weir.dev", "v1alpha1", "modeldeployments"),
}


# Maps that must say exactly what is rendered: a merge patch leaves keys it does not name, so
# keys that are gone from these are patched to null (the `<md>` Service drops the revision from
# its selector when a canary gets traffic).
EXACT_MAPS: dict[str, tuple[tuple[str, ...], ...]] = {"Service": (("spec", "selector"),)}


def removed_keys(kind: str, existing: Manifest, desired: Manifest) -> Manifest:
    """A merge patch fragment nulling the keys of `EXACT_MAPS` that `desired` no longer has."""
    patch: Manifest = {}
    for path in EXACT_MAPS.get(kind, ()):
        old, new = existing, desired
        for key in path:
            old = old.get(key) or {} if isinstance(old, dict) else {}
            new = new.get(key) or {} if isinstance(new, dict) else {}
        gone = {key: None for key in old if key not in new}
        if gone:
            target = patch
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = gone
    return patch


def merged(base: Manifest, extra: Manifest) -> Manifest:
    """`base` with `extra`'s keys added, recursively (for patches that do not overlap)."""
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def contains(existing: Any, desired: Any) -> bool:
    """True when `existing` already says everything `desired` says (server-side defaults,
    e.g. a container's terminationMessagePath, may add more without counting as a change)."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(
            key in existing and contains(existing[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(existing, list)
            and len(existing) == len(desired)
            and all(contains(e, d) for e, d in zip(existing, desired, strict=True))
        )
    return bool(existing == desired)


class Kube:
    """Generic object access; every call goes through the `kubernetes` client's ApiClient."""

    def __init__(self, api_client: k8s.ApiClient | None = None) -> None:
        self.api_client = api_client or k8s.ApiClient()
        self.custom = k8s.CustomObjectsApi(self.api_client)
        self.core = k8s.CoreV1Api(self.api_client)

    def _plain(self, obj: Any) -> Manifest:
        return cast(Manifest, self.api_client.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def get(self, kind: str, namespace: str, name: str) -> Manifest | None:
        try:
            return self._get(KINDS[kind], namespace, name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def _get(self, kind: Kind, namespace: str, name: str) -> Manifest:
        if kind.group == "":
            reader = getattr(self.core, f"read_namespaced_{kind.method}")
            return self._plain(reader(name, namespace))
        found = self.custom.get_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name
        )
        return cast(Manifest, found)

    def secret_data(self, namespace: str, name: str, timeout: float) -> dict[str, str]:
        """A Secret's `data` (base64 values by key), read within `timeout` seconds; the
        ApiException (404 when there is none) is the caller's to explain. Only for what the
        operator must verify servers with (`cluster.trust`): never logged, never cached here."""
        secret = self.core.read_namespaced_secret(
            name, namespace, _request_timeout=(min(timeout, 2.0), timeout)
        )
        return {str(k): str(v) for k, v in (secret.data or {}).items()}

    def list(self, kind_name: str, namespace: str, label_selector: str = "") -> list[Manifest]:
        kind = KINDS[kind_name]
        if kind.group == "":
            lister = getattr(self.core, f"list_namespaced_{kind.method}")
            items = self._plain(lister(namespace, label_selector=label_selector))["items"]
        else:
            listed = self.custom.list_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, label_selector=label_selector
            )
            items = cast(Manifest, listed)["items"]
        return list(items)

    def create(self, manifest: Manifest) -> Manifest:
        kind = KINDS[manifest["kind"]]
        namespace = manifest["metadata"]["namespace"]
        if kind.group == "":
            creator = getattr(self.core, f"create_namespaced_{kind.method}")
            return self._plain(creator(namespace, manifest))
        created = self.custom.create_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, manifest
        )
        return cast(Manifest, created)

    def merge_patch(self, kind_name: str, namespace: str, name: str, body: Manifest) -> Manifest:
        kind = KINDS[kind_name]
        if kind.group == "":
            patcher = getattr(self.core, f"patch_namespaced_{kind.method}")
            return self._plain(patcher(name, namespace, body, _content_type=MERGE_PATCH))
        patched = self.custom.patch_namespaced_custom_object(
            kind.group, kind.version, namespace, kind.plural, name, body, _content_type=MERGE_PATCH
        )
        return cast(Manifest, patched)

    def patch_status(self, kind_name: str, namespace: str, name: str, status: Manifest) -> None:
        kind = KINDS[kind_name]
        self.custom.patch_namespaced_custom_object_status(
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            {"status": status},
            _content_type=MERGE_PATCH,
        )

    def delete(self, kind_name: str, namespace: str, name: str) -> bool:
        kind = KINDS[kind_name]
        try:
            if kind.group == "":
                deleter = getattr(self.core, f"delete_namespaced_{kind.method}")
                deleter(name, namespace)
            else:
                self.custom.delete_namespaced_custom_object(
                    kind.group, kind.version, namespace, kind.plural, name
                )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def apply(
        self, manifest: Manifest, cached: Manifest | None = None, *, trust_cache: bool = False
    ) -> Literal["created", "patched", "unchanged"]:
        """Create `manifest`, or merge-patch the live object until it says the same.

        With `trust_cache`, `cached` (the object from a watch cache, or None when the cache has
        none) stands in for a GET, so a converged object costs no API call at all."""
        metadata = manifest["metadata"]
        kind, namespace, name = manifest["kind"], metadata["namespace"], metadata["name"]
        existing = cached if trust_cache else self.get(kind, namespace, name)
        if existing is None:
            try:
                self.create(manifest)
                return "created"
            except ApiException as error:
                if error.status != 409:  # it exists after all (a stale cache, a racing reconcile)
                    raise
                existing = self.get(kind, namespace, name)
        wanted = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind")}
        gone = removed_keys(kind, existing or {}, wanted)
        if existing is not None and contains(existing, wanted) and not gone:
            return "unchanged"
        self.merge_patch(kind, namespace, name, merged(wanted, gone))
        return "patched"
