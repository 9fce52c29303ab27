"""The agreement check and the shadow counts it reads (core/checks/agreement.py, the shadow
part of core/analysis.py): a stable server's weir_shadow_* counters, by canary revision, become
windows like every other counter, and a window's compared rows judge the canary's answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from weir_operator.core.analysis import (
    INF,
    PodSample,
    ShadowCounts,
    TrackWindow,
    parse_scrape,
    pod_window,
    windows_between,
)
from weir_operator.core.spec import Agreement, Analysis
from weir_operator.core.verdict import judge
from weir_server.metrics import ServerMetrics
from weir_server.shadow import _Counts

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CANARY = "c2"


def exposition(**mirrored: dict[str, int]) -> str:
    """A stable server's /metrics with some shadow counts, by canary revision."""
    metrics = ServerMetrics("iris", "7", "s1", "stable")
    metrics.observe(200, 0.01)
    counts = _Counts(("iris", "7", "s1", "stable"), metrics.registry)
    for revision, values in mirrored.items():
        for what, amount in values.items():
            counts.inc(what, revision, amount, *(("queue",) if what == "dropped" else ()))
    return metrics.exposition()[0].decode()


def stable_sample(at: float, **counts: float) -> PodSample:
    return PodSample("s-0", "s1", at, 100, 0, {INF: 100}, shadow={CANARY: ShadowCounts(**counts)})


def windows(
    shadow: ShadowCounts | None, canary_requests: float = 100
) -> tuple[TrackWindow, TrackWindow]:
    canary = TrackWindow(CANARY, canary_requests, 0, 10.0, pods=1, seconds=10)
    stable = TrackWindow(
        "s1", 500, 0, 10.0, pods=1, seconds=10, shadow={CANARY: shadow} if shadow else {}
    )
    return canary, stable


AGREE_95 = Analysis(agreement=Agreement(output="probabilities", min_rate=0.95, min_samples=50))


class TestShadowCountsInAScrape:
    def test_are_read_by_canary_revision(self) -> None:
        text = exposition(c2={"mirrored": 10, "compared": 20, "agreed": 19, "dropped": 1},
                          c1={"mirrored": 3, "errors": 3})  # fmt: skip
        shadow = parse_scrape(text, pod="s-0", taken_at=1.0).shadow
        assert shadow["c2"] == ShadowCounts(mirrored=10, dropped=1, compared=20, agreed=19)
        assert shadow["c1"] == ShadowCounts(mirrored=3, canary_errors=3)

    def test_a_server_that_mirrors_nothing_has_none(self) -> None:
        assert parse_scrape(exposition(), pod="s-0", taken_at=1.0).shadow == {}

    def test_a_window_is_the_difference_of_two_scrapes(self) -> None:
        before = stable_sample(0, mirrored=10, compared=10, agreed=9)
        after = stable_sample(10, mirrored=60, compared=70, agreed=60)
        shadow = pod_window(before, after).shadow[CANARY]
        assert shadow == ShadowCounts(mirrored=50, compared=60, agreed=51)

    def test_counts_that_go_down_are_a_restarted_server(self) -> None:
        before = stable_sample(0, mirrored=10, compared=10, agreed=9)
        after = stable_sample(10, mirrored=4, compared=4, agreed=4)
        window = pod_window(before, after)
        assert window.restarted
        assert window.shadow[CANARY] == ShadowCounts(mirrored=4, compared=4, agreed=4)

    def test_the_stables_pods_add_up(self) -> None:
        previous = {"s-0": stable_sample(0), "s-1": PodSample("s-1", "s1", 0, 0, 0, {INF: 0})}
        current = [
            stable_sample(10, mirrored=5, compared=5, agreed=5),
            PodSample("s-1", "s1", 10, 100, 0, {INF: 100},
                      shadow={CANARY: ShadowCounts(mirrored=7, compared=7, agreed=1)}),
        ]  # fmt: skip
        track = windows_between(previous, current)["s1"]
        assert track.shadow[CANARY] == ShadowCounts(mirrored=12, compared=12, agreed=6)


class TestTheAgreementCheck:
    def test_agreeing_answers_pass_with_the_rate_in_the_reason(self) -> None:
        result = judge(
            AGREE_95, *windows(ShadowCounts(mirrored=200, compared=200, agreed=196)), None, NOW
        )
        assert result.verdict == "Pass"
        assert "98.0% of 200 mirrored rows agreed (top1 on probabilities)" in result.reason
        assert result.agreement is not None
        assert (result.agreement.samples, result.agreement.agreed) == (200, 196)
        assert result.agreement.rate == pytest.approx(0.98)

    def test_a_canary_that_answers_wrongly_fails_however_fast_and_error_free(self) -> None:
        result = judge(
            AGREE_95, *windows(ShadowCounts(mirrored=212, compared=212, agreed=66)), None, NOW
        )
        assert result.verdict == "Fail"
        assert (
            "31.1% of 212 mirrored rows agreed (top1 on probabilities), 95.0% needed"
            in result.reason
        )
        assert next(c for c in result.checks if c.name == "agreement").outcome == "Fail"

    def test_fewer_compared_rows_than_min_samples_hold(self) -> None:
        result = judge(
            AGREE_95, *windows(ShadowCounts(mirrored=49, compared=49, agreed=0)), None, NOW
        )
        assert result.verdict == "Inconclusive"
        assert "fewer than minSamples 50" in result.reason

    def test_even_a_failing_latency_wins_over_too_few_samples(self) -> None:
        canary, stable = windows(ShadowCounts(mirrored=5, compared=5, agreed=5))
        slow = TrackWindow(CANARY, 100, 0, 900.0, pods=1, seconds=10)
        assert judge(AGREE_95, slow, stable, None, NOW).verdict == "Fail"
        assert judge(AGREE_95, canary, stable, None, NOW).verdict == "Inconclusive"

    def test_a_window_without_mirrored_requests_skips_it(self) -> None:
        result = judge(AGREE_95, *windows(None), None, NOW)
        assert result.verdict == "Pass"
        check = next(c for c in result.checks if c.name == "agreement")
        assert check.outcome == "Skipped"
        assert "measured in shadow steps" in check.message
        assert result.agreement is None

    def test_in_a_shadow_step_no_copies_at_all_hold(self) -> None:
        result = judge(AGREE_95, *windows(None), None, NOW, mirroring=True)
        assert result.verdict == "Inconclusive"
        assert "no mirrored request compared" in result.reason

    def test_copies_to_another_canary_revision_do_not_count(self) -> None:
        canary, _ = windows(None)
        stable = TrackWindow("s1", 500, 0, 10.0, pods=1, seconds=10,
                             shadow={"older": ShadowCounts(mirrored=90, compared=90, agreed=0)})  # fmt: skip
        assert judge(AGREE_95, canary, stable, None, NOW).verdict == "Pass"

    def test_without_agreement_in_the_spec_it_is_skipped(self) -> None:
        result = judge(
            Analysis(), *windows(ShadowCounts(mirrored=99, compared=99, agreed=0)), None, NOW
        )
        assert result.verdict == "Pass"
        assert result.agreement is None
        assert "agreement" not in [c.name for c in result.checks], "a check not set is not run"

    @pytest.mark.parametrize(("agreed", "verdict"), [(95, "Pass"), (94, "Fail")])
    def test_min_rate_is_the_boundary(self, agreed: int, verdict: str) -> None:
        shadow = ShadowCounts(mirrored=100, compared=100, agreed=agreed)
        assert judge(AGREE_95, *windows(shadow), None, NOW).verdict == verdict
