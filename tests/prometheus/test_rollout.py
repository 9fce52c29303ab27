"""Rollouts analysed by the `prometheus` metrics provider against a real Prometheus, end to
end in `weir run`: every analysis is three PromQL queries per revision (the provider's default
templates) over series that Prometheus scraped from the real servers, labelled as the chart's
PodMonitor labels them. A good version is promoted through its steps with no failed client
request; a version that errors is rolled back by its analyses, within seconds of getting
traffic. Nothing here is a stand-in (tests/server/test_prometheus_provider.py has those)."""

from __future__ import annotations

import time
from typing import Any

from tests.prometheus.conftest import NAME, Story
from weir_operator.core.spec import parse_model_deployment
from weir_operator.providers.prometheus import queries_for


def analyses_of(story: Story, revision: str) -> list[dict[str, Any]]:
    """Every distinct analysis of the canary `revision` the statuses showed: while it was the
    canary, and the last one, which the status that ends its rollout carries."""
    seen: dict[str, dict[str, Any]] = {}
    for _, status in story.exporter.statuses:
        result = status.get("lastAnalysis")
        canary = status.get("canary") or {}
        history = status.get("history") or [{}]
        if result and (
            canary.get("revision") == revision
            or (not canary and history[0].get("revision") == revision)
        ):
            seen.setdefault(result["at"], result)
    return list(seen.values())


def first_weighted(story: Story, revision: str) -> float:
    """When the canary `revision` first had traffic (time.monotonic())."""
    for at, status in story.exporter.statuses:
        canary = status.get("canary") or {}
        if canary.get("revision") == revision and canary.get("weight", 0) > 0:
            return at
    raise AssertionError(f"revision {revision} never had traffic")


def provider_queries(story: Story, revision: str) -> dict[str, str]:
    """The PromQL the provider asks for `revision` (what weir run's analyses sent)."""
    md = parse_model_deployment(story.run.get(NAME))
    return queries_for(md, revision)


class TestAGoodVersion:
    def test_is_promoted_through_every_step_by_analyses_that_pass(self, story: Story) -> None:
        status = story.promoted
        promoted = status["history"][0]
        assert (promoted["outcome"], promoted["version"]) == ("Promoted", "2")
        assert status["stable"]["revision"] == story.revisions["2"]
        analyses = analyses_of(story, story.revisions["2"])
        assert analyses, "no analysis of the canary was recorded"
        assert {a["verdict"] for a in analyses} <= {"Pass", "Inconclusive"}
        passed = [a for a in analyses if a["verdict"] == "Pass"]
        assert passed, analyses
        # Each passing window was measured from Prometheus: requests of the canary in the
        # analysis interval (an extrapolated increase(), so not always a whole number).
        assert all(a["canary"]["requests"] >= 10 for a in passed), passed
        # ... and so were both tracks' predicted classes (the predictionDrift check's PromQL):
        # the same mix as the stable's, so it passed, never Skipped for want of counts.
        drift = [c for a in passed for c in a["checks"] if c["name"] == "predictionDrift"]
        assert drift, passed
        assert {c["outcome"] for c in drift} == {"Pass"}, drift
        assert all("predictions of probabilities: PSI " in c["message"] for c in drift), drift

    def test_fails_no_client_request(self, story: Story) -> None:
        since, until = story.marks["v2 applied"], story.marks["v2 promoted"]
        answers = [code for at, code in story.traffic.answers if since <= at <= until]
        assert answers, "no traffic during the rollout"
        assert all(code == 200 for code in answers), answers.count(200)

    def test_was_measured_with_the_providers_own_queries(self, story: Story) -> None:
        """The default templates select the labels Prometheus gave the servers' series: asked
        over the time the canary served, the requests and p99 queries answer numbers (not an
        empty result, which the analysis reads as no data); the errors query answers nothing,
        which it reads as 0: this version never answered a 5xx."""
        queries = provider_queries(story, story.revisions["2"])
        end = time.time()
        for name in ("requests", "p99"):
            found = story.prometheus.query_range(queries[name], story.started, end, 1)
            assert len(found) == 1, (name, queries[name], found)
            assert max(float(v) for _, v in found[0]["values"]) > 0, (name, queries[name])
        assert story.prometheus.query_range(queries["errors"], story.started, end, 1) == []


class TestABadVersion:
    def test_is_rolled_back_by_its_analyses_within_seconds_of_getting_traffic(
        self, story: Story
    ) -> None:
        status = story.rolled_back
        rolled_back = status["history"][0]
        assert (rolled_back["outcome"], rolled_back["version"]) == ("RolledBack", "3")
        assert "error rate" in rolled_back["reason"], rolled_back["reason"]
        assert status["stable"]["revision"] == story.revisions["2"], "v2 stays stable"
        assert status.get("canary") is None
        failed = [a for a in analyses_of(story, story.revisions["3"]) if a["verdict"] == "Fail"]
        assert len(failed) >= 2, "failureThreshold 2: two failed analyses in a row"
        assert all(a["canary"]["errorRate"] > 0.01 for a in failed), failed
        weighted = first_weighted(story, story.revisions["3"])
        [done] = [at for at, s in story.exporter.statuses if s.get("phase") == "RolledBack"][:1]
        assert done - weighted < 20, f"rolled back {done - weighted:.1f} s after getting traffic"

    def test_its_errors_are_in_prometheus_under_its_revision(self, story: Story) -> None:
        query = provider_queries(story, story.revisions["3"])["errors"]
        found = story.prometheus.query_range(query, story.started, time.time(), 1)
        assert found, query
        assert max(float(v) for _, v in found[0]["values"]) > 0, query

    def test_leaves_the_stable_serving_every_request(self, story: Story) -> None:
        [done] = [at for at, s in story.exporter.statuses if s.get("phase") == "RolledBack"][:1]
        deadline = time.monotonic() + 15  # run alone, this test starts right after the rollback
        while len(after := [c for at, c in story.traffic.answers if at > done + 1]) < 50:
            assert time.monotonic() < deadline, f"{len(after)} answers after the rollback"
            time.sleep(0.2)
        assert all(code == 200 for code in after), after
