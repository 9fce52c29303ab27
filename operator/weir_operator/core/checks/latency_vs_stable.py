"""latencyVsStable: in the same window, the canary's p99 is at most `analysis.maxLatencyRatio`
times the stable's, or within `latencyToleranceMs` of it (a ratio of two small numbers means
little: 0.9 ms against 0.4 ms is 2.2x, and harmless)."""

from __future__ import annotations

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks.check import CheckOutcome, stable_comparable
from weir_operator.core.checks.words import SLACK, ms, ratio
from weir_operator.core.spec import Analysis


class LatencyVsStable:
    name = "latencyVsStable"

    def applies(self, analysis: Analysis) -> bool:
        return True

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        why_not = stable_comparable(analysis, stable)
        if why_not is not None or stable is None:
            return CheckOutcome(self.name, "Skipped", why_not or "")
        p99, stable_p99 = canary.p99_ms, stable.p99_ms
        if p99 is None or stable_p99 is None or stable_p99 <= 0:
            message = "no stable latency histogram: latency not compared with stable"
            return CheckOutcome(self.name, "Skipped", message)
        times = p99 / stable_p99
        slower = times > analysis.max_latency_ratio * (1 + SLACK)
        within_tolerance = p99 - stable_p99 <= analysis.latency_tolerance_ms * (1 + SLACK)
        text = (
            f"canary p99 {ms(p99, stable_p99)} ms = {ratio(times, analysis.max_latency_ratio)}x "
            f"stable's {ms(stable_p99, p99)} ms"
        )
        limit = f"{analysis.max_latency_ratio:g}x"
        if not slower:
            return CheckOutcome(self.name, "Pass", f"{text} <= {limit}")
        if within_tolerance:
            tolerance = analysis.latency_tolerance_ms
            return CheckOutcome(
                self.name, "Pass", f"{text} > {limit}, but within latencyToleranceMs {tolerance:g}"
            )
        return CheckOutcome(self.name, "Fail", f"{text} > {limit}")
