"""The verdict on one analysis window: Pass, Fail or Inconclusive, and why. Pure.

Pods that restart or turn unready fail a window before any number is read; too little data
(no metrics, a first scrape, fewer requests than `minRequests`) is Inconclusive, never Fail and
never Pass; then every analysis check (`core/checks`) is judged, and any Fail fails the window."""

from __future__ import annotations

from datetime import datetime, timedelta

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks import CHECKS, CheckOutcome
from weir_operator.core.checks.words import count, pods
from weir_operator.core.spec import Analysis
from weir_operator.core.status import AnalysisResult, CheckResult, Verdict, timestamp


def judge(
    analysis: Analysis,
    canary: TrackWindow | None,
    stable: TrackWindow | None,
    canary_problem: str | None,
    now: datetime,
    *,
    provider_error: str | None = None,
) -> AnalysisResult:
    """The verdict on one analysis window, which ended at `now` and began `canary.seconds`
    before (`since` in the result).

    In order: canary pods restarting or unready (`canary_problem`, see `canary_pod_problem`, or
    a restart seen in the canary's counters) -> Fail; a provider error, no canary window yet, or
    fewer canary requests than `minRequests` (or none at all) -> Inconclusive; then every check,
    and any failing one -> Fail (`core.checks.CHECKS`, each in its own module: errorRate,
    p99Latency, errorRateVsStable, latencyVsStable). The reason carries the numbers, and
    `checks` each check's outcome."""
    at = timestamp(now)
    since = None
    if canary is not None and canary.seconds > 0:
        since = timestamp(now - timedelta(seconds=canary.seconds))
    canary_measured = canary.measurement() if canary else None
    stable_measured = stable.measurement() if stable else None

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
    outcomes = tuple(check.evaluate(analysis, canary, stable) for check in CHECKS)
    failed = [o.message for o in outcomes if o.outcome == "Fail"]
    if failed:
        return result("Fail", "; ".join(failed), outcomes)
    passed = [o.message for o in outcomes if o.outcome == "Pass"]
    notes = list(dict.fromkeys(o.message for o in outcomes if o.outcome == "Skipped"))
    summary = f"canary served {count(canary.requests)} requests: " + ", ".join(passed)
    return result("Pass", "; ".join([summary, *notes]), outcomes)
