"""What every analysis check is (the interface) and what it finds in one window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks.words import SLACK, count
from weir_operator.core.spec import Analysis

Outcome = Literal["Pass", "Fail", "Inconclusive", "Skipped"]


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """One check on one window: Pass or Fail with the numbers, Inconclusive when it has too
    little data (the window holds), or Skipped with why (no stable data to compare with, no
    latency histogram...). Skipped never fails a window."""

    name: str
    outcome: Outcome
    message: str


class AnalysisCheck(Protocol):
    @property
    def name(self) -> str:
        """As in `status.lastAnalysis.checks`: errorRate, p99Latency, ..."""
        ...

    def applies(self, analysis: Analysis) -> bool:
        """Whether the spec asks for this check (one that is not set is not run nor listed)."""
        ...

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        """Judge a window in which the canary served at least `minRequests` requests."""
        ...


def threshold(
    name: str, value: float, limit: float, describe: Callable[[float, float, str], str]
) -> CheckOutcome:
    """Pass when `value <= limit` (with float slack), the reason from `describe`."""
    if value > limit + SLACK * max(1.0, abs(limit)):
        return CheckOutcome(name, "Fail", describe(value, limit, ">"))
    return CheckOutcome(name, "Pass", describe(value, limit, "<="))


def stable_comparable(analysis: Analysis, stable: TrackWindow | None) -> str | None:
    """Why the canary cannot be compared with the stable in this window, or None."""
    if stable is None:
        return "no stable metrics: not compared with stable"
    if stable.requests < max(analysis.min_requests, 1):
        return (
            f"stable served {count(stable.requests)} requests, fewer than minRequests "
            f"{analysis.min_requests}: not compared with stable"
        )
    return None
