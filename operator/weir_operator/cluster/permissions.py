"""Every Kubernetes API permission the operator needs, and nothing more.

The Helm chart's RBAC is tested against this list, and the emulator tests check that the
operator's real API calls stay inside it: least privilege that cannot silently drift."""

from __future__ import annotations

from typing import Final

# (apiGroup, resource, verbs). "" is the core group.
RULES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    # The custom resource: watched; kopf's progress annotations patched.
    ("serving.weir.dev", "modeldeployments", ("list", "watch", "patch")),
    ("serving.weir.dev", "modeldeployments/status", ("patch",)),
    # Children, read from watches, applied with create-or-merge-patch; old revisions deleted.
    ("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    (
        "autoscaling",
        "horizontalpodautoscalers",
        ("get", "list", "watch", "create", "patch", "delete"),
    ),
    ("", "services", ("get", "list", "watch", "create", "patch")),
    # `<md>-shadow` (core/shadow.py), watched like the other children; removed with its owner.
    ("", "configmaps", ("get", "list", "watch", "create", "patch")),
    ("policy", "poddisruptionbudgets", ("get", "list", "watch", "create", "patch")),
    # Not watched (the Gateway API CRDs may be absent): read before a patch; deleted when
    # the router leaves gateway-api.
    ("gateway.networking.k8s.io", "httproutes", ("get", "create", "patch", "delete")),
    # Pods are only watched: readiness, restarts and crash loops of the servers.
    ("", "pods", ("list", "watch")),
    # Secrets are only read, one by name, never listed or watched: the ca.crt of
    # spec.server.tls.secretName, to verify TLS servers with (cluster/trust.py).
    ("", "secrets", ("get",)),
    # Events that tell each rollout's story in `kubectl describe md`.
    ("", "events", ("create",)),
    # kopf: peering between operator replicas, and discovery of watched namespaces and the CRD.
    ("kopf.dev", "clusterkopfpeerings", ("list", "watch", "patch")),
    ("kopf.dev", "kopfpeerings", ("list", "watch", "patch")),
    ("", "namespaces", ("list", "watch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
)
