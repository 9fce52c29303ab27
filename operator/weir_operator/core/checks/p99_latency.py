"""p99Latency: the canary's p99 latency is at most `analysis.maxP99LatencyMs`."""

from __future__ import annotations

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks.check import CheckOutcome, threshold
from weir_operator.core.checks.words import ms
from weir_operator.core.spec import Analysis


class P99Latency:
    name = "p99Latency"

    def applies(self, analysis: Analysis) -> bool:
        return True

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        if canary.p99_ms is None:
            return CheckOutcome(
                self.name, "Skipped", "no canary latency histogram: latency not checked"
            )
        return threshold(
            self.name,
            canary.p99_ms,
            analysis.max_p99_latency_ms,
            lambda v, limit, op: f"canary p99 {ms(v, limit)} ms {op} {ms(limit, v)} ms",
        )
