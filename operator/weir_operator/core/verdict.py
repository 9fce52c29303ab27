"""The verdict on one analysis window: Pass, Fail or Inconclusive, and why. Pure.

Pods that restart or turn unready fail a window before any number is read; too little data
(no metrics, a first scrape, fewer requests than `minRequests`) is Inconclusive, never Fail and
never Pass; then every analysis check (`core/checks`) is judged, and any Fail fails the window."""

from __future__ import annotations

from datetime import datetime, timedelta

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks import CHECKS, CheckOutcome
from weir_operator.core.checks.agreement import shadow_of
from weir_operator.core.checks.words import count, pods
from weir_operator.core.spec import Analysis
from weir_operator.core.status import (
    AgreementMeasurement,
    AnalysisResult,
    CheckResult,
    Verdict,
    timestamp,
)

NOTHING_COMPARED = (
    "no mirrored request compared in this shadow step's window (the stable's servers report "
    "no copies for this canary)"
)


def judge(
    analysis: Analysis,
    canary: TrackWindow | None,
    stable: TrackWindow | None,
    canary_problem: str | None,
    now: datetime,
    *,
    provider_error: str | None = None,
    mirroring: bool = False,
) -> AnalysisResult:
    """The verdict on one analysis window, which ended at `now` and began `canary.seconds`
    before (`since` in the result).

    In order: canary pods restarting or unready (`canary_problem`, see `canary_pod_problem`, or
    a restart seen in the canary's counters) -> Fail; a provider error, no canary window yet, or
    fewer canary requests than `minRequests` (or none at all) -> Inconclusive; then every check,
    and any failing one -> Fail (`core.checks.CHECKS`, each in its own module: errorRate,
    p99Latency, errorRateVsStable, latencyVsStable, agreement): any failing one -> Fail, else any
    that has too little data (agreement below minSamples, or nothing compared while
    `mirroring`: a shadow step is in force) -> Inconclusive. The reason carries
    the numbers, `checks` each check's outcome, and `agreement` the shadow comparison."""
    at = timestamp(now)
    since = None
    if canary is not None and canary.seconds > 0:
        since = timestamp(now - timedelta(seconds=canary.seconds))
    canary_measured = canary.measurement() if canary else None
    stable_measured = stable.measurement() if stable else None
    agreement = None
    shadow = shadow_of(canary, stable) if canary is not None else None
    if analysis.agreement is not None and shadow is not None:
        agreement = AgreementMeasurement(
            samples=shadow.compared,
            agreed=shadow.agreed,
            rate=shadow.agreed / shadow.compared if shadow.compared > 0 else None,
            mirrored=shadow.mirrored,
            dropped=shadow.dropped,
            canary_errors=shadow.canary_errors,
        )

    def result(
        verdict: Verdict, reason: str, checks: tuple[CheckOutcome, ...] = ()
    ) -> AnalysisResult:
        return AnalysisResult(
            at=at,
            since=since,
            verdict=verdict,
            reason=reason,
            canary=canary_measured,
            stable=stable_measured,
            checks=[CheckResult(name=c.name, outcome=c.outcome, message=c.message) for c in checks],
            agreement=agreement,
        )

    if canary_problem:
        return result("Fail", canary_problem)
    if canary is not None and canary.restarted_pods:
        return result("Fail", f"{pods(canary.restarted_pods)} restarted within the window")
    if provider_error:
        return result("Inconclusive", f"no metrics: {provider_error}")
    if canary is None:
        return result("Inconclusive", "no canary metrics in this window")
    if canary.pods == 0 and canary.new_pods:
        return result(
            "Inconclusive",
            f"first scrape of {pods(canary.new_pods)}: their window starts now",
        )
    needed = max(analysis.min_requests, 1)
    if canary.requests < needed:
        return result(
            "Inconclusive",
            f"canary served {count(canary.requests)} requests, fewer than minRequests "
            f"{analysis.min_requests}",
        )
    outcomes = tuple(
        check.evaluate(analysis, canary, stable) for check in CHECKS if check.applies(analysis)
    )
    if mirroring:
        # A shadow step is for comparing answers: without any compared, it cannot pass.
        outcomes = tuple(
            CheckOutcome(o.name, "Inconclusive", NOTHING_COMPARED)
            if o.name == "agreement" and o.outcome == "Skipped"
            else o
            for o in outcomes
        )
    failed = [o.message for o in outcomes if o.outcome == "Fail"]
    if failed:
        return result("Fail", "; ".join(failed), outcomes)
    held = [o.message for o in outcomes if o.outcome == "Inconclusive"]
    if held:
        return result("Inconclusive", "; ".join(held), outcomes)
    passed = [o.message for o in outcomes if o.outcome == "Pass"]
    notes = list(dict.fromkeys(o.message for o in outcomes if o.outcome == "Skipped"))
    summary = f"canary served {count(canary.requests)} requests: " + ", ".join(passed)
    return result("Pass", "; ".join([summary, *notes]), outcomes)
