"""Every Kubernetes API permission the operator needs, and nothing more.

The Helm chart's RBAC is tested against this list, and the emulator tests check that the
operator's real API calls stay inside it: least privilege that cannot silently drift."""

from __future__ import annotations

from typing import Final

# (apiGroup, resource, verbs). "" is the core group.
RULES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    # The custom resource: watched, its finalizer and kopf's progress annotations patched.
    ("serving.weir.dev", "modeldeployments", ("get", "list", "watch", "patch")),
    ("serving.weir.dev", "modeldeployments/status", ("get", "patch")),
    # Children, applied with create-or-merge-patch; old revisions deleted after a rollout.
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    ("", "services", ("get", "list", "watch", "create", "patch", "delete")),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        ("get", "list", "watch", "create", "patch", "delete"),
    ),
    ("policy", "poddisruptionbudgets", ("get", "list", "watch", "create", "patch", "delete")),
    (
        "gateway.networking.k8s.io",
        "httproutes",
        ("get", "list", "watch", "create", "patch", "delete"),
    ),
    # Pods are only read: readiness, restarts and crash loops of the servers; direct scrapes.
    ("", "pods", ("get", "list", "watch")),
    # Events that tell each rollout's story in `kubectl describe md`.
    ("", "events", ("create", "patch")),
    ("events.k8s.io", "events", ("create", "patch")),
    # kopf: peering between operator replicas, and discovery of watched namespaces.
    ("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch")),
    ("kopf.dev", "kopfpeerings", ("get", "list", "watch", "patch")),
    ("", "namespaces", ("get", "list", "watch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("get", "list", "watch")),
)
