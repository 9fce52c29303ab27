"""Drift math and verdict (weir_operator.core.drift), against hand-computed windows.

Read as the specification (docs/monitoring.md, section 3): how a bin's count and its reference
share make a PSI, how the servers' samples make a window (summed over pods, reference gauges
the largest), how two cumulative scrapes make one (a reset counts from zero), how a window
becomes status.drift and the Drifting verdict (no data is not drift), and how the verdict
goes into the status with its events."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from weir_operator.core.drift import (
    DRIFTING,
    EPSILON,
    DriftResult,
    Histogram,
    WindowCounts,
    delta,
    judge,
    measurement_failed,
    merge,
    psi,
    samples_of,
    window_from_samples,
    with_drift,
)
from weir_operator.core.reconcile import Measurements, Observed, RevisionState, reconcile
from weir_operator.core.render import revision_of
from weir_operator.core.spec import Monitoring, parse_model_deployment
from weir_operator.core.status import (
    DriftStatus,
    ModelDeploymentStatus,
    RevisionRef,
    find_condition,
    timestamp,
)

NOW = datetime(2026, 12, 1, 9, 30, 0, tzinfo=UTC)
QUARTERS = (0.25, 0.25, 0.25, 0.25)
MONITORING = Monitoring.model_validate(
    {
        "reference": {"uri": "https://m.example.com/iris.reference.json"},
        "drift": {"window": "10m", "threshold": 0.2, "minSamples": 500},
    }
)

shares = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=12).filter(lambda s: sum(s) > 0)


def normalised(values: Sequence[float]) -> tuple[float, ...]:
    total = sum(values)
    return tuple(v / total for v in values)


def scrape(
    rows: float,
    features: Mapping[str, Sequence[float]],
    *,
    expected: Sequence[float] = QUARTERS,
    predictions: Sequence[float] = (),
    prediction_shares: Sequence[float] = (),
    confidence: tuple[float, float] | None = None,  # (mean, the reference's)
    labels: dict[str, str] | None = None,
) -> list[tuple[str, dict[str, str], float]]:
    """The weir_drift_* samples a server exports, by name as docs/monitoring.md has them."""
    common = labels or {"model": "iris", "revision": "r1", "track": "stable"}
    out: list[tuple[str, dict[str, str], float]] = [("weir_drift_rows_total", common, rows)]
    for name, counts in features.items():
        for index, count in enumerate(counts):
            bin_labels = {**common, "feature": name, "bin": str(index)}
            out.append(("weir_drift_feature_rows_total", bin_labels, count))
            out.append(("weir_drift_feature_reference_share", bin_labels, expected[index]))
    for index, count in enumerate(predictions):
        class_labels = {**common, "output": "probabilities", "class": str(index)}
        out.append(("weir_drift_prediction_rows_total", class_labels, count))
        out.append(
            ("weir_drift_prediction_reference_share", class_labels, prediction_shares[index])
        )
    if confidence is not None:
        mean, reference = confidence
        out.append(("weir_drift_confidence_rows_total", {**common, "output": "probabilities", "bin": "9"}, rows))  # fmt: skip
        out.append(("weir_drift_confidence_reference_share", {**common, "output": "probabilities", "bin": "9"}, 1.0))  # fmt: skip
        out.append(("weir_drift_confidence_sum_total", {**common, "output": "probabilities"}, mean * rows))  # fmt: skip
        out.append(("weir_drift_confidence_reference_mean", {**common, "output": "probabilities"}, reference))  # fmt: skip
    return out


def in_distribution(rows: float = 1000) -> WindowCounts:
    quarter = rows / 4
    return window_from_samples(
        scrape(
            rows,
            {f"input[{i}]": [quarter] * 4 for i in range(4)},
            predictions=[rows / 2, rows / 2],
            prediction_shares=[0.5, 0.5],
            confidence=(0.9, 0.9),
        )
    )


def shifted(rows: float = 1000, feature: int = 2) -> WindowCounts:
    """Feature `feature` moved into its top bin (a shift of a few standard deviations)."""
    quarter = rows / 4
    features = {f"input[{i}]": [quarter] * 4 for i in range(4)}
    features[f"input[{feature}]"] = [rows * 0.01, rows * 0.01, rows * 0.03, rows * 0.95]
    return window_from_samples(
        scrape(
            rows,
            features,
            predictions=[rows / 2, rows / 2],
            prediction_shares=[0.5, 0.5],
            confidence=(0.9, 0.9),
        )
    )


class TestPsi:
    def test_is_the_sum_of_each_bins_share_difference_times_its_log_ratio(self) -> None:
        counts, expected = [10, 30, 60], [0.2, 0.3, 0.5]
        want = sum(
            (a - e) * math.log(a / e)
            for a, e in zip([0.1, 0.3, 0.6], expected, strict=True)
        )  # fmt: skip
        assert psi(counts, expected) == pytest.approx(want)

    def test_is_zero_when_the_traffic_has_the_references_shares(self) -> None:
        assert psi([250, 250, 500], [0.25, 0.25, 0.5]) == pytest.approx(0.0, abs=1e-12)

    def test_an_empty_bin_counts_as_epsilon_so_the_score_stays_finite(self) -> None:
        score = psi([0, 100], [0.5, 0.5])
        want = (EPSILON - 0.5) * math.log(EPSILON / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
        assert score == pytest.approx(want)

    def test_a_bin_the_reference_never_saw_expects_epsilon(self) -> None:
        assert psi([50, 50], [1.0, 0.0]) == pytest.approx(
            (0.5 - 1) * math.log(0.5) + (0.5 - EPSILON) * math.log(0.5 / EPSILON)
        )

    def test_no_counts_is_no_drift(self) -> None:
        assert psi([0, 0, 0], [0.2, 0.3, 0.5]) == 0.0

    def test_counts_and_shares_must_have_the_same_bins(self) -> None:
        with pytest.raises(ValueError, match="3 counts against 2 expected"):
            psi([1, 2, 3], [0.5, 0.5])

    @settings(max_examples=200, deadline=None)
    @given(counts=shares, data=st.data())
    def test_is_never_negative_and_is_bounded(self, counts: list[float], data: Any) -> None:
        expected = data.draw(st.lists(st.floats(0, 1), min_size=len(counts), max_size=len(counts)))
        score = psi(counts, expected)
        assert score >= 0
        # Every share is clamped into [EPSILON, 1]: no term exceeds |a - e| * ln(1/EPSILON).
        assert score <= (1 + max(sum(expected), 1)) * math.log(1 / EPSILON) + 1e-9

    @settings(max_examples=200, deadline=None)
    @given(counts=shares, scale=st.floats(1e-3, 1e6))
    def test_is_zero_for_identical_distributions_whatever_the_number_of_rows(
        self, counts: list[float], scale: float
    ) -> None:
        reference = normalised(counts)
        assume(all(s >= EPSILON for s in reference))
        assert psi([c * scale for c in counts], reference) == pytest.approx(0.0, abs=1e-9)

    @settings(max_examples=200, deadline=None)
    @given(a=shares, data=st.data())
    def test_is_symmetric_between_two_distributions_above_epsilon(
        self, a: list[float], data: Any
    ) -> None:
        b = data.draw(st.lists(st.floats(0.01, 1), min_size=len(a), max_size=len(a)))
        left, right = normalised(a), normalised(b)
        assume(all(s >= EPSILON for s in left + right))
        assert psi(left, right) == pytest.approx(psi(right, left), rel=1e-9, abs=1e-12)


class TestWindowFromSamples:
    def test_counters_are_summed_over_pods_and_reference_gauges_taken_once(self) -> None:
        pod_a = scrape(100, {"x[0]": [10, 20, 30, 40]}, labels={"pod": "a"})
        pod_b = scrape(60, {"x[0]": [30, 10, 10, 10]}, labels={"pod": "b"})
        window = window_from_samples(pod_a + pod_b)
        assert window.rows == 160
        assert window.features["x[0]"] == Histogram(
            (40, 30, 40, 50), QUARTERS, ("0", "1", "2", "3")
        )

    def test_a_reference_gauge_is_the_largest_any_pod_exports(self) -> None:
        samples = [
            ("weir_drift_feature_reference_share", {"feature": "x", "bin": "0"}, 0.4),
            ("weir_drift_feature_reference_share", {"feature": "x", "bin": "0"}, 0.6),
        ]
        assert window_from_samples(samples).features["x"].expected == (0.6,)

    def test_a_reference_for_another_model_on_any_pod_is_said(self) -> None:
        matching = [*scrape(10, {"x": [5, 5, 0, 0]}), ("weir_drift_reference_model_match", {}, 1)]
        other = [("weir_drift_reference_model_match", {"pod": "b"}, 0.0)]
        assert window_from_samples(matching).reference_for_model is True
        assert window_from_samples(matching + other).reference_for_model is False
        assert window_from_samples(scrape(10, {"x": [5, 5, 0, 0]})).reference_for_model is None
        assert merge([window_from_samples(matching + other)]).reference_for_model is False

    def test_bins_go_by_index_then_other_last(self) -> None:
        samples = [
            ("weir_drift_feature_rows_total", {"feature": "c", "bin": b}, float(i))
            for i, b in enumerate(["other", "10", "2", "0", "1"])
        ]
        assert window_from_samples(samples).features["c"].bins == ("0", "1", "2", "10", "other")

    def test_a_bin_without_a_reference_share_expects_none_and_the_other_way_round(self) -> None:
        samples = [
            ("weir_drift_prediction_rows_total", {"output": "label", "class": "a"}, 5.0),
            ("weir_drift_prediction_reference_share", {"output": "label", "class": "b"}, 1.0),
        ]
        histogram = window_from_samples(samples).predictions["label"]
        assert (histogram.bins, histogram.counts, histogram.expected) == (
            ("a", "b"),
            (5.0, 0.0),
            (0.0, 1.0),
        )

    def test_other_series_and_created_timestamps_are_ignored(self) -> None:
        samples = [
            ("weir_inference_requests_total", {"model": "iris"}, 99.0),
            ("weir_drift_rows_created", {}, 1.7e9),
            ("weir_drift_rows_total", {}, 7.0),
        ]
        assert window_from_samples(samples) == WindowCounts(rows=7.0)

    def test_names_without_total_as_promql_increases_have_them_are_read_too(self) -> None:
        samples = [
            ("weir_drift_rows", {}, 3.0),
            ("weir_drift_confidence_rows", {"output": "p", "bin": "0"}, 3.0),
            ("weir_drift_confidence_sum", {"output": "p"}, 2.4),
        ]
        window = window_from_samples(samples)
        assert window.rows == 3.0
        assert window.confidence_mean("p") == pytest.approx(0.8)

    def test_every_part_of_a_scrape_lands_in_its_place(self) -> None:
        window = in_distribution(1000)
        assert sorted(window.features) == ["input[0]", "input[1]", "input[2]", "input[3]"]
        assert window.predictions["probabilities"].counts == (500.0, 500.0)
        assert window.confidence_mean("probabilities") == pytest.approx(0.9)
        assert window.confidence_reference_mean == {"probabilities": 0.9}

    def test_samples_of_a_window_make_the_same_window(self) -> None:
        window = shifted()
        assert window_from_samples(samples_of(window)) == window

    def test_merge_sums_windows(self) -> None:
        merged = merge([in_distribution(400), in_distribution(600)])
        assert merged == in_distribution(1000)


class TestDelta:
    def test_is_what_was_counted_between_two_scrapes(self) -> None:
        earlier = window_from_samples(scrape(100, {"x": [10, 20, 30, 40]}, confidence=(0.5, 0.9)))
        later = window_from_samples(scrape(180, {"x": [30, 20, 50, 80]}, confidence=(0.6, 0.9)))
        window = delta(later, earlier)
        assert window.rows == 80
        assert window.features["x"].counts == (20.0, 0.0, 20.0, 40.0)
        assert window.features["x"].expected == QUARTERS
        assert window.confidence_sum["probabilities"] == pytest.approx(0.6 * 180 - 0.5 * 100)

    def test_a_server_that_restarted_counts_from_zero(self) -> None:
        earlier = window_from_samples(scrape(5000, {"x": [1250] * 4}))
        later = window_from_samples(scrape(40, {"x": [10] * 4}))
        assert delta(later, earlier) == later

    def test_one_counter_that_went_down_was_reset(self) -> None:
        earlier = window_from_samples(scrape(100, {"x": [25, 25, 25, 25]}))
        later = window_from_samples(scrape(110, {"x": [5, 30, 30, 45]}))
        assert delta(later, earlier).features["x"].counts == (5.0, 5.0, 5.0, 20.0)

    def test_the_reference_is_the_later_scrapes(self) -> None:
        earlier = window_from_samples(scrape(10, {"x": [1, 2, 3, 4]}, expected=QUARTERS))
        later = window_from_samples(scrape(20, {"x": [2, 4, 6, 8]}, expected=(0.1, 0.2, 0.3, 0.4)))
        assert delta(later, earlier).features["x"].expected == (0.1, 0.2, 0.3, 0.4)

    @settings(max_examples=100, deadline=None)
    @given(
        rows=st.floats(0, 1e9),
        counts=st.lists(st.floats(0, 1e9), min_size=4, max_size=4),
    )
    def test_of_identical_scrapes_is_empty(self, rows: float, counts: list[float]) -> None:
        snapshot = window_from_samples(scrape(rows, {"x": counts}, confidence=(0.7, 0.8)))
        window = delta(snapshot, snapshot)
        assert window.empty
        assert window.features["x"].counts == (0.0, 0.0, 0.0, 0.0)
        assert window.confidence_sum["probabilities"] == 0
        assert judge(window, MONITORING, NOW).status == "Unknown"

    @settings(max_examples=100, deadline=None)
    @given(
        before=st.lists(st.integers(0, 10_000), min_size=4, max_size=4),
        added=st.lists(st.integers(0, 10_000), min_size=4, max_size=4),
    )
    def test_of_growing_counters_is_never_negative_and_adds_up(
        self, before: list[int], added: list[int]
    ) -> None:
        earlier = window_from_samples(scrape(sum(before), {"x": before}))
        after = [b + a for b, a in zip(before, added, strict=True)]
        later = window_from_samples(scrape(sum(after), {"x": after}))
        window = delta(later, earlier)
        assert window.features["x"].counts == tuple(float(a) for a in added)
        assert window.rows == sum(added)


class TestJudge:
    def test_in_distribution_traffic_is_no_drift(self) -> None:
        result = judge(in_distribution(), MONITORING, NOW, "r1")
        assert (result.status, result.reason) == ("False", "NoDrift")
        assert result.message.startswith("no drift: inputs: input[0] PSI 0")
        assert result.drift is not None
        assert result.drift.drifting is False

    def test_a_shifted_feature_is_drift_and_is_named_first_with_its_score(self) -> None:
        result = judge(shifted(feature=2), MONITORING, NOW, "r1")
        assert (result.status, result.reason) == ("True", "DriftDetected")
        drift = result.drift
        assert drift is not None
        assert drift.features[0].name == "input[2]"
        assert drift.features[0].score == pytest.approx(psi([10, 10, 30, 950], QUARTERS), abs=1e-6)
        assert all(f.score < 0.2 for f in drift.features[1:])
        assert result.message.startswith(
            f"input drift: input[2] PSI {drift.features[0].score:.3g}, input[0] 0"
        )
        assert result.message.endswith("(threshold 0.2); predictions: probabilities PSI 0; "
                                       "confidence: probabilities mean 0.900 (reference 0.900, "
                                       "max drop 0.1) over 1000 rows")  # fmt: skip

    def test_status_drift_says_when_what_window_and_revision(self) -> None:
        drift = judge(in_distribution(800), MONITORING, NOW, "r1").drift
        assert drift is not None
        assert (drift.at, drift.window, drift.revision, drift.samples) == (
            "2026-12-01T09:30:00Z",
            "10m",
            "r1",
            800,
        )
        assert drift.prediction is not None
        assert (drift.prediction.output, drift.prediction.score) == ("probabilities", 0)
        assert drift.confidence is not None
        assert (drift.confidence.mean, drift.confidence.reference) == (0.9, 0.9)

    def test_features_are_highest_first(self) -> None:
        samples = scrape(
            1000,
            {"a": [250] * 4, "b": [100, 200, 300, 400], "c": [10, 10, 10, 970]},
        )
        drift = judge(window_from_samples(samples), MONITORING, NOW).drift
        assert drift is not None
        assert [f.name for f in drift.features] == ["c", "b", "a"]

    def test_status_drift_shows_the_64_highest_of_more_features_and_all_are_judged(self) -> None:
        features = {f"x[{i}]": [250.0] * 4 for i in range(80)}
        features["x[79]"] = [10, 10, 10, 970]
        result = judge(window_from_samples(scrape(1000, features)), MONITORING, NOW)
        assert result.status == "True"
        assert result.drift is not None
        assert len(result.drift.features) == 64
        assert result.drift.features[0].name == "x[79]"

    def test_prediction_drift_alone_is_drift(self) -> None:
        samples = scrape(
            1000, {"x": [250] * 4}, predictions=[900, 100], prediction_shares=[0.5, 0.5]
        )
        result = judge(window_from_samples(samples), MONITORING, NOW)
        assert result.status == "True"
        assert result.message.startswith("prediction drift: probabilities PSI 0.")

    def test_a_drop_in_confidence_beyond_max_confidence_drop_is_drift(self) -> None:
        samples = scrape(1000, {"x": [250] * 4}, confidence=(0.75, 0.9))
        result = judge(window_from_samples(samples), MONITORING, NOW)
        assert result.status == "True"
        assert result.message.startswith(
            "confidence drop: probabilities mean 0.750 (reference 0.900, max drop 0.1)"
        )

    def test_a_smaller_drop_in_confidence_is_not(self) -> None:
        samples = scrape(1000, {"x": [250] * 4}, confidence=(0.85, 0.9))
        assert judge(window_from_samples(samples), MONITORING, NOW).status == "False"

    def test_fewer_rows_than_min_samples_give_no_verdict(self) -> None:
        result = judge(shifted(rows=499), MONITORING, NOW, "r1")
        assert (result.status, result.reason) == ("Unknown", "NotEnoughData")
        assert result.message == "499 rows in the 10m window, fewer than minSamples 500: no verdict"
        assert result.drift is not None
        assert (result.drift.samples, result.drift.features, result.drift.drifting) == (
            499,
            [],
            None,
        )

    def test_no_traffic_is_not_drift(self) -> None:
        result = judge(delta(shifted(), shifted()), MONITORING, NOW)
        assert (result.status, result.reason) == ("Unknown", "NotEnoughData")
        assert result.message.startswith("no rows served in the 10m window")

    @settings(max_examples=100, deadline=None)
    @given(
        rows=st.integers(0, 499),
        counts=st.lists(st.integers(0, 10_000), min_size=4, max_size=4),
    )
    def test_under_min_samples_there_is_never_a_verdict_whatever_the_counts(
        self, rows: int, counts: list[int]
    ) -> None:
        window = window_from_samples(scrape(rows, {"x": counts}, confidence=(0.1, 0.9)))
        assert judge(window, MONITORING, NOW).status == "Unknown"

    def test_a_reference_for_another_model_is_judged_and_the_message_says_so(self) -> None:
        window = replace(shifted(), reference_for_model=False)
        result = judge(window, MONITORING, NOW, "r1")
        assert (result.status, result.reason) == ("True", "DriftDetected")
        assert result.message.endswith(
            "over 1000 rows; the reference was made for another model than the one served (its "
            "outputs are compared with that model's): profile this one with weir profile"
        )
        quiet = judge(replace(shifted(rows=10), reference_for_model=False), MONITORING, NOW)
        assert quiet.reason == "NotEnoughData"
        assert "made for another model" in quiet.message
        assert "another model" not in judge(shifted(), MONITORING, NOW).message

    def test_servers_without_a_reference_are_no_reference(self) -> None:
        result = judge(WindowCounts(rows=0), MONITORING, NOW)
        assert (result.status, result.reason) == ("Unknown", "NoReference")

    def test_monitoring_features_picks_the_features_judged(self) -> None:
        picked = MONITORING.model_copy(update={"features": ["input[0]", "input[1]"]})
        result = judge(shifted(feature=2), picked, NOW)
        assert result.drift is not None
        assert [f.name for f in result.drift.features] == ["input[0]", "input[1]"]
        assert result.status == "False"

    def test_the_output_judged_is_the_one_that_drifted_most_unless_named(self) -> None:
        samples = [
            *scrape(1000, {"x": [250] * 4}, predictions=[500, 500], prediction_shares=[0.5, 0.5]),
            ("weir_drift_prediction_rows_total", {"output": "label", "class": "0"}, 1000.0),
            ("weir_drift_prediction_reference_share", {"output": "label", "class": "0"}, 0.5),
            ("weir_drift_prediction_rows_total", {"output": "label", "class": "1"}, 0.0),
            ("weir_drift_prediction_reference_share", {"output": "label", "class": "1"}, 0.5),
        ]
        window = window_from_samples(samples)
        found = judge(window, MONITORING, NOW).drift
        assert found is not None
        assert found.prediction is not None
        assert found.prediction.output == "label"
        named = MONITORING.model_copy(
            update={"drift": MONITORING.drift.model_copy(update={"output": "probabilities"})}
        )
        chosen = judge(window, named, NOW)
        assert chosen.drift is not None
        assert chosen.drift.prediction is not None
        assert chosen.drift.prediction.output == "probabilities"
        assert chosen.status == "False"

    def test_a_failed_measurement_is_unknown_and_leaves_status_drift(self) -> None:
        result = measurement_failed("cannot scrape pod iris-1")
        assert (result.status, result.reason, result.drift) == (
            "Unknown",
            "MeasurementFailed",
            None,
        )


def status_with(drift: DriftStatus | None = None, *conditions: Any) -> ModelDeploymentStatus:
    return ModelDeploymentStatus(
        phase="Healthy",
        stable=RevisionRef(revision="r1", uri="https://m.example.com/iris.onnx"),
        drift=drift,
        conditions=list(conditions),
    )


def step(
    old: ModelDeploymentStatus, result: DriftResult | None, at: datetime = NOW
) -> tuple[ModelDeploymentStatus, list[str]]:
    new, events = with_drift(MONITORING, old, old, result, at, 4)
    return new, [e.reason for e in events]


class TestIntoTheStatus:
    def test_before_the_first_window_drifting_is_unknown(self) -> None:
        new, events = step(status_with(), None)
        drifting = find_condition(new.conditions, DRIFTING)
        assert drifting is not None
        assert (drifting.status, drifting.reason) == ("Unknown", "NotEnoughData")
        assert drifting.message == "measuring the first 10m window"
        assert drifting.observed_generation == 4
        assert events == []

    def test_drift_detected_then_cleared_with_an_event_each(self) -> None:
        new, events = step(status_with(), judge(in_distribution(), MONITORING, NOW))
        assert events == []
        later = NOW + timedelta(minutes=10)
        drifted, events = step(new, judge(shifted(), MONITORING, later), later)
        assert events == ["DriftDetected"]
        drifting = find_condition(drifted.conditions, DRIFTING)
        assert drifting is not None
        assert (drifting.status, drifting.last_transition_time) == ("True", timestamp(later))
        assert drifted.drift is not None
        assert drifted.drift.at == timestamp(later)
        again = later + timedelta(minutes=10)
        still, events = step(drifted, judge(shifted(), MONITORING, again), again)
        assert events == []
        kept = find_condition(still.conditions, DRIFTING)
        assert kept is not None
        assert kept.last_transition_time == timestamp(later)
        end = again + timedelta(minutes=10)
        cleared, events = step(still, judge(in_distribution(), MONITORING, end), end)
        assert events == ["DriftCleared"]
        gone = find_condition(cleared.conditions, DRIFTING)
        assert gone is not None
        assert (gone.status, gone.reason) == ("False", "NoDrift")

    def test_a_quiet_window_between_drift_and_its_end_keeps_the_verdict(self) -> None:
        drifted, events = step(status_with(), judge(shifted(), MONITORING, NOW))
        assert events == ["DriftDetected"]
        quiet, events = step(drifted, judge(shifted(rows=10), MONITORING, NOW))
        assert events == []
        assert quiet.drift is not None
        assert quiet.drift.drifting is True
        drifting = find_condition(quiet.conditions, DRIFTING)
        assert drifting is not None
        assert drifting.status == "Unknown"
        back, events = step(quiet, judge(shifted(), MONITORING, NOW))
        assert events == [], "it never stopped drifting as far as anyone knows"
        _, events = step(back, judge(in_distribution(), MONITORING, NOW))
        assert events == ["DriftCleared"]

    def test_a_failed_measurement_keeps_status_drift(self) -> None:
        measured, _ = step(status_with(), judge(in_distribution(), MONITORING, NOW))
        failed, events = step(measured, measurement_failed("cannot scrape pod iris-1"))
        assert failed.drift == measured.drift
        drifting = find_condition(failed.conditions, DRIFTING)
        assert drifting is not None
        assert (drifting.status, drifting.reason) == ("Unknown", "MeasurementFailed")
        assert events == []

    def test_nothing_measured_changes_nothing(self) -> None:
        measured, _ = step(status_with(), judge(shifted(), MONITORING, NOW))
        assert step(measured, None) == (measured, [])

    def test_without_a_reference_neither_status_drift_nor_drifting_is_there(self) -> None:
        measured, _ = step(status_with(), judge(shifted(), MONITORING, NOW))
        new, events = with_drift(None, measured, measured, None, NOW, 5)
        assert new.drift is None
        assert find_condition(new.conditions, DRIFTING) is None
        assert events == []


def deployment(**spec: Any) -> Any:
    return parse_model_deployment(
        {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ml", "generation": 2},
            "spec": {"model": {"uri": "https://m.example.com/iris.onnx"}, **spec},
        }
    )


class TestReconcile:
    def test_the_drift_measured_goes_into_the_status_with_its_events(self) -> None:
        md = deployment(monitoring=MONITORING.to_manifest())
        revision = revision_of(md.spec)
        served = RevisionState(revision, f"iris-{revision[:10]}", 1, 1, 1)
        observed = Observed({revision: served}, frozenset({("Deployment", served.name)}))
        first = reconcile(md, ModelDeploymentStatus(), observed, NOW)
        drifting = find_condition(first.status.conditions, DRIFTING)
        assert drifting is not None
        assert drifting.status == "Unknown"
        measured = Measurements(drift=judge(shifted(), MONITORING, NOW, revision))
        plan = reconcile(md, first.status, observed, NOW, measured=measured)
        drifting = find_condition(plan.status.conditions, DRIFTING)
        assert drifting is not None
        assert (drifting.status, drifting.observed_generation) == ("True", 2)
        assert plan.status.drift is not None
        assert plan.status.drift.features[0].name == "input[2]"
        detected = [e for e in plan.events if e.reason == "DriftDetected"]
        assert [e.type for e in detected] == ["Warning"]
        assert detected[0].message.startswith("input drift: input[2] PSI")
        # The rollout's own conditions are untouched, and the next reconcile keeps Drifting.
        assert {c.type for c in plan.status.conditions} >= {"Ready", "Progressing", DRIFTING}
        again = reconcile(md, plan.status, observed, NOW + timedelta(seconds=5))
        assert find_condition(again.status.conditions, DRIFTING) == drifting
        assert not [e for e in again.events if e.reason.startswith("Drift")]
