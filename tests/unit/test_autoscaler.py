"""Weir's autoscaler decision (metric concurrency or rps), as a specification: always within
bounds, monotone in load, up at once, down only after a full scaleDownDelay of lower load, no
flapping under steady noisy load, nothing done without data; and the load it reads."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weir_operator.core.analysis import PodSample, PodWindow, parse_scrape, pod_window
from weir_operator.core.autoscaling import Load, Policy, observed_load, recommend, scale_decision

WINDOW = 60.0
policies = st.builds(
    lambda low, extra, target: Policy(low, low + extra, "concurrency", target, WINDOW),
    st.integers(1, 10),
    st.integers(0, 20),
    st.floats(0.5, 50),
)
loads = st.floats(0, 10_000, allow_nan=False)
histories = st.lists(st.tuples(st.floats(0, 200), st.integers(1, 40)), max_size=20).map(
    lambda h: tuple(sorted(h))
)


def load(value: float) -> Load:
    return Load(value, pods=1, seconds=2.0)


class TestBounds:
    @given(policies, st.integers(0, 100), st.one_of(st.none(), loads), histories, st.floats(0, 400))
    def test_the_count_is_always_within_min_and_max(
        self, policy: Policy, current: int, value: float | None, history: tuple, now: float
    ) -> None:
        decision = scale_decision(
            policy, current, None if value is None else load(value), history, now
        )
        assert policy.min_replicas <= decision.replicas <= policy.max_replicas

    def test_no_load_is_the_minimum_and_huge_load_the_maximum(self) -> None:
        policy = Policy(2, 8, "rps", 10, WINDOW)
        assert recommend(policy, 0) == 2
        assert recommend(policy, 1e9) == 8
        assert recommend(policy, 30) == 3
        assert recommend(policy, 30.000000001) == 3  # float noise adds no server
        assert recommend(policy, 31) == 4


class TestMonotone:
    @given(policies, st.integers(1, 40), loads, loads, histories, st.floats(0, 400))
    def test_more_load_never_gives_fewer_servers(
        self, policy: Policy, current: int, a: float, b: float, history: tuple, now: float
    ) -> None:
        low, high = sorted((a, b))
        history = tuple((min(at, now), n) for at, n in history)
        fewer = scale_decision(policy, current, load(low), history, now).replicas
        more = scale_decision(policy, current, load(high), history, now).replicas
        assert fewer <= more


class TestUpAndDown:
    def test_scales_up_at_once(self) -> None:
        policy = Policy(1, 10, "concurrency", 4, WINDOW)
        decision = scale_decision(policy, 1, load(17), (), now=0)
        assert decision.replicas == 5
        assert "scaling up" in decision.reason

    def test_scales_down_only_after_a_whole_window_of_lower_load(self) -> None:
        policy = Policy(1, 10, "concurrency", 4, WINDOW)
        history: tuple = ()
        current, seen = 5, []
        for second in range(0, 130, 5):  # load drops to 4 (one server) at t=0
            decision = scale_decision(policy, current, load(4), history, float(second))
            history, current = decision.history, decision.replicas
            seen.append((second, current))
        assert all(n == 5 for t, n in seen if t < WINDOW)
        assert next(t for t, n in seen if n == 1) == WINDOW

    def test_a_high_recommendation_inside_the_window_holds_the_count(self) -> None:
        policy = Policy(1, 10, "rps", 10, WINDOW)
        history = ((0.0, 3), (50.0, 6), (100.0, 2))
        decision = scale_decision(policy, 6, load(10), history, now=105.0)
        assert decision.replicas == 6  # 6 was recommended 55 s ago, within the 60 s window

    def test_a_load_that_misses_servers_can_add_servers_but_never_remove_any(self) -> None:
        policy = Policy(1, 10, "rps", 10, WINDOW)
        history = ((0.0, 5),)  # a whole window ago: with the full load known, 3 would do now
        assert (
            scale_decision(policy, 5, Load(30, pods=2, seconds=2.0), history, now=100.0).replicas
            == 3
        )
        partial = Load(30, pods=2, seconds=2.0, unmeasured=1)  # a third server not measured
        held = scale_decision(policy, 5, partial, history, now=100.0)
        assert held.replicas == 5
        assert held.recommended is None
        assert held.history == ()  # not remembered: it cannot count toward a scale-down
        assert held.reason.endswith("1 more not measured: keeping the count")
        up = scale_decision(policy, 2, partial, (), now=100.0)
        assert (up.replicas, up.recommended) == (3, 3)
        assert up.reason.endswith("scaling up")

    @settings(max_examples=200)
    @given(
        st.floats(2, 200),
        st.floats(0, 0.3),
        st.lists(st.floats(-1, 1), min_size=30, max_size=120),
    )
    def test_steady_load_with_noise_does_not_flap(
        self, level: float, noise: float, draws: list[float]
    ) -> None:
        """Load wanders within level*(1±noise) and touches its top at least once every 10 s
        (well inside the 60 s window): the count only ever goes up."""
        policy = Policy(1, 100, "concurrency", 4, WINDOW)
        history: tuple = ()
        current, counts = 1, []
        for index, draw in enumerate(draws):
            value = level * (1 + noise) if index % 5 == 0 else level * (1 + noise * draw)
            decision = scale_decision(policy, current, load(value), history, now=2.0 * index)
            history, current = decision.history, decision.replicas
            counts.append(current)
        assert counts == sorted(counts)

    @given(policies, st.integers(0, 100), histories, st.floats(0, 400))
    def test_nothing_happens_without_data(
        self, policy: Policy, current: int, history: tuple, now: float
    ) -> None:
        decision = scale_decision(policy, current, None, history, now)
        assert decision.replicas == policy.clamp(current)
        assert decision.recommended is None
        assert len(decision.history) <= len(history)


def sample(pod: str, at: float, requests: float, busy: float) -> PodSample:
    return PodSample(pod, "r1", at, requests, 0.0, {math.inf: requests}, busy)


class TestObservedLoad:
    def test_rps_is_requests_over_the_window_and_concurrency_the_busy_share(self) -> None:
        windows = [
            pod_window(sample("a", 0, 100, 5.0), sample("a", 2, 140, 9.0)),  # 20 rps, 2 in flight
            pod_window(sample("b", 0, 0, 0.0), sample("b", 2, 10, 1.0)),  # 5 rps, 0.5 in flight
        ]
        rps = observed_load("rps", windows)
        concurrency = observed_load("concurrency", windows)
        assert rps is not None
        assert concurrency is not None
        assert rps.value == pytest.approx(25)
        assert concurrency.value == pytest.approx(2.5)
        assert rps.pods == 2

    def test_no_window_is_no_load(self) -> None:
        assert observed_load("rps", []) is None
        empty = PodWindow("a", "r1", 0.0, 0, 0, {}, restarted=False)
        assert observed_load("concurrency", [empty]) is None

    def test_the_busy_seconds_come_from_the_latency_histograms_sum(self) -> None:
        text = "\n".join(
            [
                "# TYPE weir_inference_requests counter",
                'weir_inference_requests_total{revision="r1",code="200"} 10',
                "# TYPE weir_inference_request_duration_seconds histogram",
                'weir_inference_request_duration_seconds_bucket{revision="r1",le="+Inf"} 10',
                'weir_inference_request_duration_seconds_sum{revision="r1"} 1.25',
                'weir_inference_request_duration_seconds_count{revision="r1"} 10',
            ]
        )
        assert parse_scrape(text, pod="a", taken_at=0).busy == pytest.approx(1.25)
