"""Analysis checks: what a window in which the canary served enough requests must satisfy.
Pure; each check is its own module, and `CHECKS` is the list the verdict (`core/verdict.py`)
runs, in order. Each has its own thresholds in the spec (`rollout.analysis`) and its own entry
in `status.lastAnalysis.checks`.

Adding a check touches its module here, `CHECKS`, its spec fields and, when it reports more
than a message, the status type."""

from __future__ import annotations

from weir_operator.core.checks.agreement import AgreementCheck
from weir_operator.core.checks.check import AnalysisCheck, CheckOutcome
from weir_operator.core.checks.error_rate import ErrorRate
from weir_operator.core.checks.error_rate_vs_stable import ErrorRateVsStable
from weir_operator.core.checks.latency_vs_stable import LatencyVsStable
from weir_operator.core.checks.p99_latency import P99Latency
from weir_operator.core.checks.prediction_drift import PredictionDriftCheck

__all__ = ["CHECKS", "AnalysisCheck", "CheckOutcome"]

CHECKS: tuple[AnalysisCheck, ...] = (
    ErrorRate(),
    P99Latency(),
    ErrorRateVsStable(),
    LatencyVsStable(),
    AgreementCheck(),
    PredictionDriftCheck(),
)
