"""The rollout state machine: how a new revision replaces the stable one, step by step.

Why it exists: deciding when a canary gets traffic, when it moves on, when it is rolled back and
when it becomes stable is the heart of Weir, and it must decide the same way on a cluster (the
kopf operator) and on a laptop (`weir run`). So it is one pure function, `advance`, with no I/O and
no clock: a shell observes the world, passes it in with `now`, applies the returned actions and
writes the returned status. All of its memory is in `.status` (a restarted shell resumes
mid-rollout), and it is idempotent: called again with the status it returned and the same
inputs, it returns that status unchanged, no event and no new edge action.

The life of a rollout (the shell passes the desired revision, a hash of spec.model + spec.server):
- The first revision becomes stable directly. Later, a desired revision that differs from
  `status.stable` starts a canary at step 0. A new revision mid-rollout ends the canary (history:
  Aborted, superseded) and starts the new one from step 0; the spec going back to the stable
  revision just ends it.
- Pre-traffic gate: the canary gets weight 0 until its servers (as many as its first weight needs)
  are ready, its model signature matches stable's (unless `allowSignatureChange`) and, when
  `server.sampleInput` is set, a sample inference succeeded. A failed check, or a stuck pod
  (CrashLoopBackOff, ModelFetchFailed, ...), fails the revision at once (history: Failed): such a
  state never heals by itself, and no traffic is at stake. Transient trouble (restarts, lost
  readiness) is the analysis' business: it makes Fail verdicts, which `failureThreshold` debounces.
- Steps. `setWeight W` raises the weight once the canary has the servers W needs, and completes
  on a Pass whose window began after the weight changed and ended within the step: every step
  with traffic needs its own passing analysis (as Flagger's steps, unlike Argo's). A timed
  `pause` completes when its time is up and, if the canary has traffic, the latest analysis that
  ended within the pause passed; a pause without duration waits for `promote`. Weight-0 steps
  need no analysis (nothing to measure). After the last step the canary is scaled to the full
  server count while the stable keeps its servers; once all canary servers are ready (and no
  failure is pending) it is promoted: the stable role moves to it and the old revision retires.
- Analysis results count once (by their end time) and only for windows that began after the gate
  passed. Pass resets both streaks. Fail extends the fail streak; `failureThreshold` in a row
  rolls back in the same decision: weight 0, canary retired, spec held (phase RolledBack) until
  `retry` or a new revision. Inconclusive extends only the inconclusive streak: it never moves the
  weight, never completes a step, never promotes and never rolls back; after INCONCLUSIVE_LIMIT
  in a row at a weight > 0 (or no result at all for STALE_ANALYSIS_INTERVALS intervals) the
  rollout holds with a Paused condition that says why, and resumes on the next Pass.
- `progressDeadline` bounds what depends on servers becoming ready: the gate (from the rollout's
  start) and the final scale-up (from the end of the steps). Steps are never rolled back for time:
  a step waiting for analysis waits for data, and no data is not failure (DESIGN.md).
- Replica counts and weights come from `weir_operator.core.routers` (the `replicas` router splits by
  whole servers and says honestly what share that gives; `gateway-api` weights exactly). With an
  exact-weight router and Weir's autoscaler, each track scales on its own load
  (`track_replicas`): the stable runs what its load asks for, the canary what its load asks
  for but never fewer than its weight's share of the total (so a weight can always be raised).
  `replicas: 0` holds a rollout (Paused, ScaledToZero) with no server on either track.

Requests (`weir promote|abort|retry|undo`) carry an id; `status.lastRequest` records the last id
handled with what was done, so a level-based shell may pass the same request on every reconcile
and it applies once. `promote` ends the current step (its time and its analysis waived; never
the gate); `promote-full` skips the remaining steps and pending failures (never the gate);
`abort` rolls back now and holds the spec (history: Aborted); `retry` rolls a held spec out again
from step 0; `undo` returns a `RestoreModel` action: the shell writes that revision's model back
into spec.model, and the next decision sees an ordinary spec change (back to the stable: the
canary ends; to an older revision: a normal rollout through the steps).

Actions are typed and idempotent, in the order they must be applied. Every decision carries one
`ScaleTracks` and one `SetCanaryWeight`, the complete level state (so a shell needs no memory);
weight goes down before counts shrink, counts grow before weight goes up. Who holds which role,
who is created and who retires all follow from those two and the status (a revision with no
role has no servers); the one edge action is `RestoreModel` (undo), last."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from weir_operator.core import routers
from weir_operator.core.gates import GATES, GateResult, PreTrafficGate
from weir_operator.core.requests import Request
from weir_operator.core.spec import ModelDeploymentSpec, Step, duration_seconds
from weir_operator.core.status import (
    HISTORY_LIMIT,
    AnalysisResult,
    CanaryStatus,
    Condition,
    Event,
    HistoryEntry,
    ModelDeploymentStatus,
    Outcome,
    Phase,
    RequestRecord,
    RevisionRef,
    condition,
    find_condition,
    parse_timestamp,
    timestamp,
)

CLOCK_GRAIN = timedelta(seconds=1)
"""The resolution of the times in the status (RFC 3339, whole seconds)."""
INCONCLUSIVE_LIMIT = 3
"""Inconclusive analyses in a row, at a weight > 0, after which the rollout holds (Paused)."""
STALE_ANALYSIS_INTERVALS = 3
"""Analysis intervals without any result, at a weight > 0, after which the rollout holds."""
HOLD_REASONS = frozenset({"InconclusiveAnalysis", "NoAnalysis", "ScaledToZero"})
"""Paused reasons that are holds (Weir's own decision) rather than configured pauses."""

CONDITION_TYPES = ("Ready", "Progressing", "Paused", "RolledBack")
"""The conditions this module owns (a shell may add its own, e.g. `weir run`'s
ManifestApplied)."""

# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True, slots=True)
class PodProblem:
    """Why a revision's pods cannot serve and will not by themselves (`observe.pod_problem`)."""

    reason: str  # CamelCase: CrashLoopBackOff, ModelFetchFailed, ImagePullBackOff, ...
    message: str


@dataclass(frozen=True, slots=True)
class RevisionObservation:
    """What the shell sees of one revision's servers, and of its pre-traffic gates by name
    (core/gates; absent or None: not known yet)."""

    ready_replicas: int = 0
    problem: PodProblem | None = None
    gates: Mapping[str, GateResult | None] = field(default_factory=dict)
    replicas: int | None = None  # its Deployment's count (None: not observed, or an HPA's)
    updated_replicas: int = 0


@dataclass(frozen=True, slots=True)
class RolloutInput:
    """Everything one decision depends on."""

    spec: ModelDeploymentSpec
    desired: RevisionRef  # the revision the spec asks for, with its model's uri/version/sha256
    status: ModelDeploymentStatus
    now: datetime  # timezone-aware
    total_replicas: int  # servers wanted in all: spec.replicas, or the autoscaler's count
    revisions: Mapping[str, RevisionObservation] = field(default_factory=dict)
    analysis: AnalysisResult | None = None  # the latest completed window (counted once)
    request: Request | None = None  # the pending request, if any (applied once per id)
    generation: int | None = None  # metadata.generation, for the conditions
    router: routers.RouterName | None = None  # who splits traffic, if not spec.traffic.router
    # Servers each revision's own load asks for (the autoscaler, per track; exact-weight
    # routers only): the stable runs its count, the canary at least its weight's share.
    track_replicas: Mapping[str, int] = field(default_factory=dict)
    model_name: str = ""  # the served name, for the Ready condition's messages
    hpa_owns_counts: bool = False  # autoscaling on cpu: each Deployment's count is an HPA's


# ---------------------------------------------------------------------------------------------
# Outputs


@dataclass(frozen=True, slots=True)
class ScaleTracks:
    """Servers to run per track, now. `canary_revision` None: no canary (retire any)."""

    stable_revision: str
    stable_replicas: int
    canary_revision: str | None
    canary_replicas: int


@dataclass(frozen=True, slots=True)
class SetCanaryWeight:
    """The canary's share of traffic (percent). gateway-api: the HTTPRoute weight. replicas:
    0 keeps canary servers out of the Service (before the gate, after a rollback); above 0 they
    serve, and the share follows the ScaleTracks counts."""

    weight: int


@dataclass(frozen=True, slots=True)
class RestoreModel:
    """Undo: write this revision's model (uri, sha256, version) back into spec.model, and its
    monitoring reference into spec.monitoring.reference (`restored_spec`)."""

    revision: RevisionRef


def restored_spec(spec: ModelDeploymentSpec, ref: RevisionRef) -> dict[str, Any]:
    """What undo writes back, as a JSON merge patch of the spec: the revision's model, and its
    monitoring reference (removed when it had none and the spec has one now), so that the spec
    asks for that very revision again: the reference is part of it. Monitoring's other
    settings, and spec.model.name, stay as they are; so does a reference that
    analysis.maxPredictionDrift needs (the spec would be invalid without it)."""
    patch: dict[str, Any] = {
        "model": {"uri": ref.uri, "sha256": ref.sha256, "version": ref.version}
    }
    now = spec.monitoring.reference if spec.monitoring is not None else None
    needed = spec.rollout.analysis.max_prediction_drift is not None
    if ref.reference is not None or (now is not None and not needed):
        reference = ref.reference
        written = {"uri": reference.uri, "sha256": reference.sha256} if reference else None
        patch["monitoring"] = {"reference": written}
    return patch


Action = ScaleTracks | SetCanaryWeight | RestoreModel


@dataclass(frozen=True, slots=True)
class Decision:
    """The next status, the actions to apply (in order, before writing the status) and the
    events to post. `stable_ready`: every server of the stable revision is ready."""

    status: ModelDeploymentStatus
    actions: tuple[Action, ...]
    events: tuple[Event, ...]
    stable_ready: bool = False


def advance(given: RolloutInput) -> Decision:
    """One decision of the rollout state machine; pure and total."""
    return _Decider(given).run()


# ---------------------------------------------------------------------------------------------
# Words


def label(ref: RevisionRef) -> str:
    """A revision as people read it: its Deployment suffix and its version label."""
    return f"{ref.revision[:10]} ({ref.version})" if ref.version else ref.revision[:10]


def describe_step(step: Step) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    if step.shadow is not None:
        return f"shadow {step.shadow.percent}% for {step.shadow.duration}"
    if step.pause is not None and step.pause.duration is not None:
        return f"pause {step.pause.duration}"
    return "pause until promoted"


def weight_in_force(steps: list[Step], index: int) -> int:
    """The weight the last setWeight at or before step `index` asks for (0 if none); 0 during
    a shadow step, whose canary answers no client."""
    if index < len(steps) and steps[index].shadow is not None:
        return 0
    for step in reversed(steps[: index + 1]):
        if step.set_weight is not None:
            return step.set_weight
    return 0


def shadow_in_force(steps: list[Step], index: int) -> int:
    """The share mirrored during step `index` (0 unless it is a shadow step)."""
    shadow = steps[index].shadow if index < len(steps) else None
    return shadow.percent if shadow is not None else 0


def _numbers(result: AnalysisResult) -> str:
    parts = []
    for track, measured in (("canary", result.canary), ("stable", result.stable)):
        if measured is None:
            continue
        text = f"{track} {measured.requests:.0f} requests, {measured.error_rate:.2%} errors"
        if measured.p99_ms is not None:
            text += f", p99 {measured.p99_ms:.1f} ms"
        parts.append(text)
    return f" ({'; '.join(parts)})" if parts else ""


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"


_PROGRESS_ENDED: dict[Outcome, str] = {
    "Promoted": "RolloutComplete",
    "Aborted": "RolloutAborted",
    "RolledBack": "RolledBack",
    "Failed": "RolloutFailed",
}


# ---------------------------------------------------------------------------------------------
# The decision


class _Decider:
    """One call of `advance` as working state; the inputs are never changed."""

    def __init__(self, given: RolloutInput) -> None:
        self.given = given
        self.steps = given.spec.rollout.steps
        self.router = routers.router_named(given.router or given.spec.traffic.router)
        self.analysis = given.spec.rollout.analysis
        self.interval = timedelta(seconds=duration_seconds(self.analysis.interval))
        self.deadline = timedelta(seconds=duration_seconds(given.spec.rollout.progress_deadline))
        self.at = timestamp(given.now)
        self.now = parse_timestamp(self.at)  # to the second, as every time in the status
        self.total = max(given.total_replicas, 0)
        status = given.status
        self.stable = status.stable
        self.canary = status.canary
        self.held = status.rolled_back_revision
        self.history = list(status.history)
        self.last_analysis = status.last_analysis
        self.last_request = status.last_request
        self.events: list[Event] = []
        self.last_actions: list[Action] = []  # RestoreModel
        self.rollback: tuple[str, str] | None = None  # (condition reason, message) decided now

    # -- the sequence ---------------------------------------------------------------------------

    def run(self) -> Decision:
        self._settle_first_revision()
        self._follow_desired_revision()
        self._handle_request()
        if self.canary is not None:
            self._progress()
        return self._result()

    def _settle_first_revision(self) -> None:
        if self.stable is not None:
            return
        desired = self.given.desired
        self.stable = desired
        self._record(desired, "Promoted", "first revision: served directly, nothing to compare")
        self._event("Normal", "Created", f"serving revision {label(desired)} from {desired.uri}")

    def _follow_desired_revision(self) -> None:
        desired, stable, canary = self.given.desired, self._stable(), self.canary
        if canary is not None and canary.revision != desired.revision:
            if desired.revision == stable.revision:
                reason = "the spec changed back to the stable revision"
            else:
                reason = f"superseded by revision {label(desired)}"
            self._event(
                "Normal",
                "RolloutAborted",
                f"canary {label(canary)} ended at weight {canary.weight}%: {reason}",
            )
            self._end_canary("Aborted", reason, hold=False)
        if self.held is not None and self.held != desired.revision:
            self.held = None
        if desired.revision != stable.revision and self.canary is None and self.held is None:
            self._start_canary(desired)

    def _progress(self) -> None:
        canary = self._canary()
        seen = self.given.revisions.get(canary.revision, RevisionObservation())
        if seen.problem is not None:
            problem = seen.problem
            self._roll_back("Failed", problem.reason, f"{problem.reason}: {problem.message}")
            return
        self._take_analysis()
        if self.canary is None:
            return
        if self.total == 0:
            if self._canary().weight:
                self._set_weight(0)
            return
        if self._canary().verified_at is None and not self._pass_gate(seen):
            return
        for _ in range(len(self.steps) + 1):
            self._apply_weight(seen)
            canary = self._canary()
            if canary.step >= len(self.steps):
                self._promote_when_ready(seen)
                return
            how = self._step_done()
            if how is None:
                return
            self._event(
                "Normal",
                "StepCompleted",
                f"step {self._step_name(canary.step)} completed: {how}; "
                f"next: {self._next_name(canary.step)}",
            )
            self._enter_step(canary.step + 1)

    # -- requests -------------------------------------------------------------------------------

    def _handle_request(self) -> None:
        request = self.given.request
        if request is None:
            return
        if self.last_request is not None and self.last_request.id == request.id:
            return
        handlers = {
            "promote": self._promote_request,
            "promote-full": self._full_promote_request,
            "abort": self._abort_request,
            "retry": self._retry_request,
            "undo": self._undo_request,
        }
        accepted, message = handlers[request.action](request)
        self.last_request = RequestRecord(
            id=request.id,
            action=request.action,
            at=self.at,
            accepted=accepted,
            message=message,
            by=request.by,
        )
        if not accepted:
            self._event(
                "Warning",
                "RequestRejected",
                f"{request.action} (request {request.id}) rejected: {message}",
            )

    def _guard(self, request: Request, revision: str | None) -> str | None:
        """Why a request about another revision than the current one is rejected."""
        if request.revision and revision and not revision.startswith(request.revision):
            return (
                f"it is about revision {request.revision}, but the rollout is now at "
                f"{revision[:10]}"
            )
        return None

    def _nothing_to(self, action: str) -> str:
        if self.held is not None:
            return (
                f"nothing to {action}: revision {self.held[:10]} was rolled back; "
                "`weir retry` rolls it out again"
            )
        return f"nothing to {action}: no rollout in progress"

    def _promote_request(self, request: Request) -> tuple[bool, str]:
        canary = self.canary
        if canary is None:
            return False, self._nothing_to("promote")
        if problem := self._guard(request, canary.revision):
            return False, problem
        if canary.verified_at is None:
            return False, (
                f"canary {label(canary)} has not passed its pre-traffic checks yet; "
                "`promote --full` skips the steps, never these checks"
            )
        if canary.step >= len(self.steps):
            return False, (
                f"all steps are done: canary {label(canary)} becomes stable once its "
                f"{self.total} servers are ready"
            )
        ended = self._step_name(canary.step)
        message = f"step {ended} ended by request; next: {self._next_name(canary.step)}"
        self.canary = canary.model_copy(update={"requested_by": request.by})
        self._event("Normal", "PromoteRequested", f"{message} (request {request.id})")
        self._enter_step(canary.step + 1)
        return True, message

    def _full_promote_request(self, request: Request) -> tuple[bool, str]:
        canary = self.canary
        if canary is None:
            return False, self._nothing_to("promote")
        if problem := self._guard(request, canary.revision):
            return False, problem
        message = (
            f"steps skipped: canary {label(canary)} becomes stable once its {self.total} servers "
            "are ready"
        )
        if canary.verified_at is None:
            message += " and have passed the pre-traffic checks"
        self.canary = canary.model_copy(update={"failed_checks": 0, "requested_by": request.by})
        self._event("Normal", "FullPromoteRequested", f"{message} (request {request.id})")
        self._enter_step(len(self.steps))
        return True, message

    def _abort_request(self, request: Request) -> tuple[bool, str]:
        canary = self.canary
        if canary is None:
            return False, self._nothing_to("abort")
        if problem := self._guard(request, canary.revision):
            return False, problem
        self.canary = canary.model_copy(update={"requested_by": request.by})
        self._roll_back("Aborted", "Aborted", f"aborted by request {request.id}")
        return True, f"canary {label(canary)} aborted at weight {canary.weight}%"

    def _retry_request(self, request: Request) -> tuple[bool, str]:
        desired = self.given.desired
        if self.held is None or self.held != desired.revision:
            return False, "nothing to retry: no rolled-back revision is waiting"
        if problem := self._guard(request, self.held):
            return False, problem
        self.held = None
        self._event(
            "Normal",
            "RetryRequested",
            f"rolling out revision {label(desired)} again from step 1 (request {request.id})",
        )
        self._start_canary(desired, request.by)
        return True, f"rolling out revision {label(desired)} again from step 1"

    def _undo_request(self, request: Request) -> tuple[bool, str]:
        target, problem = self._undo_target(request)
        if target is None:
            return False, problem
        self.last_actions.append(RestoreModel(target))
        what = "spec.model"
        if target.reference is not None or self.given.desired.reference is not None:
            what = "spec.model and spec.monitoring.reference"  # the revision is the same
        message = f"{what} set back to revision {label(target)} ({target.uri})"
        self._event("Normal", "UndoRequested", f"{message} (request {request.id})")
        return True, message

    def _undo_target(self, request: Request) -> tuple[RevisionRef | None, str]:
        """The revision to bring back: the one named, else the stable one while the spec asks
        for another, else the revision that was stable before the current one."""
        desired, stable = self.given.desired, self._stable()
        known: dict[str, RevisionRef] = {stable.revision: stable}
        for entry in self.history:
            known.setdefault(entry.revision, _ref_of(entry))
        if request.revision:
            matches = [r for r in known.values() if r.revision.startswith(request.revision)]
            if len(matches) != 1:
                found = "matches several revisions" if matches else "is not in the history"
                return None, f"revision {request.revision} {found}"
            target = matches[0]
        elif desired.revision != stable.revision:
            target = stable
        else:
            earlier = (
                _ref_of(entry)
                for entry in self.history
                if entry.outcome == "Promoted" and entry.revision != stable.revision
            )
            found_target = next(earlier, None)
            if found_target is None:
                return None, "no earlier stable revision in the history to go back to"
            target = found_target
        if target.revision == desired.revision:
            return None, f"the spec already asks for revision {label(target)}"
        return target, ""

    # -- the canary's life ----------------------------------------------------------------------

    def _start_canary(self, desired: RevisionRef, by: str | None = None) -> None:
        self.canary = CanaryStatus(
            revision=desired.revision,
            uri=desired.uri,
            version=desired.version,
            sha256=desired.sha256,
            lineage=desired.lineage,
            reference=desired.reference,
            set_weight=weight_in_force(self.steps, 0),
            started_at=self.at,
            step_started_at=self.at,
            requested_by=by if by is not None else self._undone_by(desired),
        )
        self.last_analysis = None
        plan = ", ".join(describe_step(s) for s in self.steps) or "none: straight to promotion"
        self._event(
            "Normal",
            "RolloutStarted",
            f"canary {label(desired)} from {desired.uri}{lineage_words(desired)} against stable "
            f"{label(self._stable())}; steps: {plan}; no traffic before its servers are ready "
            "and pass the pre-traffic checks",
        )

    def _undone_by(self, desired: RevisionRef) -> str | None:
        """Who undid to `desired`, when the spec change this canary follows was an undo."""
        last = self.last_request
        if last is None or last.action != "undo" or not last.accepted:
            return None
        return last.by if desired.revision[:10] in last.message else None

    def _take_analysis(self) -> None:
        result, canary = self.given.analysis, self._canary()
        if result is None:
            return
        ended = parse_timestamp(result.at)
        if self.last_analysis is not None and ended <= parse_timestamp(self.last_analysis.at):
            return  # already counted
        if canary.started_at is not None and ended < parse_timestamp(canary.started_at):
            return  # about an earlier canary
        self.last_analysis = result
        if not self._counts(result):
            return
        if result.verdict == "Pass":
            self._update(failed_checks=0, inconclusive_checks=0)
        elif result.verdict == "Fail":
            failed, threshold = canary.failed_checks + 1, self.analysis.failure_threshold
            self._update(failed_checks=failed, inconclusive_checks=0)
            # The canary's answers were wrong (a shadow step's comparison, or its mix of
            # predicted classes against the stable's): said as such.
            reason = "AnalysisFailed"
            failed_checks = {c.name for c in result.checks if c.outcome == "Fail"}
            if "agreement" in failed_checks:
                reason = "AgreementFailed"
            elif "predictionDrift" in failed_checks:
                reason = "PredictionDriftFailed"
            where = (
                f"in shadow ({canary.shadow_percent}% mirrored)"
                if canary.shadow_percent > 0
                else f"at weight {canary.weight}%"
            )
            self._event(
                "Warning",
                reason,
                f"analysis failed {where} ({failed} in a row, "
                f"failureThreshold {threshold}): {result.reason}{_numbers(result)}",
            )
            if failed >= threshold:
                self._roll_back(
                    "RolledBack",
                    reason,
                    f"{failed} analyses in a row failed (failureThreshold {threshold}); "
                    f"last: {result.reason}",
                )
        elif canary.weight > 0 or canary.shadow_percent > 0:
            self._update(inconclusive_checks=canary.inconclusive_checks + 1)

    def _pass_gate(self, seen: RevisionObservation) -> bool:
        """Verify the canary before it gets traffic; True once it passed."""
        canary = self._canary()
        for gate in self._gates():
            found = seen.gates.get(gate.name)
            if found is not None and not found.passed:
                self._roll_back("Failed", gate.failure_reason, gate.failed(found.message))
                return False
        waiting = self._gate_waiting(seen)
        if not waiting:
            self._update(verified_at=self.at)
            self._event(
                "Normal",
                "PreTrafficChecksPassed",
                f"canary {label(canary)}: {self._gate_summary(seen)}",
            )
            self._enter_step(canary.step)
            return True
        started = parse_timestamp(canary.started_at or self.at)
        if self.now - started > self.deadline:
            self._roll_back(
                "Failed",
                "ProgressDeadlineExceeded",
                f"not ready for traffic within progressDeadline "
                f"{self.given.spec.rollout.progress_deadline}: {'; '.join(waiting)}",
            )
        return False

    def _enter_step(self, index: int) -> None:
        canary = self._canary()
        changes: dict[str, Any] = {
            "step": index,
            "step_started_at": self.at,
            "inconclusive_checks": 0,
        }
        if index < len(self.steps):
            changes["set_weight"] = weight_in_force(self.steps, index)
        changes["shadow_percent"] = shadow_in_force(self.steps, index)
        self.canary = canary.model_copy(update=changes)
        if index >= len(self.steps) and canary.verified_at is not None:
            self._event(
                "Normal",
                "Promoting",
                f"steps done: scaling canary {label(canary)} to {self.total} servers; it "
                "becomes stable once they are all ready",
            )

    def _apply_weight(self, seen: RevisionObservation) -> None:
        """Move the weight to what the step asks for: down at once, up once the canary has the
        servers the new weight needs."""
        canary = self._canary()
        target = self._split(canary.set_weight)
        if canary.weight == target.canary_weight:
            return
        if target.canary_weight > canary.weight and seen.ready_replicas < target.canary_replicas:
            return
        self._set_weight(target.canary_weight)

    def _set_weight(self, weight: int) -> None:
        canary = self._canary()
        self._update(weight=weight, weight_changed_at=self.at)
        target = self._split(canary.set_weight)
        detail = ""
        if weight and not self.router.exact_weights:
            servers = target.canary_replicas + target.stable_replicas
            detail = f": {target.canary_replicas} of {servers} servers"
            if weight != canary.set_weight:
                detail += f" (the step asks for {canary.set_weight}%)"
        self._event(
            "Normal",
            "WeightChanged",
            f"canary {label(canary)} weight {canary.weight}% -> {weight}%{detail}",
        )

    def _step_done(self) -> str | None:
        """How the current step completed, or None while it has not."""
        canary = self._canary()
        step = self.steps[canary.step]
        began = parse_timestamp(canary.step_started_at or self.at)
        if step.set_weight is not None:
            target = self._split(canary.set_weight).canary_weight
            if target == 0:
                return "no traffic to analyse at weight 0"
            if canary.weight != target or canary.weight_changed_at is None:
                return None
            changed = parse_timestamp(canary.weight_changed_at)
            result = self._passed_after(began)
            if result is None or self._window_start(result) < changed:
                return None
            return f"analysis passed at weight {canary.weight}%: {result.reason}"
        if step.shadow is not None:
            if canary.shadow_percent == 0:
                return None  # mirroring starts once the canary passed its pre-traffic checks
            if self.now < began + timedelta(seconds=duration_seconds(step.shadow.duration)):
                return None
            result = self._passed_after(began)
            if result is None or self._window_start(result) < began:
                return None
            return f"shadowed {step.shadow.duration}; analysis passed: {result.reason}"
        assert step.pause is not None
        if step.pause.duration is None:
            return None
        if self.now < began + timedelta(seconds=duration_seconds(step.pause.duration)):
            return None
        if canary.weight == 0:
            return f"paused {step.pause.duration}"
        result = self._passed_after(began)
        if result is None:
            return None
        return f"paused {step.pause.duration}; analysis passed: {result.reason}"

    def _passed_after(self, began: datetime) -> AnalysisResult | None:
        """The latest analysis if it passed, counts and ended after `began`."""
        result = self.last_analysis
        if result is None or result.verdict != "Pass" or not self._counts(result):
            return None
        return result if parse_timestamp(result.at) > began else None

    def _promote_when_ready(self, seen: RevisionObservation) -> None:
        canary = self._canary()
        if canary.failed_checks == 0 and seen.ready_replicas >= self.total:
            self._promote()
            return
        began = parse_timestamp(canary.step_started_at or self.at)
        if self.now - began > self.deadline:
            waiting = f"{seen.ready_replicas}/{self.total} canary servers ready"
            if canary.failed_checks:
                waiting += f", {canary.failed_checks} failed analyses not cleared by a Pass"
            self._roll_back(
                "RolledBack",
                "ProgressDeadlineExceeded",
                f"not promoted within progressDeadline "
                f"{self.given.spec.rollout.progress_deadline} after the steps: {waiting}",
            )

    def _promote(self) -> None:
        canary, previous = self._canary(), self._stable()
        request = self.last_request
        if (
            request is not None
            and request.action == "promote-full"
            and request.accepted
            and canary.started_at is not None
            and parse_timestamp(request.at) >= parse_timestamp(canary.started_at)
        ):
            reason = f"promoted by request {request.id}, steps skipped"
        else:
            reason = f"all {len(self.steps)} steps completed"
        self._record(canary, "Promoted", reason)
        self.stable = _ref_of(canary)
        took = self.now - parse_timestamp(canary.started_at or self.at)
        self._event(
            "Normal",
            "Promoted",
            f"revision {label(canary)} is now stable, replacing {label(previous)}, "
            f"{_duration(took.total_seconds())} after the rollout began ({reason})",
        )
        self.canary = None

    def _roll_back(self, outcome: Outcome, reason: str, detail: str) -> None:
        """End the canary now with weight 0 and hold the spec until retry or a new revision."""
        canary, stable = self._canary(), self._stable()
        verb = "aborted" if outcome == "Aborted" else "rolled back"
        self._event(
            "Warning",
            "RolloutAborted" if outcome == "Aborted" else "RolledBack",
            f"canary {label(canary)} {verb} at weight {canary.weight}%: {detail}; "
            f"traffic back on stable {label(stable)}",
        )
        self.rollback = (
            reason,
            f"revision {label(canary)} {verb} at {self.at} at weight {canary.weight}%: {detail}; "
            "the spec still asks for it: `weir retry` rolls it out again, `weir undo` or a "
            "new model moves on",
        )
        self._end_canary(outcome, detail, hold=True)

    def _end_canary(self, outcome: Outcome, reason: str, *, hold: bool) -> None:
        canary = self._canary()
        self._record(canary, outcome, reason)
        if hold:
            self.held = canary.revision
        self.canary = None

    # -- the pre-traffic gate -------------------------------------------------------------------

    def _gates(self) -> list[PreTrafficGate]:
        return [gate for gate in GATES if gate.applies(self.given.spec)]

    def _gate_waiting(self, seen: RevisionObservation) -> list[str]:
        wanted = self._canary_servers()
        waiting = []
        if seen.ready_replicas < wanted:
            waiting.append(f"{seen.ready_replicas}/{wanted} servers ready")
        waiting += [gate.waiting() for gate in self._gates() if seen.gates.get(gate.name) is None]
        return waiting

    def _gate_summary(self, seen: RevisionObservation) -> str:
        parts = [f"{seen.ready_replicas}/{self._canary_servers()} servers ready"]
        for gate in GATES:
            said = gate.passed() if gate.applies(self.given.spec) else gate.skipped()
            if said:
                parts.append(said)
        return ", ".join(parts)

    # -- counts, times and analyses -------------------------------------------------------------

    def _canary_servers(self) -> int:
        """Canary servers to run: the full count once the steps are done, else what the weight
        in force (or, at weight 0, the next weight) needs, and one to verify without traffic."""
        canary = self._canary()
        if self.total == 0:
            return 0
        if canary.step >= len(self.steps):
            return self.total
        weight = (
            canary.set_weight
            or shadow_in_force(self.steps, canary.step)
            or next(
                (s.set_weight for s in self.steps[canary.step :] if s.set_weight),
                0,
            )
        )
        if not weight:
            return 1
        share = self._split(weight).canary_replicas
        return max(share, self._own_count(canary.revision) or 0)

    def _split(self, weight: int) -> routers.Split:
        """The router's split of the total for `weight`; beside the stable's servers when an
        HPA owns its count (cpu autoscaling), since the rollout cannot shrink it."""
        if self.given.hpa_owns_counts:
            return self.router.split_beside(self.total, weight)
        return self.router.split(self.total, weight)

    def _own_count(self, revision: str) -> int | None:
        """The servers `revision`'s own load asks for, when each track scales on its own load:
        under an exact-weight router, never with `replicas` (its shares are replica ratios)."""
        if not self.router.exact_weights or self.total == 0:
            return None
        return self.given.track_replicas.get(revision)

    def _window_start(self, result: AnalysisResult) -> datetime:
        if result.since is not None:
            return parse_timestamp(result.since)
        return parse_timestamp(result.at) - self.interval

    def _counts(self, result: AnalysisResult) -> bool:
        """Whether a result counts: its window began after the canary passed the gate. Times
        in the status are whole seconds, so a window that opened in the second before the
        one the gate passed in counts too (the shells open it right after the gate)."""
        verified = self._canary().verified_at
        if verified is None:
            return False
        return self._window_start(result) + CLOCK_GRAIN >= parse_timestamp(verified)

    def _last_news(self) -> datetime:
        """When the canary's analysis last had news: its last counted result, or the weight
        change (or gate) that started the wait."""
        canary = self._canary()
        since = parse_timestamp(canary.weight_changed_at or canary.verified_at or self.at)
        result = self.last_analysis
        if result is not None and self._counts(result):
            since = max(since, parse_timestamp(result.at))
        return since

    # -- the result -----------------------------------------------------------------------------

    def _result(self) -> Decision:
        """The status, decided here and only here: the rollout's phase (Progressing, Paused,
        RolledBack), else the stable's servers' (Healthy, Pending, Degraded, Failed)."""
        pause = self._pause()
        actions = self._actions()
        scale = next(a for a in actions if isinstance(a, ScaleTracks))
        ready, ready_phase, reason, message = self._readiness(scale.stable_replicas)
        phase: Phase
        if self.canary is not None:
            phase = "Paused" if pause else "Progressing"
        elif self.held is not None:
            phase = "RolledBack"
        else:
            phase = ready_phase
        conditions = self._conditions(pause, (ready, reason, message))
        self._pause_events(pause)
        if self.given.status.phase != phase and phase in ("Healthy", "Degraded", "Failed"):
            self._event("Normal" if phase == "Healthy" else "Warning", phase, message)
        status = self.given.status.model_copy(
            update={
                "phase": phase,
                "stable": self.stable,
                "canary": self.canary,
                "rolled_back_revision": self.held,
                "last_analysis": self.last_analysis,
                "last_request": self.last_request,
                "history": self.history,
                "conditions": conditions,
            }
        )
        return Decision(status, tuple(actions), tuple(self.events), ready)

    def _readiness(self, wanted: int) -> tuple[bool, Phase, str, str]:
        """Whether the stable's servers are all ready, the phase that says so when no rollout
        is going on, and the Ready condition's reason and message."""
        seen = self.given.revisions.get(self._stable().revision)
        name = self.given.model_name
        if seen is not None and seen.problem is not None:
            phase: Phase = "Degraded" if seen.ready_replicas > 0 else "Failed"
            return False, phase, seen.problem.reason, seen.problem.message
        if seen is not None:
            target = wanted
            if self.given.hpa_owns_counts:
                target = max(seen.replicas or 1, 1)
            if seen.ready_replicas >= target and seen.updated_replicas >= target:
                return True, "Healthy", "AllServersReady", f"all servers of {name} are ready"
        before = find_condition(self.given.status.conditions, "Ready")
        served = before is not None and (
            before.status == "True" or before.reason == "ServersNotReady"
        )
        if served or self.given.status.phase in ("Healthy", "Degraded"):
            return False, "Degraded", "ServersNotReady", "some servers are not ready"
        if seen is None:
            return False, "Pending", "Creating", "creating the servers"
        return False, "Progressing", "StartingServers", "waiting for the servers to become ready"

    def _actions(self) -> list[Action]:
        stable, canary = self._stable(), self.canary
        before = self.given.status.canary.weight if self.given.status.canary else 0
        if canary is None:
            level: list[Action] = [
                ScaleTracks(stable.revision, self.total, None, 0),
                SetCanaryWeight(0),
            ]
        else:
            seen = self.given.revisions.get(canary.revision, RevisionObservation())
            stable_servers = self.total
            own = self._own_count(stable.revision)
            if own is not None:
                stable_servers = own
            elif canary.weight:
                target = self._split(canary.set_weight)
                stable_servers = self.router.serving_stable_replicas(
                    self.total, target, seen.ready_replicas
                )
            level = [
                ScaleTracks(
                    stable.revision, stable_servers, canary.revision, self._canary_servers()
                ),
                SetCanaryWeight(canary.weight),
            ]
        after = canary.weight if canary else 0
        if after < before:
            level.reverse()  # take traffic away before taking servers away
        return [*level, *self.last_actions]

    def _pause(self) -> tuple[str, str] | None:
        """(reason, message) while the rollout is paused or held, else None."""
        canary = self.canary
        if canary is None:
            return None
        name = label(canary)
        if self.total == 0:
            return "ScaledToZero", f"no servers wanted (replicas 0): canary {name} waits"
        if canary.verified_at is None or canary.step >= len(self.steps):
            return None
        step = self.steps[canary.step]
        where = f"step {self._step_name(canary.step)}"
        if step.pause is not None and step.pause.duration is None:
            return "WaitingForPromote", f"{where}: paused until `weir promote`"
        if canary.weight > 0 or canary.shadow_percent > 0:
            hint = (
                "it resumes when an analysis passes; `weir promote` moves on without one, "
                "`weir abort` rolls back"
            )
            held = (
                f"held at weight {canary.weight}%"
                if canary.weight
                else f"held in shadow ({canary.shadow_percent}% mirrored)"
            )
            if canary.inconclusive_checks >= INCONCLUSIVE_LIMIT:
                last = self.last_analysis.reason if self.last_analysis else ""
                return "InconclusiveAnalysis", (
                    f"{held}: {canary.inconclusive_checks} analyses in "
                    f"a row were inconclusive (last: {last}); {hint}"
                )
            since = self._last_news()
            if self.now - since > STALE_ANALYSIS_INTERVALS * self.interval:
                return "NoAnalysis", (
                    f"{held}: no analysis result since "
                    f"{timestamp(since)} ({STALE_ANALYSIS_INTERVALS} intervals of "
                    f"{self.analysis.interval}); {hint}"
                )
        if step.pause is not None and step.pause.duration is not None:
            began = parse_timestamp(canary.step_started_at or self.at)
            end = began + timedelta(seconds=duration_seconds(step.pause.duration))
            if self.now < end:
                return "PauseStep", f"{where}: paused until {timestamp(end)}"
        return None

    def _pause_events(self, pause: tuple[str, str] | None) -> None:
        before = find_condition(self.given.status.conditions, "Paused")
        was = before.reason if before is not None and before.status == "True" else None
        reason = pause[0] if pause else None
        if pause is not None and reason != was:
            missing_data = reason in ("InconclusiveAnalysis", "NoAnalysis")
            kind: Literal["Normal", "Warning"] = "Warning" if missing_data else "Normal"
            self._event(kind, "Paused" if reason == "PauseStep" else pause[0], pause[1])
        same_canary = (
            self.canary is not None
            and self.given.status.canary is not None
            and self.canary.revision == self.given.status.canary.revision
        )
        if was in HOLD_REASONS and reason not in HOLD_REASONS and same_canary:
            canary = self._canary()
            where = (
                f"step {self._step_name(canary.step)}"
                if canary.step < len(self.steps)
                else "promotion"
            )
            self._event(
                "Normal",
                "RolloutResumed",
                f"canary {label(canary)} resumed at {where}, weight {canary.weight}%",
            )

    def _conditions(
        self, pause: tuple[str, str] | None, ready: tuple[bool, str, str]
    ) -> list[Condition]:
        paused = (True, *pause) if pause else (False, "NotPaused", "")
        mine = {
            "Ready": ready,
            "Progressing": self._progressing(),
            "Paused": paused,
            "RolledBack": self._rolled_back(),
        }
        previous = self.given.status.conditions
        made = {
            kind: condition(previous, kind, ok, reason, message, self.at, self.given.generation)
            for kind, (ok, reason, message) in mine.items()
        }
        first = made.pop("Ready")
        kept = [made.pop(c.type) if c.type in made else c for c in previous if c.type != "Ready"]
        return [first, *kept, *(made[kind] for kind in CONDITION_TYPES if kind in made)]

    def _progressing(self) -> tuple[bool, str, str]:
        canary = self.canary
        if canary is not None:
            name = label(canary)
            seen = self.given.revisions.get(canary.revision, RevisionObservation())
            if self.total == 0:
                return True, "RollingOut", f"canary {name} waits for servers to be wanted"
            if canary.verified_at is None:
                waiting = "; ".join(self._gate_waiting(seen))
                return True, "CanaryStarting", f"canary {name} before traffic: {waiting}"
            if canary.step >= len(self.steps):
                return (
                    True,
                    "Promoting",
                    (
                        f"steps done: {seen.ready_replicas}/{self.total} canary servers of {name} "
                        "ready; it becomes stable when all are"
                    ),
                )
            message = (
                f"canary {name} at step {self._step_name(canary.step)}, weight {canary.weight}%"
            )
            if canary.weight != canary.set_weight:
                message += f" (the step asks for {canary.set_weight}%)"
            return True, "RollingOut", message
        if self.held is not None:
            return False, "RolledBack", f"revision {self.held[:10]} was rolled back"
        if not self.history:
            return False, "NoRollout", ""
        last = self.history[0]
        return (
            False,
            _PROGRESS_ENDED[last.outcome],
            (f"revision {label(_ref_of(last))}: {last.outcome} at {last.at}: {last.reason}"),
        )

    def _rolled_back(self) -> tuple[bool, str, str]:
        if self.held is None:
            return False, "NotRolledBack", ""
        if self.rollback is not None:
            return True, *self.rollback
        before = find_condition(self.given.status.conditions, "RolledBack")
        if before is not None and before.status == "True":
            return True, before.reason, before.message
        entry = next((h for h in self.history if h.revision == self.held), None)
        if entry is None:
            return True, "RolledBack", f"revision {self.held[:10]} was rolled back"
        message = f"revision {label(_ref_of(entry))}: {entry.reason}"
        return True, _PROGRESS_ENDED[entry.outcome], message

    # -- small helpers --------------------------------------------------------------------------

    def _stable(self) -> RevisionRef:
        assert self.stable is not None, "settled by _settle_first_revision"
        return self.stable

    def _canary(self) -> CanaryStatus:
        assert self.canary is not None
        return self.canary

    def _update(self, **changes: Any) -> None:
        self.canary = self._canary().model_copy(update=changes)

    def _event(self, kind: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(kind, reason, message))

    def _record(self, ref: RevisionRef, outcome: Outcome, reason: str) -> None:
        entry = HistoryEntry(
            revision=ref.revision,
            uri=ref.uri,
            version=ref.version,
            sha256=ref.sha256,
            outcome=outcome,
            at=self.at,
            reason=reason,
            requested_by=ref.requested_by if isinstance(ref, CanaryStatus) else None,
            lineage=ref.lineage,
            reference=ref.reference,
        )
        self.history = [entry, *self.history][:HISTORY_LIMIT]

    def _step_name(self, index: int) -> str:
        return f"{index + 1}/{len(self.steps)} ({describe_step(self.steps[index])})"

    def _next_name(self, index: int) -> str:
        if index + 1 < len(self.steps):
            return f"step {self._step_name(index + 1)}"
        return "promotion"


def _ref_of(ref: RevisionRef | HistoryEntry) -> RevisionRef:
    return RevisionRef(
        revision=ref.revision, uri=ref.uri, version=ref.version, sha256=ref.sha256,
        lineage=ref.lineage, reference=ref.reference,
    )  # fmt: skip


def lineage_words(ref: RevisionRef) -> str:
    """ " (training run X, dataset Y)": a revision's lineage in an event, when it has one."""
    lineage = ref.lineage
    if lineage is None:
        return ""
    parts = []
    if lineage.training_run:
        parts.append(f"training run {lineage.training_run}")
    if lineage.dataset is not None:
        parts.append(f"dataset {lineage.dataset.uri}")
    parts += [f"{name} {value:g}" for name, value in sorted(lineage.metrics.items())]
    return f" ({', '.join(parts)})" if parts else ""
