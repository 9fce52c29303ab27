"""The drift scores PromQL computes are Weir's own.

The chart writes the PSI of docs/monitoring.md once (templates/_drift.tpl) and records it
(weir:drift_*); its alerts and the dashboard read the recorded series. Here the very
expressions of the rendered rules are evaluated by a real Prometheus over the real servers'
counters, and, at the same evaluation time, the per-bin increases and the reference shares
they are made from are queried, turned into Weir's WindowCounts (core.drift.window_from_samples,
as the prometheus provider does) and scored by core.drift.psi: the two agree within 1e-6, per
feature, for the predicted classes and for the confidence bins, and the mean confidence too.

The provider's own drift window (`PrometheusProvider.drift_window`) is checked against the same
Prometheus: it finds the stable's features with the reference's bins and shares."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.prometheus.conftest import DRIFT_MIN_SAMPLES, DRIFT_WINDOW, NAME, NAMESPACE, Story
from weir_operator.core import drift
from weir_operator.core.drift import Histogram, Sample, WindowCounts, window_from_samples
from weir_operator.core.spec import parse_model_deployment
from weir_operator.providers.base import ProviderError, RevisionTarget
from weir_operator.providers.prometheus import PrometheusProvider

TOLERANCE = 1e-6
BY = "namespace, model, revision"


def recorded_expr(live_rule: dict[str, Any], record: str) -> str:
    [expr] = [
        r["expr"]
        for g in live_rule["spec"]["groups"]
        for r in g["rules"]
        if r.get("record") == record
    ]
    return str(expr)


def window_at(story: Story, revision: str, at: float) -> WindowCounts:
    """The revision's counts over DRIFT_WINDOW ending at `at`, as Weir reads them: the increase
    of every bin's counter (summed over pods) and the reference gauges, as samples."""
    selector = f'{{namespace="{NAMESPACE}", revision="{revision}"}}'
    queries = {
        drift.ROWS: f"sum(increase({drift.ROWS}{selector}[{DRIFT_WINDOW}]))",
        drift.FEATURE_ROWS: f"sum by (feature, bin) (increase({drift.FEATURE_ROWS}{selector}[{DRIFT_WINDOW}]))",
        drift.FEATURE_SHARE: f"max by (feature, bin) ({drift.FEATURE_SHARE}{selector})",
        drift.PREDICTION_ROWS: f"sum by (output, class) (increase({drift.PREDICTION_ROWS}{selector}[{DRIFT_WINDOW}]))",
        drift.PREDICTION_SHARE: f"max by (output, class) ({drift.PREDICTION_SHARE}{selector})",
        drift.CONFIDENCE_ROWS: f"sum by (output, bin) (increase({drift.CONFIDENCE_ROWS}{selector}[{DRIFT_WINDOW}]))",
        drift.CONFIDENCE_SHARE: f"max by (output, bin) ({drift.CONFIDENCE_SHARE}{selector})",
        drift.CONFIDENCE_SUM: f"sum by (output) (increase({drift.CONFIDENCE_SUM}{selector}[{DRIFT_WINDOW}]))",
        drift.CONFIDENCE_MEAN: f"max by (output) ({drift.CONFIDENCE_MEAN}{selector})",
    }
    samples: list[Sample] = [
        (metric, item["metric"], float(item["value"][1]))
        for metric, query in queries.items()
        for item in story.prometheus.query(query, at)
    ]
    return window_from_samples(samples)


def promql_scores(story: Story, expr: str, key: str, revision: str, at: float) -> dict[str, float]:
    """A recorded rule's expression evaluated at `at`, for one revision, by its `key` label."""
    found = story.prometheus.query(expr, at)
    return {
        item["metric"][key]: float(item["value"][1])
        for item in found
        if item["metric"]["revision"] == revision and item["metric"]["namespace"] == NAMESPACE
    }


@pytest.fixture(scope="module")
def measured(story: Story) -> tuple[str, float, WindowCounts]:
    """(the stable revision, an evaluation time with a full window of its traffic behind it,
    the window at that time)."""
    revision = story.stable_revision

    def full_window() -> tuple[float, WindowCounts] | None:
        at = time.time() - 2  # scrapes before this are all stored
        window = window_at(story, revision, at)
        return (at, window) if window.rows >= 5 * DRIFT_MIN_SAMPLES else None

    at, window = story.prometheus.eventually(
        full_window, 60, f"{5 * DRIFT_MIN_SAMPLES} rows of {revision} in a {DRIFT_WINDOW} window"
    )
    return revision, at, window


def expected_shares(story: Story) -> dict[str, tuple[float, ...]]:
    reference = json.loads(story.versions["2"].reference.read_text())
    return {f["name"]: tuple(f["shares"]) for f in reference["features"]}


class TestTheRecordedPsi:
    def test_of_every_input_feature_equals_weirs_own(
        self, story: Story, live_rule: dict[str, Any], measured: tuple[str, float, WindowCounts]
    ) -> None:
        revision, at, window = measured
        expr = recorded_expr(live_rule, "weir:drift_feature_psi")
        promql = promql_scores(story, expr, "feature", revision, at)
        weir = {name: drift.psi(h.counts, h.expected) for name, h in window.features.items()}
        assert set(promql) == set(weir) == set(expected_shares(story)), (promql, weir)
        for feature, score in weir.items():
            assert promql[feature] == pytest.approx(score, abs=TOLERANCE), feature

    def test_of_the_predictions_and_the_confidence_bins_equals_weirs_own(
        self, story: Story, live_rule: dict[str, Any], measured: tuple[str, float, WindowCounts]
    ) -> None:
        revision, at, window = measured
        for record, histograms in (
            ("weir:drift_prediction_psi", window.predictions),
            ("weir:drift_confidence_psi", window.confidence_bins),
        ):
            promql = promql_scores(story, recorded_expr(live_rule, record), "output", revision, at)
            weir = {name: h.score for name, h in histograms.items()}
            assert weir, record
            assert set(promql) == set(weir), (record, promql, weir)
            for output, score in weir.items():
                assert promql[output] == pytest.approx(score, abs=TOLERANCE), (record, output)

    def test_mean_confidence_equals_weirs_own(
        self, story: Story, live_rule: dict[str, Any], measured: tuple[str, float, WindowCounts]
    ) -> None:
        revision, at, window = measured
        expr = recorded_expr(live_rule, "weir:drift_confidence_mean")
        promql = promql_scores(story, expr, "output", revision, at)
        weir = {o: window.confidence_mean(o) for o in window.confidence_bins}
        assert weir
        assert set(promql) == set(weir)
        for output, mean in weir.items():
            assert mean is not None
            assert promql[output] == pytest.approx(mean, abs=TOLERANCE)

    def test_is_low_for_traffic_drawn_like_the_training_data(
        self, measured: tuple[str, float, WindowCounts]
    ) -> None:
        """The comparison above is of real scores, not of zeros or of noise at the limits."""
        _, _, window = measured
        scores = [h.score for h in window.features.values()]
        assert all(0 < s < 0.1 for s in scores), scores

    def test_is_recorded_by_the_rules_prometheus_evaluates(
        self, story: Story, measured: tuple[str, float, WindowCounts]
    ) -> None:
        revision, _, _ = measured
        for record in (
            "weir:drift_feature_psi",
            "weir:drift_prediction_psi",
            "weir:drift_rows:increase",
        ):
            found = story.prometheus.query(f'{record}{{revision="{revision}"}}')
            assert found, f"{record} is not recorded"
        unhealthy = [
            (r["name"], r.get("lastError"))
            for g in story.prometheus.rules()
            for r in g["rules"]
            if r.get("health") != "ok"
        ]
        assert not unhealthy, unhealthy


def histogram_shares(histogram: Histogram) -> tuple[float, ...]:
    return tuple(round(e, 12) for e in histogram.expected)


class TestTheProvidersDriftWindow:
    async def test_has_the_stables_features_with_the_references_bins_and_shares(
        self, story: Story, measured: tuple[str, float, WindowCounts]
    ) -> None:
        revision, _, _ = measured
        md = parse_model_deployment(story.run.get(NAME))
        async with httpx.AsyncClient() as client:
            window = await PrometheusProvider(client).drift_window(
                md, RevisionTarget(revision), 30.0
            )
        assert window is not None
        assert window.has_reference
        assert window.rows >= DRIFT_MIN_SAMPLES
        shares = expected_shares(story)
        assert set(window.features) == set(shares)
        for name, histogram in window.features.items():
            assert histogram_shares(histogram) == tuple(round(s, 12) for s in shares[name])
            # Every row falls in one bin of every feature (each counter's increase is
            # extrapolated on its own, so the sums agree closely, not exactly).
            assert histogram.total == pytest.approx(window.rows, rel=0.02), name
        assert window.predictions
        assert window.confidence_bins
        assert window.confidence_sum

    async def test_of_a_revision_prometheus_never_saw_is_empty(self, story: Story) -> None:
        md = parse_model_deployment(story.run.get(NAME))
        async with httpx.AsyncClient() as client:
            window = await PrometheusProvider(client).drift_window(
                md, RevisionTarget("0000000000"), 30.0
            )
        assert window is not None
        assert (window.rows, window.has_reference) == (0.0, False)

    async def test_fails_with_why_when_prometheus_cannot_answer(self, story: Story) -> None:
        document = story.run.get(NAME)
        provider = document["spec"]["rollout"]["analysis"]["provider"]["prometheus"]
        provider["url"] = "http://127.0.0.1:9"  # nothing listens on the discard port
        md = parse_model_deployment(document)
        async with httpx.AsyncClient() as client:
            with pytest.raises(ProviderError, match="unreachable"):
                await PrometheusProvider(client).drift_window(md, RevisionTarget("abc"), 30.0)
