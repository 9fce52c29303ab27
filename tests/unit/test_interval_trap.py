"""The interval trap: with the `prometheus` provider, each analysis asks for increase() over
`analysis.interval`. A range shorter than two scrapes holds fewer than two samples, the answer is
empty, and every analysis is Inconclusive: the rollout would hold forever without a word. Such a
spec is refused instead, by the API server (a CEL rule in the CRD) and by `weir run` (the same
rule evaluated in Python), with a message that says why."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.crdschema import validate_custom_resource
from weir_operator.core.spec import SpecError, parse_model_deployment
from weir_operator.crd import render_crd

CRD = render_crd()


def manifest(analysis: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.weir.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {
            "model": {"uri": "https://m.example.com/iris.onnx"},
            "rollout": {"analysis": analysis},
        },
    }


def prometheus(interval: str | None, scrape: str | None = None) -> dict[str, Any]:
    provider: dict[str, Any] = {"url": "http://prometheus:9090"}
    if scrape is not None:
        provider["scrapeInterval"] = scrape
    analysis: dict[str, Any] = {"provider": {"prometheus": provider}}
    if interval is not None:
        analysis["interval"] = interval
    return analysis


def problems_of(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(weir run's problems, the API server's), each [] when accepted."""
    try:
        parse_model_deployment(document)
        weir_run: list[str] = []
    except SpecError as error:
        weir_run = error.problems
    return weir_run, validate_custom_resource(document, CRD)


class TestAnIntervalShorterThanTwoScrapes:
    @pytest.mark.parametrize(
        ("interval", "scrape"),
        [("10s", None), ("59s", "30s"), ("1s", "1s"), ("1m", "31s"), ("1500ms", "1s")],
    )
    def test_is_refused_by_both_naming_the_interval(
        self, interval: str, scrape: str | None
    ) -> None:
        for problems in problems_of(manifest(prometheus(interval, scrape))):
            [problem] = [p for p in problems if "scrapeInterval" in p]
            assert problem.startswith("spec.rollout.analysis.interval: "), problem
            assert "at least twice provider.prometheus.scrapeInterval" in problem
            assert "Inconclusive" in problem, "the message says what would happen"

    def test_the_default_interval_is_too_short_for_the_default_scrape_interval(self) -> None:
        """10s against the Prometheus Operator's 30s: the trap a first spec falls into."""
        weir_run, api_server = problems_of(manifest(prometheus(None)))
        assert weir_run
        assert api_server


class TestAnIntervalOfTwoScrapesOrMore:
    @pytest.mark.parametrize(
        ("interval", "scrape"),
        [("1m", None), ("2s", "1s"), ("1m30s", "45s"), ("1s", "500ms"), ("1h", "30s")],
    )
    def test_is_accepted_by_both(self, interval: str, scrape: str | None) -> None:
        assert problems_of(manifest(prometheus(interval, scrape))) == ([], [])

    def test_scrape_interval_defaults_to_the_prometheus_operators_30s(self) -> None:
        md = parse_model_deployment(manifest(prometheus("1m")))
        provider = md.spec.rollout.analysis.provider.prometheus
        assert provider is not None
        assert provider.scrape_interval == "30s"


class TestTheDirectProvider:
    def test_scrapes_itself_so_any_interval_is_accepted(self) -> None:
        analysis = {"interval": "1s", "provider": {"direct": {}}}
        assert problems_of(manifest(analysis)) == ([], [])

    def test_is_the_default_and_needs_no_scrape_interval(self) -> None:
        assert problems_of(manifest({"interval": "500ms"})) == ([], [])
