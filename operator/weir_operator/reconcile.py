"""The pure reconcile step: (ModelDeployment, status, observed children, now) -> plan.

No I/O: the operator (and later `weir run`) observes the world, calls `reconcile`, then applies
the plan: children to apply, obsolete children to delete, the new status, and the events that
tell the story. Level-based, with all rollout state in `.status`, so any reconcile, including
the first one after an operator restart, converges from what it reads.

Rollout policy until the progressive-delivery engine lands: the first revision becomes stable
directly; a new revision starts as a canary at the stable replica count and is promoted as soon
as all its servers are ready (traffic moves by repointing `<md>-stable`, no second rolling
update); a canary whose pods cannot start (model fetch failed, crash loop) is rolled back. The
old revision is deleted DRAIN_SECONDS after promotion, once the new stable is fully ready."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from weir_operator import render
from weir_operator.render import Manifest, RenderSettings
from weir_operator.spec import ModelDeployment
from weir_operator.status import (
    HISTORY_LIMIT,
    CanaryStatus,
    Condition,
    HistoryEntry,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    RevisionRef,
)

DRAIN_SECONDS = 10.0
DEFAULT_RENDER = RenderSettings()
CHILD_KINDS = (
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "HTTPRoute",
)


@dataclass(frozen=True, slots=True)
class RevisionState:
    """What the API says about one revision's Deployment and its pods."""

    revision: str
    name: str
    replicas: int | None = None  # spec.replicas (None: an HPA decides)
    ready_replicas: int = 0
    updated_replicas: int = 0
    # A reason pods cannot serve (ModelFetchFailed, CrashLoopBackOff, ...) and its message.
    problem: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    """The children found for one ModelDeployment, keyed by revision / (kind, name)."""

    revisions: dict[str, RevisionState] = field(default_factory=dict)
    children: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    apply: list[Manifest]
    delete: list[tuple[str, str]]
    status: ModelDeploymentStatus
    events: list[Event]


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ref(md: ModelDeployment, revision: str) -> RevisionRef:
    return RevisionRef(revision=revision, uri=md.spec.model.uri, version=md.spec.model.version)


def desired_replicas(md: ModelDeployment, observed: RevisionState | None) -> int | None:
    """Replicas the operator writes; None when an HPA owns the count (cpu autoscaling)."""
    autoscaling = md.spec.autoscaling
    if autoscaling is None:
        return md.spec.replicas
    if autoscaling.metric == "cpu":
        return None
    current = observed.replicas if observed and observed.replicas is not None else 0
    return min(max(current, autoscaling.min_replicas), autoscaling.max_replicas)


def _ready(state: RevisionState | None, wanted: int | None) -> bool:
    if state is None or state.problem is not None:
        return False
    target = wanted if wanted is not None else max(state.replicas or 1, 1)
    return state.ready_replicas >= target and state.updated_replicas >= target


def _condition(
    previous: list[Condition],
    kind: str,
    ok: bool,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> Condition:
    value: Literal["True", "False"] = "True" if ok else "False"
    old = next((c for c in previous if c.type == kind), None)
    changed = old is None or old.status != value
    return Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=now if changed or old is None else old.last_transition_time,
        observed_generation=generation,
    )


def _finished(
    history: list[HistoryEntry], canary: CanaryStatus, outcome: Outcome, at: str, reason: str
) -> list[HistoryEntry]:
    """History with the canary's rollout recorded first, bounded to HISTORY_LIMIT entries."""
    entry = HistoryEntry(
        revision=canary.revision, uri=canary.uri, version=canary.version,
        outcome=outcome, at=at, reason=reason,
    )  # fmt: skip
    return [entry, *history][:HISTORY_LIMIT]


def reconcile(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    observed: Observed,
    now: datetime,
    settings: RenderSettings = DEFAULT_RENDER,
) -> Plan:
    """One reconcile step; pure and total (never raises on a valid ModelDeployment)."""
    at = timestamp(now)
    revision = render.revision_of(md.spec)
    events: list[Event] = []
    history = list(status.history)
    stable = status.stable
    canary = status.canary

    if stable is None:
        stable = _ref(md, revision)
        events.append(
            Event("Normal", "Created", f"serving revision {revision} ({md.spec.model.uri})")
        )

    if canary is not None and canary.revision != revision:
        reason = (
            "spec changed back to the stable revision"
            if revision == stable.revision
            else (f"superseded by revision {revision}")
        )
        history = _finished(history, canary, "Aborted", at, reason)
        events.append(Event("Normal", "RolloutAborted", f"canary {canary.revision}: {reason}"))
        canary = None

    if revision != stable.revision and canary is None:
        canary = CanaryStatus(
            revision=revision,
            uri=md.spec.model.uri,
            version=md.spec.model.version,
            weight=0,
            step=0,
            started_at=at,
            step_started_at=at,
        )
        events.append(
            Event("Normal", "RolloutStarted", f"canary revision {revision} ({md.spec.model.uri})")
        )

    stable_state = observed.revisions.get(stable.revision)
    stable_replicas = desired_replicas(md, stable_state)
    canary_state = observed.revisions.get(canary.revision) if canary else None
    canary_replicas = stable_replicas if canary else None

    if canary is not None and canary_state is not None and canary_state.problem is not None:
        reason, message = canary_state.problem
        history = _finished(history, canary, "RolledBack", at, f"{reason}: {message}")
        events.append(
            Event(
                "Warning",
                "RolledBack",
                f"canary {canary.revision} rolled back: {reason}: {message}",
            )
        )
        canary = None
        canary_state = None
    elif canary is not None and _ready(canary_state, canary_replicas):
        history = _finished(
            history, canary, "Promoted", at, "all servers of the new revision are ready"
        )
        events.append(Event("Normal", "Promoted", f"revision {canary.revision} is now stable"))
        stable = RevisionRef(revision=canary.revision, uri=canary.uri, version=canary.version)
        stable_state, stable_replicas = canary_state, canary_replicas
        canary = None
        canary_state = None

    children = render.render_children(
        md,
        stable.revision,
        stable_replicas,
        canary=canary.revision if canary else None,
        canary_replicas=canary_replicas,
        canary_weight=canary.weight if canary else 0,
        settings=settings,
    )
    wanted = {(c["kind"], c["metadata"]["name"]) for c in children}
    stable_ready = _ready(stable_state, stable_replicas)
    last_promotion = next((h for h in history if h.outcome == "Promoted"), None)
    drained = (
        last_promotion is None
        or (now - parse_timestamp(last_promotion.at)).total_seconds() >= DRAIN_SECONDS
    )
    delete = sorted(
        (kind, name)
        for kind, name in observed.children - wanted
        if kind != "Deployment" or (stable_ready and drained) or name not in _serving(observed)
    )

    phase, ready_reason, ready_message = _phase(
        md, status, stable_state, stable_ready, canary is not None
    )
    generation = md.metadata.generation
    serving = [s for s in (stable_state, canary_state) if s is not None]
    replicas_total = sum(s.replicas or 0 for s in serving)
    ready_total = sum(s.ready_replicas for s in serving)
    desired_total = (stable_replicas if stable_replicas is not None else replicas_total) + (
        canary_replicas or 0
    )
    conditions = [
        _condition(
            status.conditions, "Ready", stable_ready, ready_reason, ready_message, at, generation
        ),
        _condition(
            status.conditions,
            "Progressing",
            canary is not None or not stable_ready,
            "RollingOut" if canary else ("Converged" if stable_ready else "StartingServers"),
            f"canary {canary.revision} starting"
            if canary
            else ("all servers ready" if stable_ready else "waiting for servers to become ready"),
            at,
            generation,
        ),
    ]
    new_status = ModelDeploymentStatus(
        phase=phase,
        observed_generation=generation,
        model_name=md.model_name,
        url=render.service_url(md, settings),
        stable=stable,
        canary=canary,
        last_analysis=status.last_analysis,
        replicas=replicas_total,
        ready_replicas=ready_total,
        ready_text=f"{ready_total}/{desired_total}",
        selector=render.label_selector(md),
        conditions=conditions,
        history=history,
    )
    if status.phase != phase and phase in ("Healthy", "Degraded", "Failed"):
        kind: Literal["Normal", "Warning"] = "Normal" if phase == "Healthy" else "Warning"
        events.append(Event(kind, phase, ready_message))
    return Plan(apply=children, delete=delete, status=new_status, events=events)


def _serving(observed: Observed) -> set[str]:
    return {s.name for s in observed.revisions.values() if s.ready_replicas > 0}


def _phase(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    stable_state: RevisionState | None,
    stable_ready: bool,
    rolling: bool,
) -> tuple[Phase, str, str]:
    if stable_state is not None and stable_state.problem is not None:
        reason, message = stable_state.problem
        phase: Phase = "Degraded" if stable_state.ready_replicas > 0 else "Failed"
        return phase, reason, message
    if rolling:
        return "Progressing", "RollingOut", "a new revision is being rolled out"
    if stable_ready:
        return "Healthy", "AllServersReady", f"all servers of {md.model_name} are ready"
    if status.phase in ("Healthy", "Degraded"):
        return "Degraded", "ServersNotReady", "some servers are not ready"
    if stable_state is None:
        return "Pending", "Creating", "creating the servers"
    return "Progressing", "StartingServers", "waiting for the servers to become ready"


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` (removed keys become null); {} if equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if old.get(key) != value:
            patch[key] = value
    return patch
