"""The ModelDeployment status: typed, so the operator, `weir run` and the CLI read and write the
same shape, and the CRD's status schema (and so `kubectl explain md.status`) comes from it.

All rollout state lives here (never only in memory), so a restarted operator resumes
mid-rollout."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from weir_operator.core.routers import RouterName
from weir_operator.core.spec import Lineage

Phase = Literal["Pending", "Progressing", "Paused", "Healthy", "RolledBack", "Failed", "Degraded"]
Verdict = Literal["Pass", "Fail", "Inconclusive"]
Outcome = Literal["Promoted", "RolledBack", "Aborted", "Failed"]
RequestAction = Literal["promote", "promote-full", "abort", "retry", "undo"]

HISTORY_LIMIT = 10
DRIFT_FEATURES_SHOWN = 64  # status.drift.features: the highest scores (all are judged)


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC to the second, as every time in the status is written."""
    return now.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """A time written by `timestamp` (or any RFC 3339 time) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ReferenceRef(StatusModel):
    """A revision's spec.monitoring.reference."""

    uri: str = Field(description="Where its reference.json is.")
    sha256: str | None = Field(None, description="Its sha256, when the spec gave one.")


class RevisionRef(StatusModel):
    """A revision: the hash of what defines its serving pods (spec.model + spec.server, and
    spec.monitoring.reference when set)."""

    revision: str = Field(description="Revision hash; pods carry it as serving.weir.dev/revision.")
    uri: str = Field(description="Model URI of this revision.")
    version: str | None = Field(None, description="Model version label of this revision.")
    sha256: str | None = Field(
        None, description="sha256 of its model file, when the spec gave one (undo restores it)."
    )
    lineage: Lineage | None = Field(
        None, description="spec.model.lineage when this revision was rolled out."
    )
    reference: ReferenceRef | None = Field(
        None,
        description="spec.monitoring.reference of this revision, when it had one (undo restores "
        "it with the model, so that the revision is the same).",
    )


class CanaryStatus(RevisionRef):
    """The revision being rolled out."""

    weight: int = Field(
        0,
        ge=0,
        le=100,
        description=(
            "Percent of traffic the canary receives: setWeight as the router can give it (the "
            "replicas router splits by whole servers)."
        ),
    )
    set_weight: int = Field(
        0, ge=0, le=100, description="Percent of traffic the current step asks for."
    )
    shadow_percent: int = Field(
        0,
        ge=0,
        le=100,
        description=(
            "Share of the stable's requests mirrored to the canary now (a shadow step, once "
            "the canary passed its pre-traffic checks); its answers never reach a client."
        ),
    )
    step: int = Field(
        0,
        ge=0,
        description=(
            "Index of the current rollout step; the number of steps once they are all done and "
            "the canary is scaled up to become stable."
        ),
    )
    failed_checks: int = Field(0, ge=0, description="Failed analyses in a row.")
    requested_by: str | None = Field(
        None, description="Who last steered this canary by a request (retry, undo, promote)."
    )
    inconclusive_checks: int = Field(
        0, ge=0, description="Inconclusive analyses in a row while the canary had traffic."
    )
    started_at: str | None = Field(None, description="When the rollout began (RFC 3339).")
    verified_at: str | None = Field(
        None,
        description=(
            "When the canary passed its pre-traffic checks (servers ready, model signature, "
            "sample inference); it gets no traffic before (RFC 3339)."
        ),
    )
    step_started_at: str | None = Field(None, description="When the current step began (RFC 3339).")
    weight_changed_at: str | None = Field(
        None,
        description=(
            "When the canary's weight last changed; only analyses of windows that began after "
            "it count for the step (RFC 3339)."
        ),
    )


class TrackMeasurement(StatusModel):
    """What one track served in the last analysis window."""

    requests: float = Field(0, description="Requests in the window.")
    error_rate: float = Field(0, description="Share of 5xx answers.")
    p99_ms: float | None = Field(None, description="p99 latency (ms); absent without requests.")


ANY_JSON: dict[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}


class DisagreementExample(StatusModel):
    """A mirrored request the canary answered differently from the stable (opt-in:
    analysis.agreement.examples)."""

    at: str = Field(description="When it was compared (RFC 3339).")
    canary_revision: str = Field("", description="The canary revision that answered.")
    output: str = Field("", description="The output compared.")
    row: int = Field(0, description="The first disagreeing row of the request.")
    rows: int = Field(0, description="Rows in the request.")
    agreed: int = Field(0, description="Rows that agreed.")
    why: str = Field("", description="Why every row disagreed (shape, datatype), if so.")
    request: Any = Field(
        None,
        description="The request body (JSON up to 4 KiB; else its size).",
        json_schema_extra=ANY_JSON,
    )
    stable: Any = Field(
        None,
        description="The stable's values of that row (64 at most).",
        json_schema_extra=ANY_JSON,
    )
    canary: Any = Field(
        None,
        description="The canary's values of that row (64 at most).",
        json_schema_extra=ANY_JSON,
    )


class AgreementMeasurement(StatusModel):
    """The canary's answers compared with the stable's in the last window (shadow steps)."""

    samples: float = Field(0, description="Rows of mirrored requests compared.")
    agreed: float = Field(0, description="Rows where the canary agreed with the stable.")
    rate: float | None = Field(None, description="agreed / samples; absent without samples.")
    mirrored: float = Field(0, description="Requests copied to the canary.")
    dropped: float = Field(0, description="Copies dropped by a full mirror queue.")
    canary_errors: float = Field(
        0, description="Copies the canary answered with an error, or did not answer."
    )
    examples: list[DisagreementExample] = Field(
        default_factory=list,
        max_length=20,
        description="The latest disagreeing requests (only with analysis.agreement.examples).",
    )


class CheckResult(StatusModel):
    """One analysis check on the last window (core/checks)."""

    name: str = Field(
        description=(
            "errorRate, p99Latency, errorRateVsStable, latencyVsStable, agreement, predictionDrift."
        )
    )
    outcome: Literal["Pass", "Fail", "Inconclusive", "Skipped"] = Field(
        description=(
            "Pass, Fail, Inconclusive (too little data: the window holds) or Skipped (not "
            "applicable, or no data to judge it with)."
        )
    )
    message: str = Field("", description="What it found, with the numbers.")


class AnalysisResult(StatusModel):
    """The last analysis of the canary."""

    at: str = Field(description="When the window ended (RFC 3339).")
    since: str | None = Field(
        None, description="When the window began (RFC 3339); default: at minus the interval."
    )
    verdict: Verdict = Field(description="Pass, Fail or Inconclusive (too little data: hold).")
    reason: str = Field("", description="Why, with the numbers.")
    canary: TrackMeasurement | None = Field(None, description="The canary's window.")
    stable: TrackMeasurement | None = Field(None, description="The stable revision's window.")
    checks: list[CheckResult] = Field(
        default_factory=list, description="Each analysis check's outcome, when they ran."
    )
    agreement: AgreementMeasurement | None = Field(
        None,
        description="Canary vs stable answers, when analysis.agreement is set and requests "
        "were mirrored (shadow steps).",
    )


class FeatureScore(StatusModel):
    """One input feature's drift in the last window."""

    name: str = Field(description="The feature, e.g. input[2] (column 2 of input).")
    score: float = Field(description="PSI of its bins against the reference's shares.")


class PredictionDrift(StatusModel):
    """The drift of the predicted classes in the last window."""

    output: str | None = Field(None, description="The output judged.")
    score: float = Field(description="PSI of the predicted classes against the reference's.")


class ConfidenceDrift(StatusModel):
    """The model's certainty in the last window: the mean top-1 probability."""

    output: str | None = Field(None, description="The output judged.")
    mean: float = Field(description="Mean top-1 probability of the rows served.")
    reference: float | None = Field(None, description="The reference's mean top-1 probability.")
    score: float | None = Field(None, description="PSI of the confidence bins.")


class DriftStatus(StatusModel):
    """The last drift measurement of the stable revision's traffic (spec.monitoring)."""

    at: str = Field(description="When the window ended (RFC 3339).")
    window: str = Field(description="The window measured (spec.monitoring.drift.window).")
    revision: str | None = Field(None, description="The stable revision measured.")
    samples: float = Field(0, description="Rows served in the window.")
    features: list[FeatureScore] = Field(
        default_factory=list,
        max_length=DRIFT_FEATURES_SHOWN,
        description=(
            f"PSI per input feature, highest first (the first {DRIFT_FEATURES_SHOWN}); empty "
            "under minSamples rows."
        ),
    )
    prediction: PredictionDrift | None = Field(None, description=PredictionDrift.__doc__)
    confidence: ConfidenceDrift | None = Field(None, description=ConfidenceDrift.__doc__)
    drifting: bool | None = Field(
        None,
        description=(
            "The verdict of the last window that had one (minSamples rows): it stays through "
            "windows without a verdict, so DriftCleared is told only after DriftDetected."
        ),
    )


class Condition(StatusModel):
    """A condition, shaped like metav1.Condition."""

    type: str = Field(description="Ready, Progressing, RolledBack, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field("", description="Human-readable details.")
    last_transition_time: str = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(None, description="Generation this was computed for.")


class HistoryEntry(StatusModel):
    """One finished rollout."""

    revision: str = Field(description="Revision hash.")
    uri: str = Field(description="Model URI.")
    version: str | None = Field(None, description="Model version label.")
    sha256: str | None = Field(None, description="sha256 of the model file, if the spec gave one.")
    outcome: Outcome = Field(description="Promoted, RolledBack, Aborted or Failed.")
    at: str = Field(description="When it finished (RFC 3339).")
    reason: str = Field("", description="Why.")
    requested_by: str | None = Field(
        None,
        description=(
            "Who asked for what led to this entry (promote, abort, retry, undo), as the client "
            "said; the API server's audit log is the authority."
        ),
    )
    lineage: Lineage | None = Field(None, description="Where this revision's model came from.")
    reference: ReferenceRef | None = Field(
        None, description="Its spec.monitoring.reference, when it had one."
    )


class RequestRecord(StatusModel):
    """The last request (promote, abort, ...) Weir handled; a request with the same id is
    never applied again."""

    id: str = Field(description="The request's id, chosen by whoever made it.")
    action: RequestAction = Field(description="promote, promote-full, abort, retry or undo.")
    at: str = Field(description="When it was handled (RFC 3339).")
    accepted: bool = Field(description="Whether it was carried out.")
    message: str = Field("", description="What was done, or why not.")
    by: str | None = Field(
        None,
        description=(
            "Who asked, as the client said (the CLI takes it from the API server's "
            "SelfSubjectReview); the API server's audit log is the authority."
        ),
    )


class TrackScale(StatusModel):
    """What one revision's own load asks for, while each track scales on its own load."""

    revision: str = Field(description="The revision (stable or canary).")
    desired_replicas: int = Field(ge=0, description="Servers its own load asks for.")
    load: float | None = Field(None, description="Its measured load.")


class AutoscalerStatus(StatusModel):
    """What Weir's own autoscaler (metric concurrency or rps) decided last."""

    desired_replicas: int = Field(ge=0, description="Servers the autoscaler wants in all.")
    load: float | None = Field(
        None, description="Measured load: requests in flight or requests/s, all servers."
    )
    reason: str = Field("", description="Why, with the numbers.")
    at: str = Field(description="When it decided (RFC 3339).")
    tracks: list[TrackScale] = Field(
        default_factory=list,
        max_length=2,
        description=(
            "Per revision, during a rollout with an exact-weight router (gateway-api): each "
            "track scales on its own load; the canary never below its weight's share."
        ),
    )


class ModelDeploymentStatus(StatusModel):
    """Observed state, written by Weir only."""

    phase: Phase = Field(
        "Pending",
        description="Pending, Progressing, Paused, Healthy, RolledBack, Failed or Degraded.",
    )
    observed_generation: int | None = Field(
        None, description="The spec generation this status describes."
    )
    model_name: str | None = Field(None, description="Served model name.")
    url: str | None = Field(
        None, description="In-cluster URL of the Open Inference Protocol endpoint."
    )
    stable: RevisionRef | None = Field(None, description="The revision serving most traffic.")
    canary: CanaryStatus | None = Field(None, description="The revision being rolled out, if any.")
    rolled_back_revision: str | None = Field(
        None,
        description=(
            "The revision the spec asks for that was rolled back or aborted; it is not rolled out "
            "again until `weir retry` or a change of the spec."
        ),
    )
    last_analysis: AnalysisResult | None = Field(
        None, description="The last analysis of the canary."
    )
    drift: DriftStatus | None = Field(
        None, description="The last drift measurement (spec.monitoring.reference)."
    )
    last_request: RequestRecord | None = Field(
        None, description="The last promote/abort/retry/undo request handled."
    )
    autoscaler: AutoscalerStatus | None = Field(
        None, description="The autoscaler's last decision (metric concurrency or rps)."
    )
    router: RouterName | None = Field(
        None,
        description=(
            "The traffic router last applied (local: `weir run`); when it changes, the "
            "objects the old one owned (gateway-api: the HTTPRoute) are deleted."
        ),
    )
    replicas: int = Field(0, ge=0, description="Servers (scale subresource).")
    ready_replicas: int = Field(0, ge=0, description="Ready servers.")
    ready_text: str | None = Field(None, description="ready/desired, for kubectl get.")
    selector: str | None = Field(
        None, description="Label selector of the servers (scale subresource)."
    )
    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, description="Conditions."
    )
    history: list[HistoryEntry] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description="Finished rollouts, newest first.",
    )


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event: what happened, for `kubectl describe`."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def find_condition(conditions: list[Condition], kind: str) -> Condition | None:
    return next((c for c in conditions if c.type == kind), None)


def condition(
    previous: list[Condition],
    kind: str,
    ok: bool | None,
    reason: str,
    message: str,
    at: str,
    generation: int | None,
) -> Condition:
    """A condition (`ok` None: Unknown); its lastTransitionTime moves only when its status
    changes."""
    value: Literal["True", "False", "Unknown"] = (
        "Unknown" if ok is None else "True" if ok else "False"
    )
    old = find_condition(previous, kind)
    since = old.last_transition_time if old is not None and old.status == value else at
    return Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
