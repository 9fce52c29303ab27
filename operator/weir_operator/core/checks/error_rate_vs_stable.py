"""errorRateVsStable: in the same window, the canary's error rate is at most the stable's plus
`analysis.maxErrorRateIncrease` (when the stable served at least `minRequests`)."""

from __future__ import annotations

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks.check import CheckOutcome, stable_comparable, threshold
from weir_operator.core.checks.words import percent
from weir_operator.core.spec import Analysis


class ErrorRateVsStable:
    name = "errorRateVsStable"

    def applies(self, analysis: Analysis) -> bool:
        return True

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        why_not = stable_comparable(analysis, stable)
        if why_not is not None or stable is None:
            return CheckOutcome(self.name, "Skipped", why_not or "")
        stable_rate = stable.error_rate or 0.0
        increase = analysis.max_error_rate_increase
        return threshold(
            self.name,
            canary.error_rate or 0.0,
            stable_rate + increase,
            lambda v, limit, op: (
                f"canary error rate {percent(v, limit)} {op} stable's {percent(stable_rate, v)} "
                f"+ {percent(increase, v)}"
            ),
        )
