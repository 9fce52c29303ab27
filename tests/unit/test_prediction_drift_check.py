"""The predictionDrift check and the prediction counts it reads (core/checks/prediction_drift.py,
the predictions part of core/analysis.py): a server's weir_drift_prediction_rows_total counters
(with a monitoring reference) become per-track windows like every other counter, and the
canary's mix of predicted classes is judged against the stable's in the same window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weir_operator.core.analysis import (
    INF,
    PREDICTION_SAMPLE,
    PodSample,
    TrackWindow,
    parse_scrape,
    pod_window,
    track_window,
)
from weir_operator.core.checks import CHECKS
from weir_operator.core.checks.prediction_drift import PredictionDriftCheck, prediction_psi
from weir_operator.core.drift import psi
from weir_operator.core.spec import Analysis, SpecError, parse_model_deployment
from weir_operator.core.verdict import judge
from weir_server import monitor
from weir_server.metrics import ServerMetrics

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CHECK = PredictionDriftCheck()
AT_MOST_02 = Analysis(max_prediction_drift=0.2, min_requests=20)


def predictions(output: str = "probabilities", **rows: float) -> dict[tuple[str, str], float]:
    """Rows by (output, class), classes given as c0=..., c1=..."""
    return {(output, name.removeprefix("c")): value for name, value in rows.items()}


def track(revision: str, requests: float = 500, **rows: float) -> TrackWindow:
    return TrackWindow(
        revision, requests, 0, 10.0, pods=1, seconds=10, predictions=predictions(**rows)
    )


def exposition(**rows: float) -> str:
    """A monitored server's /metrics: its request metrics and its predicted classes."""
    metrics = ServerMetrics("iris", "7", "r1", "canary")
    metrics.observe(200, 0.01)
    text = metrics.exposition()[0].decode()
    labels = 'model="iris",version="7",revision="r1",track="canary",output="probabilities"'
    lines = [f"# TYPE {monitor.PREDICTION_ROWS} counter"] + [
        f'{PREDICTION_SAMPLE}{{{labels},class="{name.removeprefix("c")}"}} {value}'
        for name, value in rows.items()
    ]
    return text + "\n".join(lines) + "\n"


def sample(at: float, **rows: float) -> PodSample:
    return PodSample("c-0", "r1", at, 100, 0, {INF: 100}, predictions=predictions(**rows))


class TestPredictionCountsInAScrape:
    def test_are_the_monitors_own_series(self) -> None:
        assert f"{monitor.PREDICTION_ROWS}_total" == PREDICTION_SAMPLE

    def test_are_read_by_output_and_class(self) -> None:
        found = parse_scrape(exposition(c0=3, c1=40, other=1), pod="c-0", taken_at=1.0)
        assert found.predictions == {
            ("probabilities", "0"): 3,
            ("probabilities", "1"): 40,
            ("probabilities", "other"): 1,
        }

    def test_a_server_without_a_reference_has_none(self) -> None:
        assert parse_scrape(exposition(), pod="c-0", taken_at=1.0).predictions == {}

    def test_a_window_is_the_difference_of_two_scrapes(self) -> None:
        window = pod_window(sample(0, c0=10, c1=5), sample(10, c0=30, c1=5, c2=7))
        assert window.predictions == predictions(c0=20, c1=0, c2=7)
        assert not window.restarted

    def test_counts_that_go_down_are_a_restarted_server(self) -> None:
        window = pod_window(sample(0, c0=10, c1=5), sample(10, c0=4, c1=6))
        assert window.restarted
        assert window.predictions == predictions(c0=4, c1=6)

    def test_pods_of_a_revision_add_up(self) -> None:
        one = pod_window(sample(0, c0=0), sample(10, c0=10, c1=1))
        other = pod_window(
            PodSample("c-1", "r1", 0, 0, 0, {INF: 0}),
            PodSample("c-1", "r1", 10, 9, 0, {INF: 9}, predictions=predictions(c0=5, c1=4)),
        )
        assert track_window("r1", [one, other]).predictions == predictions(c0=15, c1=5)


class TestTheCheck:
    def test_is_run_only_when_max_prediction_drift_is_set(self) -> None:
        assert any(isinstance(c, PredictionDriftCheck) for c in CHECKS)
        assert not CHECK.applies(Analysis())
        assert CHECK.applies(AT_MOST_02)

    def test_the_same_mix_of_classes_passes(self) -> None:
        outcome = CHECK.evaluate(
            AT_MOST_02, track("c", c0=52, c1=98, c2=50), track("s", c0=200, c1=400, c2=200)
        )
        assert outcome.outcome == "Pass", outcome.message
        assert outcome.message.startswith("predictions of probabilities: PSI ")
        assert "<= 0.2 (200 canary rows, 800 stable rows)" in outcome.message

    def test_another_mix_fails_with_the_score_and_both_counts(self) -> None:
        canary, stable = track("c", c0=190, c1=5, c2=5), track("s", c0=10, c1=780, c2=10)
        outcome = CHECK.evaluate(AT_MOST_02, canary, stable)
        assert outcome.outcome == "Fail"
        score = psi([190, 5, 5], [10 / 800, 780 / 800, 10 / 800])
        assert outcome.message == (
            f"predictions of probabilities: PSI {score:.3g} against the stable's > 0.2 "
            "(200 canary rows, 800 stable rows)"
        )

    def test_a_class_only_one_track_predicts_counts_zero_on_the_other(self) -> None:
        assert prediction_psi({"0": 100}, {"1": 100}) == pytest.approx(
            psi([100, 0], [0, 1]), rel=1e-12
        )

    def test_the_output_that_differs_most_is_judged(self) -> None:
        canary = track("c", c0=100, c1=100)
        stable = track("s", c0=100, c1=100)
        labels = {("label", "0"): 200.0, ("label", "other"): 0.0}
        canary = TrackWindow("c", 200, 0, 1.0, predictions={**canary.predictions, **labels})
        stable = TrackWindow(
            "s",
            200,
            0,
            1.0,
            predictions={**stable.predictions, ("label", "0"): 20.0, ("label", "other"): 180.0},
        )
        outcome = CHECK.evaluate(AT_MOST_02, canary, stable)
        assert outcome.outcome == "Fail"
        assert outcome.message.startswith("predictions of label: PSI ")

    def test_a_canary_that_counts_no_predictions_is_skipped(self) -> None:
        outcome = CHECK.evaluate(AT_MOST_02, track("c"), track("s", c0=100))
        assert (outcome.outcome, outcome.message) == (
            "Skipped",
            "the canary's servers count no predictions (served without a monitoring reference)",
        )

    def test_a_stable_that_counts_none_is_skipped(self) -> None:
        assert CHECK.evaluate(AT_MOST_02, track("c", c0=100), track("s")).outcome == "Skipped"
        assert CHECK.evaluate(AT_MOST_02, track("c", c0=100), None).outcome == "Skipped"

    def test_too_few_rows_on_either_track_is_inconclusive(self) -> None:
        few = CHECK.evaluate(AT_MOST_02, track("c", c0=19), track("s", c0=500))
        assert few.outcome == "Inconclusive"
        assert "fewer than minRequests 20 predicted rows" in few.message
        assert (
            CHECK.evaluate(AT_MOST_02, track("c", c0=100), track("s", c1=19)).outcome
            == "Inconclusive"
        )

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(1, 10_000), min_size=1, max_size=12), st.integers(1, 50))
    def test_a_canary_with_the_stables_shares_always_passes(
        self, rows: list[int], times: int
    ) -> None:
        stable = {f"c{i}": float(r * times) for i, r in enumerate(rows)}
        canary = {f"c{i}": float(r) for i, r in enumerate(rows)}
        analysis = Analysis(max_prediction_drift=0.0, min_requests=1)
        outcome = CHECK.evaluate(analysis, track("c", **canary), track("s", **stable))
        assert outcome.outcome == "Pass", outcome.message


class TestInTheVerdict:
    def test_a_canary_that_predicts_another_mix_fails_the_window(self) -> None:
        result = judge(AT_MOST_02, track("c", c0=200), track("s", c1=800), None, NOW)
        assert result.verdict == "Fail"
        assert "predictions of probabilities: PSI " in result.reason
        (check,) = [c for c in result.checks if c.name == "predictionDrift"]
        assert check.outcome == "Fail"


class TestTheSpec:
    def manifest(self, **spec: object) -> dict[str, object]:
        return {
            "apiVersion": "serving.weir.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "iris"},
            "spec": {
                "model": {"uri": "https://models.example.com/iris.onnx"},
                "rollout": {"analysis": {"maxPredictionDrift": 0.2}},
                **spec,
            },
        }

    def test_max_prediction_drift_needs_a_monitoring_reference(self) -> None:
        with pytest.raises(SpecError) as refused:
            parse_model_deployment(self.manifest())
        assert refused.value.problems == [
            "spec.rollout.analysis.maxPredictionDrift: needs spec.monitoring.reference: the "
            "servers count their predictions only against a reference (weir profile)"
        ]

    def test_with_a_reference_it_is_the_checks_limit(self) -> None:
        reference = {"reference": {"uri": "https://models.example.com/iris.reference.json"}}
        md = parse_model_deployment(self.manifest(monitoring=reference))
        assert md.spec.rollout.analysis.max_prediction_drift == 0.2
