"""The rollout state machine, specified: how a new revision gets traffic step by step, how the
analysis moves it on, holds it or rolls it back, how it becomes stable, and what requests do.
The examples read as the rules; the properties at the end (hypothesis) check them against any
sequence of verdicts, times, observations, revisions and requests."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.support.crdschema import unknown_fields
from weir_operator.core import routers
from weir_operator.core.gates import GateResult
from weir_operator.core.rollout import (
    INCONCLUSIVE_LIMIT,
    STALE_ANALYSIS_INTERVALS,
    Action,
    Decision,
    PodProblem,
    Request,
    RestoreModel,
    RevisionObservation,
    RolloutInput,
    ScaleTracks,
    SetCanaryWeight,
    advance,
    restored_spec,
    weight_in_force,
)
from weir_operator.core.spec import ModelDeploymentSpec, duration_seconds
from weir_operator.core.status import (
    HISTORY_LIMIT,
    AnalysisResult,
    CanaryStatus,
    CheckResult,
    Condition,
    ModelDeploymentStatus,
    ReferenceRef,
    RevisionRef,
    TrackMeasurement,
    Verdict,
    parse_timestamp,
    timestamp,
)
from weir_operator.crd import render_crd

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OK = GateResult(passed=True)
STATUS_SCHEMA = render_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "status"
]
STATUS_VALIDATOR = jsonschema.Draft4Validator(STATUS_SCHEMA)


def revision(version: str) -> RevisionRef:
    return RevisionRef(
        revision=(version * 16)[:16],
        uri=f"https://m.example.com/iris-{version}.onnx",
        version=version,
        sha256=(version * 64)[:64],
    )


V1, V2, V3 = revision("1"), revision("2"), revision("3")


def observation(
    ready: int,
    problem: PodProblem | None = None,
    signature: GateResult | None = None,
    sample: GateResult | None = None,
) -> RevisionObservation:
    """A canary's servers as a shell sees them, with its gates' results (None: not known)."""
    gates = {"signature": signature, "sampleInput": sample}
    return RevisionObservation(ready, problem, gates, replicas=ready, updated_replicas=ready)


def make_spec(
    steps: list[dict[str, Any]] | None = None,
    *,
    router: str = "replicas",
    failure_threshold: int = 2,
    interval: str = "10s",
    progress_deadline: str = "10m",
    allow_signature_change: bool = False,
    sample_input: dict[str, Any] | None = None,
) -> ModelDeploymentSpec:
    traffic_spec: dict[str, Any] = {"router": router}
    if router == "gateway-api":
        traffic_spec["gateway"] = {"parentRefs": [{"name": "gw"}]}
    server: dict[str, Any] = {}
    if sample_input is not None:
        server["sampleInput"] = sample_input
    rollout: dict[str, Any] = {
        "analysis": {"interval": interval, "failureThreshold": failure_threshold},
        "progressDeadline": progress_deadline,
        "allowSignatureChange": allow_signature_change,
    }
    if steps is not None:
        rollout["steps"] = steps
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "https://m.example.com/iris.onnx"},
            "server": server,
            "traffic": traffic_spec,
            "rollout": rollout,
        }
    )


@dataclass
class Shell:
    """A pretend operator: it keeps the status and the clock, observes the canary's servers,
    calls `advance`, and writes an undo's model back into the spec as a real shell would."""

    spec: ModelDeploymentSpec = field(default_factory=make_spec)
    total: int = 4
    desired: RevisionRef = V1
    status: ModelDeploymentStatus = field(default_factory=ModelDeploymentStatus)
    now: datetime = T0
    revisions: dict[str, RevisionObservation] = field(default_factory=dict)
    tracks: dict[str, int] = field(default_factory=dict)  # each revision's own-load count
    last: Decision | None = None

    def advance(
        self, analysis: AnalysisResult | None = None, request: Request | None = None
    ) -> Decision:
        decision = advance(
            RolloutInput(
                spec=self.spec,
                desired=self.desired,
                status=self.status,
                now=self.now,
                total_replicas=self.total,
                revisions={**self.stable_servers(), **self.revisions},
                analysis=analysis,
                request=request,
                generation=3,
                track_replicas=dict(self.tracks),
            )
        )
        self.status, self.last = decision.status, decision
        for action in decision.actions:
            if isinstance(action, RestoreModel):
                self.desired = action.revision
        return decision

    def stable_servers(self) -> dict[str, RevisionObservation]:
        """The stable revision's servers, all ready (what the rollout's steps are not about)."""
        stable = self.status.stable or self.desired
        n = self.total
        return {stable.revision: RevisionObservation(n, replicas=n, updated_replicas=n)}

    def wait(self, seconds: float) -> Decision:
        self.now += timedelta(seconds=seconds)
        return self.advance()

    def roll_out(self, to: RevisionRef) -> Decision:
        self.desired = to
        return self.advance()

    def servers(
        self,
        ready: int,
        *,
        of: RevisionRef | None = None,
        signature: GateResult | None = OK,
        sample: GateResult | None = None,
        problem: PodProblem | None = None,
    ) -> Decision:
        target = of or self.desired
        self.revisions[target.revision] = observation(ready, problem, signature, sample)
        return self.advance()

    def verdict(
        self,
        verdict: Verdict,
        *,
        after: float = 10,
        reason: str = "",
        since: datetime | None = None,
        checks: Sequence[CheckResult] = (),
    ) -> Decision:
        self.now += timedelta(seconds=after)
        result = AnalysisResult(
            at=timestamp(self.now),
            since=timestamp(since) if since else None,
            verdict=verdict,
            reason=reason or f"{verdict.lower()} window",
            canary=TrackMeasurement(requests=240, error_rate=0.125, p99_ms=15.5),
            stable=TrackMeasurement(requests=2100, error_rate=0.0, p99_ms=12.0),
            checks=list(checks),
        )
        return self.advance(analysis=result)

    def request(self, action: str, request_id: str = "r1", **extra: Any) -> Decision:
        return self.advance(request=Request(request_id, action, **extra))  # type: ignore[arg-type]

    @property
    def canary(self) -> CanaryStatus:
        assert self.status.canary is not None, "no canary"
        return self.status.canary

    def events(self) -> list[str]:
        assert self.last is not None
        return [e.reason for e in self.last.events]

    def event(self, reason: str) -> str:
        assert self.last is not None
        (message,) = [e.message for e in self.last.events if e.reason == reason]
        return message

    def actions(self) -> list[Action]:
        assert self.last is not None
        return list(self.last.actions)

    def condition(self, kind: str) -> Condition:
        (found,) = [c for c in self.status.conditions if c.type == kind]
        return found


def serving(**settings: Any) -> Shell:
    """V1 is stable and nothing is rolling out."""
    shell = Shell(**settings)
    shell.advance()
    return shell


def rolling_out(**settings: Any) -> Shell:
    """V2 has just started as a canary: no server ready yet."""
    shell = serving(**settings)
    shell.roll_out(V2)
    return shell


def with_traffic(ready: int | None = None, **settings: Any) -> Shell:
    """V2 passed the pre-traffic gate (all its servers ready) and got its first weight."""
    shell = rolling_out(**settings)
    shell.servers(shell.total if ready is None else ready)
    assert shell.canary.verified_at is not None
    return shell


def promoting(**settings: Any) -> Shell:
    """V2 went through every step of `[setWeight 50]`; it is being scaled up to become stable."""
    shell = with_traffic(ready=2, spec=make_spec([{"setWeight": 50}]), **settings)
    shell.verdict("Pass")
    assert shell.canary.step == 1
    return shell


def rolled_back() -> Shell:
    shell = with_traffic()
    shell.verdict("Fail")
    shell.verdict("Fail")
    assert shell.status.phase == "RolledBack"
    return shell


# ---------------------------------------------------------------------------------------------


class TestFirstRevision:
    def test_becomes_stable_directly_and_starts_the_history(self) -> None:
        shell = Shell()
        decision = shell.advance()
        assert shell.status.stable == V1
        assert shell.status.canary is None
        assert shell.status.phase == "Healthy"
        assert [(h.revision, h.outcome) for h in shell.status.history] == [
            (V1.revision, "Promoted")
        ]
        assert "first revision" in shell.status.history[0].reason
        assert decision.actions == (ScaleTracks(V1.revision, 4, None, 0), SetCanaryWeight(0))
        assert shell.events() == ["Created", "Healthy"]
        assert shell.event("Created") == f"serving revision 1111111111 (1) from {V1.uri}"

    def test_deciding_again_changes_nothing(self) -> None:
        shell = serving()
        before = shell.status
        shell.wait(60)
        assert shell.status == before
        assert shell.events() == []

    def test_a_replica_change_is_not_a_rollout(self) -> None:
        shell = serving()
        shell.total = 6
        shell.advance()
        assert shell.status.canary is None
        assert shell.actions() == [ScaleTracks(V1.revision, 6, None, 0), SetCanaryWeight(0)]


class TestStartingARollout:
    def test_a_new_revision_starts_a_canary_at_step_0_without_traffic(self) -> None:
        shell = rolling_out()
        canary = shell.canary
        assert (canary.revision, canary.step, canary.set_weight, canary.weight) == (
            V2.revision,
            0,
            10,
            0,
        ), "step 0 asks for 10%, the canary gets nothing before the gate"
        assert (canary.uri, canary.version, canary.sha256) == (V2.uri, V2.version, V2.sha256)
        assert canary.started_at == canary.step_started_at == timestamp(T0)
        assert shell.status.phase == "Progressing"
        # Servers for its first weight (setWeight 10 of 4 servers: one), none of them serving.
        assert shell.actions() == [
            ScaleTracks(V1.revision, 4, V2.revision, 1),
            SetCanaryWeight(0),
        ]
        assert shell.events() == ["RolloutStarted"]
        assert shell.event("RolloutStarted") == (
            f"canary 2222222222 (2) from {V2.uri} against stable 1111111111 (1); steps: "
            "setWeight 10, pause 30s, setWeight 50, pause 30s; no traffic before its servers "
            "are ready and pass the pre-traffic checks"
        )
        progressing = shell.condition("Progressing")
        assert (progressing.status, progressing.reason) == ("True", "CanaryStarting")
        assert "0/1 servers ready" in progressing.message

    def test_the_new_canary_does_not_inherit_the_last_analysis(self) -> None:
        shell = rolled_back()
        assert shell.status.last_analysis is not None
        shell.roll_out(V3)
        assert shell.status.last_analysis is None


class TestPreTrafficGate:
    def test_no_traffic_until_its_servers_are_ready(self) -> None:
        shell = rolling_out()
        shell.servers(0)
        assert shell.canary.weight == 0
        assert shell.canary.verified_at is None
        shell.servers(1)
        assert shell.canary.verified_at == timestamp(T0)
        assert shell.canary.weight == 25  # setWeight 10 on 4 servers: 1 of 4
        assert shell.events() == ["PreTrafficChecksPassed", "WeightChanged"]
        assert shell.event("PreTrafficChecksPassed") == (
            "canary 2222222222 (2): 1/1 servers ready, model signature matches stable's"
        )
        assert shell.event("WeightChanged") == (
            "canary 2222222222 (2) weight 0% -> 25%: 1 of 4 servers (the step asks for 10%)"
        )

    def test_no_traffic_until_the_model_signature_is_known_to_match(self) -> None:
        shell = rolling_out()
        shell.servers(4, signature=None)
        assert shell.canary.weight == 0
        assert "model signature not compared with stable's yet" in (
            shell.condition("Progressing").message
        )
        shell.servers(4, signature=OK)
        assert shell.canary.weight == 25

    def test_a_different_signature_fails_the_revision(self) -> None:
        shell = rolling_out()
        shell.servers(4, signature=GateResult(False, "input x: shape [-1, 4] != [-1, 3]"))
        assert shell.status.canary is None
        assert shell.status.phase == "RolledBack"
        assert shell.status.rolled_back_revision == V2.revision
        entry = shell.status.history[0]
        assert (entry.revision, entry.outcome) == (V2.revision, "Failed")
        assert "input x: shape [-1, 4] != [-1, 3]" in entry.reason
        rolled = shell.condition("RolledBack")
        assert (rolled.status, rolled.reason) == ("True", "SignatureMismatch")
        assert ScaleTracks(V1.revision, 4, None, 0) in shell.actions()  # its servers go

    def test_allow_signature_change_skips_the_comparison(self) -> None:
        shell = rolling_out(spec=make_spec(allow_signature_change=True))
        shell.servers(4, signature=GateResult(False, "outputs differ"))
        assert shell.canary.weight == 25
        assert "signature not compared (allowSignatureChange)" in shell.event(
            "PreTrafficChecksPassed"
        )

    def test_a_sample_inference_is_required_when_the_spec_has_one(self) -> None:
        shell = rolling_out(spec=make_spec(sample_input={"inputs": []}))
        shell.servers(4, sample=None)
        assert shell.canary.weight == 0
        shell.servers(4, sample=OK)
        assert shell.canary.weight == 25
        assert "sample inference succeeded" in shell.event("PreTrafficChecksPassed")

    def test_a_failed_sample_inference_fails_the_revision(self) -> None:
        shell = rolling_out(spec=make_spec(sample_input={"inputs": []}))
        shell.servers(4, sample=GateResult(False, "500: the model failed"))
        assert shell.status.history[0].outcome == "Failed"
        assert shell.condition("RolledBack").reason == "SampleInferenceFailed"

    def test_a_stuck_pod_fails_the_revision_at_once(self) -> None:
        shell = rolling_out()
        shell.servers(0, problem=PodProblem("ModelFetchFailed", "sha256 mismatch"))
        assert shell.status.canary is None
        entry = shell.status.history[0]
        assert (entry.outcome, entry.reason) == ("Failed", "ModelFetchFailed: sha256 mismatch")
        assert shell.condition("RolledBack").reason == "ModelFetchFailed"
        assert shell.events() == ["RolledBack"]
        assert shell.event("RolledBack") == (
            "canary 2222222222 (2) rolled back at weight 0%: ModelFetchFailed: sha256 "
            "mismatch; traffic back on stable 1111111111 (1)"
        )

    def test_the_progress_deadline_bounds_the_wait_for_ready_servers(self) -> None:
        shell = rolling_out(spec=make_spec(progress_deadline="2m"))
        shell.servers(0)
        shell.wait(120)
        assert shell.status.canary is not None, "at the deadline, not past it"
        shell.wait(1)
        assert shell.status.canary is None
        entry = shell.status.history[0]
        assert entry.outcome == "Failed"
        assert entry.reason == "not ready for traffic within progressDeadline 2m: 0/1 servers ready"
        assert shell.condition("RolledBack").reason == "ProgressDeadlineExceeded"

    def test_analyses_before_the_gate_do_not_count(self) -> None:
        shell = rolling_out()
        for _ in range(3):
            shell.verdict("Fail")
        assert shell.canary.failed_checks == 0
        assert shell.status.last_analysis is not None, "still shown"


class TestSteps:
    def test_set_weight_completes_on_a_pass_measured_at_that_weight(self) -> None:
        shell = with_traffic()
        shell.verdict("Pass", reason="canary served 240 requests: error rate 0.00% <= 1.00%")
        assert shell.canary.step == 1
        assert shell.canary.weight == 25, "a pause keeps the weight"
        assert shell.events() == ["StepCompleted", "Paused"]
        assert shell.event("StepCompleted") == (
            "step 1/4 (setWeight 10) completed: analysis passed at weight 25%: canary served "
            "240 requests: error rate 0.00% <= 1.00%; next: step 2/4 (pause 30s)"
        )

    def test_a_window_that_began_before_the_weight_changed_does_not_count(self) -> None:
        shell = with_traffic()
        shell.verdict("Pass", after=5)  # the window began 5 s before the weight was set
        assert shell.canary.step == 0
        shell.verdict("Pass", after=5, since=shell.now)  # a 5 s window, all at this weight
        assert shell.canary.step == 1

    def test_each_step_with_traffic_needs_its_own_pass(self) -> None:
        shell = with_traffic(ready=1, spec=make_spec([{"setWeight": 10}, {"setWeight": 10}]))
        shell.verdict("Pass")
        assert shell.canary.step == 1, "the same pass does not complete the next step too"
        shell.verdict("Pass")
        assert shell.canary.step == 2

    def test_a_timed_pause_waits_for_its_time_and_then_for_a_passing_analysis(self) -> None:
        shell = with_traffic()
        shell.verdict("Pass")  # step 2: pause 30s
        assert shell.status.phase == "Paused"
        assert shell.condition("Paused").reason == "PauseStep"
        assert shell.condition("Paused").message == (
            "step 2/4 (pause 30s): paused until 2026-11-25T12:00:40Z"
        )
        shell.verdict("Pass")
        shell.verdict("Pass")
        assert shell.canary.step == 1
        shell.verdict("Inconclusive")  # time is up, but the last window had no data
        assert shell.canary.step == 1
        assert shell.status.phase == "Progressing"
        shell.verdict("Pass")
        assert shell.canary.step == 2
        assert shell.canary.weight == 50

    def test_a_pause_without_duration_waits_for_promote(self) -> None:
        shell = with_traffic(spec=make_spec([{"setWeight": 10}, {"pause": {}}]))
        shell.verdict("Pass")
        assert shell.events() == ["StepCompleted", "WaitingForPromote"]
        for _ in range(5):
            shell.verdict("Pass", after=600)
        assert shell.canary.step == 1
        assert shell.status.phase == "Paused"
        paused = shell.condition("Paused")
        assert (paused.reason, paused.message) == (
            "WaitingForPromote",
            "step 2/2 (pause until promoted): paused until `weir promote`",
        )
        shell.request("promote")
        assert shell.status.stable == V2, "its servers were all ready: promoted at once"
        assert shell.events() == ["PromoteRequested", "Promoting", "Promoted", "Healthy"]

    def test_weight_zero_steps_need_no_analysis(self) -> None:
        shell = with_traffic(spec=make_spec([{"pause": {"duration": "20s"}}, {"setWeight": 20}]))
        assert shell.canary.weight == 0
        shell.wait(20)
        assert shell.canary.step == 1
        assert shell.canary.weight == 25

    def test_the_weight_rises_only_once_the_canary_has_the_servers_it_needs(self) -> None:
        spec = make_spec([{"setWeight": 10}, {"setWeight": 60}], router="gateway-api")
        shell = with_traffic(ready=1, spec=spec)
        assert shell.canary.weight == 10
        shell.verdict("Pass")
        assert (shell.canary.step, shell.canary.set_weight, shell.canary.weight) == (1, 60, 10)
        assert shell.actions()[0] == ScaleTracks(V1.revision, 4, V2.revision, 3)
        assert "weight 10% (the step asks for 60%)" in shell.condition("Progressing").message
        shell.verdict("Pass")
        assert shell.canary.step == 1, "a pass at the old weight does not count"
        shell.servers(3)
        assert shell.canary.weight == 60
        assert shell.event("WeightChanged") == "canary 2222222222 (2) weight 10% -> 60%"


class TestPromotion:
    def test_after_the_last_step_the_canary_grows_to_full_size_before_it_becomes_stable(
        self,
    ) -> None:
        shell = promoting()
        assert shell.events() == ["StepCompleted", "Promoting"]
        # The stable keeps the servers it has; the canary is scaled up to all four.
        assert shell.actions() == [
            ScaleTracks(V1.revision, 2, V2.revision, 4),
            SetCanaryWeight(50),
        ]
        progressing = shell.condition("Progressing")
        assert (progressing.reason, progressing.message) == (
            "Promoting",
            "steps done: 2/4 canary servers of 2222222222 (2) ready; it becomes stable when "
            "all are",
        )
        shell.servers(3)
        assert shell.status.canary is not None
        shell.wait(20)
        shell.servers(4)
        assert shell.status.canary is None
        assert shell.status.stable == V2
        assert shell.status.phase == "Healthy"
        assert shell.actions() == [
            SetCanaryWeight(0),
            ScaleTracks(V2.revision, 4, None, 0),
        ]
        entry = shell.status.history[0]
        assert (entry.revision, entry.outcome, entry.reason) == (
            V2.revision,
            "Promoted",
            "all 1 steps completed",
        )
        assert shell.event("Promoted") == (
            "revision 2222222222 (2) is now stable, replacing 1111111111 (1), 30s after the "
            "rollout began (all 1 steps completed)"
        )
        assert shell.condition("Progressing").reason == "RolloutComplete"

    def test_gateway_api_keeps_every_stable_server_until_the_promotion(self) -> None:
        shell = promoting(total=4)
        shell.spec = make_spec([{"setWeight": 50}], router="gateway-api")
        shell.advance()
        assert shell.actions() == [
            ScaleTracks(V1.revision, 4, V2.revision, 4),
            SetCanaryWeight(50),
        ]

    def test_gateway_api_promotes_at_the_full_count_whatever_the_canarys_own_load(self) -> None:
        shell = promoting(total=4)
        shell.spec = make_spec([{"setWeight": 50}], router="gateway-api")
        shell.tracks = {V1.revision: 3, V2.revision: 2}
        shell.advance()
        assert shell.actions() == [
            ScaleTracks(V1.revision, 3, V2.revision, 4),
            SetCanaryWeight(50),
        ]

    def test_a_failure_not_yet_cleared_by_a_pass_blocks_the_promotion(self) -> None:
        shell = promoting()
        shell.servers(4)  # promoted at once: no failure pending
        assert shell.status.stable == V2

        shell = promoting()
        shell.verdict("Fail")
        shell.servers(4)
        assert shell.status.canary is not None
        shell.verdict("Pass")
        assert shell.status.stable == V2

    def test_without_steps_a_verified_canary_goes_straight_to_promotion(self) -> None:
        shell = rolling_out(spec=make_spec([]))
        assert shell.actions()[0] == ScaleTracks(V1.revision, 4, V2.revision, 4)
        shell.servers(4)
        assert shell.status.stable == V2
        assert shell.events() == ["PreTrafficChecksPassed", "Promoting", "Promoted", "Healthy"]

    def test_the_progress_deadline_bounds_the_final_scale_up(self) -> None:
        shell = promoting()
        shell.wait(601)
        assert shell.status.canary is None
        entry = shell.status.history[0]
        assert entry.outcome == "RolledBack"
        assert entry.reason == (
            "not promoted within progressDeadline 10m after the steps: 2/4 canary servers ready"
        )


class TestAnalysis:
    def test_failure_threshold_fails_in_a_row_roll_back_in_the_same_decision(self) -> None:
        shell = with_traffic()
        shell.verdict("Fail", reason="error rate 12.50% > 1.00%")
        assert shell.canary.weight == 25
        assert shell.canary.failed_checks == 1
        assert shell.event("AnalysisFailed") == (
            "analysis failed at weight 25% (1 in a row, failureThreshold 2): error rate 12.50% "
            "> 1.00% (canary 240 requests, 12.50% errors, p99 15.5 ms; stable 2100 requests, "
            "0.00% errors, p99 12.0 ms)"
        )
        shell.verdict("Fail", reason="error rate 12.50% > 1.00%")
        assert shell.status.canary is None
        assert shell.status.phase == "RolledBack"
        assert shell.actions() == [
            SetCanaryWeight(0),
            ScaleTracks(V1.revision, 4, None, 0),
        ]
        assert shell.events() == ["AnalysisFailed", "RolledBack"]
        rolled = shell.condition("RolledBack")
        assert (rolled.status, rolled.reason) == ("True", "AnalysisFailed")
        assert "`weir retry` rolls it out again" in rolled.message
        assert shell.status.history[0].outcome == "RolledBack"

    def test_a_result_counts_once(self) -> None:
        shell = with_traffic()
        shell.verdict("Fail")
        assert shell.status.last_analysis is not None
        shell.advance(analysis=shell.status.last_analysis)
        shell.advance(analysis=shell.status.last_analysis)
        assert shell.canary.failed_checks == 1

    def test_a_pass_resets_the_fail_streak(self) -> None:
        shell = with_traffic(spec=make_spec([{"setWeight": 10}, {"pause": {}}]))
        shell.verdict("Fail")
        shell.verdict("Pass")
        shell.verdict("Fail")
        assert shell.canary.failed_checks == 1

    def test_inconclusive_does_not_break_a_fail_streak(self) -> None:
        shell = with_traffic()
        shell.verdict("Fail")
        shell.verdict("Inconclusive")
        shell.verdict("Fail")
        assert shell.status.phase == "RolledBack"

    def test_inconclusive_holds_the_weight_then_pauses_and_resumes_on_a_pass(self) -> None:
        shell = with_traffic()
        for count in range(1, INCONCLUSIVE_LIMIT + 1):
            shell.verdict("Inconclusive", reason="canary served 3 requests, fewer than 20")
            assert (shell.canary.step, shell.canary.weight) == (0, 25)
            assert shell.canary.inconclusive_checks == count
        assert shell.status.phase == "Paused"
        paused = shell.condition("Paused")
        assert paused.reason == "InconclusiveAnalysis"
        assert paused.message.startswith(
            "held at weight 25%: 3 analyses in a row were inconclusive (last: canary served 3 "
            "requests, fewer than 20)"
        )
        assert shell.events() == ["InconclusiveAnalysis"]
        assert shell.last is not None
        assert shell.last.events[0].type == "Warning"
        shell.verdict("Pass")
        assert shell.canary.step == 1
        assert shell.events() == ["StepCompleted", "Paused", "RolloutResumed"]

    def test_an_idle_canary_is_never_promoted_nor_rolled_back(self) -> None:
        shell = with_traffic()
        for _ in range(12 * 24):  # a day of empty windows, 5 minutes apart
            shell.verdict("Inconclusive", after=300)
        assert (shell.canary.step, shell.canary.weight, shell.canary.failed_checks) == (0, 25, 0)
        assert shell.status.phase == "Paused"

    def test_no_result_at_all_holds_with_a_reason(self) -> None:
        shell = with_traffic()
        shell.wait(STALE_ANALYSIS_INTERVALS * 10)
        assert shell.status.phase == "Progressing"
        shell.wait(1)
        assert shell.status.phase == "Paused"
        paused = shell.condition("Paused")
        assert paused.reason == "NoAnalysis"
        assert paused.message.startswith(
            "held at weight 25%: no analysis result since 2026-11-25T12:00:00Z (3 intervals of 10s)"
        )

    def test_inconclusive_without_traffic_is_not_counted(self) -> None:
        shell = with_traffic(spec=make_spec([{"pause": {"duration": "5m"}}, {"setWeight": 10}]))
        for _ in range(5):
            shell.verdict("Inconclusive")
        assert shell.canary.inconclusive_checks == 0
        assert shell.condition("Paused").reason == "PauseStep"


class TestHeldAfterARollback:
    def test_the_rolled_back_spec_stays_rolled_back(self) -> None:
        shell = rolled_back()
        before = shell.status
        shell.wait(3600)
        assert shell.status == before
        assert shell.events() == []
        assert shell.actions() == [ScaleTracks(V1.revision, 4, None, 0), SetCanaryWeight(0)]

    def test_a_new_revision_rolls_out(self) -> None:
        shell = rolled_back()
        shell.roll_out(V3)
        assert shell.canary.revision == V3.revision
        assert shell.status.rolled_back_revision is None
        assert shell.condition("RolledBack").status == "False"

    def test_the_spec_back_to_the_stable_revision_clears_it(self) -> None:
        shell = rolled_back()
        shell.roll_out(V1)
        assert shell.status.phase == "Healthy"
        assert shell.status.rolled_back_revision is None


class TestNewRevisionMidRollout:
    def test_restarts_from_step_0_and_records_the_old_canary_as_superseded(self) -> None:
        shell = with_traffic()
        shell.verdict("Pass")
        shell.roll_out(V3)
        assert (shell.canary.revision, shell.canary.step, shell.canary.weight) == (
            V3.revision,
            0,
            0,
        )
        entry = shell.status.history[0]
        assert (entry.revision, entry.outcome, entry.reason) == (
            V2.revision,
            "Aborted",
            "superseded by revision 3333333333 (3)",
        )
        assert shell.events() == ["RolloutAborted", "RolloutStarted"]
        actions = shell.actions()
        assert actions[0] == SetCanaryWeight(0), "traffic leaves the old canary first"
        assert isinstance(actions[1], ScaleTracks)
        assert actions[1].canary_revision == V3.revision
        assert shell.status.rolled_back_revision is None, "superseded is not held"

    def test_going_back_to_the_stable_spec_ends_the_canary(self) -> None:
        shell = with_traffic()
        shell.roll_out(V1)
        assert shell.status.canary is None
        assert shell.status.phase == "Healthy"
        assert shell.status.history[0].reason == "the spec changed back to the stable revision"
        assert shell.condition("Progressing").reason == "RolloutAborted"


class TestRequests:
    def test_promote_ends_the_current_step(self) -> None:
        shell = with_traffic()
        shell.request("promote", "r1")
        assert shell.canary.step == 1
        assert shell.status.last_request is not None
        record = shell.status.last_request
        assert (record.id, record.action, record.accepted) == ("r1", "promote", True)
        assert (
            record.message == "step 1/4 (setWeight 10) ended by request; next: step 2/4 (pause 30s)"
        )
        assert shell.events() == ["PromoteRequested", "Paused"]

    def test_a_request_is_applied_once(self) -> None:
        shell = with_traffic()
        shell.request("promote", "r1")
        shell.request("promote", "r1")
        shell.wait(5)
        assert shell.canary.step == 1
        shell.request("promote", "r2")
        assert shell.canary.step == 2

    def test_promote_never_skips_the_pre_traffic_checks(self) -> None:
        shell = rolling_out()
        shell.request("promote")
        assert shell.canary.step == 0
        assert shell.status.last_request is not None
        assert not shell.status.last_request.accepted
        assert "has not passed its pre-traffic checks yet" in shell.status.last_request.message
        assert shell.events() == ["RequestRejected"]

    def test_promote_without_a_rollout_is_rejected(self) -> None:
        shell = serving()
        shell.request("promote")
        assert shell.status.last_request is not None
        assert shell.status.last_request.message == "nothing to promote: no rollout in progress"
        shell = rolled_back()
        shell.request("promote")
        assert shell.status.last_request is not None
        assert "was rolled back; `weir retry` rolls it out again" in (
            shell.status.last_request.message
        )

    def test_a_request_about_another_revision_is_rejected(self) -> None:
        shell = with_traffic()
        shell.advance(request=Request("r1", "abort", revision=V3.revision[:10]))
        assert shell.status.canary is not None
        assert shell.status.last_request is not None
        assert shell.status.last_request.message == (
            "it is about revision 3333333333, but the rollout is now at 2222222222"
        )

    def test_promote_full_skips_the_steps_and_promotes_once_full_size(self) -> None:
        shell = with_traffic(ready=1)
        shell.verdict("Fail")
        shell.request("promote-full")
        assert shell.canary.step == 4
        assert shell.canary.failed_checks == 0
        shell.servers(4)
        assert shell.status.stable == V2
        assert shell.status.history[0].reason == "promoted by request r1, steps skipped"

    def test_promote_full_before_the_gate_still_waits_for_it(self) -> None:
        shell = rolling_out()
        shell.request("promote-full")
        assert shell.status.last_request is not None
        assert shell.status.last_request.accepted
        shell.servers(4, signature=None)
        assert shell.status.canary is not None
        shell.servers(4)
        assert shell.status.stable == V2

    def test_abort_rolls_back_now_and_holds_the_spec(self) -> None:
        shell = with_traffic()
        shell.request("abort", "r9")
        assert shell.status.canary is None
        assert shell.status.phase == "RolledBack"
        assert shell.status.history[0].outcome == "Aborted"
        assert shell.status.history[0].reason == "aborted by request r9"
        assert shell.condition("RolledBack").reason == "Aborted"
        assert shell.actions()[0] == SetCanaryWeight(0)
        assert shell.events() == ["RolloutAborted"]

    def test_retry_rolls_a_held_spec_out_again_from_step_0(self) -> None:
        shell = rolled_back()
        shell.revisions.clear()  # its servers were retired
        shell.request("retry", "r2")
        assert (shell.canary.revision, shell.canary.step) == (V2.revision, 0)
        assert shell.status.rolled_back_revision is None
        assert shell.events() == ["RetryRequested", "RolloutStarted"]
        assert next(a for a in shell.actions() if isinstance(a, ScaleTracks)).canary_revision == (
            V2.revision
        )

    def test_retry_without_a_rolled_back_revision_is_rejected(self) -> None:
        shell = with_traffic()
        shell.request("retry")
        assert shell.status.last_request is not None
        assert not shell.status.last_request.accepted

    def test_undo_brings_back_the_previous_stable_revision_through_a_rollout(self) -> None:
        shell = promoting()
        shell.servers(4)
        assert shell.status.stable == V2
        shell.request("undo", "u1")
        assert shell.actions()[-1] == RestoreModel(V1)
        assert shell.status.last_request is not None
        assert shell.status.last_request.message == (
            f"spec.model set back to revision 1111111111 (1) ({V1.uri})"
        )
        assert shell.desired == V1  # the shell wrote it back into the spec
        shell.advance()
        assert shell.canary.revision == V1.revision, "an ordinary rollout, through the steps"
        assert shell.canary.sha256 == V1.sha256

    def test_undo_during_a_rollout_goes_back_to_the_stable_revision(self) -> None:
        shell = rolled_back()
        shell.request("undo")
        assert shell.actions()[-1] == RestoreModel(V1)
        shell.advance()
        assert shell.status.phase == "Healthy"

    def test_undo_to_a_named_revision(self) -> None:
        shell = promoting()
        shell.servers(4)
        shell.request("undo", "u1", revision="1111")
        assert shell.actions()[-1] == RestoreModel(V1)
        shell.request("undo", "u2", revision="9999")
        assert shell.status.last_request is not None
        assert shell.status.last_request.message == "revision 9999 is not in the history"

    def test_undo_brings_back_the_reference_of_the_revision_with_its_model(self) -> None:
        r1 = ReferenceRef(uri="https://m.example.com/iris-1.reference.json", sha256="a" * 64)
        r2 = ReferenceRef(uri="https://m.example.com/iris-2.reference.json")
        v1, v2 = V1.model_copy(update={"reference": r1}), V2.model_copy(update={"reference": r2})
        shell = serving(desired=v1)
        shell.roll_out(v2)
        assert shell.canary.reference == r2
        shell.servers(shell.total)
        shell.request("undo", "u1")  # during the rollout: back to the stable v1, with r1
        assert shell.actions()[-1] == RestoreModel(v1)
        assert shell.status.last_request is not None
        assert shell.status.last_request.message.startswith(
            "spec.model and spec.monitoring.reference set back to revision 1111111111"
        )
        shell.advance()
        assert shell.status.stable == v1
        references = {e.revision: e.reference for e in shell.status.history}
        assert references == {v1.revision: r1, v2.revision: r2}, "the history keeps each one"

    def test_undo_with_nothing_earlier_is_rejected(self) -> None:
        shell = serving()
        shell.request("undo")
        assert shell.status.last_request is not None
        assert shell.status.last_request.message == (
            "no earlier stable revision in the history to go back to"
        )
        assert not any(isinstance(a, RestoreModel) for a in shell.actions())


class TestWhatUndoWritesBack:
    """core.rollout.restored_spec: the merge patch of the spec that asks for the revision again."""

    R1 = ReferenceRef(uri="https://m.example.com/iris-1.reference.json", sha256="a" * 64)

    def spec(self, **spec: Any) -> ModelDeploymentSpec:
        return ModelDeploymentSpec.model_validate({"model": {"uri": "https://m/x.onnx"}, **spec})

    def test_the_model_alone_without_monitoring(self) -> None:
        assert restored_spec(self.spec(), V1) == {
            "model": {"uri": V1.uri, "sha256": V1.sha256, "version": V1.version}
        }

    def test_the_model_and_its_reference_replacing_the_current_one_whole(self) -> None:
        spec = self.spec(monitoring={"reference": {"uri": "https://m/r2.json", "sha256": "b" * 64}})
        patch = restored_spec(spec, V1.model_copy(update={"reference": self.R1}))
        assert patch["monitoring"] == {"reference": {"uri": self.R1.uri, "sha256": "a" * 64}}
        unpinned = V1.model_copy(update={"reference": ReferenceRef(uri="https://m/r1.json")})
        assert restored_spec(spec, unpinned)["monitoring"] == {
            "reference": {"uri": "https://m/r1.json", "sha256": None}  # the old sha256 goes
        }

    def test_a_reference_the_revision_did_not_have_is_removed(self) -> None:
        spec = self.spec(monitoring={"reference": {"uri": "https://m/r2.json"}})
        assert restored_spec(spec, V1)["monitoring"] == {"reference": None}

    def test_unless_max_prediction_drift_needs_it(self) -> None:
        spec = self.spec(
            monitoring={"reference": {"uri": "https://m/r2.json"}},
            rollout={"analysis": {"maxPredictionDrift": 0.2}},
        )
        assert "monitoring" not in restored_spec(spec, V1)


class TestServersAndTraffic:
    def test_servers_grow_before_traffic_moves_up_and_traffic_leaves_before_servers_shrink(
        self,
    ) -> None:
        shell = rolling_out()
        shell.servers(1)
        assert shell.actions() == [
            ScaleTracks(V1.revision, 3, V2.revision, 1),
            SetCanaryWeight(25),
        ]
        shell.request("abort")
        assert shell.actions()[:2] == [SetCanaryWeight(0), ScaleTracks(V1.revision, 4, None, 0)]

    def test_the_stable_gives_up_servers_only_for_ready_canary_servers(self) -> None:
        shell = with_traffic(spec=make_spec([{"setWeight": 10}, {"setWeight": 50}]))
        shell.verdict("Pass")  # step 2 wants 2 + 2
        assert shell.actions()[0] == ScaleTracks(V1.revision, 2, V2.revision, 2)
        shell = with_traffic(ready=1, spec=make_spec([{"setWeight": 10}, {"setWeight": 50}]))
        shell.verdict("Pass")
        assert shell.actions()[0] == ScaleTracks(V1.revision, 3, V2.revision, 2)

    def test_with_gateway_api_each_track_runs_what_its_own_load_asks_for(self) -> None:
        shell = with_traffic(
            spec=make_spec([{"setWeight": 20}, {"pause": {}}], router="gateway-api")
        )
        assert shell.actions() == [
            ScaleTracks(V1.revision, 4, V2.revision, 1),  # before any own-load count: shares
            SetCanaryWeight(20),
        ]
        # A slow canary needs more servers for its 20% than its share (1 of 4); the stable,
        # with 80% of the load, needs 3.
        shell.tracks = {V1.revision: 3, V2.revision: 3}
        shell.advance()
        assert shell.actions() == [ScaleTracks(V1.revision, 3, V2.revision, 3), SetCanaryWeight(20)]
        # A canary whose own load asks for less keeps its weight's share all the same.
        shell.tracks = {V1.revision: 2, V2.revision: 0}
        shell.advance()
        assert shell.actions() == [ScaleTracks(V1.revision, 2, V2.revision, 1), SetCanaryWeight(20)]

    def test_the_replicas_router_splits_the_total_whatever_each_track_measures(self) -> None:
        shell = with_traffic(spec=make_spec([{"setWeight": 25}, {"pause": {}}]))
        before = shell.actions()
        shell.tracks = {V1.revision: 1, V2.revision: 4}
        shell.advance()
        assert (
            shell.actions()
            == before
            == [
                ScaleTracks(V1.revision, 3, V2.revision, 1),
                SetCanaryWeight(25),
            ]
        )

    def test_zero_replicas_hold_the_rollout_without_servers(self) -> None:
        shell = with_traffic()
        shell.total = 0
        shell.advance()
        assert shell.canary.weight == 0
        assert shell.actions() == [
            SetCanaryWeight(0),
            ScaleTracks(V1.revision, 0, V2.revision, 0),
        ]
        assert shell.condition("Paused").reason == "ScaledToZero"
        shell.total = 4
        shell.advance()
        assert shell.canary.weight == 25
        assert "RolloutResumed" in shell.events()


class TestConditions:
    def test_last_transition_time_moves_only_when_the_status_changes(self) -> None:
        shell = with_traffic()
        started = shell.condition("Progressing").last_transition_time
        shell.verdict("Pass")
        shell.verdict("Pass")
        assert shell.condition("Progressing").last_transition_time == started
        assert shell.condition("Progressing").observed_generation == 3
        paused_since = shell.condition("Paused").last_transition_time
        assert paused_since == timestamp(T0 + timedelta(seconds=10))

    def test_the_shells_own_conditions_are_kept_in_place(self) -> None:
        mine = Condition(
            type="ManifestApplied", status="False", reason="ManifestInvalid",
            last_transition_time="x",
        )  # fmt: skip
        shell = serving()
        shell.status = shell.status.model_copy(
            update={
                "conditions": [*shell.status.conditions[:2], mine, *shell.status.conditions[2:]]
            }
        )
        shell.roll_out(V2)
        assert [c.type for c in shell.status.conditions] == [
            "Ready",
            "Progressing",
            "ManifestApplied",
            "Paused",
            "RolledBack",
        ]
        assert shell.status.conditions[2] == mine

    def test_fields_the_state_machine_does_not_own_are_kept(self) -> None:
        shell = Shell()
        shell.status = ModelDeploymentStatus(replicas=4, ready_replicas=3, url="http://iris")
        shell.advance()
        assert (shell.status.replicas, shell.status.ready_replicas, shell.status.url) == (
            4,
            3,
            "http://iris",
        )


# ---------------------------------------------------------------------------------------------
# Properties


STEP_PLANS: list[list[dict[str, Any]]] = [
    [
        {"setWeight": 10},
        {"pause": {"duration": "30s"}},
        {"setWeight": 50},
        {"pause": {"duration": "30s"}},
    ],
    [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}],
    [],
    [{"pause": {"duration": "20s"}}, {"setWeight": 100}],
    [{"setWeight": 0}, {"setWeight": 30}, {"pause": {"duration": "15s"}}, {"setWeight": 30}],
    [{"setWeight": 25}, {"setWeight": 75}],
    [{"shadow": {"percent": 100, "duration": "30s"}}, {"setWeight": 10}, {"setWeight": 50}],
    [{"shadow": {"percent": 20, "duration": "10s"}}, {"pause": {}}],
    [{"setWeight": 10}, {"shadow": {"percent": 50, "duration": "20s"}}, {"setWeight": 50}],
]


@functools.cache
def cached_spec(
    plan: int, router: str, failure_threshold: int, interval: str, deadline: str, sample: bool
) -> ModelDeploymentSpec:
    """Specs for the properties, built once each (validating a spec evaluates its CEL rules)."""
    return make_spec(
        STEP_PLANS[plan],
        router=router,
        failure_threshold=failure_threshold,
        interval=interval,
        progress_deadline=deadline,
        sample_input={"inputs": []} if sample else None,
    )


specs = st.builds(
    cached_spec,
    st.integers(0, len(STEP_PLANS) - 1),
    st.sampled_from(["replicas", "gateway-api"]),
    st.integers(1, 3),
    st.sampled_from(["5s", "10s"]),
    st.sampled_from(["1m", "10m"]),
    st.booleans(),
)
verdicts = st.sampled_from(["Pass", "Fail", "Inconclusive"])
mostly_passing = st.sampled_from(["Pass", "Pass", "Pass", "Fail", "Inconclusive"])


def router_weight(spec: ModelDeploymentSpec, total: int, weight: int) -> int:
    return routers.router_named(spec.traffic.router).split(total, weight).canary_weight


def check_status(shell: Shell, decision: Decision) -> None:
    """What must hold after any decision."""
    status, spec = decision.status, shell.spec
    dumped = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert ModelDeploymentStatus.model_validate(dumped) == status
    assert unknown_fields(dumped, STATUS_SCHEMA, []) == [], "the API server would prune these"
    assert status.stable is not None
    assert len(status.history) <= HISTORY_LIMIT
    kinds = [c.type for c in status.conditions]
    assert len(kinds) == len(set(kinds))
    for condition in status.conditions:
        assert parse_timestamp(condition.last_transition_time) <= shell.now
    canary = status.canary
    if canary is not None:
        steps = spec.rollout.steps
        assert canary.revision not in (status.stable.revision, status.rolled_back_revision)
        assert 0 <= canary.weight <= 100
        assert 0 <= canary.step <= len(steps)
        if canary.step < len(steps):
            assert canary.set_weight == weight_in_force(steps, canary.step)
        in_shadow = canary.step < len(steps) and steps[canary.step].shadow is not None
        if in_shadow:
            assert canary.weight == 0, "a shadow step never gives the canary a client"
        else:
            assert canary.shadow_percent == 0, "mirroring only during a shadow step"
        if canary.verified_at is None:
            assert canary.shadow_percent == 0, "nothing is mirrored before the gate"
        assert canary.weight <= router_weight(spec, shell.total, canary.set_weight)
        if canary.verified_at is None:
            assert canary.weight == 0
        assert canary.failed_checks < spec.rollout.analysis.failure_threshold
        assert status.phase in ("Progressing", "Paused")
    elif status.rolled_back_revision is not None:
        assert status.phase == "RolledBack"
    else:  # no rollout: the phase says how the stable's servers are
        ready = next(c for c in status.conditions if c.type == "Ready")
        assert (status.phase == "Healthy") == (ready.status == "True")
        assert status.phase in ("Healthy", "Degraded", "Failed", "Pending", "Progressing")
    level = [a for a in decision.actions if isinstance(a, ScaleTracks | SetCanaryWeight)]
    assert len(level) == 2
    (weight,) = [a for a in level if isinstance(a, SetCanaryWeight)]
    (scale,) = [a for a in level if isinstance(a, ScaleTracks)]
    assert weight.weight == (canary.weight if canary else 0)
    assert scale.stable_revision == status.stable.revision
    assert scale.canary_revision == (canary.revision if canary else None)
    exact = spec.traffic.router != "replicas" and shell.total > 0
    own = shell.tracks if exact and canary is not None else {}  # own counts: rollouts only
    if status.stable.revision in own:
        assert scale.stable_replicas == own[status.stable.revision], "its own load's count"
    else:
        assert 0 <= scale.stable_replicas <= shell.total
    assert 0 <= scale.canary_replicas <= max(shell.total, 1, *own.values())
    if canary is not None and canary.revision in own and canary.weight:
        assert scale.canary_replicas >= own[canary.revision], "its own load's count at least"
    if shell.total and canary is not None and canary.weight:
        assert scale.stable_replicas >= 1, "the stable keeps a server while the canary serves"


def check_servers_before_traffic(shell: Shell, before: CanaryStatus | None) -> None:
    """The canary's weight rose only if it had the servers the new weight needs."""
    after = shell.status.canary
    if after is None or before is None or after.revision != before.revision:
        return
    if after.weight > before.weight:
        seen = shell.revisions.get(after.revision, RevisionObservation())
        needed = routers.router_named(shell.spec.traffic.router).split(
            shell.total, after.set_weight
        )
        assert seen.ready_replicas >= needed.canary_replicas, "servers before traffic"


def check_idempotent(shell: Shell, given: RolloutInput) -> None:
    """Deciding again from the decision's own status, with the same inputs, changes nothing."""
    assert shell.last is not None
    again = advance(
        RolloutInput(
            spec=given.spec,
            desired=given.desired,
            status=shell.last.status,
            now=given.now,
            total_replicas=given.total_replicas,
            revisions=given.revisions,
            analysis=given.analysis,
            request=given.request,
            generation=given.generation,
            track_replicas=given.track_replicas,
        )
    )
    assert again.status == shell.last.status
    assert again.events == ()
    assert all(isinstance(a, ScaleTracks | SetCanaryWeight) for a in again.actions)


class RolloutMachine(RuleBasedStateMachine):
    """Any sequence of times, verdicts, server observations, revisions, replica counts and
    requests: every decision leaves a valid status and is idempotent, and Inconclusive changes
    nothing but its own streak."""

    def __init__(self) -> None:
        super().__init__()
        self.shell = Shell()
        self.requests = 0

    @initialize(spec=specs, total=st.integers(1, 6))
    def start(self, spec: ModelDeploymentSpec, total: int) -> None:
        self.shell = Shell(spec=spec, total=total)
        self.run()

    def run(
        self, analysis: AnalysisResult | None = None, request: Request | None = None
    ) -> Decision:
        shell = self.shell
        given = RolloutInput(
            spec=shell.spec,
            desired=shell.desired,
            status=shell.status,
            now=shell.now,
            total_replicas=shell.total,
            revisions={**shell.stable_servers(), **shell.revisions},
            analysis=analysis,
            request=request,
            generation=3,
            track_replicas=dict(shell.tracks),
        )
        desired_before, canary_before = shell.desired, shell.status.canary
        decision = shell.advance(analysis, request)
        check_servers_before_traffic(shell, canary_before)
        for happened in decision.events:
            event(happened.reason)
        check_status(shell, decision)
        if shell.status.rolled_back_revision is not None:
            assert shell.status.rolled_back_revision == desired_before.revision
        check_idempotent(shell, given)
        return decision

    @rule(seconds=st.integers(1, 700))
    def time_passes(self, seconds: int) -> None:
        self.shell.now += timedelta(seconds=seconds)
        self.run()

    @rule(verdict=mostly_passing, seconds=st.integers(1, 30))
    def an_analysis_completes(self, verdict: Verdict, seconds: int) -> None:
        shell = self.shell
        shell.now += timedelta(seconds=seconds)
        before = self.run()
        result = AnalysisResult(at=timestamp(shell.now), verdict=verdict, reason="window")
        after = self.run(analysis=result)
        if verdict == "Inconclusive":
            old, new = before.status.canary, after.status.canary
            assert (old is None) == (new is None), "Inconclusive never ends a rollout"
            assert after.status.stable == before.status.stable, "Inconclusive never promotes"
            if old is not None and new is not None:
                assert (new.weight, new.set_weight, new.step, new.failed_checks) == (
                    old.weight,
                    old.set_weight,
                    old.step,
                    old.failed_checks,
                ), "Inconclusive changes nothing but its own streak"

    @rule(extra=st.integers(0, 2))
    def the_canary_servers_are_all_ready(self, extra: int) -> None:
        shell = self.shell
        target = shell.status.canary.revision if shell.status.canary else shell.desired.revision
        shell.revisions[target] = observation(shell.total + extra, None, OK, OK)
        self.run()

    @rule(
        ready=st.integers(0, 6),
        signature=st.sampled_from([None, True, True, True, False]),
        sample=st.sampled_from([None, True, True, False]),
        stuck=st.sampled_from([False] * 9 + [True]),
    )
    def the_canary_servers_change(
        self, ready: int, signature: bool | None, sample: bool | None, stuck: bool
    ) -> None:
        shell = self.shell
        target = shell.status.canary.revision if shell.status.canary else shell.desired.revision
        shell.revisions[target] = observation(
            ready,
            PodProblem("CrashLoopBackOff", "boom") if stuck else None,
            None if signature is None else GateResult(signature, "x"),
            None if sample is None else GateResult(sample, "y"),
        )
        self.run()

    @rule(to=st.sampled_from([V1, V2, V3]))
    def the_spec_changes(self, to: RevisionRef) -> None:
        self.shell.desired = to
        self.run()

    @rule(total=st.integers(0, 6))
    def the_replica_count_changes(self, total: int) -> None:
        self.shell.total = total
        self.run()

    @rule(stable=st.integers(1, 6), canary=st.integers(1, 6), drop=st.booleans())
    def each_track_measures_its_own_load(self, stable: int, canary: int, drop: bool) -> None:
        shell = self.shell
        shell.tracks = {}
        if not drop:
            shell.tracks[shell.status.stable.revision if shell.status.stable else V1.revision] = (
                stable
            )
            if shell.status.canary is not None:
                shell.tracks[shell.status.canary.revision] = canary
        self.run()

    @rule(
        action=st.sampled_from(["promote", "promote-full", "abort", "retry", "undo"]),
        repeat=st.booleans(),
    )
    def someone_makes_a_request(self, action: str, repeat: bool) -> None:
        if not repeat:
            self.requests += 1
        request = Request(f"r{self.requests}", action)  # type: ignore[arg-type]
        handled = self.shell.status.last_request
        decision = self.run(request=request)
        if handled is not None and handled.id == request.id:
            assert decision.status.last_request == handled, "a request applies once"
        else:
            assert decision.status.last_request is not None
            assert decision.status.last_request.id == request.id

    @invariant()
    def the_history_is_newest_first(self) -> None:
        times = [parse_timestamp(h.at) for h in self.shell.status.history]
        assert times == sorted(times, reverse=True)

    def teardown(self) -> None:
        # What the API server checks before it stores the status (3 ms: once per sequence).
        dumped = self.shell.status.model_dump(by_alias=True, exclude_none=True, mode="json")
        STATUS_VALIDATOR.validate(dumped)


RolloutMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAnySequence = RolloutMachine.TestCase


@dataclass
class StepLog:
    """What happened at each step of one rollout, for the promotion property."""

    entered: dict[int, datetime] = field(default_factory=dict)
    passed_at: dict[int, list[datetime]] = field(default_factory=dict)


happenings = st.one_of(
    st.tuples(st.just("wait"), st.integers(1, 120)),
    st.tuples(st.just("verdict"), mostly_passing, st.integers(1, 20)),
    st.tuples(st.just("verdict"), st.just("Pass"), st.integers(5, 20)),
    st.tuples(st.just("verdict"), st.just("Pass"), st.integers(5, 20)),
    st.tuples(st.just("servers"), st.integers(0, 6)),
    st.tuples(st.just("servers"), st.just(6)),
)


class TestRolloutProperties:
    @settings(max_examples=300, deadline=None)
    @given(
        spec=specs, total=st.integers(1, 6), sequence=st.lists(happenings, min_size=15, max_size=60)
    )
    def test_no_promotion_without_every_step_completed_and_its_analysis_passed(
        self, spec: ModelDeploymentSpec, total: int, sequence: list[tuple[Any, ...]]
    ) -> None:
        shell = rolling_out(spec=spec, total=total)
        steps = spec.rollout.steps
        interval = duration_seconds(spec.rollout.analysis.interval)
        log = StepLog()
        for happening in sequence:
            kind = happening[0]
            canary_before = shell.status.canary
            if kind == "wait":
                shell.wait(happening[1])
            elif kind == "servers":
                shell.servers(happening[1], sample=OK)
            else:
                shell.verdict(happening[1], after=happening[2])
            canary = shell.status.canary
            check_servers_before_traffic(shell, canary_before)
            if (
                kind == "verdict"
                and happening[1] == "Pass"
                and canary_before is not None
                and canary_before.weight_changed_at is not None
            ):
                window_start = shell.now - timedelta(seconds=interval)
                if window_start >= parse_timestamp(canary_before.weight_changed_at):
                    log.passed_at.setdefault(canary_before.step, []).append(shell.now)
            if canary is not None and canary.verified_at is not None:
                log.entered.setdefault(canary.step, shell.now)
            promoted = canary_before is not None and shell.status.stable.revision == (
                canary_before.revision
            )
            if promoted:
                assert canary is None
                assert not any(s.pause and s.pause.duration is None for s in steps), (
                    "a pause without duration needs a promote request"
                )
                self.check_steps(spec, total, log, promoted_at=shell.now)
                event("promoted")
                return
            if canary is None:
                event("rolled back")
                return  # the other properties cover it
        event("still rolling out")

    @staticmethod
    def check_steps(
        spec: ModelDeploymentSpec, total: int, log: StepLog, promoted_at: datetime
    ) -> None:
        """Every step that carries traffic was seen, had a Pass fed while at it whose window
        began after the weight last changed, and a timed pause lasted its duration. (A step that completes in the decision that entered it is
        never seen; only a step without traffic may do that.)"""
        steps = spec.rollout.steps
        entered = sorted(log.entered.items())
        assert [t for _, t in entered] == sorted(t for _, t in entered), "steps in order"
        for index, step in enumerate(steps):
            weight = router_weight(spec, total, weight_in_force(steps, index))
            if weight == 0:
                continue
            assert index in log.entered, f"step {index} ({step}) was never in force"
            began = log.entered[index]
            ended = min([t for i, t in entered if i > index] + [promoted_at])
            passes = [t for t in log.passed_at.get(index, []) if began < t <= ended]
            assert passes, f"step {index} ({step}) completed without a passing analysis"
            if step.pause is not None and step.pause.duration is not None:
                assert (ended - began).total_seconds() >= duration_seconds(step.pause.duration)

    @settings(max_examples=200, deadline=None)
    @given(
        spec=specs,
        total=st.integers(1, 6),
        prefix=st.lists(st.tuples(verdicts, st.integers(1, 20)), max_size=12),
        inconclusive_between=st.lists(st.integers(0, 2), min_size=3, max_size=3),
    )
    def test_a_fail_streak_of_failure_threshold_always_ends_at_weight_0(
        self,
        spec: ModelDeploymentSpec,
        total: int,
        prefix: list[tuple[Verdict, int]],
        inconclusive_between: list[int],
    ) -> None:
        shell = rolling_out(spec=spec, total=total)
        (scale,) = [a for a in shell.actions() if isinstance(a, ScaleTracks)]
        shell.servers(scale.canary_replicas, sample=OK)  # what it asks for, no more
        for verdict, after in prefix:
            shell.verdict(verdict, after=after)
        canary = shell.status.canary
        assume(canary is not None and canary.verified_at is not None)
        assert canary is not None
        interval = duration_seconds(spec.rollout.analysis.interval)
        threshold = spec.rollout.analysis.failure_threshold
        # The prefix may have started the streak: it ends after threshold fails in all.
        for fails in range(canary.failed_checks, threshold):
            for _ in range(inconclusive_between[fails]):
                shell.verdict("Inconclusive", after=interval)
            if shell.status.canary is None:
                # Rolled back sooner for another reason (a deadline): at weight 0 all the same.
                assert shell.status.phase == "RolledBack"
                event("rolled back before the streak ended")
                return
            canary = shell.status.canary
            assert canary.failed_checks == fails, "Inconclusive neither extends nor breaks it"
            shell.verdict("Fail", after=interval)
        assert shell.status.canary is None
        assert shell.status.phase == "RolledBack"
        entry = shell.status.history[0]
        assert (entry.outcome, entry.revision) == ("RolledBack", V2.revision)
        if "analyses in a row failed" not in entry.reason:
            event("rolled back for another reason on the last window")
            return
        actions = shell.actions()
        if canary.weight:  # the canary as the last Fail found it
            assert actions[0] == SetCanaryWeight(0), "traffic leaves before servers do"
        assert ScaleTracks(V1.revision, total, None, 0) in actions
        event("rolled back by the streak")


@pytest.mark.parametrize(("router", "first_weight"), [("replicas", 25), ("gateway-api", 10)])
def test_a_good_rollout_tells_its_story_in_events(router: str, first_weight: int) -> None:
    shell = rolling_out(spec=make_spec(router=router))
    story = list(shell.last.events if shell.last else ())
    for happening in (
        lambda: shell.servers(1),
        lambda: shell.verdict("Pass"),
        lambda: shell.verdict("Pass", after=30),
        lambda: shell.servers(2),
        lambda: shell.verdict("Pass"),
        lambda: shell.verdict("Pass", after=30),
        lambda: shell.servers(4),
    ):
        story += happening().events
    assert [e.reason for e in story] == [
        "RolloutStarted",
        "PreTrafficChecksPassed",
        "WeightChanged",
        "StepCompleted",
        "Paused",
        "StepCompleted",
        "WeightChanged",
        "StepCompleted",
        "Paused",
        "StepCompleted",
        "Promoting",
        "Promoted",
        "Healthy",
    ]
    assert all(e.type == "Normal" for e in story)
    moves = [e.message for e in story if e.reason == "WeightChanged"]
    assert f"weight 0% -> {first_weight}%" in moves[0]
    assert f"weight {first_weight}% -> 50%" in moves[1]
    assert shell.status.stable == V2
    assert [h.outcome for h in shell.status.history] == ["Promoted", "Promoted"]


class TestShadowStep:
    """Issue 20: mirrored traffic only, the canary's weight 0 throughout, analysis as usual."""

    SHADOW: ClassVar[list[dict[str, Any]]] = [
        {"shadow": {"percent": 100, "duration": "30s"}},
        {"setWeight": 50},
    ]

    def shadowing(self) -> Shell:
        shell = rolling_out(spec=make_spec(self.SHADOW))
        shell.servers(4, sample=OK)
        return shell

    def test_mirrors_once_verified_with_weight_0_and_enough_servers(self) -> None:
        shell = rolling_out(spec=make_spec(self.SHADOW))
        assert shell.canary.shadow_percent == 0, "not before the pre-traffic checks"
        # Servers for the mirrored share (100% of 4 under the replicas router: 3).
        assert shell.actions()[0] == ScaleTracks(V1.revision, 4, V2.revision, 3)
        shell.servers(4, sample=OK)
        assert (shell.canary.shadow_percent, shell.canary.weight) == (100, 0)
        assert shell.status.phase == "Progressing"

    def test_completes_after_its_duration_and_a_passed_window_then_takes_weight(self) -> None:
        shell = self.shadowing()
        shell.verdict("Pass")
        assert shell.canary.step == 0, "10s of 30s"
        shell.verdict("Pass")
        assert (shell.canary.step, shell.canary.weight) == (0, 0), "20s of 30s"
        shell.wait(15)  # 35s: over, with a window that passed in the step
        assert shell.canary.step == 1
        assert shell.canary.shadow_percent == 0
        assert shell.canary.weight == 50
        assert shell.event("StepCompleted").startswith("step 1/2 (shadow 100% for 30s)")

    def test_a_fail_streak_in_shadow_rolls_back_with_no_client_ever_on_the_canary(self) -> None:
        shell = self.shadowing()
        shell.verdict("Fail", reason="agreement 31% < 95%")
        shell.verdict("Fail", reason="agreement 31% < 95%")
        assert shell.status.canary is None
        assert shell.status.phase == "RolledBack"
        assert SetCanaryWeight(0) in shell.actions()

    def test_wrong_answers_are_agreement_failed_in_events_and_the_rollback(self) -> None:
        shell = self.shadowing()
        wrong = "31.1% of 212 mirrored rows agreed (top1 on probs), 95.0% needed"
        checks = [CheckResult(name="agreement", outcome="Fail", message=wrong)]
        shell.verdict("Fail", reason=wrong, checks=checks)
        assert shell.event("AgreementFailed").startswith(
            "analysis failed in shadow (100% mirrored)"
        )
        shell.verdict("Fail", reason=wrong, checks=checks)
        rolled_back = shell.condition("RolledBack")
        assert (rolled_back.status, rolled_back.reason) == ("True", "AgreementFailed")
        assert wrong in rolled_back.message

    def test_no_mirrored_traffic_holds_it_never_promoted_never_failed(self) -> None:
        shell = self.shadowing()
        for _ in range(12):
            shell.wait(10)
            shell.verdict("Inconclusive", reason="canary served 0 requests")
        assert shell.canary is not None
        assert (shell.canary.step, shell.canary.weight) == (0, 0)
        assert shell.status.phase == "Paused"
        assert "held in shadow (100% mirrored)" in shell.condition("Paused").message
        assert shell.status.history[0].revision == V1.revision, "nothing promoted or failed"
