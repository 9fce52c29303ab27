"""agreement: the canary's answers to mirrored requests agree with the stable's answers to the
same requests in at least `analysis.agreement.minRate` of the compared rows.

The numbers come from the stable's servers (weir_server.shadow counts, by canary revision),
so they exist only while a shadow step mirrors: a window with no copies for this canary is
Skipped ("measured in shadow steps"), one with copies but fewer than `minSamples` compared
rows is Inconclusive (hold), never Pass and never Fail."""

from __future__ import annotations

from weir_operator.core.analysis import ShadowCounts, TrackWindow
from weir_operator.core.checks.check import CheckOutcome
from weir_operator.core.checks.words import SLACK, count, percent
from weir_operator.core.spec import Analysis


def shadow_of(canary: TrackWindow, stable: TrackWindow | None) -> ShadowCounts | None:
    """What the stable mirrored to this canary revision in the window; None if nothing."""
    if stable is None:
        return None
    found = stable.shadow.get(canary.revision)
    return found if found is not None and found.mirrored > 0 else None


class AgreementCheck:
    name = "agreement"

    def applies(self, analysis: Analysis) -> bool:
        return analysis.agreement is not None

    def evaluate(
        self, analysis: Analysis, canary: TrackWindow, stable: TrackWindow | None
    ) -> CheckOutcome:
        rule = analysis.agreement
        if rule is None:
            return CheckOutcome(self.name, "Skipped", "analysis.agreement is not set")
        shadow = shadow_of(canary, stable)
        if shadow is None:
            return CheckOutcome(
                self.name,
                "Skipped",
                "no mirrored requests in this window: agreement is measured in shadow steps",
            )
        how = f"({rule.compare} on {rule.output or 'the first output'})"
        if shadow.compared < rule.min_samples:
            return CheckOutcome(
                self.name,
                "Inconclusive",
                f"{count(shadow.compared)} mirrored rows compared, fewer than minSamples "
                f"{rule.min_samples} {how}",
            )
        rate = shadow.agreed / shadow.compared
        words = (
            f"{percent(rate, rule.min_rate)} of {count(shadow.compared)} mirrored rows agreed {how}"
        )
        if rate < rule.min_rate - SLACK:
            return CheckOutcome(
                self.name, "Fail", f"{words}, {percent(rule.min_rate, rate)} needed"
            )
        return CheckOutcome(self.name, "Pass", words)
