"""What the stable's servers mirror during a shadow step, as the file they read
(weir_server.shadow): rendered into a ConfigMap `<md>-shadow` that every server pod mounts at
`SHADOW_DIR`, and that `weir run` writes as a file. Pure.

Why a file and not arguments: the stable's pods already run when a shadow step begins, and a
changed argument would restart them. The file is level-based like the rest: every reconcile
renders it from the status (`canary.shadowPercent`), so entering, changing and leaving a shadow
step, a rollback and an operator restart all converge on what the status says, with no pod
restart. Only the stable's servers act on it (`source`): the canary mounts the same file and
ignores it.

Mirrored copies go to the `<md>-canary` Service (on a cluster; `weir run` gives a canary
server's address), over HTTPS verified with the Secret's ca.crt when spec.server.tls is set."""

from __future__ import annotations

import json
from typing import Any

from weir_operator.core.render import (
    MIRROR_FILE,
    SERVICE_PORT,
    TLS_DIR,
    Manifest,
    RenderSettings,
    instance_labels,
    object_metadata,
    shadow_config_name,
    tls_server_name,
)
from weir_operator.core.spec import ModelDeployment
from weir_operator.core.status import ModelDeploymentStatus


def mirror_document(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    canary_url: str,
    tls: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What the stable mirrors now: `percent` 0 unless a shadow step is in force."""
    canary, stable = status.canary, status.stable
    if canary is None or stable is None or canary.shadow_percent <= 0:
        return {"percent": 0}
    rule = md.spec.rollout.analysis.agreement
    agreement = None
    if rule is not None:
        agreement = {
            "compare": rule.compare,
            "output": rule.output,
            "atol": rule.atol,
            "rtol": rule.rtol,
        }
    document: dict[str, Any] = {
        "source": stable.revision,
        "url": canary_url,
        "percent": canary.shadow_percent,
        "revision": canary.revision,
        "agreement": agreement,
        "examples": rule.examples if rule is not None else 0,
    }
    if tls is not None:
        document["tls"] = tls
    return document


def mirror_text(document: dict[str, Any]) -> str:
    """The file's text (stable key order: an unchanged document is an unchanged file)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"


def canary_service_url(md: ModelDeployment, settings: RenderSettings) -> str:
    """Where a stable's servers send shadow copies on a cluster: the `<md>-canary` Service."""
    scheme = "https" if md.spec.server.tls is not None else "http"
    host = f"{md.name}-canary.{md.namespace}.svc.{settings.cluster_domain}"
    return f"{scheme}://{host}:{SERVICE_PORT}"


def render_shadow_config(
    md: ModelDeployment, status: ModelDeploymentStatus, settings: RenderSettings
) -> Manifest:
    """The ConfigMap every server pod mounts at SHADOW_DIR: what the stable mirrors now."""
    tls = None
    name = tls_server_name(md)
    if name is not None:
        tls = {"ca": f"{TLS_DIR}/ca.crt", "serverName": name}
    document = mirror_document(md, status, canary_service_url(md, settings), tls)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_metadata(md, shadow_config_name(md), instance_labels(md)),
        "data": {MIRROR_FILE: mirror_text(document)},
    }
