"""Canary analysis math and verdict (weir_operator.core.analysis), against hand-computed windows.

Read as the specification: how a scrape becomes a sample, two samples a window (a restarted pod
counts from zero), pod windows a track window, buckets a p99, and windows a verdict."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from weir_operator.core.analysis import (
    INF,
    PodHealth,
    PodSample,
    PodWindow,
    ScrapeError,
    TrackWindow,
    canary_pod_problem,
    histogram_quantile,
    parse_scrape,
    pod_health,
    pod_window,
    track_window,
    windows_between,
)
from weir_operator.core.spec import Analysis
from weir_operator.core.status import TrackMeasurement
from weir_operator.core.verdict import judge
from weir_server.metrics import LATENCY_BUCKETS, ServerMetrics

NOW = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)
DEFAULTS = Analysis()  # minRequests 20, maxErrorRate 1%, p99 500 ms, ratio 1.5, tolerance 5 ms


def sample(
    pod: str,
    taken_at: float,
    requests: float,
    errors: float = 0,
    buckets: dict[float, float] | None = None,
    revision: str = "r1",
) -> PodSample:
    return PodSample(pod, revision, taken_at, requests, errors, buckets or {INF: requests})


def window(
    requests: float,
    errors: float = 0,
    p99_ms: float | None = 10.0,
    *,
    pods: int = 1,
    new_pods: int = 0,
    restarted_pods: int = 0,
) -> TrackWindow:
    return TrackWindow(
        "r",
        requests,
        errors,
        p99_ms,
        pods=pods,
        new_pods=new_pods,
        restarted_pods=restarted_pods,
    )


class TestParsingAServersScrape:
    """The server's own exposition (weir_server.metrics), parsed back."""

    @staticmethod
    def exposition(revision: str = "abc", observations: Sequence[tuple[int, float]] = ()) -> str:
        metrics = ServerMetrics("iris", "7", revision, "")
        for code, seconds in observations:
            metrics.observe(code, seconds)
        return metrics.exposition()[0].decode()

    def test_requests_of_every_code_count_and_only_5xx_are_errors(self) -> None:
        text = self.exposition(
            observations=[(200, 0.001)] * 5 + [(400, 0.0002), (404, 0.0002), (500, 0.2), (503, 0.0)]
        )
        parsed = parse_scrape(text, pod="p", taken_at=3.0)
        assert (parsed.pod, parsed.revision, parsed.taken_at) == ("p", "abc", 3.0)
        assert parsed.requests == 9
        assert parsed.errors == 2

    def test_buckets_are_cumulative_counts_by_upper_bound_in_seconds(self) -> None:
        text = self.exposition(observations=[(200, 0.00005), (200, 0.002), (200, 0.002), (200, 20)])
        buckets = parse_scrape(text, pod="p", taken_at=0).buckets
        assert set(buckets) == {*LATENCY_BUCKETS, INF}
        above_2ms = bisect.bisect_left(LATENCY_BUCKETS, 0.002)
        assert buckets[LATENCY_BUCKETS[0]] == 1  # 50 µs <= 100 µs
        assert buckets[LATENCY_BUCKETS[above_2ms - 1]] == 1
        assert buckets[LATENCY_BUCKETS[above_2ms]] == 3
        assert buckets[10.0] == 3  # 20 s is only in +Inf
        assert buckets[INF] == 4

    def test_a_server_that_answered_nothing_yet_has_zero_counts(self) -> None:
        parsed = parse_scrape(self.exposition(), pod="p", taken_at=0)
        assert (parsed.requests, parsed.errors, parsed.buckets[INF]) == (0, 0, 0)

    def test_a_server_without_a_revision_label_value_gives_an_empty_revision(self) -> None:
        assert parse_scrape(self.exposition(revision=""), pod="p", taken_at=0).revision == ""

    @pytest.mark.parametrize(
        ("text", "complaint"),
        [
            ("", "no weir_inference_request_duration_seconds_bucket"),
            ("# TYPE x counter\nx_total 1\n", "not a weir server"),
            ("this is { not prometheus", "unparsable metrics from pod p"),
            (
                'weir_inference_request_duration_seconds_bucket{le="+Inf",revision="a"} 1\n'
                'weir_inference_request_duration_seconds_bucket{le="+Inf",revision="b"} 1\n',
                "several revisions: a, b",
            ),
        ],
    )
    def test_what_is_not_one_weir_server_is_refused(self, text: str, complaint: str) -> None:
        with pytest.raises(ScrapeError, match=complaint):
            parse_scrape(text, pod="p", taken_at=0)


class TestAPodsWindow:
    def test_is_the_difference_of_two_scrapes(self) -> None:
        before = sample("p", 10.0, 100, 2, {0.01: 60, 0.1: 95, INF: 100})
        after = sample("p", 20.0, 150, 5, {0.01: 80, 0.1: 140, INF: 150})
        assert pod_window(before, after) == PodWindow(
            "p", "r1", 10.0, 50, 3, {0.01: 20, 0.1: 45, INF: 50}, restarted=False
        )

    def test_after_a_restart_counts_from_zero(self) -> None:
        # 100 requests before; the pod restarted and has answered 30 since.
        before = sample("p", 10.0, 100, 2, {0.01: 60, INF: 100})
        after = sample("p", 20.0, 30, 4, {0.01: 25, INF: 30})
        assert pod_window(before, after) == PodWindow(
            "p", "r1", 10.0, 30, 4, {0.01: 25, INF: 30}, restarted=True
        )

    def test_any_counter_going_down_is_a_restart(self) -> None:
        # More requests than before, but fewer errors: only a new process explains it.
        before = sample("p", 0, 10, 5, {0.01: 5, INF: 10})
        after = sample("p", 1, 12, 1, {0.01: 6, INF: 12})
        assert pod_window(before, after).restarted
        assert pod_window(before, after).errors == 1
        # A single bucket going down is enough too.
        after = sample("p", 1, 12, 5, {0.01: 4, INF: 12})
        assert pod_window(before, after).restarted

    def test_new_errors_cannot_hide_a_restart(self) -> None:
        # 4 answers (all 200) before; after: 3 x 200 and 1 x 500. The total did not go down,
        # but the 200 counter did: a restart, not "one more error and one answer fewer".
        before = sample("p", 0, 4, 0, {0.01: 4, INF: 4})
        after = sample("p", 1, 4, 1, {0.01: 4, INF: 4})
        result = pod_window(before, after)
        assert result.restarted
        assert (result.requests, result.errors) == (4, 1)

    def test_another_histogram_layout_is_another_process(self) -> None:
        before = sample("p", 0, 10, 0, {0.01: 5, INF: 10})
        after = sample("p", 1, 12, 0, {0.02: 12, INF: 12})
        assert pod_window(before, after).restarted
        assert pod_window(before, after).buckets == {0.02: 12, INF: 12}

    def test_no_traffic_is_an_empty_window_not_a_restart(self) -> None:
        before = sample("p", 0, 10, 1, {0.01: 5, INF: 10})
        window = pod_window(before, sample("p", 5, 10, 1, {0.01: 5, INF: 10}))
        assert (window.requests, window.errors, window.restarted) == (0, 0, False)

    @pytest.mark.parametrize(
        "other",
        [sample("q", 20, 10), sample("p", 20, 10, revision="r2"), sample("p", 5, 10)],
        ids=["another pod", "another revision", "earlier"],
    )
    def test_needs_two_ordered_samples_of_one_pod_and_revision(self, other: PodSample) -> None:
        with pytest.raises(ValueError, match=r"pod|order"):
            pod_window(sample("p", 10, 5), other)


class TestTrackWindows:
    """Pod windows summed per revision; what the direct provider computes at each scrape."""

    def test_pods_of_a_revision_add_up_and_the_p99_comes_from_the_summed_buckets(self) -> None:
        a = PodWindow("a", "r1", 10, 60, 1, {0.01: 50, 0.02: 58, INF: 60}, False)
        b = PodWindow("b", "r1", 9, 40, 2, {0.01: 30, 0.02: 40, INF: 40}, False)
        other = PodWindow("c", "r2", 10, 1000, 0, {0.01: 1000, 0.02: 1000, INF: 1000}, False)
        track = track_window("r1", [a, other, b])
        assert (track.requests, track.errors, track.pods, track.seconds) == (100, 3, 2, 10)
        assert track.buckets == {0.01: 80, 0.02: 98, INF: 100}
        assert track.error_rate == pytest.approx(0.03)
        # rank 99 is in the +Inf bucket (98 < 99): the highest finite bound, 20 ms.
        assert track.p99_ms == pytest.approx(20.0)

    def test_pods_with_different_bucket_layouts_are_summed_over_the_common_bounds(self) -> None:
        a = PodWindow("a", "r1", 10, 10, 0, {0.01: 8, 0.02: 10, INF: 10}, False)
        b = PodWindow("b", "r1", 10, 10, 0, {0.01: 5, 0.05: 10, INF: 10}, False)
        assert track_window("r1", [a, b]).buckets == {0.01: 13, INF: 20}

    def test_a_revision_without_pod_windows_has_nothing_to_say(self) -> None:
        track = track_window("r1", [], new_pods=2)
        assert (track.requests, track.pods, track.new_pods, track.p99_ms) == (0, 0, 2, None)
        assert track.error_rate is None
        assert track.measurement() == TrackMeasurement(requests=0, error_rate=0, p99_ms=None)

    def test_between_two_scrapes_new_gone_restarted_and_steady_pods(self) -> None:
        previous = {
            "steady": sample("steady", 0, 100, 1, {0.01: 90, INF: 100}),
            "restarted": sample("restarted", 0, 500, 0, {0.01: 500, INF: 500}),
            "gone": sample("gone", 0, 100, 50, {0.01: 0, INF: 100}),
            "reused": sample("reused", 0, 7, 0, revision="r2"),
        }
        current = [
            sample("steady", 10, 130, 2, {0.01: 118, INF: 130}),  # +30, +1 error
            sample("restarted", 10, 20, 0, {0.01: 20, INF: 20}),  # restarted: 20 since 0
            sample("new", 10, 999, 999, {0.01: 0, INF: 999}),  # first seen: no window yet
            sample("reused", 10, 3, 0),  # was r2, now r1: a new pod to us
            sample("canary-0", 10, 40, 0, {0.01: 40, INF: 40}, revision="r2"),
        ]
        windows = windows_between(previous, current)
        assert set(windows) == {"r1", "r2"}
        r1 = windows["r1"]
        assert (r1.requests, r1.errors, r1.pods, r1.new_pods, r1.restarted_pods) == (
            50,
            1,
            2,
            2,
            1,
        )
        assert r1.buckets == {0.01: 48, INF: 50}
        r2 = windows["r2"]
        assert (r2.requests, r2.pods, r2.new_pods) == (0, 0, 1)

    def test_the_first_scrape_after_an_operator_restart_only_opens_windows(self) -> None:
        windows = windows_between({}, [sample("a", 0, 10_000, 9_000), sample("b", 0, 5)])
        assert windows["r1"].pods == 0
        assert windows["r1"].new_pods == 2
        assert windows["r1"].requests == 0


class TestHistogramQuantile:
    """Prometheus' histogram_quantile: linear inside the bucket where the rank falls."""

    def test_interpolates_inside_the_bucket_where_the_rank_falls(self) -> None:
        # 200 observations; rank 198 falls in (20 ms, 40 ms], which holds #191..#200:
        # 20 ms + 20 ms * (198 - 190) / 10 = 36 ms.
        buckets = {0.01: 100, 0.02: 190, 0.04: 200, INF: 200}
        assert histogram_quantile(0.99, buckets) == pytest.approx(0.036)
        # The median: rank 100 is the top of the first bucket, which starts at 0.
        assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
        assert histogram_quantile(0.25, buckets) == pytest.approx(0.005)

    def test_a_rank_at_a_bucket_top_is_that_bucket_bound(self) -> None:
        buckets = {0.005: 0, 0.01: 50, 0.025: 90, 0.05: 99, 0.1: 100, INF: 100}
        # rank 99 = count at 50 ms: 25 ms + 25 ms * (99 - 90) / 9 = 50 ms.
        assert histogram_quantile(0.99, buckets) == pytest.approx(0.05)

    def test_a_rank_in_the_inf_bucket_is_the_highest_finite_bound(self) -> None:
        assert histogram_quantile(0.99, {0.1: 90, 0.2: 95, INF: 100}) == 0.2

    def test_no_observations_or_no_inf_bucket_give_none(self) -> None:
        assert histogram_quantile(0.99, {0.1: 0, INF: 0}) is None
        assert histogram_quantile(0.99, {0.1: 5, 0.2: 10}) is None
        assert histogram_quantile(0.99, {INF: 10}) is None
        assert histogram_quantile(0.99, {}) is None

    def test_counts_that_dip_are_made_monotonic_as_prometheus_does(self) -> None:
        # 0.02 dips below 0.01 (float noise or a torn scrape): treated as 100.
        assert histogram_quantile(0.5, {0.01: 100, 0.02: 99, INF: 200}) == pytest.approx(0.01)

    def test_a_quantile_outside_0_1_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="quantile"):
            histogram_quantile(1.5, {INF: 1})


class TestTheVerdict:
    def test_records_when_and_both_tracks_measurements(self) -> None:
        canary = TrackWindow("r", 100, 1, 12.0, pods=1, seconds=10.4)
        result = judge(DEFAULTS, canary, window(1000, 0, 11.0), None, NOW)
        assert result.at == "2026-03-01T12:00:00Z"
        assert result.since == "2026-03-01T11:59:49Z"  # 12:00:00.25 - 10.4 s
        assert result.canary == TrackMeasurement(requests=100, error_rate=0.01, p99_ms=12.0)
        assert result.stable == TrackMeasurement(requests=1000, error_rate=0.0, p99_ms=11.0)
        other_zone = NOW.astimezone(timezone(timedelta(hours=2)))
        assert judge(DEFAULTS, None, None, None, other_zone).at == result.at
        # Without a measured window (none, or a first scrape) the start is not known.
        assert judge(DEFAULTS, None, None, None, NOW).since is None

    def test_each_check_has_its_own_named_outcome_in_the_status(self) -> None:
        failing = judge(DEFAULTS, window(100, 5, 900.0), window(1000, 0, 11.0), None, NOW)
        outcomes = {c.name: c.outcome for c in failing.checks}
        assert outcomes == {
            "errorRate": "Fail",
            "p99Latency": "Fail",
            "errorRateVsStable": "Fail",
            "latencyVsStable": "Fail",
        }
        alone = judge(DEFAULTS, window(100, 0, 10.0), None, None, NOW)
        assert [(c.name, c.outcome) for c in alone.checks] == [
            ("errorRate", "Pass"),
            ("p99Latency", "Pass"),
            ("errorRateVsStable", "Skipped"),
            ("latencyVsStable", "Skipped"),
        ]
        assert alone.reason.count("not compared with stable") == 1, "one note for both"
        too_little = judge(DEFAULTS, window(3, 0, 10.0), None, None, NOW)
        assert too_little.verdict == "Inconclusive"
        assert too_little.checks == [], "checks run only on a window with enough requests"

    def test_a_healthy_canary_passes_and_the_reason_shows_every_check(self) -> None:
        result = judge(DEFAULTS, window(120, 0, 12.3), window(1080, 0, 11.2), None, NOW)
        assert result.verdict == "Pass"
        assert result.reason.startswith("canary served 120 requests: ")
        for part in ("error rate 0.0% <= 1.0%", "canary p99 12.3 ms <= 500 ms", "1.10x"):
            assert part in result.reason

    class TestNoDataIsNotFailure:
        @pytest.mark.parametrize(("requests", "verdict"), [(19, "Inconclusive"), (20, "Pass")])
        def test_fewer_canary_requests_than_min_requests_hold(
            self, requests: int, verdict: str
        ) -> None:
            result = judge(DEFAULTS, window(requests), window(1000), None, NOW)
            assert result.verdict == verdict
            if verdict == "Inconclusive":
                assert result.reason == "canary served 19 requests, fewer than minRequests 20"

        def test_even_all_errors_hold_below_min_requests(self) -> None:
            assert judge(DEFAULTS, window(19, 19, 9000), None, None, NOW).verdict == "Inconclusive"

        def test_no_canary_request_holds_even_with_min_requests_0(self) -> None:
            result = judge(Analysis(min_requests=0), window(0, p99_ms=None), None, None, NOW)
            assert result.verdict == "Inconclusive"
            assert result.reason == "canary served 0 requests, fewer than minRequests 0"
            assert judge(Analysis(min_requests=0), window(1), None, None, NOW).verdict == "Pass"

        def test_fractional_counts_from_prometheus_are_shown_as_such(self) -> None:
            result = judge(DEFAULTS, window(19.6), None, None, NOW)
            assert result.reason == "canary served 19.6 requests, fewer than minRequests 20"

        def test_a_provider_error_holds(self) -> None:
            result = judge(
                DEFAULTS, None, None, None, NOW, provider_error="Prometheus at http://p unreachable"
            )
            assert result.verdict == "Inconclusive"
            assert result.reason == "no metrics: Prometheus at http://p unreachable"
            assert result.canary is None

        def test_no_canary_window_holds(self) -> None:
            result = judge(DEFAULTS, None, window(1000), None, NOW)
            assert (result.verdict, result.reason) == (
                "Inconclusive",
                "no canary metrics in this window",
            )

        def test_the_first_scrape_of_the_canary_pods_holds(self) -> None:
            first = window(0, p99_ms=None, pods=0, new_pods=2)
            result = judge(DEFAULTS, first, None, None, NOW)
            assert result.verdict == "Inconclusive"
            assert result.reason == "first scrape of 2 canary pods: their window starts now"

    class TestUnhealthyCanaryPodsFail:
        def test_a_pod_problem_fails_whatever_the_numbers(self) -> None:
            problem = "canary pod iris-1 restarted once"
            for canary in (None, window(0, p99_ms=None), window(5), window(1000)):
                result = judge(DEFAULTS, canary, window(1000), problem, NOW)
                assert (result.verdict, result.reason) == ("Fail", problem)

        def test_it_wins_over_a_provider_error(self) -> None:
            problem = "canary pod x stopped being ready"
            result = judge(DEFAULTS, None, None, problem, NOW, provider_error="timeout")
            assert result.verdict == "Fail"

        def test_a_restart_seen_in_the_counters_fails(self) -> None:
            result = judge(DEFAULTS, window(3, restarted_pods=1), window(1000), None, NOW)
            assert (result.verdict, result.reason) == (
                "Fail",
                "1 canary pod restarted within the window",
            )

    class TestAbsoluteChecks:
        @pytest.mark.parametrize(
            ("requests", "errors", "verdict"),
            [(100, 1, "Pass"), (100, 2, "Fail"), (99, 1, "Fail"), (1000, 10, "Pass")],
        )
        def test_error_rate_above_max_error_rate_fails(
            self, requests: int, errors: int, verdict: str
        ) -> None:
            result = judge(DEFAULTS, window(requests, errors), None, None, NOW)
            assert result.verdict == verdict

        def test_the_reason_names_the_error_rate_and_the_limit(self) -> None:
            result = judge(DEFAULTS, window(100, 4), None, None, NOW)
            assert result.reason == "error rate 4.0% > 1.0%"
            # Close to the limit, enough digits to see the difference.
            result = judge(DEFAULTS, window(10000, 104), None, None, NOW)
            assert result.reason == "error rate 1.04% > 1.00%"

        @pytest.mark.parametrize(("p99", "verdict"), [(500.0, "Pass"), (500.1, "Fail")])
        def test_p99_above_max_p99_latency_fails(self, p99: float, verdict: str) -> None:
            assert judge(DEFAULTS, window(100, 0, p99), None, None, NOW).verdict == verdict

        def test_the_reason_names_the_p99_and_the_limit(self) -> None:
            result = judge(DEFAULTS, window(100, 0, 812.4), None, None, NOW)
            assert result.reason == "canary p99 812 ms > 500 ms"

        def test_every_failing_check_is_in_the_reason(self) -> None:
            result = judge(DEFAULTS, window(100, 4, 812.0), None, None, NOW)
            assert result.reason == "error rate 4.0% > 1.0%; canary p99 812 ms > 500 ms"

        def test_without_a_histogram_latency_is_not_checked_and_that_is_said(self) -> None:
            result = judge(DEFAULTS, window(100, 0, None), None, None, NOW)
            assert result.verdict == "Pass"
            assert "no canary latency histogram: latency not checked" in result.reason

    class TestChecksAgainstStable:
        @pytest.mark.parametrize(("canary_p99", "verdict"), [(150.0, "Pass"), (151.0, "Fail")])
        def test_p99_over_max_latency_ratio_times_stables_fails(
            self, canary_p99: float, verdict: str
        ) -> None:
            result = judge(DEFAULTS, window(100, 0, canary_p99), window(1000, 0, 100.0), None, NOW)
            assert result.verdict == verdict
            if verdict == "Fail":
                assert result.reason == "canary p99 151 ms = 1.51x stable's 100 ms > 1.5x"

        @pytest.mark.parametrize(("canary_p99", "verdict"), [(6.0, "Pass"), (6.1, "Fail")])
        def test_within_latency_tolerance_a_higher_ratio_still_passes(
            self, canary_p99: float, verdict: str
        ) -> None:
            # 6x slower than stable's 1 ms, but only 5 ms more: jitter, not a regression.
            result = judge(DEFAULTS, window(100, 0, canary_p99), window(1000, 0, 1.0), None, NOW)
            assert result.verdict == verdict
            if verdict == "Pass":
                assert "but within latencyToleranceMs 5" in result.reason
            strict = Analysis(latency_tolerance_ms=0)
            strict_result = judge(
                strict, window(100, 0, canary_p99), window(1000, 0, 1.0), None, NOW
            )
            assert strict_result.verdict == "Fail"

        @pytest.mark.parametrize(("errors", "verdict"), [(6, "Pass"), (7, "Fail")])
        def test_error_rate_over_stables_plus_the_allowed_increase_fails(
            self, errors: int, verdict: str
        ) -> None:
            lenient = Analysis(max_error_rate=0.5)  # only the relative check can fail
            result = judge(lenient, window(100, errors), window(1000, 50), None, NOW)
            assert result.verdict == verdict
            if verdict == "Fail":
                assert result.reason == "canary error rate 7.0% > stable's 5.0% + 1.0%"

        def test_a_canary_as_bad_as_stable_is_no_worse(self) -> None:
            lenient = Analysis(max_error_rate=0.5)
            assert judge(lenient, window(100, 20), window(1000, 200), None, NOW).verdict == "Pass"

        @pytest.mark.parametrize("stable", [None, window(19, 0, 1.0), window(0, 0, None)])
        def test_is_skipped_without_enough_stable_requests_and_that_is_said(
            self, stable: TrackWindow | None
        ) -> None:
            # 300x stable's p99 and far worse errors than stable: not compared.
            result = judge(Analysis(max_error_rate=0.5), window(100, 30, 300.0), stable, None, NOW)
            assert result.verdict == "Pass"
            assert "not compared with stable" in result.reason

        def test_is_skipped_without_a_stable_p99(self) -> None:
            result = judge(DEFAULTS, window(100, 0, 300.0), window(1000, 0, None), None, NOW)
            assert result.verdict == "Pass"
            assert "no stable latency histogram" in result.reason


class TestCanaryPodHealth:
    @staticmethod
    def pod(
        restarts: int = 0,
        ready: str = "True",
        ready_changed: str = "2026-03-01T12:00:05Z",
        started: str | None = "2026-03-01T12:00:03Z",
        last_ended: str | None = None,
    ) -> dict[str, object]:
        container: dict[str, object] = {
            "name": "server",
            "restartCount": restarts,
            "state": {"running": {"startedAt": started}} if started else {"waiting": {}},
        }
        if last_ended:
            container["lastState"] = {"terminated": {"exitCode": 137, "finishedAt": last_ended}}
        return {
            "metadata": {"name": "iris-abc-1"},
            "status": {
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": ready, "lastTransitionTime": ready_changed},
                ],
                "containerStatuses": [container],
            },
        }

    def test_a_ready_pod_is_healthy(self) -> None:
        assert pod_health(self.pod()) == PodHealth("iris-abc-1")
        assert canary_pod_problem([pod_health(self.pod())], NOW) is None

    def test_restarts_and_when_the_last_one_happened(self) -> None:
        health = pod_health(self.pod(restarts=2, last_ended="2026-03-01T12:00:02Z"))
        assert health.restarts == 2
        assert health.last_restart == datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)

    def test_a_pod_still_starting_is_not_unready(self) -> None:
        # Ready=False since the pod was created, before its container started.
        starting = self.pod(ready="False", ready_changed="2026-03-01T12:00:00Z")
        assert not pod_health(starting).unready
        assert not pod_health(self.pod(ready="False", started=None)).unready

    def test_a_pod_not_ready_since_after_its_container_started_is_unready(self) -> None:
        lost = self.pod(ready="False", ready_changed="2026-03-01T12:01:00Z")
        assert pod_health(lost).unready

    def test_a_pod_not_ready_after_a_restart_is_unready(self) -> None:
        crashing = self.pod(restarts=3, ready="False", ready_changed="2026-03-01T11:00:00Z")
        assert pod_health(crashing).unready

    def test_a_restart_counts_in_the_window_it_happened_in_only(self) -> None:
        pods = [PodHealth("a", restarts=2, last_restart=NOW - timedelta(seconds=3))]
        assert canary_pod_problem(pods, since=NOW - timedelta(seconds=10)) == (
            "canary pod a restarted at 2026-03-01T11:59:57Z (restarted 2 times in all)"
        )
        assert canary_pod_problem(pods, since=NOW) is None  # the next window

    def test_the_problem_names_each_pod_and_what_is_wrong(self) -> None:
        since = NOW - timedelta(seconds=10)
        pods = [
            PodHealth("b", restarts=1, last_restart=NOW),
            PodHealth("a", unready=True),
            PodHealth("c", restarts=5, last_restart=since - timedelta(seconds=1)),
        ]
        assert canary_pod_problem(pods, since) == (
            "canary pod a is not ready; "
            "canary pod b restarted at 2026-03-01T12:00:00Z (restarted once in all)"
        )
        assert canary_pod_problem([], since) is None


# ---------------------------------------------------------------------------------------------
# Properties

counts = st.integers(min_value=0, max_value=10_000)


@st.composite
def pod_windows(draw: st.DrawFn, revision: str = "r1") -> list[PodWindow]:
    bounds = [0.005, 0.01, 0.05, 0.25, 1.0, INF]
    result = []
    for index in range(draw(st.integers(min_value=0, max_value=5))):
        per_bucket = draw(st.lists(counts, min_size=len(bounds), max_size=len(bounds)))
        cumulative = [sum(per_bucket[: i + 1]) for i in range(len(bounds))]
        requests = cumulative[-1]
        errors = draw(st.integers(min_value=0, max_value=requests))
        result.append(
            PodWindow(
                f"pod-{index}",
                revision,
                10.0,
                float(requests),
                float(errors),
                {b: float(c) for b, c in zip(bounds, cumulative, strict=True)},
                False,
            )
        )
    return result


@settings(max_examples=200, deadline=None)
@given(pod_windows(), pod_windows(revision="r0"), st.randoms(use_true_random=False))
def test_the_verdict_never_depends_on_the_order_of_the_pods(
    canary: list[PodWindow], stable: list[PodWindow], shuffler: random.Random
) -> None:
    shuffled = canary + stable
    shuffler.shuffle(shuffled)
    assert judge(
        DEFAULTS, track_window("r1", canary), track_window("r0", stable), None, NOW
    ) == judge(DEFAULTS, track_window("r1", shuffled), track_window("r0", shuffled), None, NOW)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=1000),
    st.floats(min_value=0, max_value=1, exclude_max=True),
    st.floats(min_value=0, max_value=1),
    st.one_of(st.none(), st.floats(min_value=0, max_value=1e5)),
    st.one_of(st.none(), st.builds(window, st.floats(min_value=0, max_value=1e6))),
)
def test_with_healthy_pods_fewer_requests_than_min_requests_is_never_pass_nor_fail(
    min_requests: int,
    share_of_min: float,
    error_share: float,
    p99: float | None,
    stable: TrackWindow | None,
) -> None:
    requests = share_of_min * min_requests  # 0 when minRequests is 0: no request at all
    canary = window(requests, requests * error_share, p99)
    result = judge(Analysis(min_requests=min_requests), canary, stable, None, NOW)
    assert result.verdict == "Inconclusive"


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=1e-5, max_value=30.0), min_size=1, max_size=300),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_a_quantile_lies_within_the_bucket_of_the_observation_at_its_rank(
    latencies: list[float], q: float
) -> None:
    bounds = [*LATENCY_BUCKETS, INF]
    buckets = {b: float(sum(1 for x in latencies if x <= b)) for b in bounds}
    estimate = histogram_quantile(q, buckets)
    assert estimate is not None
    rank = q * len(latencies)
    assume(abs(rank - round(rank)) > 1e-9)  # a rank on a whole count sits between two values
    truth = sorted(latencies)[math.ceil(rank) - 1]
    if truth > LATENCY_BUCKETS[-1]:
        assert estimate == LATENCY_BUCKETS[-1]
        return
    upper_index = next(i for i, b in enumerate(bounds) if truth <= b)
    lower = bounds[upper_index - 1] if upper_index else 0.0
    assert lower <= estimate <= bounds[upper_index]


sample_counts = st.tuples(counts, counts, counts, counts)
Counts = tuple[int, int, int, int]


def plus(a: Counts, b: Counts) -> Counts:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3])


def as_sample(at: float, values: tuple[int, int, int, int]) -> PodSample:
    """(5xx, other answers under 10 ms, over 10 ms, +Inf extra) -> a consistent sample."""
    errors, fast, slow, tail = values
    requests = errors + fast + slow + tail
    return sample("p", at, requests, errors, {0.01: fast, 0.1: fast + slow, INF: requests})


@settings(max_examples=300, deadline=None)
@given(sample_counts, sample_counts)
def test_a_window_is_never_negative_and_never_more_than_the_current_counts(
    a: tuple[int, int, int, int], b: tuple[int, int, int, int]
) -> None:
    before, after = as_sample(0, a), as_sample(1, b)
    result = pod_window(before, after)
    assert 0 <= result.requests <= after.requests
    assert 0 <= result.errors <= min(result.requests, after.errors)
    assert all(0 <= result.buckets[le] <= after.buckets[le] for le in after.buckets)


@settings(max_examples=300, deadline=None)
@given(sample_counts, sample_counts, sample_counts)
def test_windows_without_restart_add_up(
    a: tuple[int, int, int, int], d1: tuple[int, int, int, int], d2: tuple[int, int, int, int]
) -> None:
    first = as_sample(0, a)
    second = as_sample(1, plus(a, d1))
    third = as_sample(2, plus(plus(a, d1), d2))
    one, two, both = pod_window(first, second), pod_window(second, third), pod_window(first, third)
    assert not one.restarted
    assert not two.restarted
    assert not both.restarted
    assert one.requests + two.requests == both.requests
    assert one.errors + two.errors == both.errors
    assert {le: one.buckets[le] + two.buckets[le] for le in both.buckets} == both.buckets


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=20, max_value=10_000),
    st.integers(min_value=0, max_value=10_000),
    st.integers(min_value=1, max_value=500),
    st.floats(min_value=0.1, max_value=2000),
    st.one_of(
        st.none(),
        st.builds(
            window,
            st.floats(min_value=0, max_value=1e4),
            st.just(0),
            st.floats(min_value=0.1, max_value=2000),
        ),
    ),
)
def test_more_errors_or_more_latency_never_turn_a_fail_into_a_pass(
    requests: int, errors: int, more_errors: int, p99: float, stable: TrackWindow | None
) -> None:
    errors = min(errors, requests)
    before = judge(DEFAULTS, window(requests, errors, p99), stable, None, NOW)
    worse_errors = judge(
        DEFAULTS, window(requests, min(requests, errors + more_errors), p99), stable, None, NOW
    )
    slower = judge(DEFAULTS, window(requests, errors, p99 * 1.5 + 10), stable, None, NOW)
    if before.verdict == "Fail":
        assert worse_errors.verdict == "Fail"
        assert slower.verdict == "Fail"
