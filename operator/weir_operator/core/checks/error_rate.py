"""errorRate: the canary's share of failed requests is at most `analysis.maxErrorRate`."""

from __future__ import annotations

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks.check import CheckOutcome, threshold
from weir_operator.core.checks.words import percent
from weir_operator.core.spec import Analysis


class ErrorRate:
    name = "errorRate"

    def applies(self, analysis: Analysis) -> bool:
        return True

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        return threshold(
            self.name,
            canary.error_rate or 0.0,
            analysis.max_error_rate,
            lambda v, limit, op: f"error rate {percent(v, limit)} {op} {percent(limit, v)}",
        )
