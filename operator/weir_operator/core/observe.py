"""What the operator reads from its children, turned into `reconcile`'s inputs. Pure.

The kopf indexes keep Deployments, Pods and HPAs in memory (from watches); these functions
summarise them per ModelDeployment: each revision's replica counts, and whether its pods cannot
serve (model fetch failed, crash loop, image cannot be pulled) with the reason in words."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from weir_operator.core.reconcile import Observed, RevisionState
from weir_operator.core.render import INSTANCE_LABEL, MANAGED_BY_LABEL, REVISION_LABEL

# Waiting reasons that mean a pod will not become ready by itself.
STUCK_REASONS = frozenset(
    {"CrashLoopBackOff", "ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError",
     "CreateContainerError", "InvalidImageName"}
)  # fmt: skip
FETCH_CONTAINER = "fetch-model"


def owner_key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, ModelDeployment name) of a child, from its labels; None if not Weir's."""
    metadata = obj.get("metadata", {})
    labels = metadata.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != "weir" or INSTANCE_LABEL not in labels:
        return None
    return metadata.get("namespace", "default"), labels[INSTANCE_LABEL]


def pod_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a pod cannot serve, if it is stuck; (reason, message)."""
    status = pod.get("status") or {}
    for container in status.get("initContainerStatuses") or []:
        if container.get("name") != FETCH_CONTAINER:
            continue
        state = container.get("state") or {}
        last = (container.get("lastState") or {}).get("terminated") or {}
        terminated = state.get("terminated") or {}
        waiting = state.get("waiting") or {}
        if terminated.get("exitCode", 0) != 0 or waiting.get("reason") == "CrashLoopBackOff":
            message = (terminated.get("message") or last.get("message") or "").strip()
            return "ModelFetchFailed", message.splitlines()[-1] if message else "fetch-model failed"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            last = (container.get("lastState") or {}).get("terminated") or {}
            message = (last.get("message") or waiting.get("message") or "").strip()
            detail = message.splitlines()[-1] if message else f"container {container.get('name')}"
            return str(waiting["reason"]), detail
    return None


def observe(
    deployments: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    others: Iterable[Mapping[str, Any]] = (),
) -> Observed:
    """Summarise one ModelDeployment's children."""
    problems: dict[str, tuple[str, str]] = {}
    for pod in pods:
        revision = (pod.get("metadata", {}).get("labels") or {}).get(REVISION_LABEL)
        problem = pod_problem(pod)
        if revision and problem and revision not in problems:
            problems[revision] = problem
    revisions: dict[str, RevisionState] = {}
    children: set[tuple[str, str]] = set()
    for deployment in deployments:
        metadata = deployment.get("metadata", {})
        revision = (metadata.get("labels") or {}).get(REVISION_LABEL)
        if not revision:
            continue
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        revisions[revision] = RevisionState(
            revision=revision,
            name=metadata["name"],
            replicas=spec.get("replicas"),
            ready_replicas=status.get("readyReplicas") or 0,
            updated_replicas=status.get("updatedReplicas") or 0,
            problem=problems.get(revision),
        )
        children.add(("Deployment", metadata["name"]))
    for other in others:
        children.add((other.get("kind", "HorizontalPodAutoscaler"), other["metadata"]["name"]))
    return Observed(revisions=revisions, children=frozenset(children))
