"""The pure reconcile step: (ModelDeployment, status, observed children, probes, now) -> plan.

No I/O: the operator (and later `weir run`) observes the world, runs the probes the rollout
needs (pre-traffic checks, metric analysis, the request annotation), calls `reconcile`, then
applies the plan: children to apply, obsolete children to delete, the model to restore (undo),
the new status and the events that tell the story. Level-based, with all rollout state in
`.status`, so any reconcile, including the first one after an operator restart, converges from
what it reads.

The rollout itself is `core.rollout.decide`'s: this module turns what was observed into
its input, and its actions into children (ScaleTracks and SetCanaryWeight become the replica
counts and the weight; Promote repoints `<md>-stable`; RetireRevision leaves a Deployment out,
deleted DRAIN_SECONDS after the rollout ended once the stable is fully ready). The state machine
owns phase Progressing/Paused/RolledBack/Healthy and its conditions; this module owns Ready and
the counts, and refines Healthy into Pending/Degraded/Failed from the stable's readiness."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from weir_operator.core import render, rollout
from weir_operator.core.autoscaling import ScaleDecision
from weir_operator.core.render import Manifest, RenderSettings
from weir_operator.core.requests import Request
from weir_operator.core.rollout import CheckResult
from weir_operator.core.routers import Router
from weir_operator.core.spec import ModelDeployment
from weir_operator.core.status import (
    AnalysisResult,
    AutoscalerStatus,
    Event,
    ModelDeploymentStatus,
    Phase,
    RevisionRef,
    TrackScale,
    condition,
    parse_timestamp,
    timestamp,
)

DRAIN_SECONDS = 10.0
AUTOSCALER_REFRESH = 60.0  # seconds between status refreshes of an unchanged autoscaler count
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
class Probes:
    """What the shell measured for the rollout: pre-traffic checks by revision (signature,
    sample inference; None = not known yet), the analysis window that just ended (None when
    none was due), and the pending request from the annotation."""

    checks: dict[str, tuple[CheckResult | None, CheckResult | None]] = field(default_factory=dict)
    analysis: AnalysisResult | None = None
    request: Request | None = None


NO_PROBES = Probes()


@dataclass(frozen=True, slots=True)
class Plan:
    apply: list[Manifest]
    delete: list[tuple[str, str]]
    status: ModelDeploymentStatus
    events: list[Event]
    restore: RevisionRef | None = None  # undo: write this model into spec.model (before status)
    ended: bool = False  # a rollout ended: what was kept in memory for it can go


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


def reconcile(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    observed: Observed,
    now: datetime,
    settings: RenderSettings = DEFAULT_RENDER,
    probes: Probes = NO_PROBES,
    router: Router | None = None,
    autoscale: ScaleDecision | None = None,
) -> Plan:
    """One reconcile step; pure and total (never raises on a valid ModelDeployment).
    `router` replaces spec.traffic.router for the rollout's weights (`weir run`: "local");
    `autoscale` is the autoscaler's decision (metric concurrency or rps), the total to run."""
    at = timestamp(now)
    desired = RevisionRef(
        revision=render.revision_of(md.spec),
        uri=md.spec.model.uri,
        version=md.spec.model.version,
        sha256=md.spec.model.sha256,
    )
    current = observed.revisions.get(status.stable.revision) if status.stable else None
    hpa = md.spec.autoscaling is not None and md.spec.autoscaling.metric == "cpu"
    counted = desired_replicas(md, current)
    if autoscale is not None and counted is not None:
        counted = autoscale.replicas
    total = counted if counted is not None else max(current.replicas or 1, 1) if current else 1
    decision = rollout.decide(
        rollout.RolloutInput(
            spec=md.spec,
            desired=desired,
            status=status,
            now=now,
            total_replicas=total,
            revisions={
                revision: _observation(state, probes.checks.get(revision))
                for revision, state in observed.revisions.items()
            },
            analysis=probes.analysis,
            request=probes.request,
            generation=md.metadata.generation,
            router=router,
            track_replicas={
                r: d.replicas for r, d in (autoscale.tracks if autoscale else {}).items()
            },
        )
    )
    decided = decision.status
    stable = decided.stable
    assert stable is not None, "decide always settles a stable revision"
    canary = decided.canary
    scale = next(a for a in decision.actions if isinstance(a, rollout.ScaleTracks))
    weight = next(a for a in decision.actions if isinstance(a, rollout.SetCanaryWeight)).weight
    restore = next((a for a in decision.actions if isinstance(a, rollout.RestoreModel)), None)
    stable_replicas = None if hpa else scale.stable_replicas
    canary_replicas = None if hpa else scale.canary_replicas
    children = render.render_children(
        md,
        stable.revision,
        stable_replicas,
        canary=scale.canary_revision,
        canary_replicas=canary_replicas,
        canary_weight=weight,
        settings=settings,
    )
    # A role patch cannot create a Deployment: a revision the spec no longer describes keeps
    # its Deployment only if it still has one.
    children = [
        c
        for c in children
        if not render.is_role_patch(c)
        or any(s.name == c["metadata"]["name"] for s in observed.revisions.values())
    ]
    wanted = {(c["kind"], c["metadata"]["name"]) for c in children}
    stable_state = observed.revisions.get(stable.revision)
    canary_state = observed.revisions.get(canary.revision) if canary else None
    stable_ready = _ready(stable_state, stable_replicas)
    history = decided.history
    drained = not history or (now - parse_timestamp(history[0].at)).total_seconds() >= DRAIN_SECONDS
    delete = sorted(
        (kind, name)
        for kind, name in observed.children - wanted
        if kind != "Deployment" or (stable_ready and drained) or name not in _serving(observed)
    )
    routed_by = router or md.spec.traffic.router
    if status.router == "gateway-api" and routed_by != "gateway-api":
        delete.append(("HTTPRoute", md.name))  # not watched: known from the status alone

    events = list(decision.events)
    phase: Phase = decided.phase
    ready_reason, ready_message = "AllServersReady", f"all servers of {md.model_name} are ready"
    if phase == "Healthy":
        phase, ready_reason, ready_message = _phase(md, status, stable_state, stable_ready)
    elif not stable_ready:
        _, ready_reason, ready_message = _phase(md, status, stable_state, stable_ready)
    generation = md.metadata.generation
    serving = [s for s in (stable_state, canary_state) if s is not None]
    replicas_total = sum(s.replicas or 0 for s in serving)
    ready_total = sum(s.ready_replicas for s in serving)
    desired_total = (stable_replicas if stable_replicas is not None else replicas_total) + (
        (canary_replicas or 0) if canary else 0
    )
    ready = condition(
        status.conditions, "Ready", stable_ready, ready_reason, ready_message, at, generation
    )
    conditions = [ready, *(c for c in decided.conditions if c.type != "Ready")]
    new_status = decided.model_copy(
        update={
            "phase": phase,
            "observed_generation": generation,
            "model_name": md.model_name,
            "url": render.service_url(md, settings),
            "replicas": replicas_total,
            "ready_replicas": ready_total,
            "ready_text": f"{ready_total}/{desired_total}",
            "selector": render.label_selector(md),
            "conditions": conditions,
            "autoscaler": _autoscaler_status(status, autoscale, at),
            "router": routed_by,
        }
    )
    if status.phase != phase and phase in ("Healthy", "Degraded", "Failed"):
        kind: Literal["Normal", "Warning"] = "Normal" if phase == "Healthy" else "Warning"
        events.append(Event(kind, phase, ready_message))
    return Plan(
        apply=children,
        delete=delete,
        status=new_status,
        events=events,
        restore=restore.revision if restore else None,
        ended=status.canary is not None and canary is None,
    )


def _track_counts(decision: ScaleDecision | None) -> dict[str, int]:
    return {r: d.replicas for r, d in decision.tracks.items()} if decision else {}


def _autoscaler_status(
    status: ModelDeploymentStatus, decision: ScaleDecision | None, at: str
) -> AutoscalerStatus | None:
    """The decision for the status. While the count stays, the load and reason are refreshed
    once a minute at most: a status write per measurement would be API churn for nothing."""
    if decision is None:
        return None
    new = AutoscalerStatus(
        desired_replicas=decision.replicas,
        load=None if decision.load is None else round(decision.load, 2),
        reason=decision.reason,
        at=at,
        tracks=[
            TrackScale(
                revision=revision,
                desired_replicas=track.replicas,
                load=None if track.load is None else round(track.load, 2),
            )
            for revision, track in decision.tracks.items()
        ],
    )
    old = status.autoscaler
    counts = [(t.revision, t.desired_replicas) for t in new.tracks]
    if (
        old is not None
        and old.desired_replicas == new.desired_replicas
        and [(t.revision, t.desired_replicas) for t in old.tracks] == counts
        and (parse_timestamp(at) - parse_timestamp(old.at)).total_seconds() < AUTOSCALER_REFRESH
    ):
        return old
    return new


def _observation(
    state: RevisionState, checks: tuple[CheckResult | None, CheckResult | None] | None
) -> rollout.RevisionObservation:
    signature, sample = checks or (None, None)
    return rollout.RevisionObservation(
        ready_replicas=state.ready_replicas,
        problem=rollout.PodProblem(*state.problem) if state.problem else None,
        signature=signature,
        sample_inference=sample,
    )


def _serving(observed: Observed) -> set[str]:
    return {s.name for s in observed.revisions.values() if s.ready_replicas > 0}


def _phase(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    stable_state: RevisionState | None,
    stable_ready: bool,
) -> tuple[Phase, str, str]:
    if stable_state is not None and stable_state.problem is not None:
        reason, message = stable_state.problem
        phase: Phase = "Degraded" if stable_state.ready_replicas > 0 else "Failed"
        return phase, reason, message
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
