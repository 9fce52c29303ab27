"""What every caller of the Kubernetes API in Weir shares: the merge-patch content type, and an
ApiException in the API's own words. The operator (`cluster.kube`) and the CLI
(`client.kube_backend`) both use it; neither may import the other."""

from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

MERGE_PATCH = "application/merge-patch+json"


def is_transient(error: ApiException) -> bool:
    """Conflicts, throttling and server errors are worth retrying; 4xx otherwise are not."""
    return error.status in (409, 429) or (error.status or 0) >= 500


def explain(error: ApiException) -> str:
    """The API's own words for a refusal ("403 Forbidden: deployments.apps is forbidden: User
    ... cannot create resource ..."), so an operator log names the call and the missing right."""
    message = ""
    try:
        body = json.loads(error.body or "")
        if isinstance(body, dict):
            message = str(body.get("message") or "")
    except (TypeError, ValueError):
        message = ""
    head = f"{error.status} {error.reason}"
    return f"{head}: {message}" if message else head
