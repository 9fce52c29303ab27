"""The pure reconcile step: (ModelDeployment, status, observed children, measurements, now)
-> plan.

No I/O: the reconcile driver (`weir_operator.driver`, for the kopf operator and for `weir run`)
observes the world, has the probes measure what the rollout needs (pre-traffic gates, metric
analysis, the request annotation), calls `reconcile`, then applies the plan: children to apply,
obsolete children to delete, the model to restore (undo), the new status and the events that
tell the story. Level-based, with all rollout state in `.status`, so any reconcile, including
the first one after a restart, converges from what it reads.

The decisions are `core.rollout.advance`'s, the phase and every condition included; this module
turns what was observed into its input (`_rollout_input`) and its actions into children
(`_children`: ScaleTracks and SetCanaryWeight become replica counts, Services, the router's
objects), deletions (`_deletions`: a revision with no role loses its Deployment DRAIN_SECONDS
after the rollout ended, once the stable is fully ready; a router left behind loses its
objects) and the status fields shells read (`_status`). A drift window measured of the stable's
traffic goes into status.drift and the Drifting condition, with its events
(`core.drift.with_drift`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from weir_operator.core import drift, render, rollout, routers, shadow
from weir_operator.core.autoscaling import ScaleDecision
from weir_operator.core.drift import DriftResult
from weir_operator.core.gates import GateResult
from weir_operator.core.render import Manifest, RenderSettings
from weir_operator.core.requests import Request
from weir_operator.core.routers import RouterName
from weir_operator.core.spec import ModelDeployment
from weir_operator.core.status import (
    AnalysisResult,
    AutoscalerStatus,
    Event,
    ModelDeploymentStatus,
    ReferenceRef,
    RevisionRef,
    TrackScale,
    condition,
    parse_timestamp,
    timestamp,
)

DRAIN_SECONDS = 10.0
AUTOSCALER_REFRESH = 60.0  # seconds between status refreshes of an unchanged autoscaler count
DEFAULT_RENDER = RenderSettings()


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
class Measurements:
    """What the probes measured for the rollout (probes/rollout.py): each revision's
    pre-traffic gates by name (core/gates; None = not known yet), the analysis window that just
    ended (None when none was due), and the pending request from the annotation; and the drift
    of the stable's traffic (probes/drift.py) when a window of spec.monitoring ended."""

    gates: dict[str, dict[str, GateResult | None]] = field(default_factory=dict)
    analysis: AnalysisResult | None = None
    request: Request | None = None
    drift: DriftResult | None = None


NO_MEASUREMENTS = Measurements()


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


def reconcile(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    observed: Observed,
    now: datetime,
    settings: RenderSettings = DEFAULT_RENDER,
    measured: Measurements = NO_MEASUREMENTS,
    router: RouterName | None = None,
    autoscale: ScaleDecision | None = None,
) -> Plan:
    """One reconcile step; pure and total (never raises on a valid ModelDeployment).
    `router` replaces spec.traffic.router (`weir run`: "local"); `autoscale` is Weir's
    autoscaler's decision (metric concurrency or rps): the total to run."""
    given = _rollout_input(md, status, observed, now, measured, router, autoscale)
    decision = rollout.advance(given)
    decided = decision.status
    hpa = given.hpa_owns_counts
    scale = next(a for a in decision.actions if isinstance(a, rollout.ScaleTracks))
    weight = next(a for a in decision.actions if isinstance(a, rollout.SetCanaryWeight)).weight
    restore = next((a for a in decision.actions if isinstance(a, rollout.RestoreModel)), None)
    routed_by = routers.router_named(router or md.spec.traffic.router)
    children = _children(md, observed, scale, weight, hpa, routed_by, settings)
    children.append(shadow.render_shadow_config(md, decided, settings))
    delete = _deletions(observed, children, decision.stable_ready, decided, now)
    # The router's objects are not watched: a router left behind is known from the status.
    previous = routers.router_named(status.router) if status.router else routed_by
    delete += [(kind, md.name) for kind in sorted(previous.owned_kinds - routed_by.owned_kinds)]
    new_status = _status(md, status, decided, observed, scale, hpa, autoscale, routed_by, now)
    new_status, drift_events = drift.with_drift(
        md.spec.monitoring, status, new_status, measured.drift, now, md.metadata.generation
    )
    return Plan(
        apply=children,
        delete=delete,
        status=new_status.model_copy(update={"url": render.service_url(md, settings)}),
        events=[*decision.events, *drift_events],
        restore=restore.revision if restore else None,
        ended=status.canary is not None and decided.canary is None,
    )


def reference_ref(md: ModelDeployment) -> ReferenceRef | None:
    """The spec's monitoring reference, as its revision records it."""
    monitoring = md.spec.monitoring
    if monitoring is None or monitoring.reference is None:
        return None
    return ReferenceRef(uri=monitoring.reference.uri, sha256=monitoring.reference.sha256)


def _rollout_input(
    md: ModelDeployment,
    status: ModelDeploymentStatus,
    observed: Observed,
    now: datetime,
    measured: Measurements,
    router: RouterName | None,
    autoscale: ScaleDecision | None,
) -> rollout.RolloutInput:
    """What the rollout decides from: the revision the spec asks for, the total to run (the
    spec's count, Weir's autoscaler's, or with cpu autoscaling the stable's HPA's current one)
    and every revision as observed, with its gates' results."""
    current = observed.revisions.get(status.stable.revision) if status.stable else None
    counted = desired_replicas(md, current)
    if autoscale is not None and counted is not None:
        counted = autoscale.replicas
    total = counted if counted is not None else max(current.replicas or 1, 1) if current else 1
    autoscaling = md.spec.autoscaling
    return rollout.RolloutInput(
        spec=md.spec,
        desired=RevisionRef(
            revision=render.revision_of(md.spec),
            uri=md.spec.model.uri,
            version=md.spec.model.version,
            sha256=md.spec.model.sha256,
            lineage=md.spec.model.lineage,
            reference=reference_ref(md),
        ),
        status=status,
        now=now,
        total_replicas=total,
        revisions={
            revision: _observation(state, measured.gates.get(revision, {}))
            for revision, state in observed.revisions.items()
        },
        analysis=measured.analysis,
        request=measured.request,
        generation=md.metadata.generation,
        router=router,
        track_replicas={r: d.replicas for r, d in (autoscale.tracks if autoscale else {}).items()},
        model_name=md.model_name,
        hpa_owns_counts=autoscaling is not None and autoscaling.metric == "cpu",
    )


def _observation(
    state: RevisionState, gates: Mapping[str, GateResult | None]
) -> rollout.RevisionObservation:
    return rollout.RevisionObservation(
        ready_replicas=state.ready_replicas,
        problem=rollout.PodProblem(*state.problem) if state.problem else None,
        gates=dict(gates),
        replicas=state.replicas,
        updated_replicas=state.updated_replicas,
    )


def _children(
    md: ModelDeployment,
    observed: Observed,
    scale: rollout.ScaleTracks,
    weight: int,
    hpa: bool,
    router: routers.TrafficRouter,
    settings: RenderSettings,
) -> list[Manifest]:
    """Every child for this moment. With cpu autoscaling the stable's HPA owns the stable's
    count and the rollout owns the canary's (it follows the weight and reaches full size before
    promotion); the canary gets its HPA when it is promoted. A role patch cannot create a
    Deployment: a revision the spec no longer describes keeps its Deployment only if it still
    has one."""
    children = render.render_children(
        md,
        scale.stable_revision,
        None if hpa else scale.stable_replicas,
        canary=scale.canary_revision,
        canary_replicas=scale.canary_replicas,
        canary_weight=weight,
        settings=settings,
    )
    children += router.children(md, weight if scale.canary_revision else 0)
    existing = {s.name for s in observed.revisions.values()}
    return [c for c in children if not render.is_role_patch(c) or c["metadata"]["name"] in existing]


def _deletions(
    observed: Observed,
    children: list[Manifest],
    stable_ready: bool,
    decided: ModelDeploymentStatus,
    now: datetime,
) -> list[tuple[str, str]]:
    """Children no role needs any more. A Deployment that still serves goes only once the
    stable is fully ready and DRAIN_SECONDS after the rollout ended (its connections drain)."""
    wanted = {(c["kind"], c["metadata"]["name"]) for c in children}
    history = decided.history
    drained = not history or (now - parse_timestamp(history[0].at)).total_seconds() >= DRAIN_SECONDS
    serving = {s.name for s in observed.revisions.values() if s.ready_replicas > 0}
    return sorted(
        (kind, name)
        for kind, name in observed.children - wanted
        if kind != "Deployment" or (stable_ready and drained) or name not in serving
    )


def _status(
    md: ModelDeployment,
    old: ModelDeploymentStatus,
    decided: ModelDeploymentStatus,
    observed: Observed,
    scale: rollout.ScaleTracks,
    hpa: bool,
    autoscale: ScaleDecision | None,
    router: routers.TrafficRouter,
    now: datetime,
) -> ModelDeploymentStatus:
    """The decided status with what shells and `kubectl get` read: counts (the scale
    subresource), the selector, the autoscaler's decision and the router applied."""
    assert decided.stable is not None, "advance always settles a stable revision"
    tracks = [decided.stable.revision, *([decided.canary.revision] if decided.canary else [])]
    serving = [observed.revisions[r] for r in tracks if r in observed.revisions]
    replicas_total = sum(s.replicas or 0 for s in serving)
    ready_total = sum(s.ready_replicas for s in serving)
    stable_count = observed.revisions.get(decided.stable.revision)
    stable_wanted = (stable_count.replicas or 0) if hpa and stable_count else scale.stable_replicas
    desired_total = stable_wanted + (scale.canary_replicas if decided.canary else 0)
    return decided.model_copy(
        update={
            "observed_generation": md.metadata.generation,
            "model_name": md.model_name,
            "replicas": replicas_total,
            "ready_replicas": ready_total,
            "ready_text": f"{ready_total}/{desired_total}",
            "selector": render.label_selector(md),
            "autoscaler": _autoscaler_status(old, autoscale, timestamp(now)),
            "router": router.name,
        }
    )


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


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` (removed keys become null); {} if equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if old.get(key) != value:
            patch[key] = value
    return patch


def invalid_spec(
    old: ModelDeploymentStatus, problems: list[str], generation: int | None, now: datetime
) -> ModelDeploymentStatus:
    """The status of an object whose spec is not a valid ModelDeployment (the API server may
    have stored it before a rule existed; `weir run` keeps a new file's invalid document):
    Failed, and a Ready condition InvalidSpec naming each problem. Nothing else is touched, so
    the servers of a stable revision keep serving."""
    ready = condition(
        old.conditions, "Ready", False, "InvalidSpec", "; ".join(problems), timestamp(now),
        generation,
    )  # fmt: skip
    others = [c for c in old.conditions if c.type != "Ready"]
    return old.model_copy(
        update={
            "phase": "Failed",
            "observed_generation": generation,
            "conditions": [ready, *others],
        }
    )
