"""predictionDrift: the canary's mix of predicted classes is the stable's, on the same traffic:
the PSI of the canary's class counts against the stable's class shares in the same interval is
at most `analysis.maxPredictionDrift`.

Why it exists: agreement compares answers row by row, but only in shadow steps. Once the
canary has weight, each request reaches one revision, so no row has two answers; what both
still share is the traffic (split at random), so both should predict the same mix of classes.
A canary that is fast, answers 200 and predicts another mix (a swapped label map, a broken
preprocessing) fails here at any weight. The counts are the servers' monitoring counters
(weir_drift_prediction_rows_total, with spec.monitoring.reference), per output; the output
that differs most is judged. A track that counts no predictions is Skipped, too few rows
(under minRequests) on either track is Inconclusive (hold), never Pass and never Fail."""

from __future__ import annotations

from weir_operator.core.analysis import TrackWindow
from weir_operator.core.checks.check import CheckOutcome, threshold
from weir_operator.core.checks.words import count
from weir_operator.core.drift import psi
from weir_operator.core.spec import Analysis


def prediction_psi(canary: dict[str, float], stable: dict[str, float]) -> float:
    """PSI of the canary's rows per class against the stable's shares of the same classes (a
    class only one of them predicted counts 0 on the other side)."""
    classes = sorted(canary.keys() | stable.keys())
    total = sum(stable.values())
    shares = [stable.get(c, 0.0) / total if total > 0 else 0.0 for c in classes]
    return psi([canary.get(c, 0.0) for c in classes], shares)


class PredictionDriftCheck:
    name = "predictionDrift"

    def applies(self, analysis: Analysis) -> bool:
        return analysis.max_prediction_drift is not None

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        limit = analysis.max_prediction_drift
        if limit is None:
            return CheckOutcome(self.name, "Skipped", "analysis.maxPredictionDrift is not set")
        if not canary.predictions:
            return CheckOutcome(
                self.name,
                "Skipped",
                "the canary's servers count no predictions (served without a monitoring reference)",
            )
        if stable is None or not stable.predictions:
            return CheckOutcome(
                self.name,
                "Skipped",
                "the stable's servers count no predictions: not compared with stable",
            )
        outputs = sorted({o for o, _ in canary.predictions} & {o for o, _ in stable.predictions})
        if not outputs:
            return CheckOutcome(
                self.name, "Skipped", "no output is counted by both the canary and the stable"
            )
        least = max(analysis.min_requests, 1)
        scored: list[tuple[float, str, float, float]] = []
        for output in outputs:
            mine, theirs = canary.predicted(output), stable.predicted(output)
            rows, stable_rows = sum(mine.values()), sum(theirs.values())
            if rows >= least and stable_rows >= least:
                scored.append((prediction_psi(mine, theirs), output, rows, stable_rows))
        if not scored:
            return CheckOutcome(
                self.name,
                "Inconclusive",
                f"fewer than minRequests {analysis.min_requests} predicted rows on the canary or "
                "the stable: not compared",
            )
        score, output, rows, stable_rows = max(scored, key=lambda s: (s[0], s[1]))
        return threshold(
            self.name,
            score,
            limit,
            lambda v, most, op: (
                f"predictions of {output}: PSI {v:.3g} against the stable's {op} {most:g} "
                f"({count(rows)} canary rows, {count(stable_rows)} stable rows)"
            ),
        )
